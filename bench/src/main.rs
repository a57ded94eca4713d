//! `tether-bench`: the benchmark harness. `tether-bench <scenario>...` runs scenarios and
//! writes a report (JSON, Markdown, latency SVG) to `bench/results/<time>/`; see
//! `bench/README.md`. `tether-bench worker <role>` is a load-generator process the
//! orchestrator starts itself.

mod client;
mod orchestrate;
mod procs;
mod report;
mod scenarios;
mod worker;
mod ws;

use anyhow::{bail, Result};
use clap::Parser;
use std::path::PathBuf;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "tether-bench",
    about = "Benchmarks for the Tether gateway, with peers side by side"
)]
struct Cli {
    /// Scenarios to run: s1 s2 s3 s4 s5 s6 s7 s8 q1 q2 q3, or `all`; `worker <json>` is internal.
    #[arg(required = true)]
    what: Vec<String>,
    /// Shorter runs (fewer connections, shorter windows) for a quick look; the report says so.
    #[arg(long)]
    quick: bool,
    /// Also run the peers (Node ws, Socket.IO, Bun) where the scenario has them.
    #[arg(long)]
    peers: bool,
    /// Report directory (default bench/results/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let Some(role) = args.get(2) else {
            bail!("worker needs a role")
        };
        return worker::run(serde_json::from_str(role)?);
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(scenarios::run(cli.what, cli.quick, cli.peers, cli.out))
}
