//! S3, room broadcast: one room of N subscribers, a closed-loop publisher keeping W
//! messages in flight (a message is done when every subscriber has it), on one node and
//! on two nodes through Redis. Deliveries per second, server CPU per 1k deliveries, and
//! publish-to-receive latency.

use super::servers::{self, Kind};
use super::{row, CLIENT_CPU, SERVER_CPU};
use crate::orchestrate::Worker;
use crate::procs;
use crate::report::{decode_histogram, Row};
use crate::worker::{Broadcast, Role};
use anyhow::{Context, Result};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Runs S3 for Tether and the peers: W = 4 on one node and on two nodes over Redis, W = 16
/// on one node.
pub async fn run(quick: bool, peers: bool) -> Result<Vec<Row>> {
    let subscribers = if quick { 2_000 } else { 5_000 };
    let mut rows = Vec::new();
    for (nodes, window) in [(1, 4), (2, 4), (1, 16)] {
        for kind in servers::kinds(peers) {
            rows.push(measure(kind, nodes, subscribers, window, quick).await?);
        }
    }
    Ok(rows)
}

async fn measure(
    kind: Kind,
    nodes: usize,
    subscribers: u32,
    window: u32,
    quick: bool,
) -> Result<Row> {
    let servers = servers::start(
        kind,
        nodes,
        false,
        &[("WS_OUTBOUND_QUEUE", "4096")],
        SERVER_CPU,
    )
    .await?;
    let (warmup_s, measure_s) = if quick { (2, 5) } else { (5, 30) };
    let addrs = servers.addrs();
    let role = Role::Broadcast(Broadcast {
        dialect: kind.dialect(),
        targets: addrs.clone(),
        publish_to: addrs[0],
        sources: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))],
        subscribers,
        window,
        rate_per_s: 0,
        slow_readers: 0,
        slow_bytes_per_s: 0,
        warmup_s,
        measure_s,
        padding: 0,
    });
    let mut worker = Worker::spawn(&role, Some(CLIENT_CPU))?;
    let ready = worker
        .next(Duration::from_secs(300))
        .await
        .context("subscribers ready")?;
    worker.go().await?;
    tokio::time::sleep(Duration::from_secs(warmup_s)).await;
    let pids = servers.pids();
    let cpu_before: f64 = pids
        .iter()
        .map(|p| procs::cpu_seconds(*p).unwrap_or(0.0))
        .sum();
    let client_before = procs::cpu_seconds(worker.pid()).unwrap_or(0.0);
    let result = worker
        .next(Duration::from_secs(measure_s + 60))
        .await
        .context("broadcast result")?;
    let cpu_after: f64 = pids
        .iter()
        .map(|p| procs::cpu_seconds(*p).unwrap_or(0.0))
        .sum();
    let client_cpu = procs::cpu_seconds(worker.pid()).unwrap_or(0.0) - client_before;
    worker.stop().await;
    let result = &result["result"];
    let deliveries = result["deliveries"].as_f64().unwrap_or(0.0);
    let seconds = result["seconds"].as_f64().unwrap_or(1.0);
    let cpu = cpu_after - cpu_before;
    let mut row = row(
        "S3",
        format!(
            "{} {nodes} node{} W={window}",
            kind.label(),
            if nodes > 1 { "s (Redis)" } else { "" }
        ),
        json!({
            "subscribers": ready["ready"],
            "deliveries_per_s": result["deliveries_per_s"],
            "server_cpu_ms_per_1k": if deliveries > 0.0 { 1e6 * cpu / deliveries } else { 0.0 },
            "server_cpu_cores": cpu / seconds,
            "client_cpu_cores": client_cpu / seconds,
            "p50_us": result["latency_us"]["p50"],
            "p99_us": result["latency_us"]["p99"],
            "p999_us": result["latency_us"]["p999"],
            "incomplete": result["incomplete_messages"],
        }),
    );
    row.latency = result["latency_hist"]
        .as_str()
        .and_then(|h| decode_histogram(h).ok());
    Ok(row)
}
