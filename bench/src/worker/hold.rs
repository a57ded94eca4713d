//! Role `hold` (S1, S6 background): open connections and keep them alive.

use super::{emit, open_all, source, Hold};
use crate::client;
use crate::ws::Frame;
use anyhow::Result;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

pub async fn run_hold(hold: Hold) -> Result<()> {
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
        let (dialect, source) = (hold.dialect, source(&hold.sources, i));
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
