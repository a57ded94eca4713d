//! Every metric docs/operations.md lists, and every series its alerts watch, is produced
//! by something this test does: the test reads the list and the alert table from the
//! document, makes each happen on a gateway (the embedded broker, then one on Redis that
//! loses its Redis), and checks `/metrics` for each. The recorder is the process's, and
//! this file holds one test, so every count here is this test's own.

#![allow(clippy::unwrap_used)] // test helpers panic on purpose

mod support;

use serde_json::{json, Value};
use support::redis::RedisServer;
use support::*;
use tether_server::auth::Claims;

const OPERATIONS: &str = include_str!("../../docs/operations.md");

/// One sample of the scrape: name, labels, value.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').unwrap()),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

/// The sum of `name`'s samples whose labels match `wanted` (label, value pattern).
fn total(samples: &[Sample], name: &str, wanted: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            wanted.iter().all(|(label, pattern)| {
                s.labels
                    .iter()
                    .any(|(k, v)| k == label && matches_pattern(pattern, v))
            })
        })
        .map(|s| s.value)
        .sum()
}

/// PromQL's label matchers as the alert table uses them: alternatives split by `|`,
/// `.` for any one character, the whole value matched.
fn matches_pattern(pattern: &str, value: &str) -> bool {
    pattern.split('|').any(|alternative| {
        alternative.len() == value.len()
            && alternative
                .bytes()
                .zip(value.bytes())
                .all(|(p, v)| p == b'.' || p == v)
    })
}

