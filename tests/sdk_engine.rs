//! The engine against a scripted gateway, on tokio's paused clock: reconnect timing,
//! heartbeat death, suspension probes, token rules, lifecycle, queue resend and the inbox
//! cursor. Time only moves when every task waits, so each test is exact and instant.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::{
    query, wait_for, wait_snapshot, FakeSocket, Recorder, ScriptedGateway, Seen, Tokens,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tether::engine::backoff::Backoff;
use tether::transport::{ConnectError, SocketCommand};
use tether::{
    AppState, ClientConfig, ConnectionStatus, ErrorKind, NetworkKind, NetworkState, SendOptions,
    StartOptions, TetherClient, TetherError,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(3600);

struct Harness {
    client: TetherClient,
    gateway: Arc<ScriptedGateway>,
    sockets: mpsc::UnboundedReceiver<FakeSocket>,
    recorder: Arc<Recorder>,
    seen: mpsc::UnboundedReceiver<Seen>,
    tokens: Arc<Tokens>,
    _dir: tempfile::TempDir,
}

fn config(dir: &tempfile::TempDir) -> ClientConfig {
    ClientConfig::new(
        "ws://gateway.test/ws",
        "shoofi-app",
        "device-1",
        dir.path().to_str().unwrap(),
    )
}

fn start_with(config: ClientConfig, dir: tempfile::TempDir, tokens: Arc<Tokens>) -> Harness {
    let (gateway, sockets) = ScriptedGateway::new();
    let (recorder, seen) = Recorder::new();
    let client = TetherClient::start(
        config,
        recorder.clone(),
        tokens.clone(),
        &tokio::runtime::Handle::current(),
        StartOptions {
            connector: Some(gateway.clone()),
            seed: Some(7),
        },
    )
    .unwrap();
    Harness {
        client,
        gateway,
        sockets,
        recorder,
        seen,
        tokens,
        _dir: dir,
    }
}

fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    start_with(config(&dir), dir, Tokens::fixed("token-1"))
}

impl Harness {
    async fn socket(&mut self) -> FakeSocket {
        tokio::time::timeout(LONG, self.sockets.recv())
            .await
            .expect("no connection attempt")
            .unwrap()
    }

    async fn connected(&mut self, heartbeat_ms: u64) -> FakeSocket {
        let socket = self.socket().await;
        socket.establish(heartbeat_ms).await;
        self.status(|s| *s == ConnectionStatus::Connected).await;
        socket
    }

    async fn status(&mut self, pred: impl Fn(&ConnectionStatus) -> bool) {
        let mut watch = self.client.watch();
        wait_snapshot(&mut watch, LONG, |s| pred(&s.status)).await;
    }
}

fn network_error() -> ConnectError {
    ConnectError::Network("connection refused".into())
}

