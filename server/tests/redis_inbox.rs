//! docs/protocol.md §6 in Redis's own terms: how the inbox is laid out (a list of
//! `<ms>:<frame>` in seq order), that inboxes an earlier build wrote as sorted sets are
//! taken over without losing a message, and that reads stay exact when a seq is missing.

mod support;

use serde_json::json;
use support::redis::RedisServer;
use support::*;

fn inbox_key(user: &str) -> String {
    format!("tether:{{u:{APP}:{user}}}:inbox")
}

fn members(redis: &RedisServer, user: &str) -> Vec<String> {
    redis
        .cli(&["LRANGE", &inbox_key(user), "0", "-1"])
        .expect("LRANGE")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The seqs `client` receives until it has been silent for a moment.
async fn seqs(client: &mut Client, count: usize) -> Vec<u64> {
    let mut got = Vec::new();
    for _ in 0..count {
        got.push(client.recv().await["seq"].as_u64().expect("seq"));
    }
    client.silent_for(200).await;
    got
}

fn type_of(redis: &RedisServer, key: &str) -> String {
    redis.cli(&["TYPE", key]).expect("TYPE").trim().to_owned()
}

/// Rewrites `user`'s inbox the way builds before the list layout stored it: a sorted set,
/// score = seq, the same members, with an expiry.
fn as_sorted_set(redis: &RedisServer, user: &str) {
    let old = members(redis, user);
    assert!(!old.is_empty());
    let key = inbox_key(user);
    redis.cli(&["DEL", &key]).expect("DEL");
    for member in &old {
        let frame: serde_json::Value =
            serde_json::from_str(member.split_once(':').expect("ms:frame").1).expect("frame");
        let seq = frame["seq"].to_string();
        redis.cli(&["ZADD", &key, &seq, member]).expect("ZADD");
    }
    redis.cli(&["PEXPIRE", &key, "600000"]).expect("PEXPIRE");
    assert_eq!(type_of(redis, &key), "zset");
}

fn assert_upgraded(redis: &RedisServer, user: &str, len: usize) {
    let key = inbox_key(user);
    assert_eq!(type_of(redis, &key), "list");
    assert_eq!(members(redis, user).len(), len);
    let ttl: i64 = redis
        .cli(&["PTTL", &key])
        .and_then(|out| out.trim().parse().ok())
        .expect("PTTL");
    assert!(ttl > 0, "the expiry survives the upgrade: {ttl}");
}

#[tokio::test]
async fn the_inbox_is_a_list_of_timestamped_frames_in_seq_order() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    for i in 1..=3 {
        gw.send_to_user("u1", "n", json!(i)).await;
    }
    let stored = members(&redis, "u1");
    assert_eq!(stored.len(), 3);
    for (i, member) in stored.iter().enumerate() {
        let (ms, frame) = member.split_once(':').expect("ms:frame");
        assert!(
            ms.parse::<u64>().expect("ms") > 1_700_000_000_000,
            "{member}"
        );
        assert!(
            frame.starts_with(&format!("{{\"seq\":{},", i + 1)),
            "{member}"
        );
    }
}

#[tokio::test]
async fn a_sorted_set_inbox_from_an_earlier_build_replays_in_full_and_then_grows() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |_| {}).await;
    for i in 1..=3 {
        gw.send_to_user("u1", "n", json!(i)).await;
    }
    as_sorted_set(&redis, "u1");

    // Connecting reads it (the open script takes it over).
    let mut phone = gw.connect("u1", "phone").await;
    assert_eq!(phone.established["data"]["replayFrom"], 1);
    assert_eq!(seqs(&mut phone, 3).await, [1, 2, 3]);
    assert_upgraded(&redis, "u1", 3);
    let sent = gw.send_to_user("u1", "n", json!(4)).await;
    assert_eq!(sent["seq"], 4);
    assert_eq!(phone.recv().await["data"], 4);
    assert_eq!(members(&redis, "u1").len(), 4);
}

#[tokio::test]
async fn a_send_to_a_sorted_set_inbox_takes_it_over_and_keeps_every_message() {
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |c| c.max_queue_per_user = 4).await;
    for i in 1..=3 {
        gw.send_to_user("u1", "n", json!(i)).await;
    }
    as_sorted_set(&redis, "u1");

    // Sending first (the append script takes it over, then trims to the cap).
    assert_eq!(gw.send_to_user("u1", "n", json!(4)).await["seq"], 4);
    assert_upgraded(&redis, "u1", 4);
    assert_eq!(gw.send_to_user("u1", "n", json!(5)).await["seq"], 5);
    assert_upgraded(&redis, "u1", 4);
    let mut phone = gw.connect("u1", "phone").await;
    assert_eq!(phone.established["data"]["replayFrom"], 2);
    assert_eq!(seqs(&mut phone, 4).await, [2, 3, 4, 5]);
}

#[tokio::test]
async fn replay_is_exact_when_a_seq_never_reached_the_inbox() {
    // A send whose script failed after taking its seq leaves a gap: the list's positions
    // no longer follow the seqs, and a replay must still start right after `since`.
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |c| c.max_connections_per_user = 10).await;
    for i in 1..=2 {
        gw.send_to_user("u1", "n", json!(i)).await;
    }
    redis
        .cli(&["INCR", &format!("tether:{{u:{APP}:u1}}:seq")])
        .expect("INCR");
    for i in 4..=6 {
        gw.send_to_user("u1", "n", json!(i)).await;
    }
    for (since, expected) in [
        (0, vec![1, 2, 4, 5, 6]),
        (1, vec![2, 4, 5, 6]),
        (2, vec![4, 5, 6]),
        (3, vec![4, 5, 6]),
        (5, vec![6]),
    ] {
        let mut client = gw
            .connect_with(
                &gw.token("u1"),
                &format!("app={APP}&device=d{since}&since={since}"),
                &[],
            )
            .await
            .unwrap();
        let count = expected.len();
        assert_eq!(
            client.established["data"]["replayCount"], count,
            "since {since}"
        );
        assert_eq!(seqs(&mut client, count).await, expected, "since {since}");
    }
}

#[tokio::test]
async fn messages_past_the_ttl_leave_the_head_of_a_busy_inbox() {
    // The inbox stays alive (new messages keep coming) while its oldest ones expire.
    let redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |c| c.message_ttl_s = 2).await;
    for i in 1..=3 {
        gw.send_to_user("u1", "n", json!(i)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    for i in 4..=6 {
        gw.send_to_user("u1", "n", json!(i)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let mut phone = gw.connect("u1", "phone").await;
    assert_eq!(phone.established["data"]["replayFrom"], 4);
    assert_eq!(seqs(&mut phone, 3).await, [4, 5, 6]);
    assert_eq!(
        members(&redis, "u1").len(),
        3,
        "the expired head was trimmed"
    );
}
