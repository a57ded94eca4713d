//! docs/protocol.md §7 and §8: heartbeat and idle timeout, token expiry, kicks, slow clients
//! and graceful shutdown.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;
use tether_server::auth::Claims;

#[tokio::test]
async fn a_silent_connection_is_closed_with_4000_and_leaves_the_registry() {
    let gw = TestGateway::with(|c| {
        c.heartbeat_interval_ms = 200;
        c.connection_timeout_ms = 500;
    })
    .await;
    let mut client = gw.connect("u1", "d").await;
    assert_eq!(client.established["data"]["heartbeatInterval"], 200);
    assert_eq!(
        client.ended_within(Duration::from_secs(3)).await,
        Ended::Closed(4000)
    );
    assert_eq!(gw.stats().await["totalConnections"], 0);
}

#[tokio::test]
async fn pings_keep_a_connection_alive() {
    let gw = TestGateway::with(|c| {
        c.heartbeat_interval_ms = 200;
        c.connection_timeout_ms = 500;
    })
    .await;
    let mut client = gw.connect("u1", "d").await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            client.request(json!({"type": "ping"})).await["type"],
            "pong"
        );
    }
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_with_4001() {
    let gw = TestGateway::with(|c| c.jwt.leeway_s = 0).await;
    let mut claims = Claims::new("u1", &[APP], 2);
    claims.exp = tether_server::clock::now_s() + 1;
    let mut client = gw
        .connect_with(&gw.token_for(&claims), &format!("app={APP}"), &[])
        .await
        .unwrap();
    assert_eq!(
        client.ended_within(Duration::from_secs(4)).await,
        Ended::Closed(4001)
    );
}

/// A connection whose token runs out in `ttl_s` (no leeway; `exp` has whole seconds, so
/// between `ttl_s` - 1 and `ttl_s` are left), in no room, and its token.
async fn expiring_connection(gw: &TestGateway, ttl_s: u64) -> (Client, String) {
    let mut claims = Claims::new("u1", &[APP], ttl_s);
    claims.exp = tether_server::clock::now_s() + ttl_s;
    let token = gw.token_for(&claims);
    let client = gw
        .connect_with(&token, &format!("app={APP}"), &[])
        .await
        .unwrap_or_else(|(status, body)| panic!("handshake refused: {status} {body}"));
    (client, token)
}

fn refresh(token: &str) -> serde_json::Value {
    json!({"type": "refresh_token", "data": {"token": token}})
}

#[tokio::test]
async fn a_refreshed_token_keeps_the_connection_open_past_the_first_expiry() {
    let gw = TestGateway::with(|c| c.jwt.leeway_s = 0).await;
    let (mut client, _) = expiring_connection(&gw, 5).await;
    let first_left = client.established["data"]["tokenExpiresIn"]
        .as_u64()
        .expect("tokenExpiresIn");
    assert!((3_000..=5_000).contains(&first_left), "{first_left}");
    let answer = client.request(refresh(&gw.token("u1"))).await;
    assert_eq!(answer["type"], "token_refreshed", "{answer}");
    let left = answer["data"]["expiresIn"].as_u64().expect("expiresIn");
    assert!((3_590_000..=3_600_000).contains(&left), "{left}");
    // Past the first deadline and the sweep that would have closed it.
    tokio::time::sleep(Duration::from_millis(first_left + 2_000)).await;
    assert_eq!(
        client.request(json!({"type": "ping"})).await["type"],
        "pong",
        "open past the first token's exp"
    );
}