#[tokio::test(start_paused = true)]
async fn reconnect_attempts_follow_the_full_jitter_schedule() {
    let mut h = start();
    h.gateway
        .refuse(std::iter::repeat_with(network_error).take(8));
    h.client.connect();
    let _socket = h.socket().await; // the ninth attempt is accepted
    let times = h.gateway.attempt_times();
    assert_eq!(times.len(), 9);
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    for (n, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(
            gap <= backoff.ceiling(n as u32),
            "gap {n} was {gap:?}, above {:?}",
            backoff.ceiling(n as u32)
        );
    }
    let statuses = h.recorder.statuses();
    let attempts: Vec<u32> = statuses
        .iter()
        .filter_map(|s| match s {
            ConnectionStatus::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, (1..=8).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn the_token_goes_in_the_request_and_the_cursor_in_since() {
    let mut h = start();
    h.client.connect();
    let socket = h.socket().await;
    assert_eq!(socket.request.token, "token-1");
    assert_eq!(query(&socket.request, "app").as_deref(), Some("shoofi-app"));
    assert_eq!(
        query(&socket.request, "device").as_deref(),
        Some("device-1")
    );
    assert_eq!(query(&socket.request, "since").as_deref(), Some("0"));
}

#[tokio::test(start_paused = true)]
async fn a_silent_socket_is_dead_after_two_heartbeat_intervals() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(10_000).await;
    let established_at = Instant::now();
    // The client pings on the interval the gateway announced.
    let ping = socket.next_of("ping").await;
    assert_eq!(Instant::now() - established_at, Duration::from_secs(10));
    assert!(ping["data"]["ts"].is_u64());
    // Nobody answers: after 20 s of silence the client gives up on the socket.
    let next = h.socket().await;
    let gap = next.at - established_at;
    assert!(
        gap >= Duration::from_secs(20) && gap <= Duration::from_millis(20_500),
        "{gap:?}"
    );
    assert!(h.recorder.all.lock().unwrap().iter().any(
        |s| matches!(s, Seen::Error(e) if e.kind() == ErrorKind::Network && e.message().contains("heartbeat"))
    ));
}

#[tokio::test(start_paused = true)]
async fn pongs_keep_the_session_and_give_the_rtt() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(10_000).await;
    for _ in 0..5 {
        let ping = socket.next_of("ping").await;
        tokio::time::advance(Duration::from_millis(80)).await;
        socket
            .send(&format!(
                r#"{{"type":"pong","data":{{"ts":{},"serverTs":1}}}}"#,
                ping["data"]["ts"]
            ))
            .await;
    }
    let mut watch = h.client.watch();
    wait_snapshot(&mut watch, LONG, |s| s.last_rtt.is_some()).await;
    let stats = h.client.stats();
    assert_eq!(stats.status, ConnectionStatus::Connected);
    assert_eq!(stats.last_rtt_ms, Some(80));
    assert_eq!(h.gateway.attempt_times().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn after_a_suspension_the_socket_must_answer_a_probe_quickly() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(30_000).await;
    // The process is frozen for five minutes (no task runs while the clock moves).
    tokio::time::advance(Duration::from_secs(300)).await;
    let resumed = Instant::now();
    let ping = socket.next_of("ping").await;
    assert_eq!(Instant::now(), resumed, "the probe goes out at once");
    let _ = ping;
    // No answer: dead within the probe deadline, long before two intervals.
    let next = h.socket().await;
    let gap = next.at - resumed;
    assert!(gap <= Duration::from_millis(5_500), "{gap:?}");
}

#[tokio::test(start_paused = true)]
async fn an_answered_probe_keeps_the_session_after_a_suspension() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(30_000).await;
    tokio::time::advance(Duration::from_secs(300)).await;
    let ping = socket.next_of("ping").await;
    socket
        .send(&format!(
            r#"{{"type":"pong","data":{{"ts":{},"serverTs":1}}}}"#,
            ping["data"]["ts"]
        ))
        .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(h.client.status(), ConnectionStatus::Connected);
    assert_eq!(h.gateway.attempt_times().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn signed_out_fails_and_never_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start_with(config(&dir), dir, Tokens::script(vec![None]));
    h.client.connect();
    h.status(|s| matches!(s, ConnectionStatus::Failed { .. }))
        .await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(h.tokens.calls(), 1);
    assert!(h.gateway.attempt_times().is_empty());
    assert_eq!(h.client.last_error().unwrap().kind(), ErrorKind::Auth);
}

#[tokio::test(start_paused = true)]
async fn close_4001_asks_for_a_fresh_token_and_reconnects_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::script(vec![Some("old".into()), Some("fresh".into())]);
    let mut h = start_with(config(&dir), dir, tokens);
    h.client.connect();
    let socket = h.connected(30_000).await;
    assert_eq!(socket.request.token, "old");
    let closed_at = Instant::now();
    socket.close(Some(4001)).await;
    let next = h.socket().await;
    assert_eq!(next.request.token, "fresh");
    assert_eq!(next.at, closed_at, "no backoff before the fresh attempt");
    assert_eq!(h.tokens.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_401_gets_one_fresh_token_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::script(vec![Some("expired".into()), Some("fresh".into())]);
    let mut h = start_with(config(&dir), dir, tokens);
    h.gateway.refuse([ConnectError::Refused {
        status: 401,
        code: Some(tether::protocol::HttpErrorCode::TokenExpired),
        message: "token expired".into(),
        retry_after: None,
    }]);
    h.client.connect();
    let socket = h.socket().await;
    assert_eq!(socket.request.token, "fresh");
    let times = h.gateway.attempt_times();
    assert_eq!(times[1], times[0]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_token_provider_is_reported_with_its_reason_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start_with(
        config(&dir),
        dir,
        Tokens::failing_first(2, "token-after-outage"),
    );
    h.client.connect();
    let socket = h.socket().await;
    assert_eq!(socket.request.token, "token-after-outage");
    assert_eq!(h.tokens.calls(), 3);
    let all = h.recorder.all.lock().unwrap();
    let errors: Vec<&TetherError> = all
        .iter()
        .filter_map(|seen| match seen {
            Seen::Error(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for error in errors {
        assert_eq!(error.kind(), ErrorKind::Auth);
        assert!(
            error.message().contains("token service unavailable"),
            "{}",
            error.message()
        );
    }
    assert!(all
        .iter()
        .any(|seen| matches!(seen, Seen::Status(ConnectionStatus::Reconnecting { .. }))));
}

#[tokio::test(start_paused = true)]
async fn replaced_or_kicked_connections_stay_down() {
    for code in [4409u16, 4403] {
        let mut h = start();
        h.client.connect();
        let socket = h.connected(30_000).await;
        socket.close(Some(code)).await;
        h.status(|s| *s == ConnectionStatus::Disconnected).await;
        tokio::time::sleep(LONG).await;
        assert_eq!(h.gateway.attempt_times().len(), 1, "{code}");
        h.client.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarting_node_is_rejoined_within_the_base_delay() {
    let mut h = start();
    h.client.connect();
    let socket = h.connected(30_000).await;
    let closed_at = Instant::now();
    socket.close(Some(1012)).await;
    let next = h.socket().await;
    assert!(next.at - closed_at <= Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn offline_means_no_attempts_and_the_network_returning_connects_at_once() {
    let mut h = start();
    h.gateway
        .refuse(std::iter::repeat_with(network_error).take(6));
    h.client.connect();
    h.status(|s| matches!(s, ConnectionStatus::Reconnecting { attempt: 3, .. }))
        .await;
    h.client.set_network(NetworkState::down());
    h.status(|s| *s == ConnectionStatus::WaitingForNetwork)
        .await;
    let before = h.gateway.attempt_times().len();
    tokio::time::sleep(LONG).await;
    assert_eq!(
        h.gateway.attempt_times().len(),
        before,
        "no attempt while offline"
    );
    let back = Instant::now();
    h.client
        .set_network(NetworkState::up(NetworkKind::Cellular));
    h.status(|s| matches!(s, ConnectionStatus::Reconnecting { attempt: 1, .. }))
        .await;
    assert_eq!(h.gateway.attempt_times()[before], back);
}

#[tokio::test(start_paused = true)]
async fn background_disconnects_after_the_grace_period_and_foreground_reconnects_at_once() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    h.client.set_app_state(AppState::Background);
    let backgrounded = Instant::now();
    // The gateway sees a clean close once the grace period ends.
    loop {
        match socket.from_client.recv().await.unwrap() {
            SocketCommand::Close(code) => {
                assert_eq!(code, 1000);
                break;
            }
            SocketCommand::Text(_) => {}
        }
    }
    assert_eq!(Instant::now() - backgrounded, Duration::from_secs(30));
    h.status(|s| *s == ConnectionStatus::Suspended).await;
    tokio::time::sleep(LONG).await;
    assert_eq!(h.gateway.attempt_times().len(), 1);
    let foreground = Instant::now();
    h.client.set_app_state(AppState::Foreground);
    let next = h.socket().await;
    assert_eq!(next.at, foreground);
}

#[tokio::test(start_paused = true)]
async fn queued_messages_are_resent_in_order_after_a_reconnect_until_acked() {
    let mut h = start();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            h.client
                .send_message("chat".into(), format!(r#"{{"n":{n}}}"#))
                .await
                .unwrap(),
        );
    }
    assert_eq!(h.client.stats().queued, 3);
    h.client.connect();
    let mut socket = h.connected(30_000).await;
    let mut sent = Vec::new();
    for _ in 0..3 {
        let frame = socket.next_of("chat").await;
        sent.push(frame["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(sent, ids);
    socket
        .send(&format!(r#"{{"type":"ack","data":{{"id":"{}"}}}}"#, ids[0]))
        .await;
    wait_for(&mut h.seen, LONG, |s| *s == Seen::Ack(ids[0].clone())).await;
    // The socket dies before the other acks.
    socket.close(None).await;
    let mut socket = h.connected(30_000).await;
    let again = [socket.next_of("chat").await, socket.next_of("chat").await];
    assert_eq!(again[0]["id"], ids[1].as_str());
    assert_eq!(again[1]["id"], ids[2].as_str());
    assert_eq!(again[0]["data"]["n"], 1);
    for id in &ids[1..] {
        socket
            .send(&format!(r#"{{"type":"ack","data":{{"id":"{id}"}}}}"#))
            .await;
    }
    let mut watch = h.client.watch();
    wait_snapshot(&mut watch, LONG, |s| s.queued == 0).await;
    let stats = h.client.stats();
    assert_eq!(stats.acked, 3);
    assert_eq!(stats.sent, 5);
    assert_eq!(stats.reconnects, 1);
    wait_for(&mut h.seen, LONG, |s| *s == Seen::Ack(ids[2].clone())).await;
    assert_eq!(h.recorder.acks(), ids);
}

#[tokio::test(start_paused = true)]
async fn messages_the_gateway_could_not_store_are_resent() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(30_000).await;
    let id = h
        .client
        .send_message("chat".into(), "{}".into())
        .await
        .unwrap();
    socket.next_of("chat").await;
    socket
        .send(&format!(
            r#"{{"type":"error","data":{{"code":"unavailable","message":"redis down","ref":"{id}"}}}}"#
        ))
        .await;
    let again = socket.next_of("chat").await;
    assert_eq!(again["id"], id.as_str());
    assert_eq!(h.client.stats().queued, 1);
}

#[tokio::test(start_paused = true)]
async fn messages_the_gateway_refuses_for_good_are_dropped_and_reported() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(30_000).await;
    let id = h
        .client
        .send_message("chat".into(), "{}".into())
        .await
        .unwrap();
    socket.next_of("chat").await;
    socket
        .send(&format!(
            r#"{{"type":"error","data":{{"code":"invalid_message","message":"no","ref":"{id}"}}}}"#
        ))
        .await;
    let seen = wait_for(&mut h.seen, LONG, |s| matches!(s, Seen::Error(_))).await;
    let Seen::Error(e) = seen else { unreachable!() };
    assert_eq!(e.kind(), ErrorKind::InvalidMessage);
    assert!(e.message().contains(&id));
    assert_eq!(h.client.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn the_send_window_bounds_unacked_messages() {
    let mut h = start();
    for n in 0..40 {
        h.client
            .send_message("chat".into(), format!("{n}"))
            .await
            .unwrap();
    }
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    let mut first = Vec::new();
    for _ in 0..tether::client::SEND_WINDOW {
        first.push(socket.next_of("chat").await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(socket.from_client.try_recv().is_err(), "window exceeded");
    socket
        .send(&format!(
            r#"{{"type":"ack","data":{{"id":{}}}}}"#,
            first[0]["id"]
        ))
        .await;
    let next = socket.next_of("chat").await;
    assert_eq!(next["data"], 32);
}

#[tokio::test(start_paused = true)]
async fn inbox_messages_arrive_once_and_the_cursor_follows_the_listener() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    for seq in [1u64, 2, 2, 1, 3] {
        socket
            .send(&format!(
                r#"{{"type":"order_update","id":"m{seq}","seq":{seq},"data":{{"seq":{seq}}},"ts":5}}"#
            ))
            .await;
    }
    socket
        .send(r#"{"type":"promo","id":"r1","room":"lobby","data":null,"ts":6}"#)
        .await;
    // Acks are cumulative and follow the listener.
    let mut acked = 0;
    while acked < 3 {
        let ack = socket.next_of("ack").await;
        acked = ack["data"]["seq"].as_u64().unwrap();
    }
    let messages = h.recorder.messages();
    let seqs: Vec<Option<u64>> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [Some(1), Some(2), Some(3), None]);
    assert_eq!(messages[0].data_json, r#"{"seq":1}"#);
    assert_eq!(messages[3].room.as_deref(), Some("lobby"));
    assert_eq!(h.client.stats().duplicates_dropped, 2);
    assert_eq!(h.client.last_message().unwrap().id, "r1");
    // The next connection resumes after the cursor.
    socket.close(Some(1012)).await;
    let next = h.socket().await;
    assert_eq!(query(&next.request, "since").as_deref(), Some("3"));
}

#[tokio::test(start_paused = true)]
async fn rooms_are_joined_again_after_every_reconnect() {
    let mut h = start();
    h.client.join_room("orders:1".into()).unwrap();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    assert_eq!(
        socket.next_of("join_room").await["data"]["room"],
        "orders:1"
    );
    h.client.join_room("lobby".into()).unwrap();
    assert_eq!(socket.next_of("join_room").await["data"]["room"], "lobby");
    h.client.leave_room("orders:1".into()).unwrap();
    assert_eq!(
        socket.next_of("leave_room").await["data"]["room"],
        "orders:1"
    );
    socket.close(Some(1012)).await;
    let mut socket = h.connected(600_000).await;
    assert_eq!(socket.next_of("join_room").await["data"]["room"], "lobby");
    assert!(h.client.join_room("bad room".into()).is_err());
}

#[tokio::test(start_paused = true)]
async fn send_message_refuses_what_the_gateway_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.max_message_bytes = 300;
    cfg.max_queued_messages = 2;
    let h = start_with(cfg, dir, Tokens::fixed("t"));
    for (kind, data) in [
        ("Chat", "{}"),
        ("ack", "{}"),
        ("pong", "{}"),
        ("chat", "{not json"),
        ("chat", &*format!("\"{}\"", "x".repeat(400))),
        // 64 levels in the data are 65 in the frame, one more than the gateway takes.
        ("chat", &*format!("{}{}", "[".repeat(64), "]".repeat(64))),
    ] {
        let e = h
            .client
            .send_message(kind.into(), data.into())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidMessage, "{kind} {data}");
    }
    h.client
        .send_message("chat".into(), "1".into())
        .await
        .unwrap();
    h.client
        .send_message("chat".into(), "2".into())
        .await
        .unwrap();
    let e = h
        .client
        .send_message("chat".into(), "3".into())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QueueFull);
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_the_database_and_later_calls_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let h = start_with(config(&dir), dir, Tokens::fixed("t"));
    let id = h
        .client
        .send_message("chat".into(), "1".into())
        .await
        .unwrap();
    h.client.shutdown().await;
    let e = h
        .client
        .send_message("chat".into(), "2".into())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shutdown);
    // The same directory opens again at once, with the message still queued.
    let (gateway, _sockets) = ScriptedGateway::new();
    let (recorder, _seen) = Recorder::new();
    let again = TetherClient::start(
        ClientConfig::new("ws://gateway.test/ws", "shoofi-app", "device-1", path),
        recorder,
        Tokens::fixed("t"),
        &tokio::runtime::Handle::current(),
        StartOptions {
            connector: Some(gateway),
            seed: Some(1),
        },
    )
    .unwrap();
    let mut watch = again.watch();
    let snapshot = wait_snapshot(&mut watch, LONG, |s| s.queued == 1).await;
    assert_eq!(snapshot.queued, 1);
    let _ = id;
}

#[tokio::test(start_paused = true)]
async fn a_gateway_inbox_that_restarted_below_the_cursor_is_followed() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    for seq in 1..=3u64 {
        socket
            .send(&format!(
                r#"{{"type":"n","id":"a{seq}","seq":{seq},"ts":1}}"#
            ))
            .await;
    }
    while socket.next_of("ack").await["data"]["seq"] != 3 {}
    socket.close(Some(1012)).await;
    let mut socket = h.connected(600_000).await;
    assert_eq!(query(&socket.request, "since").as_deref(), Some("3"));
    // A wiped inbox counts from 1 again: below `since`, which no healthy gateway sends.
    socket
        .send(r#"{"type":"n","id":"b1","seq":1,"ts":1}"#)
        .await;
    assert_eq!(socket.next_of("ack").await["data"]["seq"], 1);
    let ids: Vec<String> = h.recorder.messages().iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, ["a1", "a2", "a3", "b1"]);
    assert_eq!(h.client.last_error().unwrap().kind(), ErrorKind::Protocol);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_their_age_are_reported_expired_and_never_sent() {
    // Ages are wall-clock (they must survive restarts), so this test waits for real.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.max_message_age_s = 1;
    let mut h = start_with(cfg, dir, Tokens::fixed("t"));
    let old = h
        .client
        .send_message("chat".into(), "1".into())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let fresh = h
        .client
        .send_message("chat".into(), "2".into())
        .await
        .unwrap();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    let sent = socket.next_of("chat").await;
    assert_eq!(sent["id"], fresh.as_str());
    wait_for(&mut h.seen, Duration::from_secs(10), |s| {
        *s == Seen::Expired(old.clone())
    })
    .await;
    let stats = h.client.stats();
    assert_eq!(stats.expired, 1);
    assert_eq!(stats.queued, 1);
}

#[tokio::test(start_paused = true)]
async fn messages_expire_while_offline_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.max_message_age_s = 1;
    let mut h = start_with(cfg, dir, Tokens::fixed("t"));
    let old = h
        .client
        .send_message("chat".into(), "1".into())
        .await
        .unwrap();
    // Ages are wall-clock; the sweep runs on the (paused) monotonic clock. Let the wall
    // clock pass, then the sweep period, without ever connecting.
    std::thread::sleep(Duration::from_millis(1_100));
    tokio::time::advance(tether::engine::EXPIRY_SWEEP).await;
    wait_for(&mut h.seen, LONG, |s| *s == Seen::Expired(old.clone())).await;
    assert_eq!(h.client.stats().queued, 0);
    assert!(h.gateway.attempt_times().is_empty());
}

/// A provider whose calls wait until the test answers them; it counts the calls and the
/// ones dropped (cancelled) before they answered.
struct SlowTokens {
    answers: tokio::sync::Mutex<mpsc::UnboundedReceiver<Option<String>>>,
    calls: AtomicU32,
    cancelled: Arc<AtomicU32>,
}

impl SlowTokens {
    fn new() -> (Arc<SlowTokens>, mpsc::UnboundedSender<Option<String>>) {
        let (answer, answers) = mpsc::unbounded_channel();
        let tokens = Arc::new(SlowTokens {
            answers: tokio::sync::Mutex::new(answers),
            calls: AtomicU32::new(0),
            cancelled: Arc::new(AtomicU32::new(0)),
        });
        (tokens, answer)
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn cancelled(&self) -> u32 {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Counts a call as cancelled when it is dropped before it answered.
struct Unanswered(Arc<AtomicU32>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl tether::TokenProvider for SlowTokens {
    async fn fetch_token(&self) -> Result<Option<String>, tether::TokenError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let pending = Unanswered(self.cancelled.clone());
        let answer = self.answers.lock().await.recv().await.unwrap_or(None);
        std::mem::forget(pending);
        Ok(answer)
    }
}

fn start_slow(dir: &tempfile::TempDir, tokens: Arc<SlowTokens>) -> (TetherClient, Scripted) {
    let (gateway, sockets) = ScriptedGateway::new();
    let (recorder, seen) = Recorder::new();
    let client = TetherClient::start(
        config(dir),
        recorder.clone(),
        tokens,
        &tokio::runtime::Handle::current(),
        StartOptions {
            connector: Some(gateway),
            seed: Some(3),
        },
    )
    .unwrap();
    (
        client,
        Scripted {
            sockets,
            recorder,
            _seen: seen,
        },
    )
}

/// The scripted gateway's sockets and the recorder, for clients started by hand.
struct Scripted {
    sockets: mpsc::UnboundedReceiver<FakeSocket>,
    recorder: Arc<Recorder>,
    _seen: mpsc::UnboundedReceiver<Seen>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_token_provider_is_never_called_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, answer) = SlowTokens::new();
    let (client, mut h) = start_slow(&dir, tokens.clone());
    client.connect();
    // Reconnect requests pile up while the provider works: still one call.
    for _ in 0..5 {
        client.reconnect();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tokens.calls(), 1);
    answer.send(Some("late-token".into())).unwrap();
    let socket = tokio::time::timeout(Duration::from_secs(10), h.sockets.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(socket.request.token, "late-token");
    assert_eq!(tokens.calls(), 1);
    assert_eq!(tokens.cancelled(), 0);
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_token_provider_that_never_answers_is_cancelled_reported_and_called_again() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, answer) = SlowTokens::new();
    let (client, mut h) = start_slow(&dir, tokens.clone());
    let started = Instant::now();
    client.connect();
    // The first call hangs; the time limit cancels it, and the retry after backoff
    // calls the provider again.
    while tokens.calls() < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never called again"
        );
    }
    assert!(started.elapsed() >= tether::engine::TOKEN_TIMEOUT);
    assert_eq!(tokens.cancelled(), 1);
    let errors: Vec<String> = h
        .recorder
        .all
        .lock()
        .unwrap()
        .iter()
        .filter_map(|seen| match seen {
            Seen::Error(e) if e.kind() == ErrorKind::Auth => Some(e.message()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("no answer within 30s"), "{errors:?}");
    answer.send(Some("second-call".into())).unwrap();
    let socket = tokio::time::timeout(LONG, h.sockets.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(socket.request.token, "second-call");
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_a_token_call_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _answer) = SlowTokens::new();
    let (client, _h) = start_slow(&dir, tokens.clone());
    client.connect();
    while tokens.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.shutdown().await;
    let started = Instant::now();
    while tokens.cancelled() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the call outlived the client"
        );
    }
    assert_eq!(tokens.calls(), 1);
}

/// A session whose gateway announced `token_ms` for its token; the provider answers
/// `answers` in turn (then the last one again).
async fn expiring_session(answers: &[Option<&str>], token_ms: u64) -> (Harness, FakeSocket) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::script(answers.iter().map(|a| a.map(str::to_owned)).collect());
    let mut h = start_with(config(&dir), dir, tokens);
    h.client.connect();
    let socket = h.socket().await;
    socket.establish_expiring(600_000, Some(token_ms)).await;
    (h, socket)
}

#[tokio::test(start_paused = true)]
async fn a_token_is_refreshed_on_the_open_connection_before_it_runs_out() {
    let started = Instant::now();
    let (mut h, mut socket) =
        expiring_session(&[Some("first"), Some("second"), Some("third")], 100_000).await;
    h.status(|s| *s == ConnectionStatus::Connected).await;
    // A fifth of the 100 s left before the deadline.
    let refresh = socket.next_of("refresh_token").await;
    assert_eq!(refresh["data"]["token"], "second");
    assert_eq!(started.elapsed(), Duration::from_secs(80));
    socket
        .send(r#"{"type":"token_refreshed","data":{"expiresIn":100000}}"#)
        .await;
    let refresh = socket.next_of("refresh_token").await;
    assert_eq!(refresh["data"]["token"], "third");
    assert_eq!(started.elapsed(), Duration::from_secs(160));
    assert_eq!(h.gateway.attempt_times().len(), 1, "never reconnected");
    assert_eq!(h.tokens.calls(), 3);
    assert_eq!(h.client.status(), ConnectionStatus::Connected);
}

#[tokio::test(start_paused = true)]
async fn a_refused_refresh_is_reported_and_the_expiry_reconnects_with_a_fresh_token() {
    let (mut h, mut socket) =
        expiring_session(&[Some("first"), Some("other-user"), Some("fresh")], 10_000).await;
    let refresh = socket.next_of("refresh_token").await;
    assert_eq!(refresh["data"]["token"], "other-user");
    socket
        .send(r#"{"type":"error","data":{"code":"forbidden","message":"the new token is for another user","ref":"refresh_token"}}"#)
        .await;
    wait_for(&mut h.seen, LONG, |s| {
        matches!(s, Seen::Error(e) if e.kind() == ErrorKind::Auth
            && e.message().contains("refused the refreshed token (forbidden)"))
    })
    .await;
    assert_eq!(h.client.status(), ConnectionStatus::Connected);
    // The deadline passes: the gateway closes with 4001, the client reconnects at once.
    socket.close(Some(4001)).await;
    let next = h.socket().await;
    assert_eq!(next.request.token, "fresh");
}

#[tokio::test(start_paused = true)]
async fn a_gateway_that_announces_no_expiry_gets_no_refresh() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    // Less than two heartbeat intervals, after which the silent fake gateway counts as dead.
    tokio::time::sleep(Duration::from_secs(1000)).await;
    assert_eq!(h.tokens.calls(), 1);
    assert_eq!(h.gateway.attempt_times().len(), 1);
    // Nothing but pings went out.
    while let Ok(out) = socket.from_client.try_recv() {
        match out {
            SocketCommand::Text(text) => assert!(text.contains(r#""type":"ping""#), "{text}"),
            SocketCommand::Close(code) => panic!("closed with {code}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_hands_back_the_same_token_is_asked_a_few_times_and_nothing_is_sent() {
    let started = Instant::now();
    let (h, mut socket) = expiring_session(&[Some("same")], 100_000).await;
    // Asked at 80 s, then halfway to the deadline each time while 2 s or more are left:
    // 90, 95, 97.5 and 98.75 s.
    tokio::time::sleep(Duration::from_millis(99_900)).await;
    assert_eq!(h.tokens.calls(), 6, "{:?}", started.elapsed());
    while let Ok(out) = socket.from_client.try_recv() {
        if let SocketCommand::Text(text) = out {
            assert!(!text.contains("refresh_token"), "{text}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn signing_out_during_a_session_ends_it() {
    let (mut h, mut socket) = expiring_session(&[Some("first"), None], 100_000).await;
    h.status(|s| matches!(s, ConnectionStatus::Failed { .. }))
        .await;
    loop {
        match socket.from_client.recv().await {
            Some(SocketCommand::Close(code)) => {
                assert_eq!(code, 1000, "a normal close");
                break;
            }
            Some(SocketCommand::Text(_)) => {}
            None => panic!("the socket ended without a close"),
        }
    }
    assert_eq!(h.gateway.attempt_times().len(), 1, "no retry");
}

#[tokio::test(start_paused = true)]
async fn a_token_refreshed_that_answers_nothing_is_ignored() {
    let started = Instant::now();
    let (mut h, socket) = expiring_session(&[Some("first")], 100_000).await;
    h.status(|s| *s == ConnectionStatus::Connected).await;
    socket
        .send(r#"{"type":"token_refreshed","data":{"expiresIn":5000}}"#)
        .await;
    // Had it been taken, the refresh would come at 4 s; it comes at 80 s.
    while h.tokens.calls() < 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(80));
}

/// The gateway's `room_presence` answer for `room`: two users, one on two devices.
fn presence_frame(room: &str) -> String {
    format!(
        r#"{{"type":"room_presence","data":{{"room":"{room}","users":2,"connections":3,"members":[{{"userId":"u1","userType":"customer","connections":2}},{{"userId":"u2","userType":"driver","connections":1}}],"truncated":false}},"ts":5}}"#
    )
}

/// The `room_presence` requests the client sent that are still unread.
fn presence_requests_left(socket: &mut FakeSocket) -> usize {
    let mut n = 0;
    while let Ok(out) = socket.from_client.try_recv() {
        if let SocketCommand::Text(text) = out {
            n += usize::from(text.contains(r#""type":"room_presence""#));
        }
    }
    n
}

#[tokio::test(start_paused = true)]
async fn room_presence_returns_the_gateway_answer() {
    let mut h = start();
    h.client.join_room("lobby".into()).unwrap();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    socket.next_of("join_room").await;
    let (presence, request) = tokio::join!(h.client.room_presence("lobby".into()), async {
        let request = socket.next_of("room_presence").await;
        socket.send(&presence_frame("lobby")).await;
        request
    });
    assert_eq!(request["data"]["room"], "lobby");
    assert!(request["id"].is_string(), "{request}");
    let presence = presence.unwrap();
    assert_eq!(presence.room, "lobby");
    assert_eq!((presence.users, presence.connections), (2, 3));
    assert!(!presence.truncated);
    let members: Vec<(&str, &str, u32)> = presence
        .members
        .iter()
        .map(|m| (m.user_id.as_str(), m.user_type.as_str(), m.connections))
        .collect();
    assert_eq!(members, [("u1", "customer", 2), ("u2", "driver", 1)]);
    // An answer nobody asked for changes nothing.
    socket.send(&presence_frame("lobby")).await;
    assert_eq!(h.client.status(), ConnectionStatus::Connected);
}

#[tokio::test(start_paused = true)]
async fn concurrent_room_presence_calls_share_one_request() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    let (a, b, ()) = tokio::join!(
        h.client.room_presence("lobby".into()),
        h.client.room_presence("lobby".into()),
        async {
            socket.next_of("room_presence").await;
            // The clock only moves once the engine is idle: both calls are in by then.
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(presence_requests_left(&mut socket), 0, "one request");
            socket.send(&presence_frame("lobby")).await;
        }
    );
    assert_eq!(a.unwrap(), b.unwrap());
    // Once answered, the next call asks again, with a new id.
    let (c, ids) = tokio::join!(h.client.room_presence("lobby".into()), async {
        let request = socket.next_of("room_presence").await;
        socket.send(&presence_frame("lobby")).await;
        request["id"].clone()
    });
    assert_eq!(c.unwrap().users, 2);
    assert!(ids.is_string());
}

#[tokio::test(start_paused = true)]
async fn a_refused_room_presence_fails_the_call_with_the_gateways_reason() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    let (result, ()) = tokio::join!(h.client.room_presence("vip".into()), async {
        let request = socket.next_of("room_presence").await;
        let id = request["id"].as_str().unwrap();
        // An error about something else first: the call keeps waiting.
        socket
            .send(r#"{"type":"error","data":{"code":"forbidden","message":"no","ref":"join-9"}}"#)
            .await;
        socket
            .send(&format!(
                r#"{{"type":"error","data":{{"code":"forbidden","message":"not in room vip","ref":"{id}"}}}}"#
            ))
            .await;
    });
    let e = result.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
    assert!(e.message().contains("join the room first"), "{e}");
    assert!(e.message().contains("not in room vip"), "{e}");
    // A passing refusal is a Protocol error the app may retry.
    let (result, ()) = tokio::join!(h.client.room_presence("vip".into()), async {
        let request = socket.next_of("room_presence").await;
        let id = request["id"].as_str().unwrap();
        socket
            .send(&format!(
                r#"{{"type":"error","data":{{"code":"rate_limited","message":"slow down","ref":"{id}"}}}}"#
            ))
            .await;
    });
    let e = result.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(e.message().contains("rate_limited"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_fails_pending_room_presence_calls() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    let (a, b, ()) = tokio::join!(
        h.client.room_presence("lobby".into()),
        h.client.room_presence("orders:1".into()),
        async {
            socket.next_of("room_presence").await;
            socket.next_of("room_presence").await;
            socket.close(Some(1012)).await;
        }
    );
    for e in [a.unwrap_err(), b.unwrap_err()] {
        assert_eq!(e.kind(), ErrorKind::Network);
        assert!(e.message().contains("connection closed"), "{e}");
    }
    // The next session answers again.
    let mut socket = h.connected(600_000).await;
    let (presence, ()) = tokio::join!(h.client.room_presence("lobby".into()), async {
        socket.next_of("room_presence").await;
        socket.send(&presence_frame("lobby")).await;
    });
    assert_eq!(presence.unwrap().room, "lobby");
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_room_presence_times_out_after_ten_seconds() {
    let mut h = start();
    h.client.connect();
    let _socket = h.connected(600_000).await;
    let asked = Instant::now();
    let e = h.client.room_presence("lobby".into()).await.unwrap_err();
    assert_eq!(asked.elapsed(), Duration::from_secs(10));
    assert_eq!(e.kind(), ErrorKind::Network);
    assert!(e.message().contains("within 10 s"), "{e}");
    assert_eq!(h.client.status(), ConnectionStatus::Connected);
}

#[tokio::test(start_paused = true)]
async fn room_presence_fails_at_once_when_not_connected_or_the_room_is_invalid() {
    let h = start();
    let asked = Instant::now();
    let e = h.client.room_presence("lobby".into()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network);
    assert!(e.message().contains("not connected"), "{e}");
    let e = h
        .client
        .room_presence("no spaces".into())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidMessage);
    assert_eq!(asked.elapsed(), Duration::ZERO, "nothing waited");
    h.client.shutdown().await;
    let e = h.client.room_presence("lobby".into()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shutdown);
}

async fn send_latest(client: &TetherClient, data: &str, options: SendOptions) -> String {
    client
        .send_message_with("location".into(), data.into(), options)
        .await
        .unwrap()
}

fn latest(key: &str) -> SendOptions {
    SendOptions {
        replace_key: Some(key.into()),
        ttl_ms: None,
    }
}

#[tokio::test(start_paused = true)]
async fn latest_wins_drops_waiting_messages_with_the_same_key() {
    let mut h = start();
    let first = send_latest(&h.client, "1", latest("where")).await;
    let chat = h
        .client
        .send_message("chat".into(), "\"hi\"".into())
        .await
        .unwrap();
    let second = send_latest(&h.client, "2", latest("where")).await;
    let other = send_latest(&h.client, "\"x\"", latest("elsewhere")).await;
    let third = send_latest(&h.client, "3", latest("where")).await;
    wait_for(
        &mut h.seen,
        LONG,
        |s| matches!(s, Seen::Replaced { id, .. } if *id == second),
    )
    .await;
    assert_eq!(
        h.recorder.replaced(),
        [
            (first.clone(), second.clone()),
            (second.clone(), third.clone())
        ]
    );
    assert!(h.recorder.expired().is_empty(), "replaced is not expired");
    let stats = h.client.stats();
    assert_eq!((stats.replaced, stats.expired, stats.queued), (2, 0, 3));

    // Only the newest goes out, after what was queued before it.
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    let ids: Vec<String> = [
        socket.next_frame().await,
        socket.next_frame().await,
        socket.next_frame().await,
    ]
    .iter()
    .map(|f| f["id"].as_str().unwrap().to_owned())
    .collect();
    assert_eq!(ids, [chat.clone(), other, third.clone()]);

    // On its way (written, not acked): a newer one does not call it back.
    let fourth = send_latest(&h.client, "4", latest("where")).await;
    let frame = socket.next_frame().await;
    assert_eq!(frame["id"], fourth.as_str());
    // Callbacks come in order: once the ack that followed is heard, a replacement told
    // before it would have been heard too.
    socket
        .send(&format!(r#"{{"type":"ack","data":{{"id":"{chat}"}}}}"#))
        .await;
    wait_for(&mut h.seen, LONG, |s| *s == Seen::Ack(chat.clone())).await;
    assert_eq!(
        h.recorder.replaced().len(),
        2,
        "{:?}",
        h.recorder.replaced()
    );
    // ... but once the connection dropped, both wait again and the newest wins.
    socket.close(Some(1012)).await;
    h.status(|s| matches!(s, ConnectionStatus::Reconnecting { .. }))
        .await;
    h.client.disconnect();
    let fifth = send_latest(&h.client, "5", latest("where")).await;
    wait_for(
        &mut h.seen,
        LONG,
        |s| matches!(s, Seen::Replaced { id, .. } if *id == fourth),
    )
    .await;
    let mut gone: Vec<(String, String)> = h.recorder.replaced().split_off(2);
    gone.sort();
    let mut want = vec![(third, fifth.clone()), (fourth, fifth.clone())];
    want.sort();
    assert_eq!(gone, want);
    assert_eq!(h.client.stats().queued, 2, "other and fifth");
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    let mut sent = Vec::new();
    for _ in 0..2 {
        sent.push(socket.next_frame().await["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(sent.last().unwrap(), &fifth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_its_time_to_live_is_dropped_not_sent() {
    // Times to live are wall-clock, like ages: this test waits for real.
    let mut h = start();
    let stale = h
        .client
        .send_message_with(
            "typing".into(),
            "true".into(),
            SendOptions {
                replace_key: None,
                ttl_ms: Some(200),
            },
        )
        .await
        .unwrap();
    let lasting = h
        .client
        .send_message_with(
            "typing".into(),
            "false".into(),
            SendOptions {
                replace_key: None,
                ttl_ms: Some(600_000),
            },
        )
        .await
        .unwrap();
    // Reported while offline, without waiting for the minute-long sweep.
    wait_for(&mut h.seen, Duration::from_secs(5), |s| {
        *s == Seen::Expired(stale.clone())
    })
    .await;
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    assert_eq!(socket.next_of("typing").await["id"], lasting.as_str());
    let stats = h.client.stats();
    assert_eq!((stats.expired, stats.replaced, stats.queued), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_message_can_be_cancelled_one_on_its_way_cannot() {
    let mut h = start();
    let keep = h
        .client
        .send_message("chat".into(), "1".into())
        .await
        .unwrap();
    let take_back = h
        .client
        .send_message("chat".into(), "2".into())
        .await
        .unwrap();
    assert!(h.client.cancel_message(take_back.clone()).await.unwrap());
    assert!(!h.client.cancel_message(take_back).await.unwrap());
    assert!(!h.client.cancel_message("not-an-id".into()).await.unwrap());
    assert_eq!(h.client.stats().queued, 1);
    assert!(
        h.recorder.expired().is_empty(),
        "the app asked: nothing to report"
    );
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    assert_eq!(socket.next_of("chat").await["id"], keep.as_str());
    assert!(
        !h.client.cancel_message(keep.clone()).await.unwrap(),
        "written to the socket: it may be stored already"
    );
    socket
        .send(&format!(r#"{{"type":"ack","data":{{"id":"{keep}"}}}}"#))
        .await;
    wait_for(&mut h.seen, LONG, |s| *s == Seen::Ack(keep.clone())).await;
    assert_eq!(h.client.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn bad_send_options_are_refused_before_anything_is_stored() {
    let h = start();
    for options in [
        latest(""),
        latest(&"k".repeat(257)),
        SendOptions {
            replace_key: None,
            ttl_ms: Some(0),
        },
    ] {
        let err = h
            .client
            .send_message_with("chat".into(), "1".into(), options.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidMessage, "{options:?}: {err}");
    }
    assert_eq!(h.client.stats().queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_on_its_way_outlives_its_time_to_live_until_the_ack() {
    // The gateway may have stored it: dropping it would report a stored message as
    // never sent, and no ack would ever free its place in the send window.
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    let id = h
        .client
        .send_message_with(
            "typing".into(),
            "true".into(),
            SendOptions {
                replace_key: None,
                ttl_ms: Some(100),
            },
        )
        .await
        .unwrap();
    assert_eq!(socket.next_of("typing").await["id"], id.as_str());
    // Past its deadline and past the shortest sweep, still waiting for the ack.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(h.client.stats().queued, 1);
    socket
        .send(&format!(r#"{{"type":"ack","data":{{"id":"{id}"}}}}"#))
        .await;
    wait_for(&mut h.seen, Duration::from_secs(5), |s| {
        *s == Seen::Ack(id.clone())
    })
    .await;
    assert!(
        h.recorder.expired().is_empty(),
        "{:?}",
        h.recorder.expired()
    );
    assert_eq!(h.client.stats().expired, 0);
}

#[tokio::test(start_paused = true)]
async fn a_retryable_refusal_does_not_make_messages_on_their_way_cancellable() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    let first = h
        .client
        .send_message("chat".into(), "1".into())
        .await
        .unwrap();
    let second = send_latest(&h.client, "2", latest("where")).await;
    assert_eq!(socket.next_of("chat").await["id"], first.as_str());
    assert_eq!(socket.next_of("location").await["id"], second.as_str());
    // The gateway could not store the first; the second may be stored already.
    socket
        .send(&format!(
            r#"{{"type":"error","data":{{"code":"unavailable","message":"try again","ref":"{first}"}}}}"#
        ))
        .await;
    // Let the engine take the refusal in before anything else (time is paused: the
    // clock moves only once every task waits), so the checks below see its effect.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let third = send_latest(&h.client, "3", latest("where")).await;
    assert!(!h.client.cancel_message(second.clone()).await.unwrap());
    assert!(!h.client.cancel_message(first.clone()).await.unwrap());
    // Resent in order after the pause: both, then the newer location.
    assert_eq!(socket.next_of("chat").await["id"], first.as_str());
    assert_eq!(socket.next_of("location").await["id"], second.as_str());
    assert_eq!(socket.next_of("location").await["id"], third.as_str());
    assert!(
        h.recorder.replaced().is_empty(),
        "{:?}",
        h.recorder.replaced()
    );
}

/// The host of each connection attempt so far.
fn attempted_hosts(h: &Harness) -> Vec<String> {
    h.gateway
        .attempts
        .lock()
        .unwrap()
        .iter()
        .map(|(_, request)| request.url.host_str().unwrap().to_owned())
        .collect()
}

fn refused(status: u16) -> ConnectError {
    ConnectError::Refused {
        status,
        code: None,
        message: "refused".into(),
        retry_after: None,
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_move_to_a_fallback_address_and_back_to_the_primary_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.fallback_urls = vec!["wss://backup.test".into()];
    let mut h = start_with(cfg, dir, Tokens::fixed("t"));
    // No route to the primary; the backup is shutting down; the primary again answers
    // 429 (the same anywhere: it stays), then lets the client in.
    h.gateway
        .refuse([network_error(), refused(503), refused(429)]);
    h.client.connect();
    let socket = h.connected(600_000).await;
    assert_eq!(
        attempted_hosts(&h),
        [
            "gateway.test",
            "backup.test",
            "gateway.test",
            "gateway.test"
        ]
    );
    let url = h.gateway.attempts.lock().unwrap()[1].1.url.clone();
    assert_eq!(url.path(), "/ws", "{url}");
    assert!(url.query().unwrap().contains("app=shoofi-app"), "{url}");

    // The primary fails again: the client settles on the backup, and a dropped session
    // comes back there ...
    socket.close(None).await;
    h.gateway.refuse([network_error()]);
    let socket = h.connected(600_000).await;
    socket.close(None).await;
    let _socket = h.connected(600_000).await;
    assert_eq!(
        attempted_hosts(&h)[4..],
        ["gateway.test", "backup.test", "backup.test"]
    );

    // ... until ten minutes after it left the primary: the next attempt tries it again.
    tokio::time::advance(tether::engine::hosts::BACK_TO_PRIMARY).await;
    h.client.reconnect();
    let _socket = h.connected(600_000).await;
    assert_eq!(attempted_hosts(&h).last().unwrap(), "gateway.test");
}

fn with_backup() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.fallback_urls = vec!["wss://backup.test".into()];
    start_with(cfg, dir, Tokens::fixed("t"))
}

#[tokio::test(start_paused = true)]
async fn an_upgrade_that_never_completes_counts_against_its_address() {
    let mut h = with_backup();
    h.client.connect();
    // The primary upgrades, then says nothing (a balancer holding the socket, a wedged
    // node): once the connect timeout passes, the next attempt goes to the backup.
    let _silent = h.socket().await;
    let _next = h.socket().await;
    assert_eq!(attempted_hosts(&h), ["gateway.test", "backup.test"]);
}

#[tokio::test(start_paused = true)]
async fn the_network_returning_or_the_app_returning_sends_the_next_attempt_to_the_primary() {
    let mut h = with_backup();
    // Offline before the OS says so: the primary "fails", the client moves to the backup.
    h.gateway.refuse([network_error()]);
    h.client.connect();
    let _socket = h.connected(600_000).await;
    h.client.set_network(NetworkState::down());
    h.status(|s| *s == ConnectionStatus::WaitingForNetwork)
        .await;
    h.client.set_network(NetworkState::up(NetworkKind::Wifi));
    let _socket = h.connected(600_000).await;
    assert_eq!(
        attempted_hosts(&h),
        ["gateway.test", "backup.test", "gateway.test"]
    );

    // On the backup again; the app sleeps in the background (the monotonic clock may
    // stand still) and comes back: the primary first.
    h.gateway.refuse([network_error()]);
    h.client.reconnect();
    let _socket = h.connected(600_000).await;
    h.client.set_app_state(AppState::Background);
    h.status(|s| *s == ConnectionStatus::Suspended).await;
    h.client.set_app_state(AppState::Foreground);
    let _socket = h.connected(600_000).await;
    assert_eq!(
        attempted_hosts(&h)[3..],
        ["gateway.test", "backup.test", "gateway.test"]
    );
}

#[tokio::test(start_paused = true)]
async fn sends_made_at_the_same_moment_keep_their_call_order_and_latest_wins() {
    let mut h = start();
    // Five calls at once, before the engine runs: plain ones are stored together (one
    // sync), a latest-wins one in between first stores those before it.
    let client = &h.client;
    let plain = |n: u32| {
        Box::pin(client.send_message("chat".into(), n.to_string()))
            as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>
    };
    let keyed = |n: u32| {
        Box::pin(client.send_message_with("location".into(), n.to_string(), latest("where")))
            as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>
    };
    let ids: Vec<String> =
        futures_util::future::join_all([plain(0), keyed(1), plain(2), keyed(3), plain(4)])
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    wait_for(&mut h.seen, LONG, |s| matches!(s, Seen::Replaced { .. })).await;
    assert_eq!(h.recorder.replaced(), [(ids[1].clone(), ids[3].clone())]);
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    let mut sent = Vec::new();
    for _ in 0..4 {
        let frame = loop {
            let frame = socket.next_frame().await;
            if frame["type"] == "chat" || frame["type"] == "location" {
                break frame;
            }
        };
        sent.push(frame["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(sent, [&*ids[0], &*ids[2], &*ids[3], &*ids[4]]);
}

fn room_joined(room: &str, offset: u64, epoch: &str, recovered: bool, replay: u32) -> String {
    format!(
        r#"{{"type":"room_joined","data":{{"room":"{room}","offset":{offset},"epoch":"{epoch}","recovered":{recovered},"replayCount":{replay}}}}}"#
    )
}

fn stream_message(room: Option<&str>, offset: u64, epoch: &str) -> String {
    let room = room.map_or("null".to_owned(), |r| format!("\"{r}\""));
    format!(
        r#"{{"type":"eta","id":"{epoch}{offset}","room":{room},"offset":{offset},"epoch":"{epoch}","data":{offset},"ts":1}}"#
    )
}

/// (room, offset) of a stream message.
type StreamAt = (Option<String>, u64);

/// (room, offset) of every stream message the app got, in order, and the resets it was told.
fn stream_log(recorder: &Recorder) -> (Vec<StreamAt>, Vec<Option<String>>) {
    let mut messages = Vec::new();
    let mut resets = Vec::new();
    for seen in recorder.all.lock().unwrap().iter() {
        match seen {
            Seen::Message(m) if m.offset.is_some() => {
                messages.push((m.room.clone(), m.offset.unwrap()));
            }
            Seen::StreamReset(room) => resets.push(room.clone()),
            _ => {}
        }
    }
    (messages, resets)
}

#[tokio::test(start_paused = true)]
async fn streams_are_delivered_once_in_offset_order_and_rejoined_from_their_position() {
    let mut h = start();
    let room = Some("news:1".to_owned());
    h.client.join_room("news:1".into()).unwrap();
    h.client.connect();
    let mut socket = h.socket().await;
    assert_eq!(
        query(&socket.request, "appOffset"),
        None,
        "nothing to recover yet"
    );
    socket
        .send(r#"{"type":"connection_established","data":{"connectionId":"c","serverId":"s","userId":"u","app":"a","userType":"customer","heartbeatInterval":600000,"replayFrom":null,"replayCount":0,"appStream":{"offset":10,"epoch":"A","recovered":false,"replayCount":0}}}"#)
        .await;
    let join = socket.next_of("join_room").await;
    assert!(join["data"]["since"].is_null(), "{join}");
    socket.send(&room_joined("news:1", 5, "E", false, 0)).await;
    for offset in [6, 7, 7, 6, 8] {
        socket
            .send(&stream_message(Some("news:1"), offset, "E"))
            .await;
    }
    socket.send(&stream_message(None, 11, "A")).await;
    wait_for(
        &mut h.seen,
        LONG,
        |e| matches!(e, Seen::Message(m) if m.offset == Some(11)),
    )
    .await;
    assert_eq!(h.client.stats().duplicates_dropped, 2);

    // The next session asks for what followed the last message processed, per stream.
    socket.close(Some(1012)).await;
    let mut socket = h.socket().await;
    assert_eq!(query(&socket.request, "appOffset").as_deref(), Some("11"));
    assert_eq!(query(&socket.request, "appEpoch").as_deref(), Some("A"));
    socket
        .send(r#"{"type":"connection_established","data":{"connectionId":"c","serverId":"s","userId":"u","app":"a","userType":"customer","heartbeatInterval":600000,"replayFrom":null,"replayCount":0,"appStream":{"offset":11,"epoch":"A","recovered":true,"replayCount":0}}}"#)
        .await;
    let join = socket.next_of("join_room").await;
    assert_eq!(
        join["data"]["since"],
        serde_json::json!({"offset": 8, "epoch": "E"})
    );
    socket.send(&room_joined("news:1", 9, "E", true, 2)).await;
    // The replay overlaps what was delivered already at its start.
    socket.send(&stream_message(Some("news:1"), 8, "E")).await;
    socket.send(&stream_message(Some("news:1"), 9, "E")).await;
    // A gap, then another epoch: both lost messages for good.
    socket.send(&stream_message(Some("news:1"), 12, "E")).await;
    socket.send(&stream_message(Some("news:1"), 1, "F")).await;
    wait_for(
        &mut h.seen,
        LONG,
        |e| matches!(e, Seen::Message(m) if m.id == "F1"),
    )
    .await;

    // A position the gateway no longer holds: reset, and the stream restarts there.
    socket.close(Some(1012)).await;
    let mut socket = h.connected(600_000).await;
    let join = socket.next_of("join_room").await;
    assert_eq!(
        join["data"]["since"],
        serde_json::json!({"offset": 1, "epoch": "F"})
    );
    socket.send(&room_joined("news:1", 30, "G", false, 0)).await;
    socket.send(&stream_message(Some("news:1"), 31, "G")).await;
    wait_for(
        &mut h.seen,
        LONG,
        |e| matches!(e, Seen::Message(m) if m.id == "G31"),
    )
    .await;

    let (messages, resets) = stream_log(&h.recorder);
    let expected: Vec<StreamAt> = [6, 7, 8]
        .into_iter()
        .map(|o| (room.clone(), o))
        .chain([(None, 11)])
        .chain([9, 12, 1, 31].into_iter().map(|o| (room.clone(), o)))
        .collect();
    assert_eq!(messages, expected);
    assert_eq!(resets, [room.clone(), room.clone(), room.clone()]);
    assert_eq!(h.client.stats().stream_resets, 3);
    assert_eq!(h.client.stats().duplicates_dropped, 3);

    // Leaving forgets the position: a later join starts afresh, with nothing to recover.
    h.client.leave_room("news:1".into()).unwrap();
    socket.next_of("leave_room").await;
    h.client.join_room("news:1".into()).unwrap();
    let join = socket.next_of("join_room").await;
    assert!(join["data"]["since"].is_null(), "{join}");
}

#[tokio::test(start_paused = true)]
async fn a_quick_leave_and_join_is_no_stream_reset() {
    let mut h = start();
    h.client.connect();
    let mut socket = h.connected(600_000).await;
    h.client.join_room("news:1".into()).unwrap();
    socket.next_of("join_room").await;
    h.client.leave_room("news:1".into()).unwrap();
    socket.next_of("leave_room").await;
    h.client.join_room("news:1".into()).unwrap();
    let again = socket.next_of("join_room").await;
    assert!(again["data"]["since"].is_null(), "{again}");
    // The answers come after both joins: two fresh starts, nothing lost.
    socket.send(&room_joined("news:1", 5, "E", false, 0)).await;
    socket
        .send(r#"{"type":"room_left","data":{"room":"news:1"}}"#)
        .await;
    socket.send(&room_joined("news:1", 6, "E", false, 0)).await;
    socket.send(&stream_message(Some("news:1"), 7, "E")).await;
    wait_for(
        &mut h.seen,
        LONG,
        |e| matches!(e, Seen::Message(m) if m.id == "E7"),
    )
    .await;
    assert_eq!(h.recorder.stream_resets(), Vec::<Option<String>>::new());
    assert_eq!(h.client.stats().stream_resets, 0);
}
