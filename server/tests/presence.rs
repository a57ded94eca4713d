//! docs/protocol.md §4 `room_presence` and §9 `GET /v1/presence`: who is in a room, on one
//! node (embedded broker) and across nodes on one Redis, after joins, leaves, closes, a
//! node that stopped without closing its connections, and Redis losing its data.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::redis::RedisServer;
use support::*;

async fn join(client: &mut Client, room: &str) {
    let joined = client
        .request(json!({"type": "join_room", "data": {"room": room}}))
        .await;
    assert_eq!(joined["type"], "room_joined", "{joined}");
}

/// The `room_presence` answer's data (panics on anything else).
async fn presence(client: &mut Client, room: &str) -> Value {
    let answer = client
        .request(json!({"type": "room_presence", "data": {"room": room}}))
        .await;
    assert_eq!(answer["type"], "room_presence", "{answer}");
    assert!(answer.get("id").is_none() && answer.get("seq").is_none());
    answer["data"].clone()
}

/// `(user, connections)` of each listed member, in order.
fn members(presence: &Value) -> Vec<(String, u64)> {
    presence["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["userId"].as_str().expect("userId").to_owned(),
                m["connections"].as_u64().expect("connections"),
            )
        })
        .collect()
}

fn listed(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(u, n)| ((*u).to_owned(), *n)).collect()
}

#[tokio::test]
async fn members_see_who_is_in_the_room_and_others_are_refused() {
    let gw = TestGateway::start().await;
    let mut alice = gw.connect("alice", "phone").await;
    let mut alice_tablet = gw.connect("alice", "tablet").await;
    let mut bob = gw.connect("bob", "phone").await;

    // Not a member yet: refused, the request named by its id (else by its type).
    let refused = alice
        .request(json!({"type": "room_presence", "id": "p-1", "data": {"room": "lobby"}}))
        .await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["data"]["code"], "forbidden");
    assert_eq!(refused["data"]["ref"], "p-1");
    let refused = alice
        .request(json!({"type": "room_presence", "data": {"room": "lobby"}}))
        .await;
    assert_eq!(refused["data"]["ref"], "room_presence");
    let invalid = alice
        .request(json!({"type": "room_presence", "data": {"room": "no spaces"}}))
        .await;
    assert_eq!(invalid["data"]["code"], "invalid_room");

    join(&mut alice, "lobby").await;
    join(&mut alice_tablet, "lobby").await;
    join(&mut bob, "lobby").await;
    let seen = presence(&mut bob, "lobby").await;
    assert_eq!(
        (seen["users"].clone(), seen["connections"].clone()),
        (json!(2), json!(3))
    );
    assert_eq!(members(&seen), listed(&[("alice", 2), ("bob", 1)]));
    assert_eq!(seen["members"][0]["userType"], "customer");
    // Each member names its connections, as the join and leave events do.
    let mut alices = vec![
        alice.established["data"]["connectionId"].clone(),
        alice_tablet.established["data"]["connectionId"].clone(),
    ];
    alices.sort_by_key(|id| id.as_str().unwrap_or_default().to_owned());
    assert_eq!(seen["members"][0]["connectionIds"], json!(alices));
    assert_eq!(
        seen["members"][1]["connectionIds"],
        json!([bob.established["data"]["connectionId"].clone()])
    );
    assert_eq!(seen["truncated"], false);
    assert_eq!(
        gw.presence("lobby").await,
        seen,
        "the backend sees the same"
    );

    // Leaving and closing take people out; joining twice counts once.
    join(&mut bob, "lobby").await;
    alice_tablet
        .request(json!({"type": "leave_room", "data": {"room": "lobby"}}))
        .await;
    assert_eq!(
        members(&presence(&mut bob, "lobby").await),
        listed(&[("alice", 1), ("bob", 1)])
    );
    drop(alice);
    eventually("alice's close leaves the room", || async {
        members(&gw.presence("lobby").await) == listed(&[("bob", 1)])
    })
    .await;
}

