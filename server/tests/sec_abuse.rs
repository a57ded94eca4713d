//! Security: abuse from a connected, authenticated client or a careless backend
//! (docs/reliability.md). Floods end in 4008 without hurting other users;
//! room and inbox explosions stay inside their caps (in Redis too); ids full of key and
//! pattern syntax never reach a Redis key or channel unescaped; nobody reads or acks
//! another user's inbox. What already has a test elsewhere (per-connection rate limit,
//! one flood, the room cap, one special-id case) is not repeated here.

#![allow(clippy::unwrap_used)] // test helpers panic on purpose

mod support;

use serde_json::json;
use support::redis::RedisServer;
use support::*;
use tether_server::auth::Claims;

/// Setup: one user floods over two connections, per-connection limit off, per-user 5/s.
/// Fault: 200 app messages as fast as the socket takes them.
/// Expected: the per-user limit refuses the excess and a connection closes with 4008;
/// another user's traffic on the same node is served throughout.
/// Must not lose: the other user's messages; nothing the flood got acked is stored twice.
#[tokio::test]
async fn a_flood_over_several_connections_of_one_user_ends_in_4008() {
    let gw = TestGateway::with(|c| {
        c.rate_limit_per_connection = 0;
        c.rate_limit_per_user = 5;
    })
    .await;
    let mut a = gw.connect("flooder", "a").await;
    let mut b = gw.connect("flooder", "b").await;
    let mut bystander = gw.connect("bystander", "phone").await;
    for i in 0..100 {
        a.send(json!({"type": "chat", "id": format!("a{i}")})).await;
        b.send(json!({"type": "chat", "id": format!("b{i}")})).await;
    }
    let (end_a, end_b) = tokio::join!(a.ended(), b.ended());
    assert!(
        end_a == Ended::Closed(4008) || end_b == Ended::Closed(4008),
        "{end_a:?} {end_b:?}"
    );
    // The bystander is served and its message stored.
    assert_eq!(
        bystander
            .request(json!({"type": "chat", "id": "calm-1"}))
            .await["type"],
        "ack"
    );
    let stored = gw.inbound().await;
    assert!(stored.iter().any(|m| m["id"] == "calm-1"));
    let flood: Vec<_> = stored.iter().filter(|m| m["userId"] == "flooder").collect();
    // Burst 10 for the user, plus at most a few refills: most of the flood was refused.
    assert!(flood.len() < 40, "{} flood messages stored", flood.len());
    let mut ids: Vec<_> = flood.iter().map(|m| m["id"].to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), flood.len(), "stored twice");
}

