//! Role `broadcast` (S3, S7): subscribers in one room and a publisher, either closed loop
//! (W messages in flight; a message is done when every subscriber has it) or open loop (a
//! fixed rate), optionally with subscribers that read slowly.

use super::{
    emit, histogram, now_ns, open_all, percentiles, source, wait_for_go, Broadcast, BROADCAST_ROOM,
};
use crate::client;
use crate::procs::{ADMIN_KEY, APP};
use crate::ws::{number_after, Frame, Ws};
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const RING: usize = 1 << 14;

struct Progress {
    counts: Vec<Cell<u32>>,
    complete: Notify,
    deliveries: Cell<u64>,
    /// Deliveries that carried a stream position (rooms with history).
    streamed: Cell<u64>,
    measuring: Cell<bool>,
    measure_from: Cell<u64>,
    latency: RefCell<Histogram<u64>>,
    slow_closed: Cell<u32>,
}

pub async fn run_broadcast(config: Broadcast) -> Result<()> {
    let (connections, failed) = open_all(config.subscribers, 256, |i| {
        let target = config.targets[i as usize % config.targets.len()];
        let user = format!("s{i}");
        let (dialect, source) = (config.dialect, source(&config.sources, i));
        async move { client::open(dialect, target, source, &user, Some(BROADCAST_ROOM), 4096).await }
    })
    .await;
    let subscribed = connections.len() as u32;
    // The first `slow_readers` are the slow ones; a message is complete without them.
    let fast = subscribed.saturating_sub(config.slow_readers);
    emit(json!({"ready": subscribed, "failed": failed}));
    wait_for_go().await?;

    let progress = Rc::new(Progress {
        counts: (0..RING).map(|_| Cell::new(0)).collect(),
        complete: Notify::new(),
        deliveries: Cell::new(0),
        streamed: Cell::new(0),
        measuring: Cell::new(false),
        measure_from: Cell::new(u64::MAX),
        latency: RefCell::new(histogram()),
        slow_closed: Cell::new(0),
    });
    for (i, ws) in connections.into_iter().enumerate() {
        let progress = progress.clone();
        if (i as u32) < config.slow_readers {
            tokio::task::spawn_local(slow_reader(ws, config.slow_bytes_per_s, progress));
        } else {
            tokio::task::spawn_local(fast_reader(ws, config.dialect, fast, progress));
        }
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
    let interval = (config.rate_per_s > 0)
        .then(|| Duration::from_secs_f64(1.0 / f64::from(config.rate_per_s)));
    while Instant::now() < end {
        if measure_started.is_none() && Instant::now() >= warmup_end {
            progress.measure_from.set(next);
            progress.measuring.set(true);
            measure_started = Some(Instant::now());
        }
        if let Some(interval) = interval {
            // Open loop: keep to the schedule whatever the deliveries do.
            let due = started + interval.mul_f64(next as f64);
            tokio::time::sleep_until(due.into()).await;
        } else {
            // Closed loop: advance `done` past complete messages; give up on one after 5 s.
            while done < next && progress.counts[done as usize % RING].get() >= fast {
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
        }
        let body = json!({
            "room": BROADCAST_ROOM,
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
    // Let the last messages arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let measured = measure_started.map_or(0.0, |t| t.elapsed().as_secs_f64() - 0.5);
    let latency = progress.latency.borrow();
    emit(json!({"result": {
        "subscribers": subscribed,
        "published": next,
        "deliveries": progress.deliveries.get(),
        "streamed_deliveries": progress.streamed.get(),
        "seconds": measured,
        "deliveries_per_s": progress.deliveries.get() as f64 / measured.max(1e-9),
        "incomplete_messages": lost_messages,
        "slow_readers_closed": progress.slow_closed.get(),
        "latency_us": percentiles(&latency),
        "latency_hist": crate::report::encode_histogram(&latency)?,
    }}));
    Ok(())
}

async fn fast_reader(mut ws: Ws, dialect: client::Dialect, fast: u32, progress: Rc<Progress>) {
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
            if text.starts_with(br#"{"offset":"#) {
                progress.streamed.set(progress.streamed.get() + 1);
            }
            let _ = progress
                .latency
                .borrow_mut()
                .record((received.saturating_sub(sent) / 1000).max(1));
        }
        if slot.get() == fast {
            progress.complete.notify_one();
        }
    }
}

/// Reads at most `bytes_per_s`: the server's queue for it fills, and the server must cut it
/// off (or keep its memory bounded) without slowing the others.
async fn slow_reader(mut ws: Ws, bytes_per_s: u64, progress: Rc<Progress>) {
    let chunk = (bytes_per_s / 10).max(1);
    loop {
        match ws.read_raw(chunk as usize).await {
            Ok(0) | Err(_) => {
                progress.slow_closed.set(progress.slow_closed.get() + 1);
                return;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
