//! The load-generator process: one role per process (several processes share a run, each
//! under the 20,000 open-file limit and from its own source address). It talks to the
//! orchestrator with JSON lines: it prints `{"ready":..}` once set up, waits for `go` on
//! stdin when the role is timed, and prints `{"result":..}` at the end.

use crate::client::{self, Dialect};
use crate::procs::{ADMIN_KEY, APP};
use crate::ws::{number_after, Frame, Ws};
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;

/// What a worker does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Open `count` connections and keep them alive (S1).
    Hold(Hold),
    /// Subscribers in one room and a closed-loop publisher (S3).
    Broadcast(Broadcast),
}

/// Settings of [`Role::Hold`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    /// Dialect.
    pub dialect: Dialect,
    /// Servers; connection i goes to `targets[i % len]`.
    pub targets: Vec<SocketAddr>,
    /// Source address.
    pub source: Option<IpAddr>,
    /// User number of the first connection (users are `u<n>`).
    pub first_user: u64,
    /// Connections.
    pub count: u32,
    /// Users per room (0: no room).
    pub room_size: u32,
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Connections opened at once.
    pub concurrency: usize,
}

/// Settings of [`Role::Broadcast`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Broadcast {
    /// Dialect.
    pub dialect: Dialect,
    /// Servers the subscribers connect to (round robin).
    pub targets: Vec<SocketAddr>,
    /// Where messages are published (`POST /v1/send/room`).
    pub publish_to: SocketAddr,
    /// Source address.
    pub source: Option<IpAddr>,
    /// Subscribers.
    pub subscribers: u32,
    /// Messages in flight (a message is done when every subscriber has it).
    pub window: u32,
    /// Warm-up, s.
    pub warmup_s: u64,
    /// Measured time, s.
    pub measure_s: u64,
    /// Padding added to each message's data, bytes.
    pub padding: usize,
}

/// Ns since the epoch (all processes of a run share the box's clock).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn emit(value: serde_json::Value) {
    println!("{value}");
}

async fn wait_for_go() -> Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "go" {
            return Ok(());
        }
    }
    anyhow::bail!("stdin closed before go")
}

/// Runs a role to its end.
pub fn run(role: Role) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        match role {
            Role::Hold(hold) => run_hold(hold).await,
            Role::Broadcast(broadcast) => run_broadcast(broadcast).await,
        }
    })
}

/// Opens connections `0..count` with bounded concurrency; `make(i)` opens one.
async fn open_all<F, Fut>(count: u32, concurrency: usize, make: F) -> (Vec<Ws>, u32)
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<Ws>>,
{
    use futures_util::StreamExt;
    let mut opened = Vec::with_capacity(count as usize);
    let mut failed = 0;
    let mut pending = futures_util::stream::iter(0..count)
        .map(&make)
        .buffer_unordered(concurrency);
    while let Some(result) = pending.next().await {
        match result {
            Ok(ws) => opened.push(ws),
            Err(e) => {
                if failed < 3 {
                    eprintln!("connect failed: {e:#}");
                }
                failed += 1;
            }
        }
    }
    (opened, failed)
}

async fn run_hold(hold: Hold) -> Result<()> {
    let started = Instant::now();
    let (connections, failed) = open_all(hold.count, hold.concurrency, |i| {
        let user = format!("u{}", hold.first_user + u64::from(i));
        let room = (hold.room_size > 0).then(|| {
            format!(
                "r{}",
                (hold.first_user + u64::from(i)) / u64::from(hold.room_size)
            )
        });
        let target = hold.targets[i as usize % hold.targets.len()];
        let (dialect, source) = (hold.dialect, hold.source);
        async move { client::open(dialect, target, source, &user, room.as_deref(), 512).await }
    })
    .await;
    emit(
        json!({"ready": connections.len(), "failed": failed, "seconds": started.elapsed().as_secs_f64()}),
    );
    for mut ws in connections {
        let dialect = hold.dialect;
        let heartbeat = Duration::from_millis(hold.heartbeat_ms);
        tokio::task::spawn_local(async move {
            // Spread the pings over the interval.
            let first = Duration::from_millis(rand::random_range(0..hold.heartbeat_ms.max(1)));
            let mut next_ping = tokio::time::Instant::now() + first;
            loop {
                tokio::select! {
                    frame = ws.next() => match frame {
                        Ok(Frame::Text(text)) => {
                            if let Some(reply) = client::answer(dialect, text) {
                                let _ = ws.send_text(reply).await;
                            }
                        }
                        Ok(Frame::Other) => {}
                        Ok(Frame::Close(code)) => { eprintln!("held connection closed with {code}"); return; }
                        Err(_) => return,
                    },
                    () = tokio::time::sleep_until(next_ping) => {
                        if let Some(ping) = client::ping(dialect) {
                            let _ = ws.send_text(ping).await;
                        }
                        next_ping += heartbeat;
                    }
                }
            }
        });
    }
    // Hold until the orchestrator closes stdin (or kills the process).
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while lines.next_line().await?.is_some() {}
    Ok(())
}

