//! docs/protocol.md §2, §6 and §9 across nodes: several gateway nodes on one Redis behave as
//! one gateway.

mod support;

use serde_json::json;
use support::redis::{HoldingProxy, RedisServer};
use support::*;

async fn join(client: &mut Client, room: &str) {
    let joined = client
        .request(json!({"type": "join_room", "data": {"room": room}}))
        .await;
    assert_eq!(joined["type"], "room_joined", "{joined}");
}

#[tokio::test]
async fn a_user_message_sent_on_one_node_reaches_connections_on_every_node() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |_| {}).await;
    let b = a.sibling().await;
    let mut on_a = a.connect("u1", "phone").await;
    let mut on_b = b.connect("u1", "tablet").await;
    let sent = a
        .send_to_user("u1", "order_update", json!({"orderId": 7}))
        .await;
    assert_eq!(sent["delivered"], 2, "connections of the user on all nodes");
    assert_eq!(sent["seq"], 1);
    for client in [&mut on_a, &mut on_b] {
        let m = client.recv().await;
        assert_eq!(m["type"], "order_update");
        assert_eq!(m["seq"], 1);
        assert_eq!(m["id"], sent["id"]);
    }
    let second = b.send_to_user("u1", "order_update", json!(2)).await;
    assert_eq!(second["seq"], 2, "one seq per inbox, whichever node sends");
    assert_eq!(on_a.recv().await["seq"], 2);
    assert_eq!(on_b.recv().await["seq"], 2);
}

#[tokio::test]
async fn room_and_app_messages_reach_members_on_every_node() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |_| {}).await;
    let b = a.sibling().await;
    let mut on_a = a.connect("u1", "d").await;
    let mut on_b = b.connect("u2", "d").await;
    let mut outsider = b.connect("u3", "d").await;
    join(&mut on_a, "orders:1").await;
    join(&mut on_b, "orders:1").await;
    let sent = a.send_to_room("orders:1", json!({"eta": 5})).await;
    assert!(
        sent["delivered"].is_null(),
        "members on other nodes are not counted"
    );
    for client in [&mut on_a, &mut on_b] {
        let m = client.recv().await;
        assert_eq!(m["room"], "orders:1");
        assert_eq!(m["id"], sent["id"]);
    }
    outsider.silent_for(200).await;

    let (status, app_sent) = b
        .api(
            reqwest::Method::POST,
            "/v1/send/app",
            Some(json!({"app": APP, "message": {"type": "maintenance_notice"}})),
        )
        .await;
    assert_eq!(status, 200);
    for client in [&mut on_a, &mut on_b, &mut outsider] {
        assert_eq!(client.recv().await["id"], app_sent["id"]);
    }
}

#[tokio::test]
async fn a_node_stops_receiving_a_room_when_its_last_member_leaves() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |_| {}).await;
    let b = a.sibling().await;
    let mut on_b = b.connect("u2", "d").await;
    join(&mut on_b, "lobby").await;
    let channels = || {
        redis
            .cli(&["PUBSUB", "CHANNELS", "*lobby*"])
            .unwrap_or_default()
    };
    assert!(
        !channels().trim().is_empty(),
        "subscribed while it has a member"
    );
    on_b.request(json!({"type": "leave_room", "data": {"room": "lobby"}}))
        .await;
    eventually("unsubscribed", || async { channels().trim().is_empty() }).await;
    a.send_to_room("lobby", json!(1)).await;
    on_b.silent_for(200).await;
}

/// §4: every room message from `room_joined` on arrives, also for a second member that
/// joins while the node's subscribe for the first one is still on its way to Redis.
#[tokio::test]
async fn a_second_joiner_hears_the_room_from_room_joined_while_the_subscribe_is_on_its_way() {
    let redis = RedisServer::start();
    let hold = std::time::Duration::from_millis(1500);
    let proxy = HoldingProxy::start(redis.port, &["SUBSCRIBE", "{r:shop:orders.9}:ch"], hold).await;
    let gw = TestGateway::redis(&proxy.url(), |_| {}).await;
    let mut first = gw.connect("u1", "d").await;
    let mut second = gw.connect("u2", "d").await;
    let started = std::time::Instant::now();
    first
        .send(json!({"type": "join_room", "data": {"room": "orders.9"}}))
        .await;
    eventually(
        "the first join's SUBSCRIBE is held in the proxy",
        || async { proxy.has_held() },
    )
    .await;
    join(&mut second, "orders.9").await;
    assert!(
        started.elapsed() >= hold,
        "room_joined came before the node was subscribed"
    );
    let sent = gw.send_to_room("orders.9", json!({"eta": 3})).await;
    let heard = second.recv().await;
    assert_eq!(heard["id"], sent["id"], "{heard}");
    assert_eq!(first.recv().await["type"], "room_joined");
    assert_eq!(first.recv().await["id"], sent["id"]);
}

