//! Redis and node failures: what keeps working, what answers a clear error (never a
//! false success), and that everything comes back without restarting a gateway.

mod support;

use serde_json::json;
use std::time::Duration;
use support::redis::RedisServer;
use support::*;

async fn health(gw: &TestGateway) -> (u16, serde_json::Value) {
    gw.api_with_key(reqwest::Method::GET, "/health", None, None)
        .await
}

#[tokio::test]
async fn while_redis_is_down_clear_errors_and_afterwards_everything_resumes() {
    let mut redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |c| c.max_connections_per_user = 1).await;
    let mut client = gw.connect("u1", "phone").await;

    redis.kill();
    eventually("health turns 503 with main unavailable", || async {
        let (status, body) = health(&gw).await;
        status == 503
            && body["status"] == "unhealthy"
            && body["connections"]["main"] == "unavailable"
    })
    .await;

    // The backend API says so instead of claiming success.
    let (status, error) = gw
        .api(
            reqwest::Method::POST,
            "/v1/send/user",
            Some(json!({"userId": "u1", "app": APP, "message": {"type": "n"}})),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    // New handshakes are refused with 503.
    let (status, code) = gw
        .refused(Some(&gw.token("u2")), &format!("app={APP}&device=d"), &[])
        .await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    // A client message is not acked: the client keeps it.
    let reply = client.request(json!({"type": "chat", "id": "m-1"})).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["data"]["code"], "unavailable");
    assert_eq!(reply["data"]["ref"], "m-1");
    // Local traffic goes on.
    assert_eq!(
        client.request(json!({"type": "ping"})).await["type"],
        "pong"
    );

    redis.restart();
    eventually("health back to 200", || async {
        health(&gw).await.0 == 200
    })
    .await;
    // The same connection gets live messages again (resubscribed without a restart).
    let sent = gw.send_to_user("u1", "n", json!("after the outage")).await;
    assert_eq!(client.recv().await["id"], sent["id"]);
    // The registry was restored: the limit still counts the live connection.
    eventually("lease restored", || async {
        matches!(
            gw.open(
                Some(&gw.token("u1")),
                &format!("app={APP}&device=tablet"),
                &[]
            )
            .await,
            Err((429, _))
        )
    })
    .await;
    assert_eq!(
        client.request(json!({"type": "chat", "id": "m-1"})).await["type"],
        "ack"
    );
}

#[tokio::test]
async fn a_killed_subscriber_connection_is_replaced_and_nothing_durable_is_missed() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    let mut client = gw.connect("u1", "phone").await;
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    // Sent while the node may not be subscribed: it still arrives (live or by the resync).
    let during = gw.send_to_user("u1", "n", json!("during")).await;
    assert_eq!(client.recv().await["id"], during["id"]);
    eventually("resubscribed", || async {
        !redis
            .cli(&["PUBSUB", "CHANNELS", "*u:shop:u1*"])
            .unwrap_or_default()
            .trim()
            .is_empty()
    })
    .await;
    let after = gw.send_to_user("u1", "n", json!("after")).await;
    let next = client.recv().await;
    assert_eq!(next["id"], after["id"], "delivered once, in seq order");
    assert_eq!(next["seq"], 2);
    client.silent_for(300).await;
}

#[tokio::test]
async fn a_frozen_redis_makes_calls_fail_fast_not_hang() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    let mut client = gw.connect("u1", "phone").await;
    redis.pause();
    let started = std::time::Instant::now();
    let (status, _) = gw
        .api(
            reqwest::Method::POST,
            "/v1/send/user",
            Some(json!({"userId": "u1", "app": APP, "message": {"type": "n"}})),
        )
        .await;
    assert_eq!(status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "answered in {:?}",
        started.elapsed()
    );
    redis.resume();
    eventually("health back", || async { health(&gw).await.0 == 200 }).await;
    let sent = gw.send_to_user("u1", "n", json!(1)).await;
    assert_eq!(client.recv().await["id"], sent["id"]);
}

