//! docs/protocol.md §1, §3 and §4: frames, the envelope, control messages and bad input.

mod support;

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn ping_is_answered_with_pong_echoing_ts() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    let pong = client
        .request(json!({"type": "ping", "data": {"ts": 1234.5}}))
        .await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["data"]["ts"], 1234.5);
    assert!(pong["data"]["serverTs"].as_u64().unwrap() > 1_700_000_000_000);
    let bare = client.request(json!({"type": "ping"})).await;
    assert_eq!(bare["type"], "pong");
    assert!(bare["data"]["ts"].is_null());
}

#[tokio::test]
async fn unknown_envelope_fields_are_ignored() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    let pong = client
        .request(json!({"type": "ping", "future": {"x": 1}, "v": 2}))
        .await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    client
        .ws
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(client.ended().await, Ended::Closed(1003));
}

#[tokio::test]
async fn frames_above_the_size_limit_close_with_1009_and_are_counted() {
    let gw = TestGateway::with(|c| c.max_message_bytes = 2048).await;
    let mut client = gw.connect("u1", "d").await;
    let big = json!({"type": "chat", "id": "m1", "data": "x".repeat(4096)});
    client.send(big).await;
    assert_eq!(client.ended().await, Ended::Closed(1009));
    let (_, metrics) = gw.api(reqwest::Method::GET, "/metrics", None).await;
    let line = metrics
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("tether_frames_oversize_total"))
        .map(str::to_owned)
        .expect("oversize counter present");
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
}

#[tokio::test]
async fn a_frame_that_is_not_json_closes_with_1007() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    client.send_text("this is not json").await;
    assert_eq!(client.ended().await, Ended::Closed(1007));
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x7b], OpCode::Data(Data::Text), true);
    client.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(client.ended().await, Ended::Closed(1007));
}

#[tokio::test]
async fn json_that_is_not_an_envelope_is_an_error_and_the_connection_stays() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    for bad in [
        json!([1, 2]),
        json!({"data": 1}),
        json!({"type": "Bad Type"}),
        json!({"type": "chat", "id": 5}),
    ] {
        let error = client.request(bad.clone()).await;
        assert_eq!(error["type"], "error", "{bad}");
        assert_eq!(error["data"]["code"], "invalid_message", "{bad}");
        assert!(error["data"]["message"].is_string());
    }
    assert_eq!(
        client.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn more_than_ten_bad_frames_in_a_minute_close_with_4008() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    for _ in 0..10 {
        assert_eq!(
            client.request(json!({"type": 1})).await["data"]["code"],
            "invalid_message"
        );
    }
    client.send(json!({"type": 1})).await;
    assert_eq!(client.ended().await, Ended::Closed(4008));
}

#[tokio::test]
async fn app_messages_without_id_get_missing_id_with_ref_to_the_type() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    let error = client
        .request(json!({"type": "chat_message", "data": {}}))
        .await;
    assert_eq!(error["data"]["code"], "missing_id");
    assert_eq!(error["data"]["ref"], "chat_message");
}

#[tokio::test]
async fn reserved_types_are_refused() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    for kind in [
        "connection_established",
        "pong",
        "room_joined",
        "room_left",
        "error",
    ] {
        let error = client.request(json!({"type": kind, "id": "x1"})).await;
        assert_eq!(error["data"]["code"], "reserved_type", "{kind}");
        assert_eq!(error["data"]["ref"], "x1");
    }
}

#[tokio::test]
async fn frames_beyond_the_rate_limit_get_rate_limited() {
    let gw = TestGateway::with(|c| c.rate_limit_per_connection = 2).await;
    let mut client = gw.connect("u1", "d").await;
    // Burst is twice the rate: 4 pass, the 5th is refused.
    for _ in 0..4 {
        client.send(json!({"type": "ping"})).await;
    }
    for _ in 0..4 {
        assert_eq!(client.recv().await["type"], "pong");
    }
    let error = client.request(json!({"type": "ping"})).await;
    assert_eq!(error["data"]["code"], "rate_limited");
}

#[tokio::test]
async fn app_messages_are_acked_once_stored_and_reach_the_inbound_api() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "phone").await;
    let ack = client
        .request(json!({"type": "chat_message", "id": "m-1", "data": {"text": "hi"}, "ts": 1}))
        .await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["data"]["id"], "m-1");
    let inbound = gw.inbound().await;
    assert_eq!(inbound.len(), 1);
    let m = &inbound[0];
    assert_eq!(m["userId"], "u1");
    assert_eq!(m["device"], "phone");
    assert_eq!(m["type"], "chat_message");
    assert_eq!(m["id"], "m-1");
    assert_eq!(m["data"], json!({"text": "hi"}));
    assert!(
        m["ts"].as_u64().unwrap() > 1,
        "ts is the gateway's, not the client's"
    );
    assert!(m["cursor"].is_string());
}

