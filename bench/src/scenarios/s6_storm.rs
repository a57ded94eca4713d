//! S6, reconnect storm: clients on two nodes (full-jitter backoff, base 100 ms, cap 2 s),
//! user messages flowing at 1,000/s; node A is SIGKILLed and restarted a second later.
//! Time until 50/99/100 % of its clients are back, and the ledger: every published inbox
//! message delivered (lost = 0), duplicates counted before the client's de-duplication.

use super::common::sources;
use super::servers::{self, Kind};
use super::{row, CLIENT_CPU, SERVER_CPU};
use crate::orchestrate::Worker;
use crate::procs::{self, GatewayOptions};
use crate::report::Row;
use crate::worker::{now_ns, Publish, Role, Storm};
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// Runs S6.
pub async fn run(quick: bool) -> Result<Vec<Row>> {
    let (per_worker, before_kill_s, after_kill_s) = if quick {
        (1_000u32, 3, 8)
    } else {
        (9_000, 10, 20)
    };
    let mut servers = servers::start(Kind::Tether, 2, false, &[], SERVER_CPU).await?;
    let redis_url = servers.redis_url.clone().context("redis")?;
    let addrs = servers.addrs();
    let mut clients = Vec::new();
    for i in 0..2u32 {
        let role = Role::Storm(Storm {
            // Worker i starts its clients on node i and fails over to the other.
            targets: if i == 0 {
                vec![addrs[0], addrs[1]]
            } else {
                vec![addrs[1], addrs[0]]
            },
            sources: sources(2 + i as u8, 1),
            first_user: u64::from(i * per_worker),
            count: per_worker,
            base_ms: 100,
            cap_ms: 2_000,
        });
        clients.push(Worker::spawn(&role, Some(CLIENT_CPU))?);
    }
    for client in &mut clients {
        client
            .next(Duration::from_secs(300))
            .await
            .context("storm clients ready")?;
    }
    let total_s = before_kill_s + after_kill_s;
    let publish = Role::Publish(Publish {
        redis_url: redis_url.clone(),
        kind: "user".into(),
        targets: u64::from(2 * per_worker),
        rate_per_s: 1_000,
        duration_s: total_s,
    });
    let mut publisher = Worker::spawn(&publish, Some(CLIENT_CPU))?;
    publisher.next(Duration::from_secs(30)).await?;
    publisher.go().await?;
    tokio::time::sleep(Duration::from_secs(before_kill_s)).await;

    // SIGKILL node A, restart it on the same port a second later.
    let (mut node_a, addr_a) = servers.nodes.remove(0);
    let killed_at = now_ns();
    node_a.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let options = GatewayOptions {
        redis_url: Some(redis_url),
        env: Vec::new(),
        cpu: Some(SERVER_CPU.to_owned()),
        port: Some(addr_a.port()),
    };
    let restarted = procs::start_gateway(&options)
        .await
        .context("restart node A")?;
    let published = publisher
        .next(Duration::from_secs(total_s + 60))
        .await
        .context("publisher result")?;
    publisher.stop().await;
    // Let the last messages (and replays) arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ledgers = Vec::new();
    for client in &mut clients {
        client.send_line("stop").await?;
        ledgers.push(client.next(Duration::from_secs(60)).await?["result"].clone());
    }
    for client in clients {
        client.stop().await;
    }
    drop(restarted);

    // Received seqs by user.
    let mut received: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut recovered_ms: Vec<f64> = Vec::new();
    let mut went_down = 0usize;
    for ledger in &ledgers {
        let first = ledger["first_user"].as_u64().unwrap_or(0);
        for (i, seqs) in ledger["seqs"].as_array().into_iter().flatten().enumerate() {
            let seqs: Vec<u64> = seqs
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_u64())
                .collect();
            received.insert(first + i as u64, seqs);
        }
        for outages in ledger["outages"].as_array().into_iter().flatten() {
            for outage in outages.as_array().into_iter().flatten() {
                let down = outage[0].as_u64().unwrap_or(0);
                if down < killed_at {
                    continue;
                }
                went_down += 1;
                if let Some(up) = outage[1].as_u64() {
                    recovered_ms.push((up.saturating_sub(killed_at)) as f64 / 1e6);
                }
            }
        }
    }
    recovered_ms.sort_by(f64::total_cmp);
    let at = |q: f64| -> Option<f64> {
        if recovered_ms.is_empty() || went_down == 0 {
            return None;
        }
        let needed = ((went_down as f64) * q).ceil() as usize;
        recovered_ms.get(needed.saturating_sub(1)).copied()
    };
    let mut lost = 0u64;
    let mut published_count = 0u64;
    for pair in published["result"]["ledger"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (user, seq) = (pair[0].as_u64().unwrap_or(0), pair[1].as_u64().unwrap_or(0));
        published_count += 1;
        if !received.get(&user).is_some_and(|s| s.contains(&seq)) {
            lost += 1;
        }
    }
    let duplicated: u64 = received
        .values()
        .map(|seqs| {
            let mut sorted = seqs.clone();
            sorted.sort_unstable();
            let total = sorted.len();
            sorted.dedup();
            (total - sorted.len()) as u64
        })
        .sum();
    Ok(vec![row(
        "S6",
        format!(
            "tether 2 nodes (Redis), {} clients, node A SIGKILLed and restarted after 1 s",
            2 * per_worker
        ),
        json!({
            "clients_cut": went_down,
            "reconnected": recovered_ms.len(),
            "back_50pct_ms": at(0.5),
            "back_99pct_ms": at(0.99),
            "back_100pct_ms": at(1.0),
            "published": published_count,
            "lost": lost,
            "duplicated_before_dedup": duplicated,
        }),
    )])
}