#[tokio::test]
async fn a_dead_node_blocks_no_one_past_the_registry_expiry() {
    let redis = RedisServer::start();
    let mut a = TestGateway::redis(&redis.url(), |c| {
        c.max_connections_per_user = 1;
        c.registry_ttl = Duration::from_secs(3);
    })
    .await;
    let b = a.sibling().await;
    let _held = a.connect("u1", "phone").await;
    a.kill();
    let token = b.token("u1");
    let query = format!("app={APP}&device=tablet");
    assert_eq!(
        b.refused(Some(&token), &query, &[]).await.1,
        "too_many_connections",
        "the lease is still fresh"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(
        b.connect_with(&token, &query, &[]).await.is_ok(),
        "the dead node's lease expired"
    );
    eventually("the dead node leaves the node count", || async {
        b.stats().await["nodes"] == 1
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_removes_the_nodes_registry_entries() {
    let redis = RedisServer::start();
    let mut a = TestGateway::redis(&redis.url(), |c| c.max_connections_per_user = 1).await;
    let b = a.sibling().await;
    let _held = a.connect("u1", "phone").await;
    a.shutdown().await;
    assert!(b
        .connect_with(&b.token("u1"), &format!("app={APP}&device=tablet"), &[])
        .await
        .is_ok());
    assert_eq!(b.stats().await["nodes"], 1);
}

#[tokio::test]
async fn with_aof_the_inbox_and_inbound_messages_survive_a_redis_crash() {
    let mut redis = RedisServer::start_with_aof();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    let mut client = gw.connect("u1", "phone").await;
    client.request(json!({"type": "chat", "id": "m-1"})).await;
    gw.send_to_user("u1", "n", json!("kept")).await;
    client.recv().await;
    drop(client);
    // everysec: give the append-only file its second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    eventually("health back", || async { health(&gw).await.0 == 200 }).await;
    let mut again = gw.connect("u1", "phone").await;
    assert_eq!(again.recv().await["data"], "kept");
    assert_eq!(gw.inbound().await.len(), 1);
    // The dedup key survived too: a resend is not stored twice.
    again.request(json!({"type": "chat", "id": "m-1"})).await;
    assert_eq!(gw.inbound().await.len(), 1);
}

#[tokio::test]
async fn leases_are_refreshed_a_slice_per_second_and_never_run_out() {
    let redis = RedisServer::start();
    // 9 s leases are refreshed every 3 s: a third of the node's connections each second.
    let gw = TestGateway::redis(&redis.url(), |c| {
        c.registry_ttl = Duration::from_secs(9);
    })
    .await;
    const USERS: usize = 6;
    let mut clients = Vec::new();
    for i in 0..USERS {
        clients.push(gw.connect(&format!("u{i}"), "phone").await);
    }
    // Each user's one registry entry: `<expires ms>|<device>`, in Redis's clock.
    let expiries = || -> Vec<u64> {
        (0..USERS)
            .map(|i| {
                let value = redis
                    .cli(&["HVALS", &format!("tether:{{u:{APP}:u{i}}}:conns")])
                    .expect("redis-cli");
                let expires = value.split('|').next().unwrap_or("").trim();
                expires
                    .parse()
                    .unwrap_or_else(|_| panic!("entry of u{i}: {value:?}"))
            })
            .collect()
    };
    let redis_ms = || -> u64 {
        let time = redis.cli(&["TIME"]).expect("redis-cli");
        let mut parts = time
            .split_whitespace()
            .map(|p| p.parse::<u64>().unwrap_or(0));
        parts.next().unwrap_or(0) * 1000 + parts.next().unwrap_or(0) / 1000
    };
    let mut before = expiries();
    let mut refreshed = [0u32; USERS];
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = expiries();
        assert!(
            now.iter().all(|e| *e > redis_ms()),
            "a live connection's lease ran out: {now:?}"
        );
        let changed: Vec<usize> = (0..USERS).filter(|i| now[*i] != before[*i]).collect();
        assert!(
            changed.len() < USERS,
            "every lease refreshed within half a second: a burst, not a slice"
        );
        for i in changed {
            refreshed[i] += 1;
        }
        before = now;
    }
    // 12 s: each lease refreshed about four times.
    assert!(refreshed.iter().all(|n| *n >= 2), "{refreshed:?}");
    drop(clients);
}
