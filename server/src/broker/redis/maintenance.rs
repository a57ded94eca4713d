//! The Redis broker's background duties, once a second: watch the three connections
//! (for `/health`), publish the node heartbeat, refresh connection leases, write inbox
//! count changes, and after the subscriber came back ask every local connection to
//! catch up from its inbox.

use super::keys;
use super::Inner;
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

const TICK: Duration = Duration::from_secs(1);
/// A node not heard from for this long counts as gone (never longer than its leases live).
fn node_ttl(inner: &Inner) -> Duration {
    Duration::from_millis(inner.settings.lease_ms)
        .clamp(Duration::from_secs(3), Duration::from_secs(15))
}
/// Lease refreshes in flight at once.
const LEASES_IN_FLIGHT: usize = 64;

pub(super) async fn run(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease_every = Duration::from_millis((inner.settings.lease_ms / 3).max(1000));
    let mut last_heartbeat: Option<Instant> = None;
    let mut last_leases = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = inner.stop.cancelled() => return,
        }
        // Taken before the subscriber's ping: a disconnection after this point sets the
        // flag again for the next tick. The ping waits for the connection redis-rs rebuilt
        // after the disconnection that set it, resubscriptions included, so once it answers,
        // live delivery is back and the inboxes hold whatever was missed before.
        let missed_live = inner.missed_live.swap(false, Ordering::AcqRel);
        let main_up = ping(&inner, &inner.main, true).await;
        let was_up = inner.main_link.set(main_up);
        let publisher_up = ping(&inner, &inner.publisher, false).await;
        inner.publisher_link.set(publisher_up);
        let subscriber_up = ping(&inner, &inner.subscriber, false).await;
        let subscriber_was_up = inner.subscriber_link.set(subscriber_up);
        if main_up && !was_up {
            info!(node = %inner.node, "Redis is back");
            // Redis may have lost the registry (restart without persistence): restore it now.
            last_leases = Instant::now() - lease_every;
            last_heartbeat = None;
        }
        if subscriber_up && (missed_live || !subscriber_was_up || (main_up && !was_up)) {
            // Also when only the main connection came back: a catch-up that failed to read
            // the inbox meanwhile is repeated.
            info!(node = %inner.node, "Redis subscriber is back; connections catch up from their inboxes");
            inner.hub.request_resync();
        } else if missed_live {
            // Not back yet: keep the flag for a later tick.
            inner.missed_live.store(true, Ordering::Release);
        }
        if !main_up {
            continue;
        }
        let heartbeat_every = node_ttl(&inner) / 3;
        if last_heartbeat.is_none_or(|at| at.elapsed() >= heartbeat_every)
            && heartbeat(&inner).await
        {
            last_heartbeat = Some(Instant::now());
        }
        if last_leases.elapsed() >= lease_every && refresh_leases(&inner).await {
            last_leases = Instant::now();
        }
        flush_queued(&inner).await;
    }
}

async fn ping(inner: &Inner, conn: &super::Conn, measure: bool) -> bool {
    let started = Instant::now();
    // PING, and behind Sentinel also that the server is still the master.
    let pong = tokio::time::timeout(Duration::from_secs(2), conn.check()).await;
    let up = matches!(pong, Ok(Ok(_)));
    if up && measure {
        inner
            .latency_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    up
}

async fn heartbeat(inner: &Inner) -> bool {
    let connections = inner.hub.stats().connections;
    let ttl = node_ttl(inner).as_millis() as u64;
    let result = inner
        .main
        .invoke::<i64>(
            super::scripts::HEARTBEAT
                .key(keys::NODES)
                .key(keys::node_connections(&inner.node))
                .arg(&*inner.node)
                .arg(connections)
                .arg(ttl),
        )
        .await;
    if let Err(e) = &result {
        warn!(error = %e, "node heartbeat failed");
    }
    result.is_ok()
}

async fn refresh_leases(inner: &Inner) -> bool {
    let lease_ms = inner.settings.lease_ms;
    // One script per lease (it touches one key, so one slot of a cluster), many in flight.
    let results: Vec<bool> = futures_util::stream::iter(inner.hub.connections())
        .map(|(id, info)| async move {
            let keys = keys::user(&info.app, &info.user);
            inner
                .main
                .invoke::<i64>(
                    super::scripts::REFRESH
                        .key(&keys.conns)
                        .arg(inner.hub.conn_ref(id).to_string())
                        .arg(info.device.as_deref().unwrap_or(""))
                        .arg(lease_ms),
                )
                .await
                .is_ok()
        })
        .buffer_unordered(LEASES_IN_FLIGHT)
        .collect()
        .await;
    let ok = results.iter().all(|r| *r);
    if !ok {
        warn!("lease refresh failed; retrying next tick");
    }
    ok
}

/// Writes the inbox count changes gathered since the last flush.
pub(super) async fn flush_queued(inner: &Inner) {
    let deltas: Vec<(u64, i64)> = inner.queued_deltas.lock().drain().collect();
    if super::ops::add_queued(&inner.main, inner.settings.retention, &deltas)
        .await
        .is_err()
    {
        // Keep them for the next flush.
        let mut pending = inner.queued_deltas.lock();
        for (bucket, delta) in deltas {
            *pending.entry(bucket).or_default() += delta;
        }
    }
}
