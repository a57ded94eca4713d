//! S1, idle footprint: authenticated connections, each in its personal channel and one
//! room of 100, pinging every 25 s; user-space bytes per connection (RSS growth of the
//! server processes) and kernel bytes per socket reported apart, plus idle CPU.

use super::servers::{self, Kind};
use super::{row, CLIENT_CPU, SERVER_CPU};
use crate::orchestrate::Worker;
use crate::procs;
use crate::report::Row;
use crate::worker::{Hold, Role};
use anyhow::{Context, Result};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Runs S1 on 2 nodes over Redis (as the issue asks) and on 1 node, for Tether and the
/// peers.
pub async fn run(quick: bool, peers: bool) -> Result<Vec<Row>> {
    let per_node: u32 = if quick { 3_000 } else { 9_000 };
    let hold_s = if quick { 5 } else { 60 };
    let mut rows = Vec::new();
    for nodes in [2, 1] {
        for kind in servers::kinds(peers) {
            rows.push(measure(kind, nodes, per_node, hold_s).await?);
        }
    }
    Ok(rows)
}

async fn measure(kind: Kind, nodes: usize, per_node: u32, hold_s: u64) -> Result<Row> {
    let servers = servers::start(kind, nodes, false, &[], SERVER_CPU).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before: Vec<u64> = servers
        .nodes
        .iter()
        .map(|(p, _)| procs::rss_bytes(p.pid))
        .collect::<Result<_>>()?;
    let kernel_before = procs::kernel_socket_bytes()?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for (i, addr) in servers.addrs().into_iter().enumerate() {
        let role = Role::Hold(Hold {
            dialect: kind.dialect(),
            targets: vec![addr],
            sources: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))],
            first_user: i as u64 * u64::from(per_node),
            count: per_node,
            room_size: 100,
            heartbeat_ms: 25_000,
            concurrency: 128,
        });
        workers.push(Worker::spawn(&role, Some(CLIENT_CPU))?);
    }
    let mut opened = 0;
    for worker in &mut workers {
        let ready = worker
            .next(Duration::from_secs(600))
            .await
            .context("holding workers ready")?;
        opened += ready["ready"].as_u64().unwrap_or(0);
        if ready["failed"].as_u64().unwrap_or(0) > 0 {
            eprintln!("   {} connections failed", ready["failed"]);
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    // Let allocators and the kernel settle before reading memory.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rss_after: Vec<u64> = servers
        .nodes
        .iter()
        .map(|(p, _)| procs::rss_bytes(p.pid))
        .collect::<Result<_>>()?;
    let kernel_after = procs::kernel_socket_bytes()?;
    let cpu_before: f64 = servers
        .nodes
        .iter()
        .map(|(p, _)| procs::cpu_seconds(p.pid).unwrap_or(0.0))
        .sum();
    tokio::time::sleep(Duration::from_secs(hold_s)).await;
    let cpu_after: f64 = servers
        .nodes
        .iter()
        .map(|(p, _)| procs::cpu_seconds(p.pid).unwrap_or(0.0))
        .sum();
    let still: Vec<u64> = servers
        .nodes
        .iter()
        .map(|(p, _)| procs::rss_bytes(p.pid))
        .collect::<Result<_>>()?;
    for worker in workers {
        worker.stop().await;
    }
    let grown: u64 = rss_after
        .iter()
        .zip(&rss_before)
        .map(|(a, b)| a.saturating_sub(*b))
        .sum();
    let per_conn = grown as f64 / opened.max(1) as f64;
    // Client and server sockets are both on this box: per socket is half the per-connection delta.
    let kernel_per_socket =
        kernel_after.saturating_sub(kernel_before) as f64 / (2.0 * opened.max(1) as f64);
    Ok(row(
        "S1",
        format!(
            "{} {nodes} node{}",
            kind.label(),
            if nodes > 1 { "s (Redis)" } else { "" }
        ),
        json!({
            "connections": opened,
            "user_bytes_per_conn": per_conn.round(),
            "kernel_bytes_per_socket": kernel_per_socket.round(),
            "rss_after_hold_mb": still.iter().sum::<u64>() as f64 / 1e6,
            "idle_cpu_percent": 100.0 * (cpu_after - cpu_before) / hold_s as f64,
            "connect_seconds": connect_s,
        }),
    ))
}