#[tokio::test]
async fn refresh_tokens_that_do_not_fit_the_connection_are_refused_and_change_nothing() {
    let gw = TestGateway::with(|c| c.jwt.leeway_s = 0).await;
    let (mut client, first) = expiring_connection(&gw, 4).await;
    let joined = client
        .request(json!({"type": "join_room", "data": {"room": "orders:1"}}))
        .await;
    assert_eq!(joined["type"], "room_joined", "{joined}");
    let mut other_type = Claims::new("u1", &[APP], 3600);
    other_type.user_type = Some("admin".into());
    let mut other_rooms = Claims::new("u1", &[APP], 3600);
    other_rooms.rooms = Some(vec!["chat:*".into()]);
    let mut expired = Claims::new("u1", &[APP], 3600);
    expired.exp = tether_server::clock::now_s() - 10;
    let cases = [
        ("another user", gw.token("u2"), "forbidden"),
        (
            "another app",
            gw.token_for(&Claims::new("u1", &["other-app"], 3600)),
            "forbidden",
        ),
        ("another user type", gw.token_for(&other_type), "forbidden"),
        (
            "a joined room not allowed",
            gw.token_for(&other_rooms),
            "forbidden",
        ),
        ("expired", gw.token_for(&expired), "token_expired"),
        ("not a JWT", "garbage".to_owned(), "invalid_token"),
        ("the same token (no later exp)", first, "invalid_token"),
    ];
    for (what, token, code) in cases {
        let answer = client.request(refresh(&token)).await;
        assert_eq!(answer["type"], "error", "{what}: {answer}");
        assert_eq!(answer["data"]["code"], code, "{what}: {answer}");
        assert_eq!(answer["data"]["ref"], "refresh_token", "{what}: {answer}");
        assert!(
            !answer.to_string().contains(&token),
            "{what}: the token echoed"
        );
    }
    // None of them moved the first token's expiry.
    assert_eq!(
        client.ended_within(Duration::from_secs(6)).await,
        Ended::Closed(4001)
    );
}

#[tokio::test]
async fn kicked_users_are_closed_with_4403() {
    let gw = TestGateway::start().await;
    let mut a = gw.connect("u1", "phone").await;
    let mut b = gw.connect("u1", "tablet").await;
    let mut other = gw.connect("u2", "phone").await;
    let (status, body) = gw
        .api(
            reqwest::Method::DELETE,
            &format!("/v1/connections?app={APP}&userId=u1"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kicked"], 2);
    assert_eq!(a.ended().await, Ended::Closed(4403));
    assert_eq!(b.ended().await, Ended::Closed(4403));
    assert_eq!(other.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_and_does_not_slow_the_others() {
    let gw = TestGateway::with(|c| c.outbound_queue = 16).await;
    let mut slow = gw.connect("slow", "d").await;
    let mut fast = gw.connect("fast", "d").await;
    fast.request(json!({"type": "join_room", "data": {"room": "feed"}}))
        .await;
    slow.request(json!({"type": "join_room", "data": {"room": "feed"}}))
        .await;
    // Stop reading on the slow client; fill its socket and its queue.
    let payload = "x".repeat(16 * 1024);
    let mut fast_got = 0;
    for _ in 0..400 {
        gw.send_to_room("feed", json!(payload)).await;
        assert_eq!(fast.recv().await["type"], "room_news");
        fast_got += 1;
    }
    assert_eq!(fast_got, 400);
    // Closed with 4008; if its socket buffer is too full for the close frame to get
    // through, the socket is dropped instead. Either way it ends.
    let end = slow.ended_within(Duration::from_secs(10)).await;
    assert!(
        matches!(end, Ended::Closed(4008) | Ended::Dropped),
        "{end:?}"
    );
    let (_, metrics) = gw.api(reqwest::Method::GET, "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("tether_slow_consumers_total 1"),
        "counted once"
    );
}

#[tokio::test]
async fn graceful_shutdown_closes_every_connection_with_1012() {
    let mut gw = TestGateway::start().await;
    let mut a = gw.connect("u1", "d").await;
    let mut b = gw.connect("u2", "d").await;
    gw.shutdown().await;
    assert_eq!(a.ended().await, Ended::Closed(1012));
    assert_eq!(b.ended().await, Ended::Closed(1012));
}

#[tokio::test]
async fn a_killed_node_drops_sockets_without_a_close_frame() {
    let mut gw = TestGateway::start().await;
    let mut a = gw.connect("u1", "d").await;
    gw.kill();
    assert_eq!(a.ended().await, Ended::Dropped);
}
