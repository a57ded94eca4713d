//! The SDK end to end against the real gateway (embedded broker), through a
//! fault-injecting TCP proxy: delivery both ways, exactly once; cut and black-holed
//! sockets; token expiry; a gateway restart. Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::gateway::{Backend, Inbound, APP};
use sdk_support::proxy::{FaultProxy, Mode};
use sdk_support::{wait_for, wait_snapshot, Recorder, Seen, Tokens};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tether::{ClientConfig, ConnectionStatus, TetherClient};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

struct Sdk {
    client: Arc<TetherClient>,
    recorder: Arc<Recorder>,
    seen: mpsc::UnboundedReceiver<Seen>,
    tokens: Arc<Tokens>,
    _dir: tempfile::TempDir,
}

fn sdk(url: &str, device: &str, tokens: Arc<Tokens>) -> Sdk {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ClientConfig::new(url, APP, device, dir.path().to_str().unwrap());
    config.backoff_base_ms = 100;
    config.backoff_cap_ms = 800;
    config.connect_timeout_ms = 1_500;
    let (recorder, seen) = Recorder::new();
    // The production constructor: the SDK's own runtime and the WebSocket transport.
    let client = TetherClient::new(config, recorder.clone(), tokens.clone()).unwrap();
    Sdk {
        client,
        recorder,
        seen,
        tokens,
        _dir: dir,
    }
}

impl Sdk {
    async fn until(&self, what: impl Fn(&ConnectionStatus) -> bool) {
        let mut watch = self.client.watch();
        wait_snapshot(&mut watch, WAIT, |s| what(&s.status)).await;
    }

    async fn connected(&self) {
        self.until(|s| *s == ConnectionStatus::Connected).await;
    }