#[tokio::test]
async fn the_connection_limit_holds_across_nodes() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |c| c.max_connections_per_user = 2).await;
    let b = a.sibling().await;
    let _one = a.connect("u1", "phone").await;
    let _two = b.connect("u1", "tablet").await;
    let token = a.token("u1");
    for node in [&a, &b] {
        let (status, code) = node
            .refused(Some(&token), &format!("app={APP}&device=laptop"), &[])
            .await;
        assert_eq!((status, code.as_str()), (429, "too_many_connections"));
    }
    let stats = a.stats().await;
    assert_eq!(stats["nodes"], 2);
    assert_eq!(stats["totalConnections"], 1, "this node");
    eventually("cluster totals refreshed by the heartbeats", || async {
        a.stats().await["totalRedisConnections"] == 2
    })
    .await;
}

#[tokio::test]
async fn a_device_reconnecting_on_another_node_replaces_its_old_connection() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |c| c.max_connections_per_user = 1).await;
    let b = a.sibling().await;
    let mut old = a.connect("u1", "phone").await;
    let mut new = b.connect("u1", "phone").await;
    assert_eq!(old.ended().await, Ended::Closed(4409));
    let sent = a.send_to_user("u1", "n", json!(1)).await;
    assert_eq!(sent["delivered"], 1);
    assert_eq!(new.recv().await["seq"], 1);
}

#[tokio::test]
async fn kicking_a_user_closes_their_connections_on_every_node() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |_| {}).await;
    let b = a.sibling().await;
    let mut on_a = a.connect("u1", "phone").await;
    let mut on_b = b.connect("u1", "tablet").await;
    let (status, body) = a
        .api(
            reqwest::Method::DELETE,
            &format!("/v1/connections?app={APP}&userId=u1"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["kicked"], 2);
    assert_eq!(on_a.ended().await, Ended::Closed(4403));
    assert_eq!(on_b.ended().await, Ended::Closed(4403));
}

#[tokio::test]
async fn the_inbox_survives_a_node_restart_and_replays_from_any_node() {
    let redis = RedisServer::start();
    let mut a = TestGateway::redis(&redis.url(), |_| {}).await;
    let mut phone = a.connect("u1", "phone").await;
    for i in 1..=3 {
        a.send_to_user("u1", "n", json!(i)).await;
        assert_eq!(phone.recv().await["seq"], i);
    }
    phone.ack(2).await;
    phone.request(json!({"type": "ping"})).await;
    a.shutdown().await;
    assert_eq!(phone.ended().await, Ended::Closed(1012));
    let b = TestGateway::redis(&redis.url(), |_| {}).await;
    b.send_to_user("u1", "n", json!(4)).await;
    let mut again = b.connect("u1", "phone").await;
    assert_eq!(again.established["data"]["replayFrom"], 3);
    assert_eq!(again.established["data"]["replayCount"], 2);
    assert_eq!(again.recv().await["seq"], 3);
    assert_eq!(again.recv().await["seq"], 4);
    // A new device starts at the user's watermark (2), whichever node it reaches.
    let tablet = b.connect("u1", "tablet").await;
    assert_eq!(tablet.established["data"]["replayFrom"], 3);
    assert_eq!(b.stats().await["totalQueuedMessages"], 4);
}

#[tokio::test]
async fn an_app_message_resent_through_another_node_is_stored_once() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |_| {}).await;
    let b = a.sibling().await;
    let message = json!({"type": "chat_message", "id": "m-1", "data": {"text": "hi"}});
    let mut on_a = a.connect("u1", "phone").await;
    assert_eq!(on_a.request(message.clone()).await["data"]["id"], "m-1");
    drop(on_a);
    let mut on_b = b.connect("u1", "phone").await;
    assert_eq!(on_b.request(message).await["data"]["id"], "m-1");
    let stored = b.inbound().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], "m-1");
    assert_eq!(stored[0]["userId"], "u1");
    assert_eq!(stored[0]["device"], "phone");
    assert_eq!(stored[0]["data"], json!({"text": "hi"}));
    // The stream carries the entry under the protocol's name, for consumer groups.
    let length = redis.cli(&["XLEN", "tether:inbound:shop"]).unwrap();
    assert_eq!(length.trim(), "1");
}