/// Setup: rate limits off so only the room cap applies; Redis broker.
/// Fault: one connection asks for 1000 distinct rooms, another user for 1000 more.
/// Expected: each connection holds at most WS_MAX_ROOMS_PER_CONNECTION rooms; the rest get
/// `too_many_rooms`; the node subscribes to no more channels than rooms held.
#[tokio::test]
async fn a_room_explosion_stays_within_the_cap_in_redis_too() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |c| {
        c.rate_limit_per_connection = 0;
        c.rate_limit_per_user = 0;
        c.max_rooms_per_connection = 20;
    })
    .await;
    let mut clients = vec![gw.connect("u1", "d").await, gw.connect("u2", "d").await];
    for (n, client) in clients.iter_mut().enumerate() {
        for i in 0..1000 {
            client
                .send(json!({"type": "join_room", "data": {"room": format!("r{n}-{i}")}}))
                .await;
        }
        let mut joined = 0;
        let mut refused = 0;
        for _ in 0..1000 {
            let answer = client.recv().await;
            match answer["type"].as_str() {
                Some("room_joined") => joined += 1,
                Some("error") => {
                    assert_eq!(answer["data"]["code"], "too_many_rooms");
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((joined, refused), (20, 980));
    }
    assert_eq!(gw.stats().await["totalRooms"], 40);
    let channels = redis.cli(&["PUBSUB", "CHANNELS", "*{r:*"]).unwrap();
    assert_eq!(channels.lines().filter(|l| !l.is_empty()).count(), 40);
    // Closing frees every subscription.
    for mut c in clients {
        c.ws.close(None).await.ok();
        c.ended().await;
    }
    eventually("room channels unsubscribed", || async {
        redis
            .cli(&["PUBSUB", "CHANNELS", "*{r:*"])
            .unwrap()
            .trim()
            .is_empty()
    })
    .await;
}

/// Setup: Redis broker, inbox cap 50 per user, inbound stream cap 100 per app.
/// Fault: the backend floods one offline user with 500 messages; a client floods the
/// inbound stream with 600 app messages (rate limits off).
/// Expected: the inbox keeps exactly the newest 50 (LLEN in Redis), replay starts at seq
/// 451; the stream stays near its cap (approximate trimming); the node's memory use does
/// not follow the flood; other users' inboxes are untouched.
/// Must not lose: the newest 50 messages; the other user's message.
#[tokio::test]
async fn inbox_and_inbound_floods_stay_within_their_caps_in_redis() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |c| {
        c.max_queue_per_user = 50;
        c.inbound_max_per_app = 100;
        c.rate_limit_per_connection = 0;
        c.rate_limit_per_user = 0;
    })
    .await;
    gw.send_to_user("quiet", "n", json!("keep me")).await;
    for i in 1..=500 {
        gw.send_to_user("victim", "n", json!(i)).await;
    }
    let stored = redis
        .cli(&["LLEN", "tether:{u:shop:victim}:inbox"])
        .unwrap();
    assert_eq!(stored.trim(), "50");
    let mut victim = gw.connect("victim", "phone").await;
    assert_eq!(victim.established["data"]["replayFrom"], 451);
    assert_eq!(victim.established["data"]["replayCount"], 50);
    for seq in 451..=500 {
        assert_eq!(victim.recv().await["seq"], seq);
    }
    let mut quiet = gw.connect("quiet", "phone").await;
    assert_eq!(quiet.recv().await["data"], "keep me");

    let mut flooder = gw.connect("flooder", "d").await;
    for i in 0..600 {
        flooder
            .send(json!({"type": "chat", "id": format!("f{i}")}))
            .await;
    }
    for _ in 0..600 {
        assert_eq!(flooder.recv().await["type"], "ack");
    }
    let length: u64 = redis
        .cli(&["XLEN", "tether:inbound:shop"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // MAXLEN ~ trims whole stream nodes (100 entries each by default).
    assert!(
        (100..=300).contains(&length),
        "stream length {length} with a cap of 100"
    );
}

/// Setup: Redis broker. Users, devices, message ids and rooms made of Redis key syntax,
/// glob characters, hash-tag braces, percent signs and newlines.
/// Expected: what the name rules refuse is refused (newlines, spaces, `*` in rooms); what
/// they allow reaches Redis escaped: every key holds exactly one `{...}` hash tag, no `*`,
/// `?`, `[`, newline or space, and users whose names differ only in such characters never
/// share a key or see each other's messages.
#[tokio::test]
async fn key_and_pattern_syntax_in_ids_never_reaches_redis_unescaped() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |c| {
        c.rate_limit_per_connection = 0;
        c.rate_limit_per_user = 0;
    })
    .await;
    let users = [
        "a:b",
        "a%3Ab",
        "a}b",
        "{a}",
        "a*",
        "a?",
        "a[x]",
        "tether:{u:shop:a}",
        "a b",
    ];
    let mut clients = Vec::new();
    for (n, user) in users.iter().enumerate() {
        let mut client = gw
            .connect_with(&gw.token(user), &format!("app={APP}&device=d:1"), &[])
            .await
            .unwrap_or_else(|e| panic!("{user}: {e:?}"));
        let ack = client
            .request(json!({"type": "chat", "id": format!("m{n}}}*:{{x}}%")}))
            .await;
        assert_eq!(ack["type"], "ack", "{user}: {ack}");
        let joined = client
            .request(json!({"type": "join_room", "data": {"room": "r:1.x_y-z"}}))
            .await;
        assert_eq!(joined["type"], "room_joined");
        clients.push(client);
    }
    // Each user gets only their own message.
    for (user, client) in users.iter().zip(clients.iter_mut()) {
        gw.send_to_user(user, "n", json!(user)).await;
        let got = client.recv().await;
        assert_eq!(got["data"], json!(user));
        assert_eq!(got["seq"], 1, "{user} shares an inbox");
    }
    for client in clients.iter_mut() {
        client.silent_for(100).await;
    }
    // Names the rules refuse never get that far.
    let mut client = gw.connect("plain", "d").await;
    for room in ["r*", "r?", "r\n", "r{x}", "r x", "r[1]"] {
        let answer = client
            .request(json!({"type": "join_room", "data": {"room": room}}))
            .await;
        assert_eq!(answer["data"]["code"], "invalid_room", "{room:?}");
    }
    for id in ["a\nb", "a b", "a\rb", "\u{0}"] {
        let answer = client.request(json!({"type": "chat", "id": id})).await;
        assert_eq!(answer["type"], "error", "{id:?}");
    }
    let newline_user = gw.token_for(&Claims::new("u\nx", &[APP], 600));
    assert_eq!(
        gw.refused(Some(&newline_user), &format!("app={APP}"), &[])
            .await
            .0,
        401
    );
    let (status, _) = gw
        .api(
            reqwest::Method::POST,
            "/v1/send/user",
            Some(json!({"userId": "u\nx", "app": APP, "message": {"type": "n"}})),
        )
        .await;
    assert_eq!(status, 400);

    let keys = redis.cli(&["KEYS", "*"]).unwrap();
    let channels = redis.cli(&["PUBSUB", "CHANNELS"]).unwrap();
    for name in keys
        .lines()
        .chain(channels.lines())
        .filter(|l| !l.is_empty())
    {
        for bad in ['*', '?', '[', ']', '\n', ' '] {
            assert!(!name.contains(bad), "{bad:?} in {name:?}");
        }
        if name.starts_with("tether:inbound:") {
            continue;
        }
        assert!(
            name.matches('{').count() <= 1 && name.matches('}').count() <= 1,
            "{name}"
        );
    }
    // The de-duplication keys of the funny message ids are escaped too.
    let seen = redis
        .cli(&["KEYS", "{tether:inbound:shop}:seen:*"])
        .unwrap();
    assert_eq!(seen.lines().filter(|l| !l.is_empty()).count(), users.len());
}

