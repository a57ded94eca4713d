//! App messages from one SDK process reach the backend in the order they were queued
//! (docs/sdk.md: sent and resent in queue order), even when the gateway refuses some of
//! the send window with a retryable error (`rate_limited`, `unavailable`) while later ones
//! are already on the wire: the gateway refuses the later ones too until the refused one
//! comes again, and the SDK resends from the head of its queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sdk_support;

use sdk_support::gateway::{Backend, APP};
use sdk_support::{wait_snapshot, Recorder, Tokens};
use std::time::Duration;
use tether::{ClientConfig, ConnectionStatus, TetherClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_refused_as_rate_limited_keep_their_order_at_the_backend() {
    let backend = Backend::start(|c| {
        c.rate_limit_per_connection = 100; // the default
        c.rate_limit_per_user = 0;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (recorder, _seen) = Recorder::new();
    let config = ClientConfig::new(backend.ws_url(), APP, "d", dir.path().to_str().unwrap());
    let sdk =
        TetherClient::new(config, recorder, Tokens::fixed(&Backend::token("u", 3600))).unwrap();
    sdk.connect();
    let mut watch = sdk.watch();
    wait_snapshot(&mut watch, Duration::from_secs(10), |s| {
        s.status == ConnectionStatus::Connected
    })
    .await;
    for n in 0..900 {
        sdk.send_message("order.test".into(), format!(r#"{{"n":{n}}}"#))
            .await
            .unwrap();
    }
    wait_snapshot(&mut watch, Duration::from_secs(120), |s| s.queued == 0).await;
    let ns: Vec<u64> = backend
        .inbound()
        .await
        .iter()
        .map(|m| m.data["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns.len(), 900);
    let inversions: Vec<(u64, u64)> = ns
        .windows(2)
        .filter(|w| w[0] > w[1])
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        inversions.is_empty(),
        "stored out of order ({} times a message was stored right before an older one): {:?}",
        inversions.len(),
        &inversions[..inversions.len().min(10)]
    );
}