#[tokio::test]
async fn ids_with_special_characters_never_reach_key_names_unescaped() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    let nasty = "we:ird*{id}";
    let mut client = gw
        .connect_with(&gw.token(nasty), &format!("app={APP}&device=a:b"), &[])
        .await
        .unwrap();
    client
        .request(json!({"type": "chat", "id": "x:y*{z}"}))
        .await;
    gw.send_to_user(nasty, "n", json!(1)).await;
    assert_eq!(client.recv().await["seq"], 1);
    let keys = redis.cli(&["KEYS", "*"]).unwrap();
    for key in keys.lines() {
        let inside_tag = key.split_once('{').map_or("", |(_, rest)| rest);
        assert!(
            !key.contains("we:ird") && !key.contains("x:y*"),
            "unescaped id in {key}"
        );
        assert!(!inside_tag.contains('*'), "{key}");
    }
}

#[tokio::test]
async fn health_reports_each_redis_connection() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    let (status, health) = gw
        .api_with_key(reqwest::Method::GET, "/health", None, None)
        .await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "healthy");
    assert!(health["latency"].is_u64());
    assert_eq!(
        health["connections"],
        json!({"main": "ready", "subscriber": "ready", "publisher": "ready"})
    );
}

#[tokio::test]
async fn a_rust_backend_publishes_straight_into_redis_with_the_apis_semantics() {
    use tether_protocol::api::OutgoingMessage;
    use tether_server::publisher::{PublishError, Publisher};
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |_| {}).await;
    let b = a.sibling().await;
    let mut on_a = a.connect("u1", "phone").await;
    let mut on_b = b.connect("u2", "phone").await;
    join(&mut on_a, "orders:9").await;
    join(&mut on_b, "orders:9").await;
    let publisher = Publisher::connect(&redis.url()).await.unwrap();

    let first = a.send_to_user("u1", "n", json!("via http")).await;
    let sent = publisher
        .send_to_user(
            APP,
            "u1",
            OutgoingMessage::new("order_update", &json!({"orderId": 9})),
        )
        .await
        .unwrap();
    assert_eq!(sent.seq, 2, "one inbox, whoever appends");
    assert_eq!(sent.delivered, 1);
    assert!(sent.queued);
    assert_eq!(on_a.recv().await["id"], first["id"]);
    let m = on_a.recv().await;
    assert_eq!(
        (m["seq"].as_u64(), m["id"].as_str()),
        (Some(2), Some(sent.id.as_str()))
    );
    assert_eq!(m["data"]["orderId"], 9);

    let room = publisher
        .send_to_room(
            APP,
            "orders:9",
            OutgoingMessage::new("order_update", &json!("eta 5")).with_id("eta-9"),
        )
        .await
        .unwrap();
    assert_eq!(room.id, "eta-9");
    for client in [&mut on_a, &mut on_b] {
        let m = client.recv().await;
        assert_eq!(m["id"], "eta-9");
        assert_eq!(m["room"], "orders:9");
    }
    let app = publisher
        .send_to_app(
            APP,
            OutgoingMessage::new("maintenance_notice", &json!(null)),
        )
        .await
        .unwrap();
    assert_eq!(on_a.recv().await["id"], app.id);
    assert_eq!(on_b.recv().await["id"], app.id);

    let refused = publisher
        .send_to_user(APP, "u1", OutgoingMessage::new("pong", &json!(1)))
        .await;
    assert!(matches!(refused, Err(PublishError::Invalid(m)) if m.contains("reserved")));
    let refused = publisher
        .send_to_room("bad app", "r", OutgoingMessage::new("x", &json!(1)))
        .await;
    assert!(matches!(refused, Err(PublishError::Invalid(_))));

    assert_eq!(publisher.kick_user(APP, "u2").await.unwrap().kicked, 1);
    assert_eq!(on_b.ended().await, Ended::Closed(4403));
}

