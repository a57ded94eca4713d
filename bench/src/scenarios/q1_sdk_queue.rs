//! Q1, the SDK's durable outbound queue: how fast `send_message` stores messages on disk
//! (sled, synced before the call returns), offline so nothing is sent and every message
//! stays queued. Two shapes: one call after the other (each waits for its sync), and a
//! burst of calls made at the same moment (an app sending many at once: they share one
//! sync). In-process, through `TetherClient::new` as the bindings use it; the storage is
//! a fresh directory under the system temp dir, on this machine's disk (a phone's flash
//! syncs slower: fsync there costs milliseconds, so the burst's advantage grows).

use super::row;
use crate::report::Row;
use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tether::{
    ClientConfig, ConnectionStatus, EventListener, InboundMessage, TetherClient, TetherError,
    TokenError, TokenProvider,
};

/// Listens to nothing: the client never connects.
struct Quiet;

impl EventListener for Quiet {
    fn on_status(&self, _: ConnectionStatus) {}
    fn on_message(&self, _: InboundMessage) {}
    fn on_ack(&self, _: String) {}
    fn on_error(&self, _: Arc<TetherError>) {}
    fn on_expired(&self, _: String) {}
    fn on_replaced(&self, _: String, _: String) {}
    fn on_stream_reset(&self, _: Option<String>) {}
}

/// Never asked: the client never connects.
struct NoTokens;

#[async_trait::async_trait]
impl TokenProvider for NoTokens {
    async fn fetch_token(&self) -> Result<Option<String>, TokenError> {
        Ok(None)
    }
}

/// Runs Q1: `count` sends one after the other, then a burst of `count` at once.
pub async fn run(quick: bool) -> Result<Vec<Row>> {
    let count: usize = if quick { 1_000 } else { 5_000 };
    let dir = std::env::temp_dir().join(format!("tether-bench-q1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = ClientConfig::new(
        "wss://gateway.invalid/ws",
        "bench-app",
        "bench-device",
        dir.to_str()
            .ok_or_else(|| anyhow!("temp dir is not UTF-8"))?,
    );
    config.max_queued_messages = u32::try_from(count * 2 + 1)?;
    config.max_queued_bytes = 1 << 30;
    let client = TetherClient::new(config, Arc::new(Quiet), Arc::new(NoTokens))
        .map_err(|e| anyhow!("starting the client: {}", e.message()))?;
    let payload = |n: usize| format!(r#"{{"n":{n},"text":"on my way, 5 minutes"}}"#);

    let mut one_by_one = histogram()?;
    let started = Instant::now();
    for n in 0..count {
        let call = Instant::now();
        client
            .send_message("chat".into(), payload(n))
            .await
            .map_err(|e| anyhow!("send: {}", e.message()))?;
        one_by_one.record(micros(call))?;
    }
    let sequential_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let calls = (0..count).map(|n| {
        let client = client.clone();
        let data = payload(n);
        tokio::spawn(async move {
            let call = Instant::now();
            client
                .send_message("chat".into(), data)
                .await
                .map(|_| micros(call))
        })
    });
    let mut burst = histogram()?;
    for call in futures_util::future::join_all(calls).await {
        let waited = call?.map_err(|e| anyhow!("send: {}", e.message()))?;
        burst.record(waited)?;
    }
    let burst_s = started.elapsed().as_secs_f64();
    client.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);

    let figures = |h: &Histogram<u64>, seconds: f64| {
        json!({
            "messages": count,
            "sends_per_s": (count as f64 / seconds).round(),
            "total_ms": (seconds * 1000.0).round(),
            "p50_us": h.value_at_quantile(0.5),
            "p99_us": h.value_at_quantile(0.99),
        })
    };
    let mut sequential = row(
        "Q1",
        "sdk send_message, one after the other".into(),
        figures(&one_by_one, sequential_s),
    );
    sequential.latency = Some(one_by_one);
    let all_at_once = row(
        "Q1",
        format!("sdk send_message, {count} at the same moment"),
        figures(&burst, burst_s),
    );
    Ok(vec![sequential, all_at_once])
}

fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}