const RING: usize = 1 << 14;

struct Progress {
    counts: Vec<Cell<u32>>,
    complete: Notify,
    deliveries: Cell<u64>,
    measuring: Cell<bool>,
    measure_from: Cell<u64>,
    latency: RefCell<Histogram<u64>>,
}

async fn run_broadcast(config: Broadcast) -> Result<()> {
    let subscribers = config.subscribers;
    let (connections, failed) = open_all(subscribers, 256, |i| {
        let target = config.targets[i as usize % config.targets.len()];
        let user = format!("s{i}");
        let (dialect, source) = (config.dialect, config.source);
        async move { client::open(dialect, target, source, &user, Some("broadcast"), 4096).await }
    })
    .await;
    let subscribed = connections.len() as u32;
    emit(json!({"ready": subscribed, "failed": failed}));
    wait_for_go().await?;

    let progress = Rc::new(Progress {
        counts: (0..RING).map(|_| Cell::new(0)).collect(),
        complete: Notify::new(),
        deliveries: Cell::new(0),
        measuring: Cell::new(false),
        measure_from: Cell::new(u64::MAX),
        latency: RefCell::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    for mut ws in connections {
        let progress = progress.clone();
        let dialect = config.dialect;
        tokio::task::spawn_local(async move {
            loop {
                let text = match ws.next().await {
                    Ok(Frame::Text(text)) => text,
                    Ok(Frame::Other) => continue,
                    Ok(Frame::Close(_)) | Err(_) => return,
                };
                if let Some(reply) = client::answer(dialect, text) {
                    let _ = ws.send_text(reply).await;
                    continue;
                }
                let (Some(index), Some(sent)) = (
                    number_after(text, br#""s":"#),
                    number_after(text, br#""t":"#),
                ) else {
                    continue;
                };
                let received = now_ns();
                let slot = &progress.counts[index as usize % RING];
                slot.set(slot.get() + 1);
                if progress.measuring.get() && index >= progress.measure_from.get() {
                    progress.deliveries.set(progress.deliveries.get() + 1);
                    let _ = progress
                        .latency
                        .borrow_mut()
                        .record((received.saturating_sub(sent) / 1000).max(1));
                }
                if slot.get() == subscribed {
                    progress.complete.notify_one();
                }
            }
        });
    }

    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/send/room", config.publish_to);
    let padding = "x".repeat(config.padding);
    let started = Instant::now();
    let warmup_end = started + Duration::from_secs(config.warmup_s);
    let end = warmup_end + Duration::from_secs(config.measure_s);
    let mut next: u64 = 0;
    let mut done: u64 = 0; // messages below this index are complete (or given up)
    let mut lost_messages = 0u64;
    let mut measure_started: Option<Instant> = None;
    while Instant::now() < end {
        if measure_started.is_none() && Instant::now() >= warmup_end {
            progress.measure_from.set(next);
            progress.measuring.set(true);
            measure_started = Some(Instant::now());
        }
        // Advance `done` past completed messages; give up on one after 5 s.
        while done < next && progress.counts[done as usize % RING].get() >= subscribed {
            progress.counts[done as usize % RING].set(0);
            done += 1;
        }
        if next - done >= u64::from(config.window) {
            if tokio::time::timeout(Duration::from_secs(5), progress.complete.notified())
                .await
                .is_err()
            {
                lost_messages += 1;
                progress.counts[done as usize % RING].set(0);
                done += 1;
            }
            continue;
        }
        let body = json!({
            "room": "broadcast",
            "app": APP,
            "message": {"type": "bench", "data": {"s": next, "t": now_ns(), "p": padding}},
        });
        http.post(&url)
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .context("publish")?
            .error_for_status()
            .context("publish refused")?;
        next += 1;
    }
    let measured = measure_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let latency = progress.latency.borrow();
    emit(json!({"result": {
        "subscribers": subscribed,
        "published": next,
        "deliveries": progress.deliveries.get(),
        "seconds": measured,
        "deliveries_per_s": progress.deliveries.get() as f64 / measured.max(1e-9),
        "incomplete_messages": lost_messages,
        "latency_us": percentiles(&latency),
        "latency_hist": crate::report::encode_histogram(&latency)?,
    }}));
    Ok(())
}

/// p50/p90/p99/p99.9/max of a histogram.
pub fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "count": h.len(),
    })
}
