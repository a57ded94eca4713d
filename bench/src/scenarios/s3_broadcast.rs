//! S3, room broadcast: one room of N subscribers, a closed-loop publisher keeping W
//! messages in flight (a message is done when every subscriber has it), on one node and
//! on two nodes through Redis. Deliveries per second, server CPU per 1k deliveries, and
//! publish-to-receive latency. Tether also runs with the room's history on
//! (`WS_ROOM_HISTORY` matching the room, default size 100): the same broadcast through
//! the stream path (offset, epoch, history append), next to the run without it.

use super::servers::{self, Kind};
use super::{row, CLIENT_CPU, SERVER_CPU};
use crate::orchestrate::Worker;
use crate::procs;
use crate::report::{decode_histogram, Row};
use crate::worker::{Broadcast, Role, BROADCAST_ROOM};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Runs S3 for Tether and the peers: W = 4 on one node and on two nodes over Redis, W = 16
/// on one node; at W = 4 Tether runs once more with the room's history on, right after the
/// run without it (the peers keep no history).
pub async fn run(quick: bool, peers: bool) -> Result<Vec<Row>> {
    let subscribers = if quick { 2_000 } else { 5_000 };
    let mut rows = Vec::new();
    for (nodes, window) in [(1, 4), (2, 4), (1, 16)] {
        for kind in servers::kinds(peers) {
            rows.push(measure(kind, nodes, subscribers, window, false, quick).await?);
            if kind == Kind::Tether && window == 4 {
                rows.push(measure(kind, nodes, subscribers, window, true, quick).await?);
            }
        }
    }
    Ok(rows)
}

async fn measure(
    kind: Kind,
    nodes: usize,
    subscribers: u32,
    window: u32,
    history: bool,
    quick: bool,
) -> Result<Row> {
    let mut env = vec![("WS_OUTBOUND_QUEUE", "4096")];
    if history {
        env.push(("WS_ROOM_HISTORY", BROADCAST_ROOM));
    }
    let servers = servers::start(kind, nodes, false, &env, SERVER_CPU).await?;
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
    let streamed = result["streamed_deliveries"].as_f64().unwrap_or(0.0);
    if history && streamed < deliveries {
        bail!("room history on, but {streamed} of {deliveries} deliveries carried an offset");
    }
    let seconds = result["seconds"].as_f64().unwrap_or(1.0);
    let cpu = cpu_after - cpu_before;
    let mut row = row(
        "S3",
        format!(
            "{} {nodes} node{} W={window}{}",
            kind.label(),
            if nodes > 1 { "s (Redis)" } else { "" },
            if history { ", room history on" } else { "" }
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
