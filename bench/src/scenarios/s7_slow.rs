//! S7, one slow consumer: a room of 100, one member reading only 10 KB/s, 1 KB messages
//! broadcast at 1,000/s. The node's memory must stay bounded (the slow member is cut off
//! with 4008) and the other members' latency must match a run without the slow one.

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

/// Runs S7 with and without the slow member.
pub async fn run(quick: bool) -> Result<Vec<Row>> {
    let measure_s = if quick { 10 } else { 60 };
    let mut rows = Vec::new();
    for slow in [1u32, 0] {
        let servers = servers::start(Kind::Tether, 1, false, &[], SERVER_CPU).await?;
        let addrs = servers.addrs();
        let role = Role::Broadcast(Broadcast {
            dialect: Kind::Tether.dialect(),
            targets: addrs.clone(),
            publish_to: addrs[0],
            sources: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))],
            subscribers: 100,
            window: 0,
            rate_per_s: 1_000,
            slow_readers: slow,
            slow_bytes_per_s: 10 * 1024,
            warmup_s: 2,
            measure_s,
            padding: 1_000,
        });
        let mut worker = Worker::spawn(&role, Some(CLIENT_CPU))?;
        worker
            .next(Duration::from_secs(60))
            .await
            .context("subscribers ready")?;
        let pid = servers.nodes[0].0.pid;
        let rss_start = procs::rss_bytes(pid)?;
        worker.go().await?;
        // Sample the node's memory while the run lasts.
        let mut rss_max = rss_start;
        let result = loop {
            tokio::select! {
                result = worker.next(Duration::from_secs(measure_s + 60)) => break result?,
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    rss_max = rss_max.max(procs::rss_bytes(pid).unwrap_or(0));
                }
            }
        };
        worker.stop().await;
        let r = &result["result"];
        let mut row = row(
            "S7",
            format!(
                "tether 1 node, room of 100, 1 KB at 1,000/s, {slow} slow member(s) at 10 KB/s"
            ),
            json!({
                "deliveries_per_s": r["deliveries_per_s"],
                "others_p50_us": r["latency_us"]["p50"],
                "others_p99_us": r["latency_us"]["p99"],
                "slow_member_cut_off": r["slow_readers_closed"],
                "rss_start_mb": rss_start as f64 / 1e6,
                "rss_max_mb": rss_max as f64 / 1e6,
            }),
        );
        row.latency = r["latency_hist"]
            .as_str()
            .and_then(|h| decode_histogram(h).ok());
        rows.push(row);
    }
    Ok(rows)
}
