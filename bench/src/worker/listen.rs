//! Role `listen` (S4, S5): connections (each user in its personal channel, and in a group
//! room when asked) that record the publish-to-receive latency of every message carrying a
//! send time. Measured in steps: `go` starts a step, `stop` ends it and prints its result.

use super::{emit, histogram, now_ns, open_all, percentiles, source, Listen};
use crate::client::{self, Dialect};
use crate::ws::{number_after, Frame};
use anyhow::Result;
use hdrhistogram::Histogram;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// Interval of each listener's heartbeat (the gateways run with a 25 s heartbeat).
const PING_MS: u64 = 25_000;

struct Tally {
    measuring: Cell<bool>,
    deliveries: Cell<u64>,
    latency: RefCell<Histogram<u64>>,
}

pub async fn run(config: Listen) -> Result<()> {
    let (connections, failed) = open_all(config.count, 256, |i| {
        let n = config.first_user + u64::from(i);
        let target = config.targets[i as usize % config.targets.len()];
        let room = (config.group > 0).then(|| format!("g{}", n / u64::from(config.group)));
        let source = source(&config.sources, i);
        async move {
            client::open(
                Dialect::Tether,
                target,
                source,
                &format!("u{n}"),
                room.as_deref(),
                2048,
            )
            .await
        }
    })
    .await;
    emit(json!({"ready": connections.len(), "failed": failed}));
    let tally = Rc::new(Tally {
        measuring: Cell::new(false),
        deliveries: Cell::new(0),
        latency: RefCell::new(histogram()),
    });
    for mut ws in connections {
        let tally = tally.clone();
        tokio::task::spawn_local(async move {
            // Pings keep a listener alive past the gateway's idle timeout (steps of a full
            // run last minutes), spread over the interval.
            let mut next_ping =
                tokio::time::Instant::now() + Duration::from_millis(rand::random_range(0..PING_MS));
            loop {
                tokio::select! {
                    frame = ws.next() => {
                        let text = match frame {
                            Ok(Frame::Text(text)) => text,
                            Ok(Frame::Other) => continue,
                            Ok(Frame::Close(code)) => {
                                eprintln!("listener connection closed with {code}");
                                return;
                            }
                            Err(_) => return,
                        };
                        let Some(sent) = number_after(text, br#""t":"#) else {
                            continue;
                        };
                        if tally.measuring.get() {
                            tally.deliveries.set(tally.deliveries.get() + 1);
                            let _ = tally
                                .latency
                                .borrow_mut()
                                .record((now_ns().saturating_sub(sent) / 1000).max(1));
                        }
                    }
                    () = tokio::time::sleep_until(next_ping) => {
                        if let Some(ping) = client::ping(Dialect::Tether) {
                            let _ = ws.send_text(ping).await;
                        }
                        next_ping += Duration::from_millis(PING_MS);
                    }
                }
            }
        });
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "go" => {
                tally.deliveries.set(0);
                tally.latency.borrow_mut().reset();
                tally.measuring.set(true);
            }
            "stop" => {
                tally.measuring.set(false);
                let latency = tally.latency.borrow();
                emit(json!({"result": {
                    "deliveries": tally.deliveries.get(),
                    "latency_us": percentiles(&latency),
                    "latency_hist": crate::report::encode_histogram(&latency)?,
                }}));
            }
            _ => {}
        }
    }
    Ok(())
}
