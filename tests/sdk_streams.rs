//! The SDK end to end against the real gateway: streams (docs/protocol.md §6). A room with
//! history and the app's broadcast stream reach the app once each, in offset order,
//! across cut connections while a publisher keeps publishing, across a client restart on
//! the same storage, and a position the gateway no longer holds is reported as a stream
//! reset. Every message is judged by offset and id against what the backend's answers
//! confirmed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::gateway::{Backend, APP};
use sdk_support::proxy::FaultProxy;
use sdk_support::{wait_for, wait_snapshot, Recorder, Seen, Tokens};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tether::{ClientConfig, ConnectionStatus, InboundMessage, TetherClient};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);
const ROOM: &str = "news:1";

struct Sdk {
    client: Arc<TetherClient>,
    seen: mpsc::UnboundedReceiver<Seen>,
    recorder: Arc<Recorder>,
}

fn sdk(url: &str, dir: &Path) -> Sdk {
    let mut config = ClientConfig::new(url, APP, "phone-1", dir.to_str().unwrap());
    config.backoff_base_ms = 100;
    config.backoff_cap_ms = 800;
    let (recorder, seen) = Recorder::new();
    let client = TetherClient::new(
        config,
        recorder.clone(),
        Tokens::fixed(&Backend::token("sam", 3600)),
    )
    .unwrap();
    Sdk {
        client,
        seen,
        recorder,
    }
}

async fn until(client: &TetherClient, what: impl Fn(&ConnectionStatus) -> bool) {
    let mut watch = client.watch();
    wait_snapshot(&mut watch, WAIT, |s| what(&s.status)).await;
}

async fn message_with(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    data: &str,
) -> tether::InboundMessage {
    sdk_support::message_with(seen, WAIT, data).await
}

/// A published stream message as the backend's answer confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Confirmed {
    offset: u64,
    id: String,
}

fn confirmed(answer: &serde_json::Value) -> Confirmed {
    Confirmed {
        offset: answer["offset"]
            .as_u64()
            .expect("a stream answer has an offset"),
        id: answer["id"].as_str().expect("id").to_owned(),
    }
}

