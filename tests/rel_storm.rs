//! Fault: a reconnect storm (docs/reliability.md). 500 SDK clients lose their
//! gateway at the same instant; it comes back 3 s later.
//!
//! Heavy (500 clients, 500 databases): ignored in a plain `cargo test`; run by
//! `scripts/reliability storm` and in CI (`cargo test --test rel_storm -- --ignored`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::gateway::{Backend, APP};
use sdk_support::proxy::FaultProxy;
use sdk_support::{Recorder, Tokens};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether::{ClientConfig, ConnectionStatus, TetherClient};
use tether_protocol::api::OutgoingMessage;
use tether_server::config::RedisConfig;
use tether_server::publisher::Publisher;

#[path = "../server/tests/support/redis.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod redis;

const CLIENTS: usize = 500;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Setup: Redis, one gateway behind the fault proxy, 500 SDK clients (one user each,
/// default backoff: base 500 ms, cap 30 s), all connected.
/// Fault: the gateway crashes (every socket dropped without a close frame); while it is
/// down the backend publishes one message to each user straight into Redis; a new
/// gateway starts 3 s later and the proxy leads to it.
/// Expected: every client reconnects by itself; full jitter spreads the returns over
/// seconds instead of one instant; attempts stay bounded (no hot loop: under 15 per
/// client on average); every user gets the message sent during the outage exactly once.
/// Must not lose: any of the 500 messages published during the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy: 500 SDK clients; run by scripts/reliability storm and CI"]
async fn five_hundred_clients_reconnect_spread_out_and_lose_nothing() {
    let redis = redis::RedisServer::start();
    let redis_config = RedisConfig {
        urls: vec![redis.url()],
        cluster: false,
    };
    let with_redis = |c: &mut tether_server::Config| {
        c.broker = tether_server::config::BrokerConfig::Redis(redis_config.clone())
    };
    let mut backend = Backend::start(with_redis).await;
    let proxy = FaultProxy::start(backend.addr).await;
    let dirs: Vec<tempfile::TempDir> = (0..CLIENTS).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut clients = Vec::new();
    let mut recorders = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let (recorder, _seen) = Recorder::new();
        let config = ClientConfig::new(
            proxy.ws_url(),
            APP,
            format!("storm-{i}"),
            dir.path().to_str().unwrap(),
        );
        let user = format!("storm-user-{i}");
        let client = TetherClient::new(
            config,
            recorder.clone(),
            Tokens::fixed(&Backend::token(&user, 3600)),
        )
        .unwrap();
        client.connect();
        clients.push(client);
        recorders.push(recorder);
    }
    let all_connected = |clients: &[Arc<TetherClient>]| {
        clients
            .iter()
            .filter(|c| c.status() == ConnectionStatus::Connected)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while all_connected(&clients) < CLIENTS {
        assert!(
            Instant::now() < deadline,
            "only {} of {CLIENTS} connected",
            all_connected(&clients)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted_before = proxy.accepted();

    // The crash.
    backend.gateway.take().unwrap().kill();
    proxy.cut();
    let crashed = Instant::now();
    let publisher = Publisher::connect(&redis.url()).await.unwrap();
    for i in 0..CLIENTS {
        publisher
            .send_to_user(
                APP,
                &format!("storm-user-{i}"),
                OutgoingMessage::new("storm", &serde_json::json!(i)),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(crashed.elapsed())).await;
    let restarted_backend = Backend::start(with_redis).await;
    proxy.set_upstream(restarted_backend.addr);
    let restarted = Instant::now();

    // Every client back, with its message.
    let mut back_after: Vec<Option<Duration>> = vec![None; CLIENTS];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for (i, client) in clients.iter().enumerate() {
            if back_after[i].is_none()
                && client.status() == ConnectionStatus::Connected
                && client.stats().received >= 1
            {
                back_after[i] = Some(restarted.elapsed());
            }
        }
        let done = back_after.iter().filter(|b| b.is_some()).count();
        if done == CLIENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {CLIENTS} came back with their message"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, recorder) in recorders.iter().enumerate() {
        let messages = recorder.messages();
        assert_eq!(messages.len(), 1, "client {i}: {messages:?}");
        assert_eq!(messages[0].data_json, i.to_string());
    }
    let attempts = proxy.accepted() - accepted_before;
    let mut times: Vec<Duration> = back_after.into_iter().map(Option::unwrap).collect();
    times.sort();
    let (p10, p50, p90, max) = (
        percentile(&times, 0.1),
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        *times.last().unwrap(),
    );
    // Spread, not one instant (full jitter); bounded attempts (no hot loop).
    assert!(
        p90.saturating_sub(p10) >= Duration::from_millis(200),
        "returns bunched: p10 {p10:?} p90 {p90:?}"
    );
    assert!(
        attempts < (CLIENTS as u64) * 15,
        "{attempts} connection attempts for {CLIENTS} clients"
    );
    let reconnects: u64 = clients.iter().map(|c| c.stats().reconnects).sum();
    println!(
        "storm: {CLIENTS} clients back after the restart: p10 {p10:?}, p50 {p50:?}, p90 {p90:?}, max {max:?}; {attempts} TCP attempts through the proxy ({:.1} per client); {reconnects} sessions re-established; 500/500 messages delivered once",
        attempts as f64 / CLIENTS as f64
    );
    for client in &clients {
        client.shutdown().await;
    }
}
