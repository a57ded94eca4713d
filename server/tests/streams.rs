//! Streams (docs/protocol.md §6): rooms with history and app broadcast streams, recovery
//! on join and at connect. Every test runs twice from this one source: on the embedded
//! broker (one node) and on Redis with two nodes (the publisher on one, the reader on
//! the other). Redis-only behaviour (an epoch after FLUSHALL, a node that missed live
//! messages) is at the end.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use support::redis::RedisServer;
use support::{eventually, Client, TestGateway, ADMIN_KEY, APP, WAIT};
use tether_server::config::Config;

#[derive(Clone, Copy)]
enum Broker {
    Memory,
    Redis,
}

/// The gateways of one test: `publisher` takes the backend's sends, `reader` the clients.
/// On the embedded broker they are the same node.
struct Nodes {
    gateways: Vec<TestGateway>,
    redis: Option<RedisServer>,
}

impl Nodes {
    async fn start(broker: Broker, change: impl Fn(&mut Config) + Clone + Send + 'static) -> Nodes {
        match broker {
            Broker::Memory => Nodes {
                gateways: vec![TestGateway::with(change).await],
                redis: None,
            },
            Broker::Redis => {
                let redis = RedisServer::start();
                let a = TestGateway::redis(&redis.url(), change.clone()).await;
                let b = TestGateway::redis(&redis.url(), change).await;
                Nodes {
                    gateways: vec![a, b],
                    redis: Some(redis),
                }
            }
        }
    }

    fn publisher(&self) -> &TestGateway {
        &self.gateways[0]
    }

    fn reader(&self) -> &TestGateway {
        self.gateways.last().unwrap()
    }
}

fn history(size: u64) -> impl Fn(&mut Config) + Clone + Send + 'static {
    move |c: &mut Config| {
        c.room_history = vec!["orders:*".into()];
        c.room_history_size = size;
        c.app_history_size = size;
    }
}

/// Sends `data` to `room` through `gw`; the answer (with offset and epoch).
async fn publish(gw: &TestGateway, room: &str, data: Value) -> Value {
    let answer = gw.send_to_room(room, data).await;
    assert!(answer["offset"].is_u64(), "{answer}");
    answer
}

async fn join(client: &mut Client, room: &str, since: Option<(u64, &str)>) -> Value {
    let mut data = json!({"room": room});
    if let Some((offset, epoch)) = since {
        data["since"] = json!({"offset": offset, "epoch": epoch});
    }
    let answer = client
        .request(json!({"type": "join_room", "data": data}))
        .await;
    assert_eq!(answer["type"], "room_joined", "{answer}");
    answer["data"].clone()
}

/// Runs a test on both brokers.
macro_rules! on_both {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn memory() {
                super::$test(super::Broker::Memory).await;
            }
            #[tokio::test]
            async fn redis() {
                super::$test(super::Broker::Redis).await;
            }
        }
    };
}

/// A client that loses its connection while a publisher keeps publishing gets, after it
/// joins again with its position, every message it missed and then the live ones: each
/// once, in offset order, no gap at the seam (checked by id against the publisher's
/// ledger of answers).
async fn a_blip_while_a_publisher_runs_loses_and_repeats_nothing(broker: Broker) {
    const TOTAL: u64 = 300;
    let nodes = Nodes::start(broker, history(1000)).await;
    let room = "orders:1";
    let mut client = nodes.reader().connect("u1", "phone").await;
    let joined = join(&mut client, room, None).await;
    assert_eq!(joined["recovered"], false);
    assert_eq!(joined["replayCount"], 0);
    assert_eq!(joined["offset"], 0);

    // The publisher: TOTAL messages, one after the other, each answer in the ledger.
    let published = Arc::new(AtomicU64::new(0));
    let ledger = {
        let published = published.clone();
        let url = format!("http://{}/v1/send/room", nodes.publisher().addr);
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ledger = BTreeMap::new();
            for n in 1..=TOTAL {
                let answer: Value = http
                    .post(&url)
                    .bearer_auth(ADMIN_KEY)
                    .json(&json!({"room": room, "app": APP, "message": {"type": "eta", "data": n}}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let offset = answer["offset"].as_u64().expect("an offset");
                ledger.insert(offset, answer["id"].as_str().unwrap().to_owned());
                published.store(n, Ordering::SeqCst);
            }
            ledger
        })
    };

    // Read until 50 have arrived, then drop the socket (no close frame: a tunnel).
    let mut got: Vec<(u64, String, String)> = Vec::new();
    let mut epoch = String::new();
    while got.len() < 50 {
        let frame = client.recv().await;
        got.push((
            frame["offset"].as_u64().unwrap(),
            frame["id"].as_str().unwrap().to_owned(),
            "first".into(),
        ));
        epoch = frame["epoch"].as_str().unwrap().to_owned();
    }
    drop(client);
    let dropped_at = published.load(Ordering::SeqCst);
    eventually("the publisher goes on while the client is away", || {
        let published = published.clone();
        async move { published.load(Ordering::SeqCst) >= dropped_at + 40 }
    })
    .await;

    let position = got.last().unwrap().0;
    let mut client = nodes.reader().connect("u1", "phone").await;
    let joined = join(&mut client, room, Some((position, &epoch))).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(joined["epoch"], epoch.as_str());
    let replayed = joined["replayCount"].as_u64().unwrap();
    assert!(replayed >= 40, "{joined}");
    assert_eq!(joined["offset"].as_u64().unwrap(), position + replayed);
    while got.last().unwrap().0 < TOTAL {
        let frame = client.recv().await;
        assert_eq!(frame["epoch"], epoch.as_str());
        got.push((
            frame["offset"].as_u64().unwrap(),
            frame["id"].as_str().unwrap().to_owned(),
            "second".into(),
        ));
    }
    let ledger = ledger.await.unwrap();
    let offsets: Vec<u64> = got.iter().map(|(o, _, _)| *o).collect();
    assert_eq!(
        offsets,
        (1..=TOTAL).collect::<Vec<_>>(),
        "a gap or a repeat"
    );
    for (offset, id, _) in &got {
        assert_eq!(
            ledger.get(offset),
            Some(id),
            "offset {offset} is another message"
        );
    }
    client.silent_for(200).await;
}
on_both!(a_blip_while_a_publisher_runs_loses_and_repeats_nothing);