/// Publishes to the room until a member is reached (the join is asynchronous); the
/// message that reached it, once the app has it.
async fn first_delivered(backend: &Backend, sdk: &mut Sdk) -> Confirmed {
    let deadline = tokio::time::Instant::now() + WAIT;
    for attempt in 0.. {
        let data = serde_json::json!(format!("warmup-{attempt}"));
        let answer = backend.publish(Some(ROOM), "promo", data.clone()).await;
        if answer["delivered"].as_u64().unwrap_or(0) >= 1 {
            let got = message_with(&mut sdk.seen, &data.to_string()).await;
            assert_eq!(got.offset, answer["offset"].as_u64());
            return confirmed(&answer);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "room never had a member"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

/// The app's messages of `room` (`None`: the app stream) after `after`, by offset; fails
/// on a message delivered twice.
fn received_after(
    recorder: &Recorder,
    room: Option<&str>,
    after: u64,
) -> BTreeMap<u64, InboundMessage> {
    let mut got = BTreeMap::new();
    let mut order = Vec::new();
    for m in recorder.messages() {
        if m.room.as_deref() != room || m.seq.is_some() {
            continue;
        }
        let offset = m.offset.expect("a stream message carries its offset");
        if offset <= after {
            continue;
        }
        order.push(offset);
        assert!(
            got.insert(offset, m.clone()).is_none(),
            "offset {offset} delivered twice"
        );
    }
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "delivered out of offset order: {order:?}"
    );
    got
}

fn assert_ledger(got: &BTreeMap<u64, InboundMessage>, sent: &[Confirmed]) {
    let missing: Vec<u64> = sent
        .iter()
        .filter(|c| !got.contains_key(&c.offset))
        .map(|c| c.offset)
        .collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    for c in sent {
        assert_eq!(
            got[&c.offset].id, c.id,
            "offset {} has another id",
            c.offset
        );
    }
    assert_eq!(got.len(), sent.len(), "delivered messages nobody confirmed");
}

fn history_rooms(size: u64) -> impl FnOnce(&mut tether_server::Config) {
    move |config| {
        config.room_history = vec!["news:*".into()];
        config.room_history_size = size;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_while_a_publisher_runs_deliver_every_room_message_once_in_offset_order() {
    let backend = Backend::start(history_rooms(1000)).await;
    let proxy = FaultProxy::start(backend.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sdk = sdk(&proxy.ws_url(), dir.path());
    sdk.client.join_room(ROOM.into()).unwrap();
    sdk.client.connect();
    until(&sdk.client, |s| *s == ConnectionStatus::Connected).await;
    let base = first_delivered(&backend, &mut sdk).await;

    let mut sent = Vec::new();
    for i in 0..300 {
        if i == 100 || i == 200 {
            // The socket dies under the publisher; the SDK reconnects on its own and
            // rejoins with the position its listener processed last.
            proxy.cut();
        }
        let answer = backend
            .publish(Some(ROOM), "eta", serde_json::json!(i))
            .await;
        sent.push(confirmed(&answer));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let offsets: Vec<u64> = sent.iter().map(|c| c.offset).collect();
    assert_eq!(
        offsets,
        (base.offset + 1..=base.offset + 300).collect::<Vec<_>>(),
        "the gateway numbers the stream one by one"
    );
    message_with(&mut sdk.seen, "299").await;
    let got = received_after(&sdk.recorder, Some(ROOM), base.offset);
    assert_ledger(&got, &sent);
    assert!(
        sdk.recorder.stream_resets().is_empty(),
        "nothing was lost for good"
    );
    let stats = sdk.client.stats();
    assert!(stats.reconnects >= 2, "both cuts reconnected: {stats:?}");
    assert_eq!(stats.stream_resets, 0);
    sdk.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_client_recovers_the_room_from_its_stored_position() {
    let backend = Backend::start(history_rooms(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = sdk(&backend.ws_url(), dir.path());
    first.client.join_room(ROOM.into()).unwrap();
    first.client.connect();
    until(&first.client, |s| *s == ConnectionStatus::Connected).await;
    let base = first_delivered(&backend, &mut first).await;
    first.client.shutdown().await;

    // Published while the app is not running at all.
    let mut sent = Vec::new();
    for i in 0..20 {
        let answer = backend
            .publish(Some(ROOM), "eta", serde_json::json!(i))
            .await;
        sent.push(confirmed(&answer));
    }
    let mut again = sdk(&backend.ws_url(), dir.path());
    again.client.join_room(ROOM.into()).unwrap();
    again.client.connect();
    message_with(&mut again.seen, "19").await;
    let got = received_after(&again.recorder, Some(ROOM), base.offset);
    assert_ledger(&got, &sent);
    assert!(
        received_after(&again.recorder, Some(ROOM), 0).len() == sent.len(),
        "what the first run processed is not delivered again"
    );
    assert!(again.recorder.stream_resets().is_empty());
    again.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_the_history_is_a_stream_reset_and_delivery_goes_on() {
    let backend = Backend::start(history_rooms(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sdk = sdk(&backend.ws_url(), dir.path());
    sdk.client.join_room(ROOM.into()).unwrap();
    sdk.client.connect();
    until(&sdk.client, |s| *s == ConnectionStatus::Connected).await;
    let base = first_delivered(&backend, &mut sdk).await;
    sdk.client.disconnect();
    until(&sdk.client, |s| *s == ConnectionStatus::Disconnected).await;
    for i in 0..10 {
        backend
            .publish(Some(ROOM), "eta", serde_json::json!(format!("missed-{i}")))
            .await;
    }
    sdk.client.connect();
    let reset = wait_for(&mut sdk.seen, WAIT, |e| matches!(e, Seen::StreamReset(_))).await;
    assert!(matches!(reset, Seen::StreamReset(Some(ref room)) if room == ROOM));
    let after = backend
        .publish(Some(ROOM), "eta", serde_json::json!("after"))
        .await;
    let got = message_with(&mut sdk.seen, "\"after\"").await;
    assert_eq!(got.offset, after["offset"].as_u64());
    let delivered = received_after(&sdk.recorder, Some(ROOM), base.offset);
    assert_eq!(
        delivered.keys().copied().collect::<Vec<_>>(),
        [base.offset + 11],
        "nothing of the lost stretch is replayed, the next message comes"
    );
    assert_eq!(sdk.client.stats().stream_resets, 1);
    sdk.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_broadcast_stream_is_recovered_at_connect() {
    let backend = Backend::start(|config| config.app_history_size = 50).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sdk = sdk(&backend.ws_url(), dir.path());
    sdk.client.connect();
    until(&sdk.client, |s| *s == ConnectionStatus::Connected).await;
    // Connected: the connection is subscribed to the app's broadcasts.
    let first = confirmed(
        &backend
            .publish(None, "promo", serde_json::json!("a0"))
            .await,
    );
    message_with(&mut sdk.seen, "\"a0\"").await;
    sdk.client.disconnect();
    until(&sdk.client, |s| *s == ConnectionStatus::Disconnected).await;
    let mut sent = Vec::new();
    for i in 1..=5 {
        let answer = backend
            .publish(None, "promo", serde_json::json!(format!("a{i}")))
            .await;
        sent.push(confirmed(&answer));
    }
    sdk.client.connect();
    message_with(&mut sdk.seen, "\"a5\"").await;
    let got = received_after(&sdk.recorder, None, first.offset);
    assert_ledger(&got, &sent);
    assert!(sdk.recorder.stream_resets().is_empty());
    sdk.client.shutdown().await;
}
