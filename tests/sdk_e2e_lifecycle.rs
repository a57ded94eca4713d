//! The SDK end to end against the real gateway: rooms across reconnects, the gateway's
//! "stay away" closes (kicked 4403, replaced 4409), app background/foreground and the
//! network going away, each as docs/protocol.md §4, §8 and docs/sdk.md describe.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::gateway::{Backend, APP};
use sdk_support::proxy::FaultProxy;
use sdk_support::{wait_for, wait_snapshot, Recorder, Seen, Tokens};
use std::sync::Arc;
use std::time::Duration;
use tether::{
    AppState, ClientConfig, ConnectionStatus, ErrorKind, NetworkKind, NetworkState, TetherClient,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

fn sdk(
    url: &str,
    device: &str,
    user: &str,
    tune: impl FnOnce(&mut ClientConfig),
) -> (
    Arc<TetherClient>,
    mpsc::UnboundedReceiver<Seen>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ClientConfig::new(url, APP, device, dir.path().to_str().unwrap());
    config.backoff_base_ms = 100;
    config.backoff_cap_ms = 800;
    tune(&mut config);
    let (recorder, seen) = Recorder::new();
    let client =
        TetherClient::new(config, recorder, Tokens::fixed(&Backend::token(user, 3600))).unwrap();
    (client, seen, dir)
}

async fn until(client: &TetherClient, what: impl Fn(&ConnectionStatus) -> bool) {
    let mut watch = client.watch();
    wait_snapshot(&mut watch, WAIT, |s| what(&s.status)).await;
}

async fn message_with(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    data: &str,
) -> tether::InboundMessage {
    sdk_support::message_with(seen, WAIT, data).await
}

/// Sends to the room until a member is reached (the join is asynchronous).
async fn send_to_room_when_joined(backend: &Backend, room: &str, data: serde_json::Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if backend
            .send_to_room(room, "promo", data.clone())
            .await
            .unwrap_or(0)
            >= 1
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "room never had a member"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_rejoined_after_a_reconnect() {
    let backend = Backend::start(|_| {}).await;
    let proxy = FaultProxy::start(backend.addr).await;
    let (client, mut seen, _dir) = sdk(&proxy.ws_url(), "phone-1", "rita", |_| {});
    client.join_room("lobby".into()).unwrap();
    client.connect();
    until(&client, |s| *s == ConnectionStatus::Connected).await;
    send_to_room_when_joined(&backend, "lobby", serde_json::json!(1)).await;
    let first = message_with(&mut seen, "1").await;
    assert_eq!(first.room.as_deref(), Some("lobby"));
    assert_eq!(first.seq, None);
    proxy.cut();
    until(&client, |s| *s != ConnectionStatus::Connected).await;
    until(&client, |s| *s == ConnectionStatus::Connected).await;
    send_to_room_when_joined(&backend, "lobby", serde_json::json!(2)).await;
    message_with(&mut seen, "2").await;
    client.leave_room("lobby".into()).unwrap();
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_user_stays_disconnected() {
    let backend = Backend::start(|_| {}).await;
    let (client, mut seen, _dir) = sdk(&backend.ws_url(), "phone-1", "kim", |_| {});
    client.connect();
    until(&client, |s| *s == ConnectionStatus::Connected).await;
    backend.kick("kim").await;
    let error = wait_for(&mut seen, WAIT, |e| matches!(e, Seen::Error(_))).await;
    let Seen::Error(error) = error else {
        unreachable!()
    };
    assert_eq!(error.kind(), ErrorKind::Auth);
    assert!(error.message().contains("4403"), "{}", error.message());
    until(&client, |s| *s == ConnectionStatus::Disconnected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.status(), ConnectionStatus::Disconnected);
    // The app decides: connect() brings it back.
    client.connect();
    until(&client, |s| *s == ConnectionStatus::Connected).await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_replaced_by_the_same_device_stays_down() {
    let backend = Backend::start(|_| {}).await;
    let (old, mut old_seen, _d1) = sdk(&backend.ws_url(), "phone-1", "lea", |_| {});
    old.connect();
    until(&old, |s| *s == ConnectionStatus::Connected).await;
    // The same install connects again (say, a second process after an update).
    let (new, _new_seen, _d2) = sdk(&backend.ws_url(), "phone-1", "lea", |_| {});
    new.connect();
    until(&new, |s| *s == ConnectionStatus::Connected).await;
    let error = wait_for(&mut old_seen, WAIT, |e| matches!(e, Seen::Error(_))).await;
    let Seen::Error(error) = error else {
        unreachable!()
    };
    assert!(error.message().contains("4409"), "{}", error.message());
    until(&old, |s| *s == ConnectionStatus::Disconnected).await;
    // No fight over the slot: the old one does not come back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(old.status(), ConnectionStatus::Disconnected);
    assert_eq!(new.status(), ConnectionStatus::Connected);
    old.shutdown().await;
    new.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_suspends_and_foreground_delivers_what_arrived_meanwhile() {
    let backend = Backend::start(|_| {}).await;
    let (client, mut seen, _dir) = sdk(&backend.ws_url(), "phone-1", "max", |c| {
        c.background_grace_ms = 300;
    });
    client.connect();
    until(&client, |s| *s == ConnectionStatus::Connected).await;
    client.set_app_state(AppState::Background);
    until(&client, |s| *s == ConnectionStatus::Suspended).await;
    backend
        .send_to_user("max", "order_update", serde_json::json!("while asleep"))
        .await;
    let queued = client
        .send_message("chat".into(), r#""from the background""#.into())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.status(), ConnectionStatus::Suspended);
    assert!(
        backend.inbound().await.is_empty(),
        "nothing is sent while suspended"
    );
    client.set_app_state(AppState::Foreground);
    until(&client, |s| *s == ConnectionStatus::Connected).await;
    message_with(&mut seen, r#""while asleep""#).await;
    let stored = backend.wait_inbound(1, WAIT).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, queued);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_waits_quietly_and_its_return_connects() {
    let backend = Backend::start(|_| {}).await;
    let proxy = FaultProxy::start(backend.addr).await;
    let (client, _seen, _dir) = sdk(&proxy.ws_url(), "phone-1", "ned", |_| {});
    client.connect();
    until(&client, |s| *s == ConnectionStatus::Connected).await;
    let accepted = proxy.accepted();
    client.set_network(NetworkState::down());
    until(&client, |s| *s == ConnectionStatus::WaitingForNetwork).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(proxy.accepted(), accepted, "no attempt while offline");
    client.set_network(NetworkState::up(NetworkKind::Wifi));
    until(&client, |s| *s == ConnectionStatus::Connected).await;
    assert_eq!(proxy.accepted(), accepted + 1);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_the_token_forbids_is_reported_and_not_rejoined() {
    let backend = Backend::start(|_| {}).await;
    let proxy = FaultProxy::start(backend.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ClientConfig::new(proxy.ws_url(), APP, "phone-1", dir.path().to_str().unwrap());
    config.backoff_base_ms = 100;
    config.backoff_cap_ms = 800;
    let mut claims = tether_server::auth::Claims::new("rita", &[APP], 3600);
    claims.rooms = Some(vec!["lobby".into()]);
    let token = tether_server::auth::mint_token(sdk_support::gateway::SECRET.as_bytes(), &claims);
    let (recorder, mut seen) = Recorder::new();
    let client = TetherClient::new(config, recorder.clone(), Tokens::fixed(&token)).unwrap();
    client.join_room("admin".into()).unwrap();
    client.join_room("lobby".into()).unwrap();
    client.connect();
    let refused = wait_for(&mut seen, WAIT, |e| matches!(e, Seen::Error(_))).await;
    let Seen::Error(error) = refused else {
        unreachable!()
    };
    assert_eq!(error.kind(), ErrorKind::Auth);
    assert!(
        error.message().contains("room admin refused"),
        "{}",
        error.message()
    );
    send_to_room_when_joined(&backend, "lobby", serde_json::json!(1)).await;
    message_with(&mut seen, "1").await;
    // After a reconnect only the allowed room is joined again: no second refusal.
    proxy.cut();
    until(&client, |s| *s != ConnectionStatus::Connected).await;
    until(&client, |s| *s == ConnectionStatus::Connected).await;
    send_to_room_when_joined(&backend, "lobby", serde_json::json!(2)).await;
    message_with(&mut seen, "2").await;
    let refusals = recorder
        .all
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Seen::Error(err) if err.message().contains("room admin")))
        .count();
    assert_eq!(refusals, 1);
    client.shutdown().await;
}