/// A position whose next messages left the history (by size) is not recovered: nothing
/// is replayed, the answer says so and gives the newest offset.
async fn a_position_older_than_the_history_is_not_recovered(broker: Broker) {
    let nodes = Nodes::start(broker, history(3)).await;
    let mut epoch = String::new();
    for n in 1..=6 {
        epoch = publish(nodes.publisher(), "orders:2", json!(n)).await["epoch"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let mut client = nodes.reader().connect("u1", "phone").await;
    let joined = join(&mut client, "orders:2", Some((2, &epoch))).await;
    assert_eq!(
        joined,
        json!({"room": "orders:2", "offset": 6, "epoch": epoch, "recovered": false, "replayCount": 0})
    );
    // The last three are kept: a position among them recovers.
    let joined = join(&mut client, "orders:2", Some((3, &epoch))).await;
    assert_eq!(
        (joined["recovered"].clone(), joined["replayCount"].clone()),
        (json!(true), json!(3))
    );
    for offset in 4..=6 {
        assert_eq!(client.recv().await["offset"], offset);
    }
    // Another epoch is another stream.
    let joined = join(&mut client, "orders:2", Some((6, "nope"))).await;
    assert_eq!(
        (joined["recovered"].clone(), joined["replayCount"].clone()),
        (json!(false), json!(0))
    );
    publish(nodes.publisher(), "orders:2", json!(7)).await;
    assert_eq!(client.recv().await["offset"], 7);
    client.silent_for(200).await;
}
on_both!(a_position_older_than_the_history_is_not_recovered);

/// A room without history answers as before: no stream part, messages without offsets.
async fn rooms_without_history_stay_live_only(broker: Broker) {
    let nodes = Nodes::start(broker, history(10)).await;
    let mut client = nodes.reader().connect("u1", "phone").await;
    let joined = join(&mut client, "lobby", Some((3, "e1"))).await;
    assert_eq!(joined, json!({"room": "lobby"}));
    let answer = nodes.publisher().send_to_room("lobby", json!(1)).await;
    assert!(answer.get("offset").is_none(), "{answer}");
    let frame = client.recv().await;
    assert_eq!(frame["data"], 1);
    assert!(
        frame.get("offset").is_none() && frame.get("epoch").is_none(),
        "{frame}"
    );
}
on_both!(rooms_without_history_stay_live_only);

/// The app's broadcasts, when kept, are recovered at connect: `appStream` in
/// `connection_established`, then the missed broadcasts after the inbox replay.
async fn app_broadcasts_are_recovered_at_connect(broker: Broker) {
    let nodes = Nodes::start(broker, history(10)).await;
    let mut epoch = String::new();
    for n in 1..=3 {
        let (status, answer) = nodes
            .publisher()
            .api(
                reqwest::Method::POST,
                "/v1/send/app",
                Some(json!({"app": APP, "message": {"type": "notice", "data": n}})),
            )
            .await;
        assert_eq!(
            (status, answer["offset"].clone()),
            (200, json!(n)),
            "{answer}"
        );
        epoch = answer["epoch"].as_str().unwrap().to_owned();
    }
    nodes
        .publisher()
        .send_to_user("u1", "n", json!("inbox"))
        .await;
    let reader = nodes.reader();
    let query = format!("app={APP}&device=phone&appOffset=1&appEpoch={epoch}");
    let mut client = reader
        .connect_with(&reader.token("u1"), &query, &[])
        .await
        .unwrap();
    let stream = &client.established["data"]["appStream"];
    assert_eq!(
        *stream,
        json!({"offset": 3, "epoch": epoch, "recovered": true, "replayCount": 2})
    );
    assert_eq!(client.established["data"]["replayCount"], 1);
    assert_eq!(client.recv().await["data"], "inbox");
    assert_eq!(client.recv().await["offset"], 2);
    assert_eq!(client.recv().await["offset"], 3);
    client.silent_for(200).await;

    // Without a position: where the stream is, nothing replayed.
    let fresh = reader.connect("u2", "tablet").await;
    assert_eq!(
        fresh.established["data"]["appStream"],
        json!({"offset": 3, "epoch": epoch, "recovered": false, "replayCount": 0})
    );
    // Half a position is a bad request.
    let query = format!("app={APP}&appOffset=1");
    let refused = reader.refused(Some(&reader.token("u1")), &query, &[]).await;
    assert_eq!(refused, (400, "invalid_params".to_owned()));
}
on_both!(app_broadcasts_are_recovered_at_connect);

/// `Idempotency-Key` on a room with history: the retry gets the first offset and the
/// history holds the message once.
async fn a_keyed_room_send_is_stored_once(broker: Broker) {
    let nodes = Nodes::start(broker, history(10)).await;
    let body = json!({"room": "orders:3", "app": APP, "message": {"type": "eta", "data": 5}});
    let (status, first, replayed) = nodes
        .publisher()
        .api_idempotent("/v1/send/room", &body, "eta-5")
        .await;
    assert_eq!((status, replayed), (200, false), "{first}");
    let (status, again, replayed) = nodes
        .reader()
        .api_idempotent("/v1/send/room", &body, "eta-5")
        .await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again["offset"], first["offset"]);
    assert_eq!(again["id"], first["id"]);
    let (_, history) = nodes
        .reader()
        .api(
            reqwest::Method::GET,
            &format!("/v1/history?app={APP}&room=orders:3"),
            None,
        )
        .await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        1,
        "{history}"
    );
}
on_both!(a_keyed_room_send_is_stored_once);

