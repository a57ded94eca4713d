//! S4, many small rooms (the Centrifugo shape, scaled down): connections over two nodes,
//! each in its personal channel and one group room of 10; an open-loop publisher sends to
//! random rooms at rising rates; publish-to-receive latency percentiles per step.

use super::common::{cpu, merge, sources};
use super::servers::{self, Kind};
use super::{row, CLIENT_CPU, SERVER_CPU};
use crate::orchestrate::Worker;
use crate::report::Row;
use crate::worker::{Listen, Publish, Role};
use anyhow::{Context, Result};
use serde_json::json;
use std::time::Duration;

/// Runs S4.
pub async fn run(quick: bool) -> Result<Vec<Row>> {
    let (conns, rates, step_s): (u32, Vec<u32>, u64) = if quick {
        (2_000, vec![2_000, 8_000], 5)
    } else {
        (10_000, vec![5_000, 10_000, 20_000, 40_000], 60)
    };
    let group = 10;
    let servers = servers::start(Kind::Tether, 2, false, &[], SERVER_CPU).await?;
    let redis_url = servers.redis_url.clone().context("redis")?;
    let mut listeners = Vec::new();
    for (i, addr) in servers.addrs().into_iter().enumerate() {
        let role = Role::Listen(Listen {
            targets: vec![addr],
            sources: sources(2 + i as u8, 1),
            first_user: i as u64 * u64::from(conns / 2),
            count: conns / 2,
            group,
        });
        listeners.push(Worker::spawn(&role, Some(CLIENT_CPU))?);
    }
    for listener in &mut listeners {
        listener
            .next(Duration::from_secs(300))
            .await
            .context("listeners ready")?;
    }
    let rooms = u64::from(conns / group);
    let pids = servers.pids();
    let mut rows = Vec::new();
    let mut best: Option<u32> = None;
    for rate in rates {
        let publish = Role::Publish(Publish {
            redis_url: redis_url.clone(),
            kind: "room".into(),
            targets: rooms,
            rate_per_s: rate,
            duration_s: step_s,
        });
        let mut publisher = Worker::spawn(&publish, Some(CLIENT_CPU))?;
        publisher.next(Duration::from_secs(30)).await?;
        for listener in &mut listeners {
            listener.go().await?;
        }
        let before = cpu(&pids);
        publisher.go().await?;
        let published = publisher
            .next(Duration::from_secs(step_s + 60))
            .await
            .context("publisher result")?;
        let used = cpu(&pids) - before;
        publisher.stop().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut results = Vec::new();
        for listener in &mut listeners {
            listener.send_line("stop").await?;
            results.push(listener.next(Duration::from_secs(30)).await?["result"].clone());
        }
        let deliveries: u64 = results
            .iter()
            .map(|r| r["deliveries"].as_u64().unwrap_or(0))
            .sum();
        let latency = merge(&results, "latency_hist");
        let p = |q: f64| latency.as_ref().map_or(0, |h| h.value_at_quantile(q));
        if p(0.99) < 50_000 {
            best = Some(rate);
        }
        let seconds = published["result"]["seconds"].as_f64().unwrap_or(1.0);
        let mut r = row(
            "S4",
            format!(
                "tether 2 nodes (Redis), {conns} conns, {rooms} rooms of {group}, offered {rate}/s"
            ),
            json!({
                "published_per_s": published["result"]["published_per_s"],
                "deliveries_per_s": deliveries as f64 / seconds,
                "p50_us": p(0.5),
                "p99_us": p(0.99),
                "p999_us": p(0.999),
                "server_and_redis_cpu_cores": used / seconds,
                "skipped": published["result"]["skipped"],
            }),
        );
        r.latency = latency;
        rows.push(r);
    }
    for listener in listeners {
        listener.stop().await;
    }
    if let Some(last) = rows.last_mut() {
        last.figures
            .insert("highest_step_p99_under_50ms".into(), json!(best));
    }
    Ok(rows)
}