#[tokio::test]
async fn a_since_from_an_inbox_redis_lost_hides_nothing() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    gw.send_to_user("u1", "n", json!("new")).await;
    let mut client = gw
        .connect_with(
            &gw.token("u1"),
            &format!("app={APP}&device=phone&since=500"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(client.established["data"]["replayFrom"], 1);
    assert_eq!(client.recv().await["data"], "new");
}

#[tokio::test]
async fn concurrent_sends_to_many_users_share_script_runs_and_each_inbox_stays_in_order() {
    use std::collections::BTreeMap;
    use tether_protocol::api::OutgoingMessage;
    use tether_server::publisher::Publisher;
    const USERS: u64 = 10;
    const PER_USER: u64 = 40;
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |_| {}).await;
    let b = a.sibling().await;
    let mut clients = Vec::new();
    for user in 0..USERS {
        let node = if user % 2 == 0 { &a } else { &b };
        clients.push(node.connect(&format!("u{user}"), "phone").await);
    }
    let publisher = Publisher::connect(&redis.url()).await.unwrap();
    redis.cli(&["CONFIG", "RESETSTAT"]).unwrap();

    let mut sends = Vec::new();
    for n in 0..USERS * PER_USER {
        let publisher = publisher.clone();
        sends.push(tokio::spawn(async move {
            let user = format!("u{}", n % USERS);
            let sent = publisher
                .send_to_user(APP, &user, OutgoingMessage::new("n", &json!(n)))
                .await
                .unwrap();
            (user, sent)
        }));
    }
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for send in sends {
        let (user, sent) = send.await.unwrap();
        assert_eq!(sent.delivered, 1, "{user} has one live connection");
        seqs.entry(user).or_default().push(sent.seq);
    }
    for (user, mut got) in seqs {
        got.sort_unstable();
        assert_eq!(
            got,
            (1..=PER_USER).collect::<Vec<_>>(),
            "{user}: one seq each"
        );
    }
    let stats = redis.cli(&["INFO", "commandstats"]).unwrap();
    let scripts: u64 = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split(['=', ',']).nth(1))
        .and_then(|n| n.parse().ok())
        .expect("evalsha counted");
    assert!(
        scripts < USERS * PER_USER / 2,
        "{} sends that came together took {scripts} script runs",
        USERS * PER_USER
    );
    for (user, client) in clients.iter_mut().enumerate() {
        for expected in 1..=PER_USER {
            let m = client.recv().await;
            assert_eq!(
                m["seq"], expected,
                "u{user} gets its messages live, in order"
            );
        }
        client.silent_for(100).await;
    }
}

#[tokio::test]
async fn a_send_retried_through_another_node_with_its_idempotency_key_is_delivered_once() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |_| {}).await;
    let b = a.sibling().await;
    let mut on_b = b.connect("u1", "phone").await;
    let body = json!({"userId": "u1", "app": APP, "message": {"type": "order_update", "data": {"orderId": 9}}});
    let (status, first, replayed) = a.api_idempotent("/v1/send/user", &body, "order-9").await;
    assert_eq!((status, replayed), (200, false), "{first}");
    // The backend's load balancer sends the retry to the other node.
    let (status, again, replayed) = b.api_idempotent("/v1/send/user", &body, "order-9").await;
    assert_eq!((status, replayed, &again), (200, true, &first));
    assert_eq!(on_b.recv().await["seq"], first["seq"]);
    on_b.silent_for(300).await;
    let inbox = format!("tether:{{u:{APP}:u1}}:inbox");
    assert_eq!(redis.cli(&["LLEN", &inbox]).unwrap().trim(), "1");
}

