//! S5, send-to-user across nodes with the durable inbox: users split over two nodes, an
//! open-loop publisher sending to random users straight into Redis (the same Lua script
//! the HTTP API runs: seq, inbox append, trim, live publish), at rising rates.

use super::common::{cpu, merge, sources};
use super::servers::{self, Kind};
use super::{row, BOTH_CPUS, CLIENT_CPU, SERVER_CPU};
use crate::orchestrate::Worker;
use crate::report::Row;
use crate::worker::{Listen, Publish, Role};
use anyhow::{Context, Result};
use serde_json::json;
use std::time::Duration;

/// Runs S5: pinned (servers and Redis on one core, the generator on the other), then
/// unpinned (every process may use both cores), as the method asks.
pub async fn run(quick: bool) -> Result<Vec<Row>> {
    let (users, rates, step_s): (u32, Vec<u32>, u64) = if quick {
        (2_000, vec![10_000, 50_000, 100_000], 5)
    } else {
        (10_000, vec![10_000, 50_000, 100_000, 200_000], 60)
    };
    let mut rows = measure(users, &rates, step_s, true).await?;
    rows.extend(measure(users, &rates, step_s, false).await?);
    Ok(rows)
}

async fn measure(users: u32, rates: &[u32], step_s: u64, pinned: bool) -> Result<Vec<Row>> {
    let (server_cpu, client_cpu) = if pinned {
        (SERVER_CPU, CLIENT_CPU)
    } else {
        (BOTH_CPUS, BOTH_CPUS)
    };
    let layout = if pinned { "" } else { ", unpinned" };
    let servers = servers::start(Kind::Tether, 2, false, &[], server_cpu).await?;
    let redis_url = servers.redis_url.clone().context("redis")?;
    let redis_pid = servers.redis.as_ref().map(|r| r.pid).context("redis pid")?;
    let mut listeners = Vec::new();
    for (i, addr) in servers.addrs().into_iter().enumerate() {
        let role = Role::Listen(Listen {
            targets: vec![addr],
            sources: sources(2 + i as u8, 1),
            first_user: i as u64 * u64::from(users / 2),
            count: users / 2,
            group: 0,
        });
        listeners.push(Worker::spawn(&role, Some(client_cpu))?);
    }
    for listener in &mut listeners {
        listener
            .next(Duration::from_secs(300))
            .await
            .context("listeners ready")?;
    }
    let pids = servers.pids();
    let mut rows = Vec::new();
    for &rate in rates {
        let publish = Role::Publish(Publish {
            redis_url: redis_url.clone(),
            kind: "user".into(),
            targets: u64::from(users),
            rate_per_s: rate,
            duration_s: step_s,
        });
        let mut publisher = Worker::spawn(&publish, Some(client_cpu))?;
        publisher.next(Duration::from_secs(30)).await?;
        for listener in &mut listeners {
            listener.go().await?;
        }
        let before = cpu(&pids);
        let redis_before = cpu(&[redis_pid]);
        publisher.go().await?;
        let published = publisher
            .next(Duration::from_secs(step_s + 60))
            .await
            .context("publisher result")?;
        let used = cpu(&pids) - before;
        let redis_used = cpu(&[redis_pid]) - redis_before;
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
        let ok = published["result"]["published"].as_u64().unwrap_or(0);
        let seconds = published["result"]["seconds"].as_f64().unwrap_or(1.0);
        let latency = merge(&results, "latency_hist");
        let p = |q: f64| latency.as_ref().map_or(0, |h| h.value_at_quantile(q));
        let mut r = row(
            "S5",
            format!("tether 2 nodes (Redis){layout}, {users} users, inbox on, offered {rate}/s"),
            json!({
                "published_per_s": published["result"]["published_per_s"],
                "delivered_per_s": deliveries as f64 / seconds,
                "not_delivered": ok.saturating_sub(deliveries),
                "p50_us": p(0.5),
                "p99_us": p(0.99),
                "p999_us": p(0.999),
                "redis_cpu_cores": redis_used / seconds,
                "cpu_ms_per_1k_all_servers": if ok > 0 { 1e6 * used / ok as f64 } else { 0.0 },
                "skipped": published["result"]["skipped"],
                "errors": published["result"]["errors"],
            }),
        );
        r.latency = latency;
        rows.push(r);
    }
    for listener in listeners {
        listener.stop().await;
    }
    Ok(rows)
}