/// Setup: Redis broker, a victim with unread messages on two apps, an attacker with a
/// valid token of their own.
/// Fault: the attacker acks high seqs, connects with the victim's device id and a huge
/// `since`, and asks for the victim's app.
/// Expected: none of it touches the victim: the attacker's acks answer `invalid_ack`
/// against their own (empty) inbox, the device id is scoped by user, the other app is
/// `app_forbidden`; the victim then gets every unread message.
/// Must not lose: the victim's messages.
#[tokio::test]
async fn nobody_reads_or_acks_another_users_inbox_in_redis() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    for i in 1..=3 {
        gw.send_to_user("victim", "n", json!(i)).await;
    }
    let mut attacker = gw
        .connect_with(
            &gw.token("attacker"),
            &format!("app={APP}&device=victims-phone&since=99999"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(attacker.established["data"]["replayCount"], 0);
    for seq in [1, 3, 1000] {
        attacker.ack(seq).await;
        assert_eq!(attacker.recv().await["data"]["code"], "invalid_ack");
    }
    // An ack frame carrying someone else's name is still about the sender's own inbox.
    attacker
        .send(json!({"type": "ack", "data": {"seq": 3, "userId": "victim", "app": APP}}))
        .await;
    assert_eq!(attacker.recv().await["data"]["code"], "invalid_ack");
    let other_app = gw.token_for(&Claims::new("attacker", &[APP], 600));
    assert_eq!(
        gw.refused(Some(&other_app), "app=victims-app", &[]).await.1,
        "app_forbidden"
    );
    attacker.silent_for(200).await;
    let mut victim = gw.connect("victim", "victims-phone").await;
    assert_eq!(victim.established["data"]["replayCount"], 3);
    for seq in 1..=3 {
        assert_eq!(victim.recv().await["seq"], seq);
    }
    // The attacker's acks and device left no trace in the victim's cursors: before the
    // victim connected, the victim had none at all.
    let cursors = redis
        .cli(&["HKEYS", "tether:{u:shop:victim}:cursors"])
        .unwrap_or_default();
    assert!(
        cursors
            .lines()
            .all(|f| f.is_empty() || f == "d:victims-phone" || f == "~w"),
        "{cursors}"
    );
}