#[tokio::test]
async fn presence_spans_nodes_through_joins_leaves_and_closes() {
    // Default leases: a node re-asserts a given room's presence once per 100 s, so what
    // is seen here comes from the joins, leaves and closes themselves.
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |_| {}).await;
    let b = a.sibling().await;
    let mut on_a = a.connect("u1", "d").await;
    let mut on_b = b.connect("u2", "d").await;
    let mut also_on_b = b.connect("u3", "d").await;
    for client in [&mut on_a, &mut on_b, &mut also_on_b] {
        join(client, "orders:1").await;
    }
    let everyone = listed(&[("u1", 1), ("u2", 1), ("u3", 1)]);
    assert_eq!(members(&presence(&mut on_a, "orders:1").await), everyone);
    assert_eq!(members(&presence(&mut on_b, "orders:1").await), everyone);
    assert_eq!(a.presence("orders:1").await["connections"], 3);

    also_on_b
        .request(json!({"type": "leave_room", "data": {"room": "orders:1"}}))
        .await;
    assert_eq!(
        members(&presence(&mut on_a, "orders:1").await),
        listed(&[("u1", 1), ("u2", 1)])
    );
    drop(on_b);
    eventually("a closed connection leaves the room", || async {
        members(&a.presence("orders:1").await) == listed(&[("u1", 1)])
    })
    .await;
}

#[tokio::test]
async fn a_node_that_stopped_without_closing_drops_out() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |c| {
        c.registry_ttl = Duration::from_secs(3);
    })
    .await;
    let mut b = a.sibling().await;
    let mut on_a = a.connect("u1", "d").await;
    let mut on_b = b.connect("u2", "d").await;
    join(&mut on_a, "orders:1").await;
    join(&mut on_b, "orders:1").await;
    assert_eq!(a.presence("orders:1").await["users"], 2);
    // Its member stops counting once its heartbeat runs out (3 s here), and its part of
    // the room expires from Redis a lease later; the live node's part stays.
    let part = |client: &Client| part_of("orders%3A1", client);
    let (part_a, part_b) = (part(&on_a), part(&on_b));
    b.kill();
    eventually("a stopped node's members drop out", || async {
        members(&a.presence("orders:1").await) == listed(&[("u1", 1)])
    })
    .await;
    eventually("a stopped node's part expires", || async {
        redis.cli(&["EXISTS", &part_b]).unwrap_or_default().trim() == "0"
    })
    .await;
    assert_eq!(
        redis.cli(&["HLEN", &part_a]).unwrap_or_default().trim(),
        "1",
        "u1's entry stays"
    );
}

/// The Redis key of the node `client` is on's part of `room` (escaped) in app `shop`.
fn part_of(room: &str, client: &Client) -> String {
    let node = client.established["data"]["serverId"]
        .as_str()
        .expect("serverId");
    assert!(
        node.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "node ids need no escaping here: {node}"
    );
    format!("tether:{{r:shop:{room}}}:presence:{node}")
}