#[tokio::test]
async fn an_idempotency_key_is_freed_by_a_failed_send_and_taken_over_from_a_dead_one() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    let mut client = gw.connect("u1", "phone").await;
    let body = json!({"userId": "u1", "app": APP, "message": {"type": "n", "data": 1}});
    let fingerprint = tether_server::broker::idempotency::fingerprint("/v1/send/user", &body);
    // The user's inbox key holds something that is not an inbox: the send fails (503,
    // nothing sent) and must not keep the key.
    let inbox = format!("tether:{{u:{APP}:u1}}:inbox");
    redis.cli(&["SET", &inbox, "not a list"]).unwrap();
    let (status, error, _) = gw.api_idempotent("/v1/send/user", &body, "k-fail").await;
    assert_eq!(status, 503, "{error}");
    redis.cli(&["DEL", &inbox]).unwrap();
    let (status, sent, replayed) = gw.api_idempotent("/v1/send/user", &body, "k-fail").await;
    assert_eq!((status, replayed), (200, false), "{sent}");
    assert_eq!(client.recv().await["id"], sent["id"]);

    // A claim left by a gateway that died mid-request 31 s ago (Redis's clock) is dead:
    // the retry sends. One claimed just now is still running: 409.
    let time = redis.cli(&["TIME"]).unwrap();
    let now_ms: u64 = time
        .split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1000;
    for (key, at) in [("k-dead", now_ms - 31_000), ("k-running", now_ms + 1_000)] {
        let record = format!("tether:{{i:{APP}:{key}}}:idem");
        redis
            .cli(&[
                "SET",
                &record,
                &format!("p:{at}:00000000deadbeef:{fingerprint}"),
                "PX",
                "60000",
            ])
            .unwrap();
    }
    let (status, taken, replayed) = gw.api_idempotent("/v1/send/user", &body, "k-dead").await;
    assert_eq!((status, replayed), (200, false), "{taken}");
    assert_eq!(client.recv().await["id"], taken["id"]);
    let (status, error, _) = gw.api_idempotent("/v1/send/user", &body, "k-running").await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "idempotency_in_progress");
    client.silent_for(200).await;
    // The inbox holds each message once: the freed key's and the dead claim's sends.
    assert_eq!(redis.cli(&["LLEN", &inbox]).unwrap().trim(), "2");
}

/// The send of a gateway that died after storing, before recording its answer: its claim
/// is left pending. The takeover 30 s later finds the marker written with the message
/// and stores nothing: the same id and seq, `Idempotent-Replayed`, one inbox entry. The
/// same for an attempt answered 503 although Redis stored the message (its key freed).
#[tokio::test]
async fn a_keyed_send_stored_before_a_crash_or_a_503_is_never_stored_again() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |c| c.room_history = vec!["orders:*".into()]).await;
    let b = a.sibling().await;
    let mut phone = b.connect("u1", "phone").await;
    let mut tablet = a.connect("u1", "tablet").await;
    let now_ms = || -> u64 {
        let time = redis.cli(&["TIME"]).unwrap();
        time.split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1000
    };
    let sends = [
        (
            "/v1/send/user",
            json!({"userId": "u1", "app": APP, "message": {"type": "n", "data": 1}}),
        ),
        (
            "/v1/send/users",
            json!({"userIds": ["u1", "u2"], "app": APP, "message": {"type": "n", "data": 2}}),
        ),
        (
            "/v1/send/room",
            json!({"room": "orders:1", "app": APP, "message": {"type": "eta", "data": 3}}),
        ),
        (
            "/v1/send/room",
            json!({"room": "lobby", "app": APP, "message": {"type": "chat", "data": 4}}),
        ),
        (
            "/v1/send/app",
            json!({"app": APP, "message": {"type": "notice", "data": 5}}),
        ),
    ];
    for client in [&mut phone, &mut tablet] {
        for room in ["orders:1", "lobby"] {
            let joined = client
                .request(json!({"type": "join_room", "data": {"room": room}}))
                .await;
            assert_eq!(joined["type"], "room_joined");
        }
    }
    for (n, (path, body)) in sends.iter().enumerate() {
        for (case, damage) in ["crashed", "503"].into_iter().enumerate() {
            let key = format!("k-{n}-{case}");
            let (status, first, replayed) = a.api_idempotent(path, body, &key).await;
            assert_eq!((status, replayed), (200, false), "{path}: {first}");
            let frame = phone.recv().await;
            assert_eq!(frame["id"], first["id"], "{path}");
            assert_eq!(tablet.recv().await["id"], first["id"], "{path}");
            let record = format!("tether:{{i:{APP}:{key}}}:idem");
            if damage == "crashed" {
                // As the dead gateway left it: a claim 31 s old, its answer never recorded.
                let fingerprint = tether_server::broker::idempotency::fingerprint(path, body);
                let pending = format!("p:{}:00000000deadbeef:{fingerprint}", now_ms() - 31_000);
                redis
                    .cli(&["SET", &record, &pending, "PX", "60000"])
                    .unwrap();
            } else {
                // As a 503 leaves it: the key freed for the retry.
                redis.cli(&["DEL", &record]).unwrap();
            }
            let (status, retried, replayed) = b.api_idempotent(path, body, &key).await;
            assert_eq!(
                (status, replayed),
                (200, true),
                "{path} after {damage}: {retried}"
            );
            assert_eq!(retried, first, "{path} after {damage}");
            // And the next retry replays the recorded answer.
            let (status, again, replayed) = a.api_idempotent(path, body, &key).await;
            assert_eq!((status, replayed, &again), (200, true, &first), "{path}");
        }
    }
    phone.silent_for(300).await;
    tablet.silent_for(0).await;
    let inbox = |user: &str| format!("tether:{{u:{APP}:{user}}}:inbox");
    assert_eq!(redis.cli(&["LLEN", &inbox("u1")]).unwrap().trim(), "4");
    assert_eq!(redis.cli(&["LLEN", &inbox("u2")]).unwrap().trim(), "2");
    let (_, history) = a
        .api(
            reqwest::Method::GET,
            &format!("/v1/history?app={APP}&room=orders:1"),
            None,
        )
        .await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    // A marker of another request refuses the send (422), even with the claim gone.
    redis
        .cli(&["DEL", &format!("tether:{{i:{APP}:k-0-1}}:idem")])
        .unwrap();
    let (status, refused, _) = b
        .api_idempotent(
            "/v1/send/user",
            &json!({"userId": "u1", "app": APP, "message": {"type": "n", "data": "other"}}),
            "k-0-1",
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "idempotency_key_reused");
    phone.silent_for(200).await;
}

