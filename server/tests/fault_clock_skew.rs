//! Clock skew between gateway nodes (docs/reliability.md). Nodes are `tether-server`
//! processes; a skewed node runs under libfaketime (`LD_PRELOAD`, Debian package
//! `faketime`), which shifts its wall clock only (`FAKETIME_DONT_FAKE_MONOTONIC=1`).
//! Without libfaketime the tests say why and pass, unless `TETHER_REQUIRE_FAKETIME=1`
//! (CI sets it).
//!
//! What a node's wall clock decides: token `exp`/`nbf` (leeway `JWT_LEEWAY`, default 5 s),
//! the `ts` it stamps, registry lease expiries (`WS_REGISTRY_TTL`) and inbox ages
//! (`WS_MESSAGE_TTL`). Inbox order comes from Redis `INCR`, never from a clock. The
//! assumption these tests pin down: node clocks agree within `JWT_LEEWAY` of the token
//! issuer, and well within `WS_REGISTRY_TTL` of each other (docs/reliability.md).

#![allow(clippy::unwrap_used)] // test helpers panic on purpose

mod fault_support;
mod support;

use fault_support::{Node, ADMIN};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use support::redis::RedisServer;
use support::{APP, SECRET};
use tether_server::auth::{mint_token, Claims};
use tokio_tungstenite::tungstenite::Message;

fn libfaketime() -> Option<String> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(|p| (*p).to_owned())
}

/// A node whose wall clock is `offset` ("+90s", "-90s") off, or None when libfaketime
/// is missing (and not required).
fn skewed_node(redis: &str, offset: &str, env: &[(&str, &str)]) -> Option<Node> {
    let Some(lib) = libfaketime() else {
        assert!(
            std::env::var("TETHER_REQUIRE_FAKETIME").as_deref() != Ok("1"),
            "TETHER_REQUIRE_FAKETIME=1 but libfaketime is not installed (apt-get install faketime)"
        );
        println!("skipped: libfaketime is not installed (apt-get install faketime)");
        return None;
    };
    let mut all: Vec<(&str, &str)> = vec![
        ("LD_PRELOAD", lib.as_str()),
        ("FAKETIME", offset),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("FAKETIME_NO_CACHE", "1"),
    ];
    all.extend_from_slice(env);
    Some(Node::start(redis, &all))
}

fn now_ms() -> i64 {
    tether_server::clock::now_ms() as i64
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a connection; Ok(socket, connection_established) or Err(status, error code).
async fn open(node: &Node, token: &str, device: &str) -> Result<(Ws, Value), (u16, String)> {
    let url = format!(
        "ws://{}/ws?app={APP}&device={device}&token={token}",
        node.addr
    );
    match tokio_tungstenite::connect_async(url).await {
        Ok((mut ws, _)) => match ws.next().await {
            Some(Ok(Message::Text(text))) => Ok((ws, serde_json::from_str(text.as_str()).unwrap())),
            other => panic!("no connection_established: {other:?}"),
        },
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: Value = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((
                response.status().as_u16(),
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            ))
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

async fn send(node: &Node, user: &str, n: u64) -> Value {
    reqwest::Client::new()
        .post(format!("http://{}/v1/send/user", node.addr))
        .bearer_auth(ADMIN)
        .json(&json!({"userId": user, "app": APP, "message": {"type": "n", "data": n}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn next_text(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return serde_json::from_str(text.as_str()).unwrap()
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a frame: {other:?}"),
        }
    }
}

/// Setup: Redis; node A on the true clock, node B 3 s ahead (inside the 5 s leeway),
/// 1 connection per user, lease 30 s.
/// Fault: the skew.
/// Expected: B's clock really is ahead (its `ts` shows it); a token with 60 s left and
/// `nbf` = now works on both; the connection limit holds across A and B; messages
/// published alternately through A and B reach the user in seq order, exactly once,
/// though their `ts` go back and forth.
/// Must not lose: any of the 20 messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skew_within_the_leeway_changes_nothing_but_ts() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), &[("WS_REGISTRY_TTL", "30")]);
    let Some(b) = skewed_node(&redis.url(), "+3s", &[("WS_REGISTRY_TTL", "30")]) else {
        return;
    };
    let mut claims = Claims::new("u1", &[APP], 60);
    claims.nbf = Some(tether_server::clock::now_s());
    let token = mint_token(SECRET.as_bytes(), &claims);
    let (mut on_b, established) = open(&b, &token, "phone").await.expect("B accepts");
    let skew = established["ts"].as_i64().unwrap() - now_ms();
    assert!(
        (2_000..5_000).contains(&skew),
        "B is {skew} ms off, not ~+3 s"
    );
    assert_eq!(
        open(&a, &token, "tablet").await.err(),
        Some((429, "too_many_connections".into()))
    );
    let mut ts = Vec::new();
    for n in 1..=20u64 {
        let node = if n % 2 == 0 { &a } else { &b };
        let sent = send(node, "u1", n).await;
        let got = next_text(&mut on_b).await;
        assert_eq!(got["seq"], sent["seq"]);
        assert_eq!(got["seq"], n, "seqs come from Redis, in order");
        ts.push(got["ts"].as_i64().unwrap());
    }
    assert!(
        ts.windows(2).any(|w| w[1] < w[0]),
        "ts from the two clocks should interleave: {ts:?}"
    );
    println!("skew +3 s: B measured {skew} ms ahead; order by seq held, ts went backwards");
}

/// Setup: Redis; A on the true clock, B 90 s ahead, C 90 s behind (leeway 5 s).
/// Fault: the skew, beyond the leeway.
/// Expected: B refuses a token with 60 s left as `token_expired` (401) that A accepts; C
/// refuses a token whose `nbf` is now (401 `invalid_token`); a 1-hour token without
/// `nbf` works everywhere. Clients get a clear, retryable refusal, never a silent one; an
/// operator must keep node clocks within the leeway of the token issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skew_beyond_the_leeway_refuses_short_tokens_clearly() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), &[("WS_MAX_CONNECTIONS_PER_USER", "10")]);
    let Some(b) = skewed_node(
        &redis.url(),
        "+90s",
        &[("WS_MAX_CONNECTIONS_PER_USER", "10")],
    ) else {
        return;
    };
    let c = skewed_node(
        &redis.url(),
        "-90s",
        &[("WS_MAX_CONNECTIONS_PER_USER", "10")],
    )
    .unwrap();
    let short = mint_token(SECRET.as_bytes(), &Claims::new("u1", &[APP], 60));
    assert!(open(&a, &short, "a").await.is_ok());
    assert_eq!(
        open(&b, &short, "b").await.err(),
        Some((401, "token_expired".into()))
    );
    let mut claims = Claims::new("u1", &[APP], 3600);
    claims.nbf = Some(tether_server::clock::now_s());
    let fresh = mint_token(SECRET.as_bytes(), &claims);
    assert!(open(&a, &fresh, "a2").await.is_ok());
    assert_eq!(
        open(&c, &fresh, "c").await.err(),
        Some((401, "invalid_token".into()))
    );
    let long = mint_token(SECRET.as_bytes(), &Claims::new("u1", &[APP], 3600));
    for (node, device) in [(&a, "a3"), (&b, "b3"), (&c, "c3")] {
        assert!(open(node, &long, device).await.is_ok(), "{device}");
    }
}