/// Redis lost the stream (FLUSHALL): its epoch changes, and a client's position of the
/// old epoch is not recovered.
#[tokio::test]
async fn an_epoch_changes_when_redis_loses_the_stream() {
    let nodes = Nodes::start(Broker::Redis, history(100)).await;
    publish(nodes.publisher(), "orders:4", json!(1)).await;
    let answer = publish(nodes.publisher(), "orders:4", json!(2)).await;
    let epoch = answer["epoch"].as_str().unwrap().to_owned();
    nodes.redis.as_ref().unwrap().cli(&["FLUSHALL"]).unwrap();
    let mut client = nodes.reader().connect("u1", "phone").await;
    let joined = join(&mut client, "orders:4", Some((2, &epoch))).await;
    assert_eq!(joined["recovered"], false, "{joined}");
    assert_ne!(joined["epoch"], epoch.as_str());
    assert_eq!(joined["offset"], 0);
    // New messages count from 1 in the new epoch, and reach the client.
    let next = publish(nodes.publisher(), "orders:4", json!(3)).await;
    assert_eq!(next["offset"], 1);
    assert_eq!(next["epoch"], joined["epoch"]);
    let frame = client.recv().await;
    assert_eq!(
        (frame["offset"].clone(), frame["data"].clone()),
        (json!(1), json!(3))
    );
}

/// A node whose subscription to Redis dropped missed live messages; its connections get
/// them from the history, in order, before anything newer.
#[tokio::test]
async fn a_node_that_missed_live_messages_fills_the_gap_from_the_history() {
    let nodes = Nodes::start(Broker::Redis, history(100)).await;
    let redis = nodes.redis.as_ref().unwrap();
    let mut client = nodes.reader().connect("u1", "phone").await;
    join(&mut client, "orders:5", None).await;
    publish(nodes.publisher(), "orders:5", json!(1)).await;
    assert_eq!(client.recv().await["offset"], 1);
    // Every subscriber connection goes (both nodes'); publish while they come back.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    for n in 2..=6 {
        publish(nodes.publisher(), "orders:5", json!(n)).await;
    }
    let reader = nodes.reader();
    eventually("the reader's subscriber is back", || async {
        let (_, health) = reader.api(reqwest::Method::GET, "/health", None).await;
        health["connections"]["subscriber"] == "ready"
    })
    .await;
    publish(nodes.publisher(), "orders:5", json!(7)).await;
    for offset in 2..=7 {
        let frame = tokio::time::timeout(WAIT, client.recv()).await.unwrap();
        assert_eq!(frame["offset"], offset, "{frame}");
    }
    client.silent_for(300).await;
}
