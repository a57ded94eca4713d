//! The scenarios of issue 6, each comparing Tether with its peers on the same machine in
//! the same run. CPU layout (2 cores): servers and Redis on CPU 0, the load generator on
//! CPU 1, so the generator never starves the server and the server's CPU time is its own.

mod common;
mod q1_sdk_queue;
mod q2_send_users;
mod q3_store;
mod s1_idle;
mod s2_connect;
mod s3_broadcast;
mod s4_rooms;
mod s5_users;
mod s6_storm;
mod s7_slow;
mod s8_recovery;
mod servers;

use crate::report::{self, Row};
use anyhow::{bail, Result};
use serde_json::json;
use std::path::PathBuf;

/// CPU the servers run on.
pub const SERVER_CPU: &str = "0";
/// CPU the load generator runs on.
pub const CLIENT_CPU: &str = "1";
/// Both CPUs: an unpinned run.
pub const BOTH_CPUS: &str = "0,1";

/// Runs the named scenarios and writes the report.
pub async fn run(what: Vec<String>, quick: bool, peers: bool, out: Option<PathBuf>) -> Result<()> {
    let all = [
        "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "q1", "q2", "q3",
    ];
    let chosen: Vec<String> = if what.iter().any(|w| w == "all") {
        all.iter().map(|s| (*s).to_owned()).collect()
    } else {
        what.iter().map(|w| w.to_lowercase()).collect()
    };
    let mut rows: Vec<Row> = Vec::new();
    for scenario in &chosen {
        eprintln!("== {scenario}{}", if quick { " (quick)" } else { "" });
        let mut found = match scenario.as_str() {
            "s1" => s1_idle::run(quick, peers).await?,
            "s2" => s2_connect::run(quick).await?,
            "s3" => s3_broadcast::run(quick, peers).await?,
            "s4" => s4_rooms::run(quick).await?,
            "s5" => s5_users::run(quick).await?,
            "s6" => s6_storm::run(quick).await?,
            "s7" => s7_slow::run(quick).await?,
            "s8" => s8_recovery::run(quick).await?,
            "q1" => q1_sdk_queue::run(quick).await?,
            "q3" => q3_store::run(quick).await?,
            "q2" => q2_send_users::run(quick).await?,
            other => bail!("unknown scenario {other} (known: {})", all.join(" ")),
        };
        for row in &found {
            eprintln!(
                "   {} {}",
                row.case,
                serde_json::Value::Object(row.figures.clone())
            );
        }
        rows.append(&mut found);
    }
    let dir = out.unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(stamp.to_string())
    });
    report::write(&dir, &machine(quick), &rows)?;
    eprintln!("report: {}", dir.join("report.md").display());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.figures.get("verdict").and_then(|v| v.as_str()) == Some("FAIL"))
        .map(|r| r.case.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("FAIL: {}", failed.join("; "));
    }
    Ok(())
}

fn machine(quick: bool) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel.trim(),
        "quick": quick,
        "layout": "servers and Redis pinned to CPU 0, load generator to CPU 1",
    })
}

/// Builds a row from (name, value) pairs.
pub fn row(scenario: &str, case: String, figures: serde_json::Value) -> Row {
    Row {
        scenario: scenario.to_owned(),
        case,
        figures: figures.as_object().cloned().unwrap_or_default(),
        latency: None,
    }
}
