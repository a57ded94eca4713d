//! S2, authenticated upgrades per second and churn: a burst of upgrades as fast as the
//! node takes them (HS256 token checked, limit admitted, inbox opened for each), then
//! connect+disconnect churn on top of the held connections.

use super::common::cpu;
use super::servers::{self, Kind};
use super::{row, CLIENT_CPU, SERVER_CPU};
use crate::orchestrate::Worker;
use crate::report::{decode_histogram, Row};
use crate::worker::{Connect, Role};
use anyhow::{Context, Result};
use serde_json::json;
use std::time::Duration;

/// Runs S2 on one node.
pub async fn run(quick: bool) -> Result<Vec<Row>> {
    let (count, churn_per_s, churn_s) = if quick {
        (3_000, 1_000, 5)
    } else {
        (10_000, 2_000, 60)
    };
    let servers = servers::start(Kind::Tether, 1, false, &[], SERVER_CPU).await?;
    let role = Role::Connect(Connect {
        targets: servers.addrs(),
        // No fixed source address: a bind(ip, 0) before connect makes the kernel pick a
        // port at bind time (slow, and without TIME_WAIT reuse); unbound connects to
        // loopback reuse TIME_WAIT ports (tcp_tw_reuse=2), which churn needs.
        sources: Vec::new(),
        first_user: 0,
        count,
        concurrency: 256,
        churn_per_s,
        churn_s,
    });
    let mut worker = Worker::spawn(&role, Some(CLIENT_CPU))?;
    worker
        .next(Duration::from_secs(30))
        .await
        .context("connect worker ready")?;
    let pids = servers.pids();
    let before = cpu(&pids);
    worker.go().await?;
    let result = worker
        .next(Duration::from_secs(churn_s + 300))
        .await
        .context("connect result")?;
    let used = cpu(&pids) - before;
    worker.stop().await;
    let r = &result["result"];
    let mut row = row(
        "S2",
        format!("tether 1 node: burst of {count}, then {churn_per_s}/s churn for {churn_s} s"),
        json!({
            "upgrades_per_s": r["upgrades_per_s"],
            "burst_failed": r["failed"],
            "burst_p50_us": r["burst_latency_us"]["p50"],
            "burst_p99_us": r["burst_latency_us"]["p99"],
            "churn_ok": r["churn_ok"],
            "churn_failed": r["churn_failed"],
            "churn_p50_us": r["churn_latency_us"]["p50"],
            "churn_p99_us": r["churn_latency_us"]["p99"],
            "server_cpu_s": used,
        }),
    );
    row.latency = r["churn_hist"]
        .as_str()
        .and_then(|h| decode_histogram(h).ok());
    Ok(vec![row])
}
