//! The Redis broker's background duties, once a second: watch the three connections
//! (for `/health`), publish the node heartbeat, refresh connection leases (a slice of
//! the node's connections per tick) and the node's part of room presence (a slice of its
//! rooms per tick), write inbox count changes, and after the subscriber
//! came back ask every local connection to catch up from its inbox.

use super::keys;
use super::Inner;
use futures_util::stream::FuturesUnordered;
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
/// Lease refresh scripts in flight at once.
const LEASES_IN_FLIGHT: usize = 64;
/// Leases one script refreshes at most, where one script may touch any user's keys (on a
/// Cluster each lease is a script of its own).
const LEASES_PER_SCRIPT: usize = 128;

/// The connections one tick refreshes: those whose number is `index` modulo `count`.
/// Each lease is refreshed once per `count` ticks (a third of its life), and Redis sees
/// a steady trickle instead of every connection of the node at once: with the default
/// 300 s lease, 10,000 connections make about 100 refreshes a second rather than 10,000
/// in one burst every 100 s, which would hold up sends behind them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slice {
    index: u64,
    count: u64,
}

impl Slice {
    /// Every connection (after Redis came back, or after a refresh failed).
    const ALL: Slice = Slice { index: 0, count: 1 };

    /// The slice refreshed on tick number `tick` for leases of `lease_ms`.
    fn of_tick(tick: u64, lease_ms: u64) -> Slice {
        let count = (lease_ms / 3 / TICK.as_millis() as u64).max(1);
        Slice {
            index: tick % count,
            count,
        }
    }

    /// Whether the connection (or room, by [`super::presence::room_number`]) numbered
    /// `id` is in this slice.
    fn holds(self, id: u64) -> bool {
        id % self.count == self.index
    }
}

pub(super) async fn run(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heartbeat: Option<Instant> = None;
    let mut refresh_all = false;
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = inner.stop.cancelled() => return,
        }
        tick = tick.wrapping_add(1);
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
            refresh_all = true;
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
        if last_heartbeat.is_none_or(|at| at.elapsed() >= heartbeat_every) {
            if let Some(listed_again) = heartbeat(&inner).await {
                last_heartbeat = Some(Instant::now());
                // Not listed before: Redis may have lost this node's leases and its
                // part of room presence (a restart, or they ran out meanwhile).
                refresh_all |= listed_again;
            }
        }
        let slice = if refresh_all {
            Slice::ALL
        } else {
            Slice::of_tick(tick, inner.settings.lease_ms)
        };
        // A failed slice may have left leases short: all of them go again next tick.
        refresh_all = !refresh_leases(&inner, slice).await;
        let rooms = super::presence::due(&inner, |app, room| {
            slice.holds(super::presence::room_number(app, room))
        });
        super::presence::sync(&inner, rooms).await;
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

/// Publishes the heartbeat; `Some(true)` when the node was not listed before it.
async fn heartbeat(inner: &Inner) -> Option<bool> {
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
    match result {
        Ok(added) => Some(added == 1),
        Err(e) => {
            warn!(error = %e, "node heartbeat failed");
            None
        }
    }
}

async fn refresh_leases(inner: &Inner, slice: Slice) -> bool {
    let lease_ms = inner.settings.lease_ms;
    let leases: Vec<(String, String, String)> = inner
        .hub
        .connections_where(|id| slice.holds(id))
        .into_iter()
        .map(|(id, info)| {
            (
                keys::user(&info.app, &info.user).conns,
                inner.hub.conn_ref(id).to_string(),
                info.device.as_deref().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let per_script = if inner.main.spans_users() {
        LEASES_PER_SCRIPT
    } else {
        1
    };
    let invocations: Vec<redis::ScriptInvocation<'static>> = leases
        .chunks(per_script)
        .map(|chunk| {
            let mut invocation = super::scripts::REFRESH.prepare_invoke();
            invocation.arg(lease_ms);
            for (conns, conn, device) in chunk {
                invocation.key(conns).arg(conn).arg(device);
            }
            invocation
        })
        .collect();
    // At most LEASES_IN_FLIGHT scripts at once (a loop rather than a stream combinator:
    // the borrowed invocations would not satisfy the spawned task's Send bound).
    let mut pending = invocations.iter();
    let mut running = FuturesUnordered::new();
    let mut ok = true;
    loop {
        while running.len() < LEASES_IN_FLIGHT {
            let Some(invocation) = pending.next() else {
                break;
            };
            running.push(inner.main.invoke::<i64>(invocation));
        }
        match running.next().await {
            Some(result) => ok &= result.is_ok(),
            None => break,
        }
    }
    if !ok {
        warn!("lease refresh failed; retrying every lease next tick");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_is_in_one_slice_per_third_of_a_lease() {
        // 300 s leases: 100 slices, each connection refreshed every 100 ticks.
        let slices: Vec<Slice> = (0..100).map(|t| Slice::of_tick(t, 300_000)).collect();
        for id in 0..1_000 {
            assert_eq!(slices.iter().filter(|s| s.holds(id)).count(), 1, "{id}");
        }
        assert_eq!(Slice::of_tick(100, 300_000), Slice::of_tick(0, 300_000));
        // Leases too short to spread: every tick takes them all.
        assert_eq!(Slice::of_tick(7, 3_000), Slice::ALL);
        assert!((0..10).all(|id| Slice::ALL.holds(id)));
    }
}
