//! `tether-server`: runs one gateway node until SIGTERM or SIGINT, then shuts down
//! gracefully (every connection closed with 1012) and exits 0.

use clap::Parser;
use std::process::ExitCode;
use tether_server::config::{Cli, Config};
use tether_server::{dev, logging, Gateway};

#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (`_RJEM_MALLOC_CONF` in the environment overrides them).
#[cfg(all(unix, not(target_env = "musl")))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> ExitCode {
    // A .env file is optional; a malformed one is an error worth stopping for.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("tether-server: .env: {e}");
            return ExitCode::from(2);
        }
    }
    let mut cli = Cli::parse();
    let dev_secret = (cli.dev && cli.jwt_secret.is_none()).then(dev::random_secret);
    if cli.dev && cli.admin_api_key.is_none() {
        cli.admin_api_key = Some(dev::random_secret());
    }
    let config = match Config::from_cli(&cli, dev_secret.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tether-server: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_format);
    let gateway = match Gateway::start(config.clone()).await {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("tether-server: {e}");
            return ExitCode::from(1);
        }
    };
    if cli.dev {
        let secret = match &config.jwt.key {
            tether_server::config::JwtKey::Secret(secret) => Some(secret.as_slice()),
            tether_server::config::JwtKey::PublicKeyPem { .. } => None,
        };
        let admin = config.admin_api_key.as_ref().map(|k| k.0.as_str());
        println!("{}", dev::banner(gateway.local_addr(), secret, admin));
    }
    wait_for_signal().await;
    gateway.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
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