#[tokio::test]
async fn each_node_repairs_its_part_after_redis_lost_it_or_a_write_was_lost() {
    let mut redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |c| {
        c.registry_ttl = Duration::from_secs(3);
    })
    .await;
    let mut member = gw.connect("u1", "d").await;
    join(&mut member, "lobby").await;
    let part = part_of("lobby", &member);
    let key = part.as_str();
    let node = member.established["data"]["serverId"]
        .as_str()
        .expect("serverId")
        .to_owned();

    // A leave whose write never reached Redis: the node drops the stray entry itself.
    let ghost = format!("{node}-999999");
    redis.cli(&["HSET", key, &ghost, r#"["ghost","customer"]"#]);
    eventually("the node's stray entry is dropped", || async {
        redis
            .cli(&["HEXISTS", key, &ghost])
            .unwrap_or_default()
            .trim()
            == "0"
    })
    .await;

    // Redis restarts empty: the node writes its members back (and its heartbeat, without
    // which they would not count).
    redis.restart();
    eventually("presence comes back after Redis lost it", || async {
        members(&gw.presence("lobby").await) == listed(&[("u1", 1)])
    })
    .await;
    assert_eq!(
        members(&presence(&mut member, "lobby").await),
        listed(&[("u1", 1)])
    );
    let ttl: i64 = redis
        .cli(&["PTTL", key])
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(-2);
    assert!(
        ttl > 0,
        "the presence hash expires when nobody refreshes it: {ttl}"
    );
}

#[tokio::test]
async fn a_node_readers_took_for_gone_writes_its_part_back() {
    // Default leases: a room's own re-assertion comes only every 100 s, so what brings the
    // entry back here is the node noticing that it was not listed as alive.
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    let mut member = gw.connect("u1", "d").await;
    join(&mut member, "lobby").await;
    let node = member.established["data"]["serverId"]
        .as_str()
        .expect("serverId")
        .to_owned();
    redis.cli(&["ZREM", "tether:{nodes}:live", &node]);
    assert_eq!(
        gw.presence("lobby").await["users"],
        0,
        "a node without a heartbeat does not count"
    );
    eventually(
        "the node writes its members back with its next heartbeat",
        || async { members(&gw.presence("lobby").await) == listed(&[("u1", 1)]) },
    )
    .await;
}

#[tokio::test]
async fn a_room_whose_write_failed_is_rewritten_at_the_next_tick() {
    // Default leases: without the retry, this room would be re-asserted only in 100 s.
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    let mut stays = gw.connect("u1", "d").await;
    let mut goes = gw.connect("u2", "d").await;
    join(&mut stays, "lobby").await;
    join(&mut goes, "lobby").await;
    assert_eq!(gw.presence("lobby").await["users"], 2);
    // Break the key so the close's write fails (WRONGTYPE), then mend it.
    let part = part_of("lobby", &stays);
    let key = part.as_str();
    redis.cli(&["SET", key, "not a hash"]);
    drop(goes);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.cli(&["DEL", key]);
    eventually("the node rewrites the room it failed to update", || async {
        members(&gw.presence("lobby").await) == listed(&[("u1", 1)])
    })
    .await;
}

/// The next frame, which must be a presence event of `kind` about `user`.
async fn event(client: &mut Client, kind: &str, room: &str, user: &str) -> Value {
    let frame = client.recv().await;
    assert_eq!(frame["type"], kind, "{frame}");
    assert_eq!(frame["room"], room, "{frame}");
    assert_eq!(frame["data"]["userId"], user, "{frame}");
    assert!(
        frame["id"].is_string() && frame.get("seq").is_none(),
        "{frame}"
    );
    frame
}

#[tokio::test]
async fn rooms_with_events_hear_joins_leaves_and_closes() {
    let gw = TestGateway::with(|c| c.presence_events = vec!["orders:*".into()]).await;
    let mut u1 = gw.connect("u1", "d").await;
    let mut u2 = gw.connect("u2", "d").await;
    join(&mut u1, "orders:1").await;
    event(&mut u1, "presence_joined", "orders:1", "u1").await;
    join(&mut u2, "orders:1").await;
    let joined = event(&mut u1, "presence_joined", "orders:1", "u2").await;
    assert_eq!(joined["data"]["userType"], "customer");
    assert_eq!(
        joined["data"]["connectionId"],
        u2.established["data"]["connectionId"]
    );
    event(&mut u2, "presence_joined", "orders:1", "u2").await;
    // Joining again changes nothing, so nobody hears of it.
    join(&mut u2, "orders:1").await;
    u1.silent_for(200).await;

    u2.request(json!({"type": "leave_room", "data": {"room": "orders:1"}}))
        .await;
    event(&mut u1, "presence_left", "orders:1", "u2").await;
    join(&mut u2, "orders:1").await;
    event(&mut u1, "presence_joined", "orders:1", "u2").await;
    drop(u2);
    event(&mut u1, "presence_left", "orders:1", "u2").await;

    // Rooms outside WS_PRESENCE_EVENTS stay quiet.
    let mut u3 = gw.connect("u3", "d").await;
    join(&mut u1, "lobby").await;
    join(&mut u3, "lobby").await;
    u1.silent_for(200).await;

    // Nobody else may send these types.
    let refused = u3
        .request(json!({"type": "presence_joined", "id": "x", "data": {"userId": "u9"}}))
        .await;
    assert_eq!(refused["data"]["code"], "reserved_type");
    let (status, _) = gw
        .api(
            reqwest::Method::POST,
            "/v1/send/room",
            Some(json!({"room": "orders:1", "app": APP, "message": {"type": "presence_left"}})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn events_reach_members_on_other_nodes() {
    let redis = RedisServer::start();
    let a = TestGateway::redis(&redis.url(), |c| c.presence_events = vec!["*".into()]).await;
    let b = a.sibling().await;
    let mut on_a = a.connect("u1", "d").await;
    let mut on_b = b.connect("u2", "d").await;
    join(&mut on_a, "lobby").await;
    event(&mut on_a, "presence_joined", "lobby", "u1").await;
    join(&mut on_b, "lobby").await;
    event(&mut on_a, "presence_joined", "lobby", "u2").await;
    drop(on_b);
    event(&mut on_a, "presence_left", "lobby", "u2").await;
}
