//! Beyond one Redis: gateway nodes on a 3-master Redis Cluster, with sharded pub/sub and
//! hash-tagged keys (an inbox and its counters share a slot).

mod support;

use serde_json::json;
use support::redis::RedisCluster;
use support::*;

#[tokio::test]
async fn nodes_on_a_redis_cluster_deliver_all_three_kinds_and_keep_the_rules() {
    let cluster = RedisCluster::start();
    let a = TestGateway::redis(&cluster.url(), |c| c.max_connections_per_user = 2).await;
    let b = a.sibling().await;

    // Users whose keys land on different shards.
    let mut clients = Vec::new();
    for (i, user) in ["alice", "bob", "carol", "dave", "erin", "frank"]
        .iter()
        .enumerate()
    {
        let node = if i % 2 == 0 { &a } else { &b };
        clients.push((user.to_string(), node.connect(user, "phone").await));
    }
    for (user, client) in clients.iter_mut() {
        let sender = if user.len() % 2 == 0 { &a } else { &b };
        let sent = sender.send_to_user(user, "n", json!(user)).await;
        assert_eq!(sent["delivered"], 1, "{user}");
        let m = client.recv().await;
        assert_eq!(m["seq"], 1, "{user}");
        assert_eq!(m["data"], json!(user));
    }
    // Idempotency records, each key in its own slot: a retry through the other node is
    // answered from the first send.
    for user in ["alice", "bob", "carol"] {
        let body = json!({"userId": user, "app": APP, "message": {"type": "n", "data": 2}});
        let key = format!("second-for-{user}");
        let (status, first, replayed) = a.api_idempotent("/v1/send/user", &body, &key).await;
        assert_eq!((status, replayed), (200, false), "{first}");
        let (status, again, replayed) = b.api_idempotent("/v1/send/user", &body, &key).await;
        assert_eq!((status, replayed, &again), (200, true, &first));
        assert_eq!(first["seq"], 2);
    }
    for (user, client) in clients
        .iter_mut()
        .filter(|(u, _)| ["alice", "bob", "carol"].contains(&u.as_str()))
    {
        assert_eq!(client.recv().await["seq"], 2, "{user}");
    }

    for (_, client) in clients.iter_mut() {
        let joined = client
            .request(json!({"type": "join_room", "data": {"room": "all-hands"}}))
            .await;
        assert_eq!(joined["type"], "room_joined");
    }
    // Pub/sub is sharded: shard channels on the masters, no classic channels at all.
    let shard_channels: usize = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["PUBSUB", "SHARDCHANNELS"])
                .unwrap_or_default()
                .lines()
                .count()
        })
        .sum();
    assert!(shard_channels >= 6, "{shard_channels} shard channels");
    for node in &cluster.nodes {
        assert_eq!(
            node.cli(&["PUBSUB", "CHANNELS"]).unwrap_or_default().trim(),
            ""
        );
    }
    let room = a.send_to_room("all-hands", json!("hello room")).await;
    for (_, client) in clients.iter_mut() {
        assert_eq!(client.recv().await["id"], room["id"]);
    }
    // Presence: each node's part of the room shares the room's slot; either node reads
    // both parts, over HTTP and for a member.
    let presence = b.presence("all-hands").await;
    assert_eq!(presence["users"], 6, "{presence}");
    assert_eq!(presence["connections"], 6, "{presence}");
    let asked = clients[0]
        .1
        .request(json!({"type": "room_presence", "data": {"room": "all-hands"}}))
        .await;
    assert_eq!(asked["type"], "room_presence", "{asked}");
    assert_eq!(asked["data"]["users"], 6, "{asked}");
    let (status, app) = b
        .api(
            reqwest::Method::POST,
            "/v1/send/app",
            Some(json!({"app": APP, "message": {"type": "system_announcement"}})),
        )
        .await;
    assert_eq!(status, 200);
    for (_, client) in clients.iter_mut() {
        assert_eq!(client.recv().await["id"], app["id"]);
    }

    // The limit, replacement and inbox replay work through the cluster too.
    let _second = b.connect("alice", "tablet").await;
    assert_eq!(
        b.refused(
            Some(&b.token("alice")),
            &format!("app={APP}&device=laptop"),
            &[]
        )
        .await
        .1,
        "too_many_connections"
    );
    let (_, mut alice) = clients.remove(0);
    let _replacement = b.connect("alice", "phone").await;
    assert_eq!(alice.ended().await, Ended::Closed(4409));
    a.send_to_user("zoe", "n", json!("offline")).await;
    let mut zoe = b.connect("zoe", "phone").await;
    assert_eq!(zoe.established["data"]["replayCount"], 1);
    assert_eq!(zoe.recv().await["data"], "offline");

    // Client messages: stored once, whichever node they come through.
    let message = json!({"type": "chat", "id": "c-1"});
    let reply = zoe.request(message.clone()).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let mut zoe_on_a = a.connect("zoe", "tablet").await;
    assert_eq!(
        zoe_on_a.recv().await["data"],
        "offline",
        "the tablet has read nothing yet"
    );
    assert_eq!(zoe_on_a.request(message).await["type"], "ack");
    assert_eq!(a.inbound().await.len(), 1);

    let stats = a.stats().await;
    assert_eq!(stats["nodes"], 2);
    let (status, health) = a
        .api_with_key(reqwest::Method::GET, "/health", None, None)
        .await;
    assert_eq!(status, 200, "{health}");
}

/// Streams on a Redis Cluster: each room's meta, history, channel and markers share a
/// slot (the scripts would be refused otherwise); rooms land on different shards.
#[tokio::test]
async fn room_streams_recover_and_keyed_sends_stay_single_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let a = TestGateway::redis(&cluster.url(), |c| {
        c.room_history = vec!["orders:*".into()];
        c.app_history_size = 10;
    })
    .await;
    let b = a.sibling().await;
    for room in ["orders:1", "orders:2", "orders:3", "orders:4"] {
        let mut client = b.connect("u1", "phone").await;
        let joined = client
            .request(json!({"type": "join_room", "data": {"room": room}}))
            .await;
        assert_eq!(joined["data"]["offset"], 0, "{joined}");
        let first = a.send_to_room(room, json!(1)).await;
        let epoch = first["epoch"].as_str().unwrap().to_owned();
        assert_eq!(client.recv().await["offset"], 1, "{room}");
        drop(client);
        for n in 2..=4 {
            a.send_to_room(room, json!(n)).await;
        }
        let body = json!({"room": room, "app": APP, "message": {"type": "eta", "data": 5}});
        let (status, keyed, _) = a.api_idempotent("/v1/send/room", &body, room).await;
        assert_eq!(status, 200, "{keyed}");
        let (status, again, replayed) = b.api_idempotent("/v1/send/room", &body, room).await;
        assert_eq!((status, replayed, &again), (200, true, &keyed));
        let mut client = b.connect("u1", "phone").await;
        let joined = client
            .request(json!({"type": "join_room", "data": {"room": room, "since": {"offset": 1, "epoch": epoch}}}))
            .await;
        assert_eq!(
            (
                joined["data"]["recovered"].clone(),
                joined["data"]["replayCount"].clone()
            ),
            (json!(true), json!(4)),
            "{room}: {joined}"
        );
        for offset in 2..=5 {
            assert_eq!(client.recv().await["offset"], offset, "{room}");
        }
    }
    let (status, sent) = a
        .api(
            reqwest::Method::POST,
            "/v1/send/app",
            Some(json!({"app": APP, "message": {"type": "notice"}})),
        )
        .await;
    assert_eq!((status, sent["offset"].clone()), (200, json!(1)), "{sent}");
}
