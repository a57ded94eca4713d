//! One module per subcommand; [`run`] picks it.

mod listen;
mod observe;
mod publish;
mod send;
mod token;

use crate::args::Command;
use anyhow::Result;
use std::process::ExitCode;

/// Runs a subcommand; its exit code, or the error that stopped it.
pub async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Token(args) => token::run(&args),
        Command::Listen(args) => listen::run(args).await,
        Command::Send(args) => send::run(args).await,
        Command::Pub(args) => publish::run(args.target).await,
        Command::Stats(args) => observe::stats(args).await,
        Command::Health(args) => observe::health(args).await,
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
