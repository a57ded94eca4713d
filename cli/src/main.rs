//! `tether`: the command line of the Tether gateway and SDK.
//!
//! `token` mints a dev token, `listen` and `send` connect through the SDK core exactly as a
//! phone does (durable queue, acks, reconnects), `pub` publishes through the gateway's HTTP
//! API, `stats` and `health` read it. Results go to stdout (JSON where there is structure),
//! progress and errors to stderr, and the exit code says whether it worked.

mod args;
mod commands;
mod duration;
mod http;
mod json;
mod logging;
mod sdk;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    logging::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