#[tokio::test]
async fn a_resent_app_message_is_acked_again_but_stored_once() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "phone").await;
    let message = json!({"type": "chat_message", "id": "m-1", "data": 1});
    assert_eq!(client.request(message.clone()).await["data"]["id"], "m-1");
    drop(client);
    // Resent after a reconnect, from the same user.
    let mut again = gw.connect("u1", "phone").await;
    assert_eq!(again.request(message).await["data"]["id"], "m-1");
    assert_eq!(gw.inbound().await.len(), 1);
    // The same id from another user is another message.
    let mut other = gw.connect("u2", "phone").await;
    other
        .request(json!({"type": "chat_message", "id": "m-1"}))
        .await;
    assert_eq!(gw.inbound().await.len(), 2);
}

#[tokio::test]
async fn the_inbound_api_pages_with_cursors() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    for i in 0..5 {
        client
            .request(json!({"type": "event", "id": format!("e{i}")}))
            .await;
    }
    let (_, first) = gw
        .api(
            reqwest::Method::GET,
            &format!("/v1/inbound?app={APP}&limit=2"),
            None,
        )
        .await;
    let ids: Vec<_> = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!("e0"), json!("e1")]);
    let next = first["next"].as_str().unwrap();
    let (_, rest) = gw
        .api(
            reqwest::Method::GET,
            &format!("/v1/inbound?app={APP}&after={next}&limit=10"),
            None,
        )
        .await;
    assert_eq!(rest["messages"].as_array().unwrap().len(), 3);
    let (status, body) = gw
        .api(
            reqwest::Method::GET,
            &format!("/v1/inbound?app={APP}&after=nonsense"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn the_per_user_limit_spans_the_users_connections() {
    let gw = TestGateway::with(|c| {
        c.rate_limit_per_connection = 0;
        c.rate_limit_per_user = 2;
    })
    .await;
    let mut phone = gw.connect("u1", "phone").await;
    let mut tablet = gw.connect("u1", "tablet").await;
    // Burst 4 for the user: two pings each pass, the fifth frame (on either) is refused.
    for client in [&mut phone, &mut tablet] {
        for _ in 0..2 {
            assert_eq!(
                client.request(json!({"type": "ping"})).await["type"],
                "pong"
            );
        }
    }
    let refused = tablet.request(json!({"type": "ping"})).await;
    assert_eq!(refused["data"]["code"], "rate_limited");
    // Another user has their own allowance.
    let mut other = gw.connect("u2", "phone").await;
    assert_eq!(other.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_message_flood_ends_with_4008() {
    let gw = TestGateway::with(|c| c.rate_limit_per_connection = 5).await;
    let mut client = gw.connect("u1", "d").await;
    for i in 0..40 {
        client
            .send(json!({"type": "chat", "id": format!("f{i}")}))
            .await;
    }
    // Ten acks and refusals come back, then the connection is closed for the flood.
    assert_eq!(client.ended().await, Ended::Closed(4008));
}

#[tokio::test]
async fn after_a_retryable_refusal_later_app_messages_wait_for_the_refused_one() {
    let gw = TestGateway::with(|c| {
        c.rate_limit_per_connection = 1;
        c.rate_limit_per_user = 0;
    })
    .await;
    let mut client = gw.connect("u1", "d").await;
    // Burst 2: m0 and m1 pass, m2 is refused for rate.
    for i in 0..3 {
        client
            .send(json!({"type": "chat", "id": format!("m{i}")}))
            .await;
    }
    assert_eq!(client.recv().await["data"]["id"], "m0");
    assert_eq!(client.recv().await["data"]["id"], "m1");
    let refused = client.recv().await;
    assert_eq!(
        (
            refused["data"]["code"].as_str(),
            refused["data"]["ref"].as_str()
        ),
        (Some("rate_limited"), Some("m2"))
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // m3 may not overtake m2.
    let held = client.request(json!({"type": "chat", "id": "m3"})).await;
    assert_eq!(
        (held["data"]["code"].as_str(), held["data"]["ref"].as_str()),
        (Some("rate_limited"), Some("m3"))
    );
    assert_eq!(
        client.request(json!({"type": "chat", "id": "m2"})).await["data"]["id"],
        "m2"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        client.request(json!({"type": "chat", "id": "m3"})).await["data"]["id"],
        "m3"
    );
    let ids: Vec<String> = gw
        .inbound()
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["m0", "m1", "m2", "m3"]);
}

#[tokio::test]
async fn frames_nested_deeper_than_64_levels_are_refused_before_they_are_stored() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    let deep = format!(
        r#"{{"type":"chat","id":"deep-1","data":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    client.send_text(&deep).await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["data"]["code"], "invalid_message");
    assert!(error["data"]["message"]
        .as_str()
        .unwrap()
        .contains("64 levels"));
    // 63 levels of data (64 with the envelope) are fine.
    let fine = format!(
        r#"{{"type":"chat","id":"ok-1","data":{}{}}}"#,
        "[".repeat(63),
        "]".repeat(63)
    );
    client.send_text(&fine).await;
    assert_eq!(client.recv().await["type"], "ack");
    let (_, page) = gw
        .api(reqwest::Method::GET, "/v1/inbound?app=shop", None)
        .await;
    let ids: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ok-1"], "{page}");
}