#[tokio::test]
async fn a_rust_backend_and_the_http_api_share_idempotency_keys() {
    use tether_protocol::api::OutgoingMessage;
    use tether_server::publisher::{PublishError, Publisher};
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    let mut client = gw.connect("u1", "phone").await;
    join(&mut client, "orders:9").await;
    let publisher = Publisher::connect(&redis.url()).await.unwrap();
    let delivered = || OutgoingMessage::new("order_update", &json!({"orderId": 9}));

    let first = publisher
        .once("order-9")
        .send_to_user(APP, "u1", delivered())
        .await
        .unwrap();
    assert!(!first.replayed);
    let again = publisher
        .once("order-9")
        .send_to_user(APP, "u1", delivered())
        .await
        .unwrap();
    assert_eq!((again.replayed, &again.answer), (true, &first.answer));
    // The same request through the HTTP API is the same request.
    let body = json!({"userId": "u1", "app": APP, "message": {"type": "order_update", "data": {"orderId": 9}}});
    let (status, answer, replayed) = gw.api_idempotent("/v1/send/user", &body, "order-9").await;
    assert_eq!((status, replayed), (200, true), "{answer}");
    assert_eq!(answer["seq"], first.answer.seq);
    assert_eq!(client.recv().await["seq"], first.answer.seq);

    let other = publisher
        .once("order-9")
        .send_to_user(APP, "u1", OutgoingMessage::new("order_update", &json!(10)))
        .await;
    assert!(matches!(other, Err(PublishError::KeyReused)), "{other:?}");
    let room = publisher
        .once("eta-9")
        .send_to_room(APP, "orders:9", delivered())
        .await
        .unwrap();
    let room_again = publisher
        .once("eta-9")
        .send_to_room(APP, "orders:9", delivered())
        .await
        .unwrap();
    assert!(room_again.replayed && room_again.answer == room.answer);
    assert_eq!(client.recv().await["id"], room.answer.id.as_str());
    let app = publisher
        .once("notice-1")
        .send_to_app(APP, OutgoingMessage::new("notice", &json!(1)))
        .await
        .unwrap();
    assert!(!app.replayed);
    assert_eq!(client.recv().await["id"], app.answer.id.as_str());
    let bad = publisher
        .once("has space")
        .send_to_app(APP, OutgoingMessage::new("notice", &json!(1)))
        .await;
    assert!(matches!(bad, Err(PublishError::Invalid(_))), "{bad:?}");
    client.silent_for(300).await;
}