/// The metric names of the "Metrics" section: every `tether_*` and `process_*` name.
fn documented_metrics() -> Vec<String> {
    let section = OPERATIONS
        .split("\n## Metrics\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut names: Vec<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|quoted| {
            let name = quoted.split(['{', ' ']).next().unwrap();
            (name.starts_with("tether_") || name.starts_with("process_")).then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What the alert table watches: (metric, label matchers) of each PromQL expression.
fn alert_series() -> Vec<(String, Vec<(String, String)>)> {
    let section = OPERATIONS
        .split("\n## What to alert on\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut series = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let expression = row.split('`').nth(1).unwrap();
        let Some(start) = expression.find("tether_") else {
            continue; // `/health`
        };
        let rest = &expression[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..end].to_owned();
        let mut matchers = Vec::new();
        if let Some(labels) = rest[end..].strip_prefix('{') {
            let labels = labels.split('}').next().unwrap();
            for matcher in labels.split(',') {
                let (label, pattern) = matcher.split_once('=').unwrap();
                let pattern = pattern.trim_start_matches('~').trim_matches('"');
                matchers.push((label.to_owned(), pattern.to_owned()));
            }
        }
        series.push((name, matchers));
    }
    series
}

/// Reads frames until one of type `kind` (presence events may come first).
async fn until(client: &mut Client, kind: &str) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

async fn scrape(gw: &TestGateway) -> Vec<Sample> {
    let (status, text) = gw
        .api_with_key(reqwest::Method::GET, "/metrics", None, None)
        .await;
    assert_eq!(status, 200);
    parse(text.as_str().unwrap())
}

/// Makes everything the embedded broker can show happen.
async fn traffic_on_the_memory_broker() {
    let gw = TestGateway::with(|c| {
        c.presence_events = vec!["lobby".into()];
        c.room_history = vec!["orders:*".into()];
        c.outbound_queue = 16;
    })
    .await;
    // Handshakes: accepted, refused for a bad and for an expired token.
    let mut phone = gw.connect("u1", "phone").await;
    let mut tablet = gw.connect("u2", "tablet").await;
    assert_eq!(
        gw.refused(Some("not-a-jwt"), &format!("app={APP}"), &[])
            .await
            .1,
        "invalid_token"
    );
    let mut expired = Claims::new("u1", &[APP], 0);
    expired.exp -= 60;
    assert_eq!(
        gw.refused(Some(&gw.token_for(&expired)), &format!("app={APP}"), &[])
            .await
            .1,
        "token_expired"
    );

    // Rooms: presence events, a stream recovered and one lost.
    for client in [&mut phone, &mut tablet] {
        client
            .send(json!({"type": "join_room", "data": {"room": "lobby"}}))
            .await;
        until(client, "room_joined").await;
    }
    until(&mut phone, "presence_joined").await;
    tablet
        .send(json!({"type": "leave_room", "data": {"room": "lobby"}}))
        .await;
    until(&mut tablet, "room_left").await;
    until(&mut phone, "presence_left").await;
    let first = gw.send_to_room("orders:1", json!(1)).await;
    gw.send_to_room("orders:1", json!(2)).await;
    gw.send_to_room("orders:1", json!(3)).await;
    let epoch = first["epoch"].as_str().unwrap();
    tablet
        .send(json!({"type": "join_room", "data": {"room": "orders:1", "since": {"offset": 1, "epoch": epoch}}}))
        .await;
    let recovered = until(&mut tablet, "room_joined").await;
    assert_eq!(
        (
            recovered["data"]["recovered"].clone(),
            recovered["data"]["replayCount"].clone()
        ),
        (json!(true), json!(2)),
        "{recovered}"
    );
    tablet.recv().await;
    tablet.recv().await;
    phone
        .send(json!({"type": "join_room", "data": {"room": "orders:1", "since": {"offset": 1, "epoch": "another"}}}))
        .await;
    let lost = until(&mut phone, "room_joined").await;
    assert_eq!(lost["data"]["recovered"], false, "{lost}");

    // Deliveries to a user (inbox appended), a room, the app.
    let sent = gw.send_to_user("u1", "n", json!(1)).await;
    assert_eq!(phone.recv().await["id"], sent["id"]);
    gw.send_to_room("orders:1", json!(4)).await;
    assert_eq!(phone.recv().await["offset"], 4);
    assert_eq!(tablet.recv().await["offset"], 4);
    let (status, _) = gw
        .api(
            reqwest::Method::POST,
            "/v1/send/app",
            Some(json!({"app": APP, "message": {"type": "notice"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(phone.recv().await["type"], "notice");
    assert_eq!(tablet.recv().await["type"], "notice");
    // The inbox replayed to a device that connects after its message.
    gw.send_to_user("u3", "n", json!(1)).await;
    let replayed = gw.connect("u3", "phone").await;
    drop(replayed);

    // App messages: stored, then a resend recognised.
    for _ in 0..2 {
        let ack = phone
            .request(json!({"type": "chat", "id": "m1", "data": "hi"}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }

    // Idempotency: a first send and its replay.
    let body = json!({"userId": "u9", "app": APP, "message": {"type": "n"}});
    let (first, replay) = (
        gw.api_idempotent("/v1/send/user", &body, "k1").await,
        gw.api_idempotent("/v1/send/user", &body, "k1").await,
    );
    assert_eq!(
        (first.0, first.2, replay.0, replay.2),
        (200, false, 200, true)
    );

    // Tokens: a refresh accepted, one refused.
    let refreshed = phone
        .request(json!({"type": "refresh_token", "data": {"token": gw.token_for(&Claims::new("u1", &[APP], 7200))}}))
        .await;
    assert_eq!(refreshed["type"], "token_refreshed", "{refreshed}");
    let refused = phone
        .request(json!({"type": "refresh_token", "data": {"token": "garbage"}}))
        .await;
    assert_eq!(refused["data"]["code"], "invalid_token", "{refused}");

    // Frames refused: a malformed ack and one beyond the inbox (answered), a frame that
    // is not JSON (closed with 1007), one too big (closed with 1009).
    let invalid = phone
        .request(json!({"type": "ack", "data": {"seq": "x"}}))
        .await;
    assert_eq!(invalid["data"]["code"], "invalid_message", "{invalid}");
    let beyond = phone
        .request(json!({"type": "ack", "data": {"seq": 99}}))
        .await;
    assert_eq!(beyond["data"]["code"], "invalid_ack", "{beyond}");
    phone.send_text("not json").await;
    assert_eq!(phone.ended().await, Ended::Closed(1007));
    let mut big = gw.connect("u4", "d").await;
    big.send_text(&"x".repeat(gw.config.max_message_bytes + 1))
        .await;
    assert_eq!(big.ended().await, Ended::Closed(1009));

    // A consumer too slow for its queue of 16: closed (4008), counted. The tablet reads
    // each message, which paces the sends.
    let mut slow = gw.connect("slow", "d").await;
    for client in [&mut slow, &mut tablet] {
        client
            .send(json!({"type": "join_room", "data": {"room": "feed"}}))
            .await;
        until(client, "room_joined").await;
    }
    let payload = "x".repeat(16 * 1024);
    for _ in 0..400 {
        gw.send_to_room("feed", json!(payload)).await;
        until(&mut tablet, "room_news").await;
    }
    let end = slow.ended_within(std::time::Duration::from_secs(10)).await;
    assert!(
        matches!(end, Ended::Closed(4008) | Ended::Dropped),
        "{end:?}"
    );
}

/// A gateway on Redis that loses its Redis: handshakes and sends refused with 503, broker
/// operations failing, and a node that missed live stream messages filling the gap.
async fn traffic_on_redis() -> Vec<Sample> {
    let mut redis = RedisServer::start();
    let gw = TestGateway::redis(&redis.url(), |c| c.room_history = vec!["orders:*".into()]).await;
    let mut client = gw.connect("u1", "phone").await;
    let joined = client
        .request(json!({"type": "join_room", "data": {"room": "orders:5"}}))
        .await;
    assert_eq!(joined["type"], "room_joined", "{joined}");
    gw.send_to_room("orders:5", json!(1)).await;
    assert_eq!(client.recv().await["offset"], 1);
    // The subscriber connection goes; what is published meanwhile comes from the history.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    for n in 2..=4 {
        gw.send_to_room("orders:5", json!(n)).await;
    }
    eventually("the subscriber is back", || async {
        let (_, health) = gw.api(reqwest::Method::GET, "/health", None).await;
        health["connections"]["subscriber"] == "ready"
    })
    .await;
    gw.send_to_room("orders:5", json!(5)).await;
    for offset in 2..=5 {
        assert_eq!(client.recv().await["offset"], offset);
    }

    redis.kill();
    let (status, code) = gw
        .refused(Some(&gw.token("u2")), &format!("app={APP}"), &[])
        .await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    let (status, error) = gw
        .api(
            reqwest::Method::POST,
            "/v1/send/user",
            Some(json!({"userId": "u1", "app": APP, "message": {"type": "n"}})),
        )
        .await;
    assert_eq!(status, 503, "{error}");
    scrape(&gw).await
}

#[tokio::test]
async fn every_documented_metric_and_alert_series_is_produced() {
    traffic_on_the_memory_broker().await;
    // The process's recorder holds both parts: this scrape shows the whole record.
    let samples = traffic_on_redis().await;

    let documented = documented_metrics();
    assert!(documented.len() > 25, "{documented:?}");
    let mut missing = Vec::new();
    for name in &documented {
        // A histogram shows as <name>_count; a counter or gauge under its name.
        let seen = total(&samples, name, &[]) + total(&samples, &format!("{name}_count"), &[]);
        // Process figures may be 0 (a limit of 0 means unlimited); they must be there.
        let present = samples.iter().any(|s| s.name == *name);
        if seen <= 0.0 && !(name.starts_with("process_") && present) {
            missing.push(name.as_str());
        }
    }
    assert!(
        missing.is_empty(),
        "documented but never produced: {missing:?}"
    );

    // Every series /metrics shows is documented.
    let mut undocumented: Vec<&str> = samples
        .iter()
        .map(|s| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| s.name.strip_suffix(suffix))
                .unwrap_or(&s.name)
        })
        .filter(|name| !documented.iter().any(|d| d == name))
        .collect();
    undocumented.sort_unstable();
    undocumented.dedup();
    assert!(
        undocumented.is_empty(),
        "produced but not documented: {undocumented:?}"
    );

    // The labels the list names.
    let labelled: &[(&str, &[(&str, &str)])] = &[
        (
            "tether_handshakes_refused_total",
            &[("code", "invalid_token")],
        ),
        (
            "tether_handshakes_refused_total",
            &[("code", "token_expired")],
        ),
        (
            "tether_handshakes_refused_total",
            &[("code", "unavailable")],
        ),
        ("tether_connections_closed_total", &[("code", "1009")]),
        ("tether_frames_invalid_total", &[("reason", "invalid_ack")]),
        (
            "tether_frames_invalid_total",
            &[("reason", "invalid_message")],
        ),
        ("tether_frames_invalid_total", &[("reason", "not_json")]),
        ("tether_connections_closed_total", &[("code", "1007")]),
        ("tether_deliveries_total", &[("target", "user")]),
        ("tether_deliveries_total", &[("target", "room")]),
        ("tether_deliveries_total", &[("target", "app")]),
        (
            "tether_presence_events_total",
            &[("kind", "presence_joined")],
        ),
        ("tether_presence_events_total", &[("kind", "presence_left")]),
        ("tether_token_refreshes_total", &[("outcome", "accepted")]),
        ("tether_token_refreshes_total", &[("outcome", "refused")]),
        (
            "tether_stream_recoveries_total",
            &[("outcome", "recovered")],
        ),
        ("tether_stream_recoveries_total", &[("outcome", "lost")]),
        ("tether_api_idempotency_total", &[("outcome", "first")]),
        ("tether_api_idempotency_total", &[("outcome", "replayed")]),
        (
            "tether_api_requests_total",
            &[("route", "/v1/send/user"), ("status", "503")],
        ),
        (
            "tether_handshake_duration_seconds_count",
            &[("outcome", "accepted")],
        ),
        (
            "tether_handshake_duration_seconds_count",
            &[("outcome", "refused")],
        ),
        (
            "tether_api_request_duration_seconds_count",
            &[("route", "/v1/send/room")],
        ),
        (
            "tether_broker_operation_duration_seconds_count",
            &[("op", "send_to_user"), ("outcome", "ok")],
        ),
        (
            "tether_broker_operation_duration_seconds_count",
            &[("outcome", "error")],
        ),
        ("tether_delivery_lag_seconds_count", &[("target", "user")]),
        ("tether_delivery_lag_seconds_count", &[("target", "room")]),
        ("tether_delivery_lag_seconds_count", &[("target", "app")]),
    ];
    for (name, labels) in labelled {
        assert!(
            total(&samples, name, labels) > 0.0,
            "no {name} with {labels:?}"
        );
    }
    // Exact counts where this test alone decides them.
    assert_eq!(total(&samples, "tether_inbound_stored_total", &[]), 1.0);
    assert_eq!(total(&samples, "tether_inbound_duplicates_total", &[]), 1.0);
    assert_eq!(total(&samples, "tether_stream_replayed_total", &[]), 2.0);
    assert_eq!(total(&samples, "tether_slow_consumers_total", &[]), 1.0);
    assert!(total(&samples, "tether_stream_gap_filled_total", &[]) >= 1.0);
    assert!(total(&samples, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(total(&samples, "process_open_fds", &[]) > 3.0);

    // Every series an alert watches, with its labels.
    let alerts = alert_series();
    assert!(alerts.len() >= 6, "{alerts:?}");
    for (name, matchers) in &alerts {
        let wanted: Vec<(&str, &str)> = matchers
            .iter()
            .map(|(l, p)| (l.as_str(), p.as_str()))
            .collect();
        let seen = total(&samples, name, &wanted);
        assert!(
            seen > 0.0,
            "the alert on {name} {matchers:?} watches a series never produced"
        );
    }
}
