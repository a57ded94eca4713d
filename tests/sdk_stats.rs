//! `stats()` tells the truth from the first call: a client opened on a storage directory
//! that holds unsent messages counts them before it ever connects.

#![allow(clippy::unwrap_used)]

mod sdk_support;

use sdk_support::{Recorder, Tokens};
use tether::{ClientConfig, TetherClient};

fn client(dir: &std::path::Path) -> std::sync::Arc<TetherClient> {
    // Nothing listens there, and connect() is never called.
    let config = ClientConfig::new(
        "ws://127.0.0.1:9/ws",
        "shop",
        "phone-1",
        dir.to_str().unwrap(),
    );
    let (recorder, _seen) = Recorder::new();
    TetherClient::new(config, recorder, Tokens::fixed("unused")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_on_disk_are_counted_right_after_construction() {
    let dir = tempfile::tempdir().unwrap();
    let first = client(dir.path());
    first
        .send_message("chat".into(), r#"{"n":1}"#.into())
        .await
        .unwrap();
    first
        .send_message("chat".into(), r#"{"n":2}"#.into())
        .await
        .unwrap();
    first.shutdown().await;
    drop(first);
    let second = client(dir.path());
    let stats = second.stats();
    assert_eq!(stats.queued, 2);
    assert!(stats.oldest_queued_age_ms.is_some());
    second.shutdown().await;
}