#[tokio::test]
async fn a_backend_that_gives_up_waiting_still_gets_the_first_answer_on_its_retry() {
    let redis = RedisServer::start();
    // The inbox append of this one message is held 1.5 s on its way to Redis.
    let hold = std::time::Duration::from_millis(1500);
    let proxy = HoldingProxy::start(redis.port, &["slow-order-5"], hold).await;
    let gw = TestGateway::redis(&proxy.url(), |_| {}).await;
    let mut client = gw.connect("u1", "phone").await;
    let body =
        json!({"userId": "u1", "app": APP, "message": {"type": "n", "data": "slow-order-5"}});
    // The backend's HTTP client times out after 300 ms and hangs up.
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("http://{}/v1/send/user", gw.addr))
        .bearer_auth(ADMIN_KEY)
        .header("idempotency-key", "order-5")
        .json(&body)
        .send()
        .await;
    assert!(gave_up.is_err(), "{gave_up:?}");
    let first = client.recv().await;
    // The send went on without the caller and keeps its answer: the retry gets it and
    // sends nothing (while the answer is being recorded it hears 409 and waits, as a
    // backend honouring Retry-After would).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (status, answer, replayed) = loop {
        let (status, answer, replayed) = gw.api_idempotent("/v1/send/user", &body, "order-5").await;
        if status != 409 || std::time::Instant::now() > deadline {
            break (status, answer, replayed);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!((status, replayed), (200, true), "{answer}");
    assert_eq!(answer["id"], first["id"]);
    client.silent_for(300).await;
    let inbox = format!("tether:{{u:{APP}:u1}}:inbox");
    assert_eq!(redis.cli(&["LLEN", &inbox]).unwrap().trim(), "1");
}

#[tokio::test]
async fn only_the_attempt_that_holds_a_claim_records_or_frees_it_in_redis() {
    use tether_server::broker::idempotency::Store;
    use tether_server::broker::idempotency::{Claim, Record, ABANDONED_AFTER_MS};
    use tether_server::broker::redis::client::{open, Target};
    let redis = RedisServer::start();
    let target = Target {
        urls: vec![redis.url()],
        cluster: false,
    };
    let conn = open(&target, None, 1).await.unwrap();
    let fp = "ab".repeat(32);
    let record = format!("tether:{{i:{APP}:k}}:idem");
    // A claim from an attempt that died long ago (Redis's clock) ...
    let time = redis.cli(&["TIME"]).unwrap();
    let now_ms: u64 = time
        .split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1000;
    let dead = format!(
        "p:{}:00000000deadbeef:{fp}",
        now_ms - ABANDONED_AFTER_MS - 1_000
    );
    redis.cli(&["SET", &record, &dead, "PX", "600000"]).unwrap();
    // ... is taken over by a new attempt.
    let Claim::Claimed(ours) = conn
        .claim_idempotency(APP, "k", "1111222233334444", &fp, 600_000)
        .await
        .unwrap()
    else {
        panic!("an abandoned claim is taken over");
    };
    assert!(ours.contains(":1111222233334444:"), "{ours}");
    let done = |answer: &str| {
        Record::Done {
            fingerprint: fp.clone(),
            answer: answer.into(),
        }
        .encode()
    };
    // The dead attempt comes back: it can neither record over the new claim nor free it.
    assert!(!conn
        .complete_idempotency(APP, "k", &dead, &done("late"))
        .await
        .unwrap());
    conn.release_idempotency(APP, "k", &dead).await.unwrap();
    assert_eq!(redis.cli(&["GET", &record]).unwrap().trim(), ours);
    // The holder records its answer, and the key keeps its expiry.
    assert!(conn
        .complete_idempotency(APP, "k", &ours, &done("{}"))
        .await
        .unwrap());
    assert_eq!(redis.cli(&["GET", &record]).unwrap().trim(), done("{}"));
    let pttl: i64 = redis
        .cli(&["PTTL", &record])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 500_000, "{pttl}");
    // A claim that is gone (expired) is not recorded either.
    redis.cli(&["DEL", &record]).unwrap();
    assert!(!conn
        .complete_idempotency(APP, "k", &ours, &done("{}"))
        .await
        .unwrap());
    assert_eq!(redis.cli(&["EXISTS", &record]).unwrap().trim(), "0");
}

