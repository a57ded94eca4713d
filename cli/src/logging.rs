//! Logs on stderr through `tracing` (the SDK's own logs included): errors only by default
//! (the commands print status changes and SDK errors themselves), more with each `-v`;
//! `RUST_LOG` overrides.

use tracing_subscriber::EnvFilter;

/// Installs the stderr logger.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => "error",
        1 => "warn,tether=info,tether_cli=info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose >= 2)
        .try_init();
}