    async fn send(&self, n: usize) -> String {
        self.client
            .send_message("chat.message".into(), format!(r#"{{"n":{n}}}"#))
            .await
            .unwrap()
    }

    async fn all_acked(&self) {
        let mut watch = self.client.watch();
        wait_snapshot(&mut watch, WAIT, |s| s.queued == 0).await;
    }
}

/// Every id exactly once, in the order sent.
fn assert_exactly_once(stored: &[Inbound], sent: &[String]) {
    let ids: Vec<&str> = stored.iter().map(|m| m.id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates stored: {ids:?}");
    let expected: Vec<&str> = sent.iter().map(String::as_str).collect();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_messages_reach_the_backend_once_and_are_acked() {
    let backend = Backend::start(|_| {}).await;
    let mut s = sdk(
        &backend.ws_url(),
        "phone-1",
        Tokens::fixed(&Backend::token("alice", 3600)),
    );
    s.client.connect();
    s.connected().await;
    let mut sent = Vec::new();
    for n in 0..10 {
        sent.push(s.send(n).await);
    }
    s.all_acked().await;
    let stored = backend.wait_inbound(10, WAIT).await;
    assert_exactly_once(&stored, &sent);
    assert!(stored.iter().all(|m| m.user == "alice"
        && m.device.as_deref() == Some("phone-1")
        && m.kind == "chat.message"));
    assert_eq!(stored[3].data, serde_json::json!({"n": 3}));
    let last = sent[9].clone();
    wait_for(&mut s.seen, WAIT, |e| *e == Seen::Ack(last.clone())).await;
    assert_eq!(s.recorder.acks(), sent);
    let stats = s.client.stats();
    assert_eq!(stats.acked, 10);
    assert_eq!(stats.queued, 0);
    assert!(stats.connected_for_ms.is_some());
    s.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_messages_arrive_once_in_order_and_resume_after_the_cursor() {
    let backend = Backend::start(|_| {}).await;
    let mut s = sdk(
        &backend.ws_url(),
        "phone-1",
        Tokens::fixed(&Backend::token("bob", 3600)),
    );
    s.client.connect();
    s.connected().await;
    for n in 1..=3 {
        backend
            .send_to_user("bob", "order_update", serde_json::json!({"n": n}))
            .await;
    }
    wait_for(
        &mut s.seen,
        WAIT,
        |e| matches!(e, Seen::Message(m) if m.seq == Some(3)),
    )
    .await;
    // Offline: the inbox keeps what is sent meanwhile.
    s.client.disconnect();
    s.until(|st| *st == ConnectionStatus::Disconnected).await;
    for n in 4..=5 {
        backend
            .send_to_user("bob", "order_update", serde_json::json!({"n": n}))
            .await;
    }
    s.client.connect();
    wait_for(
        &mut s.seen,
        WAIT,
        |e| matches!(e, Seen::Message(m) if m.seq == Some(5)),
    )
    .await;
    // A reconnect replays nothing already processed.
    s.client.reconnect();
    s.connected().await;
    backend
        .send_to_user("bob", "order_update", serde_json::json!({"n": 6}))
        .await;
    wait_for(
        &mut s.seen,
        WAIT,
        |e| matches!(e, Seen::Message(m) if m.seq == Some(6)),
    )
    .await;
    let messages = s.recorder.messages();
    let seqs: Vec<u64> = messages.iter().filter_map(|m| m.seq).collect();
    let data: Vec<String> = messages.iter().map(|m| m.data_json.clone()).collect();
    assert_eq!(seqs.len(), 6, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(data[0], r#"{"n":1}"#);
    assert_eq!(data[5], r#"{"n":6}"#);
    assert_eq!(messages[0].r#type, "order_update");
    assert!(messages.iter().all(|m| !m.id.is_empty() && m.ts > 0));
    s.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_reconnect_and_resend_without_duplicates() {
    let backend = Backend::start(|_| {}).await;
    let proxy = FaultProxy::start(backend.addr).await;
    let s = sdk(
        &proxy.ws_url(),
        "phone-1",
        Tokens::fixed(&Backend::token("carol", 3600)),
    );
    s.client.connect();
    s.connected().await;
    let mut sent = Vec::new();
    for round in 0..4 {
        for n in 0..8 {
            sent.push(s.send(round * 8 + n).await);
        }
        // Cut while some are in flight (sent, not yet acked).
        proxy.cut();
        s.until(|st| *st != ConnectionStatus::Connected).await;
        s.connected().await;
    }
    s.all_acked().await;
    let stored = backend.wait_inbound(sent.len(), WAIT).await;
    assert_exactly_once(&stored, &sent);
    let stats = s.client.stats();
    assert!(stats.reconnects >= 4, "{stats:?}");
    assert!(proxy.accepted() >= 5);
    s.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_is_found_dead_by_the_heartbeat() {
    let backend = Backend::start(|c| c.heartbeat_interval_ms = 500).await;
    let proxy = FaultProxy::start(backend.addr).await;
    let mut s = sdk(
        &proxy.ws_url(),
        "phone-1",
        Tokens::fixed(&Backend::token("dave", 3600)),
    );
    s.client.connect();
    s.connected().await;
    proxy.set_mode(Mode::BlackHole);
    // Nothing closes the socket; only the missing pongs tell.
    wait_for(
        &mut s.seen,
        WAIT,
        |e| matches!(e, Seen::Error(err) if err.message().contains("heartbeat")),
    )
    .await;
    assert!(matches!(
        s.client.status(),
        ConnectionStatus::Reconnecting { .. } | ConnectionStatus::Connecting
    ));
    let id = s.send(1).await;
    proxy.set_mode(Mode::Pass);
    s.connected().await;
    s.all_acked().await;
    let stored = backend.wait_inbound(1, WAIT).await;
    assert_exactly_once(&stored, &[id]);
    s.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_still_delivers_everything_once() {
    let backend = Backend::start(|_| {}).await;
    let proxy = FaultProxy::start(backend.addr).await;
    proxy.set_mode(Mode::Delay(Duration::from_millis(150)));
    let s = sdk(
        &proxy.ws_url(),
        "phone-1",
        Tokens::fixed(&Backend::token("erin", 3600)),
    );
    s.client.connect();
    s.connected().await;
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(s.send(n).await);
    }
    s.all_acked().await;
    assert_exactly_once(&backend.wait_inbound(5, WAIT).await, &sent);
    s.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refreshed_on_the_open_connection_without_reconnecting() {
    let backend = Backend::start(|c| c.jwt.leeway_s = 0).await;
    let tokens = Tokens::script(vec![
        // Minted up front, 7-8 s left: the SDK refreshes when a fifth of what it is told
        // at connection is left (below 2 s left it would not try).
        Some(Backend::token("frank", 8)),
        Some(Backend::token("frank", 3600)),
    ]);
    let s = sdk(&backend.ws_url(), "phone-1", tokens);
    s.client.connect();
    s.connected().await;
    // Past the first token's exp: the SDK sent the second one before it ran out.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let stats = s.client.stats();
    assert_eq!(stats.status, ConnectionStatus::Connected);
    assert_eq!(stats.reconnects, 0);
    assert_eq!(s.tokens.calls(), 2);
    let id = s.send(1).await;
    s.all_acked().await;
    assert_exactly_once(&backend.wait_inbound(1, WAIT).await, &[id]);
    s.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_closes_with_4001_and_a_fresh_token_reconnects() {
    let backend = Backend::start(|c| c.jwt.leeway_s = 0).await;
    let tokens = Tokens::script(vec![
        Some(Backend::token("frank", 8)),
        // The refresh before exp hands over another user's token: the gateway refuses
        // it, so the first token's exp still ends the connection.
        Some(Backend::token("mallory", 3600)),
        Some(Backend::token("frank", 3600)),
    ]);
    let mut s = sdk(&backend.ws_url(), "phone-1", tokens);
    s.client.connect();
    s.connected().await;
    wait_for(&mut s.seen, WAIT, |e| {
        matches!(e, Seen::Status(ConnectionStatus::Connected))
    })
    .await;
    // The gateway closes at `exp`; the SDK asks for a token again and is back.
    wait_for(&mut s.seen, WAIT, |e| {
        matches!(e, Seen::Status(ConnectionStatus::Connecting))
    })
    .await;
    let mut watch = s.client.watch();
    wait_snapshot(&mut watch, WAIT, |snap| {
        snap.reconnects == 1 && snap.status == ConnectionStatus::Connected
    })
    .await;
    assert_eq!(s.tokens.calls(), 3);
    let id = s.send(1).await;
    s.all_acked().await;
    assert_exactly_once(&backend.wait_inbound(1, WAIT).await, &[id]);
    s.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_refetched_and_a_signed_out_user_stops() {
    let backend = Backend::start(|_| {}).await;
    let tokens = Tokens::script(vec![Some("not-a-jwt".into()), None]);
    let s = sdk(&backend.ws_url(), "phone-1", tokens);
    s.client.connect();
    s.until(|st| matches!(st, ConnectionStatus::Failed { .. }))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.tokens.calls(),
        2,
        "one refetch after the 401, then nothing"
    );
    s.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restart_loses_nothing_queued_meanwhile() {
    let mut first = Backend::start(|_| {}).await;
    let proxy = FaultProxy::start(first.addr).await;
    let mut s = sdk(
        &proxy.ws_url(),
        "phone-1",
        Tokens::fixed(&Backend::token("gina", 3600)),
    );
    s.client.connect();
    s.connected().await;
    let before = s.send(0).await;
    s.all_acked().await;
    assert_exactly_once(&first.wait_inbound(1, WAIT).await, &[before]);
    for n in 0..3 {
        first
            .send_to_user("gina", "order_update", serde_json::json!({"n": n}))
            .await;
    }
    wait_for(
        &mut s.seen,
        WAIT,
        |e| matches!(e, Seen::Message(m) if m.seq == Some(3)),
    )
    .await;
    // Graceful shutdown: 1012, the SDK comes straight back and finds nobody.
    first.shutdown().await;
    s.until(|st| matches!(st, ConnectionStatus::Reconnecting { .. }))
        .await;
    let mut sent = Vec::new();
    for n in 1..=5 {
        sent.push(s.send(n).await);
    }
    assert_eq!(s.client.stats().queued, 5);
    let second = Backend::start(|_| {}).await;
    proxy.set_upstream(second.addr);
    s.connected().await;
    s.all_acked().await;
    // The new node stores each queued message once, and nothing acked before.
    assert_exactly_once(&second.wait_inbound(5, WAIT).await, &sent);
    // Its inbox (embedded broker) counts from seq 1 again, below the client's cursor of
    // 3: the gateway ignores the stale `since` and the client follows the new sequence
    // instead of dropping the messages as duplicates.
    for n in ["after-1", "after-2"] {
        second
            .send_to_user("gina", "order_update", serde_json::json!({"n": n}))
            .await;
    }
    wait_for(
        &mut s.seen,
        WAIT,
        |e| matches!(e, Seen::Message(m) if m.data_json == r#"{"n":"after-2"}"#),
    )
    .await;
    let after: Vec<(Option<u64>, String)> = s
        .recorder
        .messages()
        .into_iter()
        .filter(|m| m.data_json.contains("after"))
        .map(|m| (m.seq, m.data_json))
        .collect();
    assert_eq!(
        after,
        [
            (Some(1), r#"{"n":"after-1"}"#.to_owned()),
            (Some(2), r#"{"n":"after-2"}"#.to_owned())
        ]
    );
    s.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_is_noticed_without_a_close_frame() {
    let mut backend = Backend::start(|_| {}).await;
    let s = sdk(
        &backend.ws_url(),
        "phone-1",
        Tokens::fixed(&Backend::token("hal", 3600)),
    );
    s.client.connect();
    s.connected().await;
    backend.gateway.take().unwrap().kill();
    s.until(|st| matches!(st, ConnectionStatus::Reconnecting { .. }))
        .await;
    s.client.disconnect();
    s.until(|st| *st == ConnectionStatus::Disconnected).await;
    s.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_presence_lists_everyone_in_the_room() {
    let backend = Backend::start(|_| {}).await;
    let a = sdk(
        &backend.ws_url(),
        "phone-a",
        Tokens::fixed(&Backend::token("alice", 3600)),
    );
    let b = sdk(
        &backend.ws_url(),
        "phone-b",
        Tokens::fixed(&Backend::token("bob", 3600)),
    );
    for s in [&a, &b] {
        s.client.join_room("lobby".into()).unwrap();
        s.client.connect();
        s.connected().await;
    }
    // The joins go out right after connecting: ask until the gateway counts both.
    let presence = tokio::time::timeout(WAIT, async {
        loop {
            let presence = a.client.room_presence("lobby".into()).await.unwrap();
            if presence.users == 2 {
                return presence;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both users in the room");
    assert_eq!(presence.room, "lobby");
    assert_eq!(presence.connections, 2);
    assert!(presence.members.iter().all(|m| m.connection_ids.len() == 1));
    assert!(!presence.truncated);
    let members: Vec<(&str, u32)> = presence
        .members
        .iter()
        .map(|m| (m.user_id.as_str(), m.connections))
        .collect();
    assert_eq!(members, [("alice", 1), ("bob", 1)]);
    // Only members see who is in a room.
    let e = b
        .client
        .room_presence("elsewhere".into())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), tether::ErrorKind::Auth);
    assert!(e.message().contains("join the room first"), "{e}");
    a.client.shutdown().await;
    b.client.shutdown().await;
}

#[tokio::test]
async fn join_and_leave_events_arrive_as_room_messages() {
    let backend = Backend::start(|c| c.presence_events = vec!["lobby".into()]).await;
    let mut a = sdk(
        &backend.ws_url(),
        "phone-a",
        Tokens::fixed(&Backend::token("alice", 3600)),
    );
    a.client.join_room("lobby".into()).unwrap();
    a.client.connect();
    a.connected().await;
    let b = sdk(
        &backend.ws_url(),
        "phone-b",
        Tokens::fixed(&Backend::token("bob", 3600)),
    );
    b.client.join_room("lobby".into()).unwrap();
    b.client.connect();
    let event = |kind: &'static str| {
        move |e: &Seen| {
            matches!(e, Seen::Message(m) if m.r#type == kind
                && m.room.as_deref() == Some("lobby")
                && m.data_json.contains(r#""userId":"bob""#))
        }
    };
    let Seen::Message(joined) = wait_for(&mut a.seen, WAIT, event("presence_joined")).await else {
        unreachable!("wait_for returns what matched")
    };
    // The event names the connection the way room_presence lists it.
    let data: serde_json::Value = serde_json::from_str(&joined.data_json).unwrap();
    let presence = a.client.room_presence("lobby".into()).await.unwrap();
    let bob = presence
        .members
        .iter()
        .find(|m| m.user_id == "bob")
        .expect("bob listed");
    assert_eq!(bob.connection_ids, [data["connectionId"].as_str().unwrap()]);
    b.client.shutdown().await;
    wait_for(&mut a.seen, WAIT, event("presence_left")).await;
    a.client.shutdown().await;
}