#[tokio::test]
async fn a_send_to_several_users_spans_nodes_and_reports_each_user() {
    use tether_protocol::api::OutgoingMessage;
    use tether_server::publisher::Publisher;
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |_| {}).await;
    let b = a.sibling().await;
    let mut on_a = a.connect("u1", "phone").await;
    let mut on_b = b.connect("u2", "phone").await;
    // u3's inbox key holds something that is not an inbox: only u3 fails.
    let broken = format!("tether:{{u:{APP}:u3}}:inbox");
    redis.cli(&["SET", &broken, "not a list"]).unwrap();
    let body =
        json!({"userIds": ["u1", "u2", "u3"], "app": APP, "message": {"type": "n", "data": 1}});
    let (status, sent) = a
        .api(reqwest::Method::POST, "/v1/send/users", Some(body))
        .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(
        (sent["sent"].as_u64(), sent["failed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(sent["users"][2]["error"]["code"], "unavailable", "{sent}");
    assert!(sent["users"][2]["seq"].is_null());
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(client.recv().await["id"], sent["id"]);
    }
    // When no inbox is reached, the request fails as a whole.
    let only_broken = json!({"userIds": ["u3"], "app": APP, "message": {"type": "n"}});
    let (status, _) = a
        .api(reqwest::Method::POST, "/v1/send/users", Some(only_broken))
        .await;
    assert_eq!(status, 503);
    redis.cli(&["DEL", &broken]).unwrap();

    // A Rust backend, the same answers.
    let publisher = Publisher::connect(&redis.url()).await.unwrap();
    let users = vec!["u1".to_owned(), "u2".to_owned()];
    let sent = publisher
        .send_to_users(APP, &users, OutgoingMessage::new("n", &2))
        .await
        .unwrap();
    assert_eq!((sent.sent, sent.failed), (2, 0));
    assert_eq!(sent.users[0].seq, Some(2));
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(client.recv().await["id"], sent.id.as_str());
    }
    let again = publisher
        .once("both-2")
        .send_to_users(APP, &users, OutgoingMessage::new("n", &3))
        .await
        .unwrap();
    let replay = publisher
        .once("both-2")
        .send_to_users(APP, &users, OutgoingMessage::new("n", &3))
        .await
        .unwrap();
    assert!(!again.replayed && replay.replayed && replay.answer == again.answer);
    on_a.recv().await;
    on_a.silent_for(200).await;
}

/// A `Publisher` given the gateways' stream settings appends to room and app streams with
/// the API's semantics: offsets shared with HTTP sends, recovery, markers.
#[tokio::test]
async fn a_rust_backend_publishes_into_streams_and_keyed_sends_stay_single() {
    use tether_protocol::api::OutgoingMessage;
    use tether_server::publisher::Publisher;
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |c| {
        c.room_history = vec!["orders:*".into()];
        c.app_history_size = 5;
    })
    .await;
    let publisher = Publisher::connect(&redis.url())
        .await
        .unwrap()
        .with_streams(gw.config.stream_settings());
    let mut client = gw.connect("u1", "phone").await;
    let joined = client
        .request(json!({"type": "join_room", "data": {"room": "orders:1"}}))
        .await;
    let epoch = joined["data"]["epoch"].as_str().unwrap().to_owned();
    let via_http = gw.send_to_room("orders:1", json!("http")).await;
    let sent = publisher
        .send_to_room(APP, "orders:1", OutgoingMessage::new("eta", &json!("rust")))
        .await
        .unwrap();
    assert_eq!(
        (via_http["offset"].as_u64(), sent.offset),
        (Some(1), Some(2))
    );
    assert_eq!(sent.epoch.as_deref(), Some(epoch.as_str()));
    for offset in [1, 2] {
        assert_eq!(client.recv().await["offset"], offset);
    }
    let once = publisher.once("eta-7");
    let message = || OutgoingMessage::new("eta", &json!(7));
    let first = once.send_to_room(APP, "orders:1", message()).await.unwrap();
    let again = once.send_to_room(APP, "orders:1", message()).await.unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.answer, again.answer);
    assert_eq!(first.answer.offset, Some(3));
    assert_eq!(client.recv().await["offset"], 3);
    // The app stream too.
    let app = publisher
        .send_to_app(APP, OutgoingMessage::new("notice", &json!(1)))
        .await
        .unwrap();
    assert_eq!(app.offset, Some(1));
    let frame = client.recv().await;
    assert_eq!(
        (frame["offset"].clone(), frame["type"].clone()),
        (json!(1), json!("notice"))
    );
    client.silent_for(200).await;
}
