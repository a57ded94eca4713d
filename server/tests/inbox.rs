//! docs/protocol.md §6: durable messages to a user, their seq, replay on connect, per-device
//! cursors, acks, and the inbox's retention.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn a_message_to_a_user_reaches_every_connection_live_with_a_seq() {
    let gw = TestGateway::start().await;
    let mut phone = gw.connect("u1", "phone").await;
    let mut tablet = gw.connect("u1", "tablet").await;
    let mut someone_else = gw.connect("u2", "phone").await;
    let sent = gw
        .send_to_user(
            "u1",
            "order_update",
            json!({"orderId": 123, "status": "delivered"}),
        )
        .await;
    assert_eq!(sent["seq"], 1);
    assert_eq!(sent["delivered"], 2);
    assert_eq!(sent["queued"], true);
    for client in [&mut phone, &mut tablet] {
        let m = client.recv().await;
        assert_eq!(m["type"], "order_update");
        assert_eq!(m["seq"], 1);
        assert_eq!(m["id"], sent["id"]);
        assert_eq!(m["data"]["orderId"], 123);
        assert!(m["ts"].is_u64());
    }
    someone_else.silent_for(200).await;
    assert_eq!(
        gw.send_to_user("u1", "order_update", json!(2)).await["seq"],
        2
    );
}

#[tokio::test]
async fn a_message_sent_while_offline_is_replayed_on_connect() {
    let gw = TestGateway::start().await;
    let first = gw.send_to_user("u1", "notification", json!("one")).await;
    assert_eq!(first["delivered"], 0);
    gw.send_to_user("u1", "notification", json!("two")).await;
    let mut client = gw.connect("u1", "phone").await;
    assert_eq!(client.established["data"]["replayCount"], 2);
    assert_eq!(client.established["data"]["replayFrom"], 1);
    assert_eq!(client.recv().await["data"], "one");
    assert_eq!(client.recv().await["data"], "two");
}

#[tokio::test]
async fn acked_messages_are_not_replayed_to_the_same_device() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "phone").await;
    for i in 1..=3 {
        gw.send_to_user("u1", "n", json!(i)).await;
        assert_eq!(client.recv().await["seq"], i);
    }
    client.ack(2).await;
    // The ack has no answer; a ping proves it was processed.
    assert_eq!(
        client.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    drop(client);
    let mut again = gw.connect("u1", "phone").await;
    assert_eq!(again.established["data"]["replayCount"], 1);
    assert_eq!(again.recv().await["seq"], 3);
}

#[tokio::test]
async fn a_message_in_flight_when_the_socket_died_is_sent_again() {
    let gw = TestGateway::start().await;
    let client = gw.connect("u1", "phone").await;
    gw.send_to_user("u1", "n", json!("lost with the socket"))
        .await;
    drop(client);
    let mut again = gw.connect("u1", "phone").await;
    assert_eq!(again.recv().await["data"], "lost with the socket");
}

#[tokio::test]
async fn a_new_device_starts_at_what_the_user_has_read() {
    let gw = TestGateway::start().await;
    let mut phone = gw.connect("u1", "phone").await;
    for i in 1..=3 {
        gw.send_to_user("u1", "n", json!(i)).await;
        phone.recv().await;
    }
    phone.ack(2).await;
    phone.request(json!({"type": "ping"})).await;
    let mut tablet = gw.connect("u1", "tablet").await;
    assert_eq!(tablet.established["data"]["replayFrom"], 3);
    assert_eq!(tablet.recv().await["seq"], 3);
}

#[tokio::test]
async fn each_device_has_its_own_cursor() {
    let gw = TestGateway::start().await;
    let phone = gw.connect("u1", "phone").await;
    let tablet = gw.connect("u1", "tablet").await;
    drop((phone, tablet));
    gw.send_to_user("u1", "n", json!(1)).await;
    let mut phone = gw.connect("u1", "phone").await;
    phone.recv().await;
    phone.ack(1).await;
    phone.request(json!({"type": "ping"})).await;
    // The tablet's cursor was created before the message and moved with none of its acks.
    let mut tablet = gw.connect("u1", "tablet").await;
    assert_eq!(tablet.established["data"]["replayCount"], 1);
    assert_eq!(tablet.recv().await["seq"], 1);
}

#[tokio::test]
async fn since_skips_what_the_client_already_processed() {
    let gw = TestGateway::start().await;
    for i in 1..=3 {
        gw.send_to_user("u1", "n", json!(i)).await;
    }
    let mut client = gw
        .connect_with(
            &gw.token("u1"),
            &format!("app={APP}&device=phone&since=2"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(client.established["data"]["replayFrom"], 3);
    assert_eq!(client.established["data"]["replayCount"], 1);
    assert_eq!(client.recv().await["seq"], 3);
}

#[tokio::test]
async fn an_ack_above_the_newest_seq_is_invalid_ack() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "phone").await;
    gw.send_to_user("u1", "n", json!(1)).await;
    client.recv().await;
    client.ack(5).await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["data"]["code"], "invalid_ack");
    // Both are counted where operations look (docs/operations.md).
    let (_, metrics) = gw.api(reqwest::Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    for wanted in [
        "tether_frames_invalid_total{reason=\"invalid_ack\"}",
        "tether_inbox_appended_total",
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(wanted))
            .unwrap_or_else(|| panic!("no {wanted} in {metrics}"));
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 1.0, "{line}");
    }
}

#[tokio::test]
async fn a_user_cannot_ack_another_users_inbox() {
    let gw = TestGateway::start().await;
    gw.send_to_user("victim", "n", json!(1)).await;
    let mut attacker = gw.connect("attacker", "phone").await;
    // The attacker's own inbox is empty: seq 1 does not exist there.
    attacker.ack(1).await;
    assert_eq!(attacker.recv().await["data"]["code"], "invalid_ack");
    let victim = gw.connect("victim", "phone").await;
    assert_eq!(victim.established["data"]["replayCount"], 1);
}

#[tokio::test]
async fn the_inbox_keeps_at_most_the_configured_number_of_messages() {
    let gw = TestGateway::with(|c| c.max_queue_per_user = 3).await;
    for i in 1..=5 {
        gw.send_to_user("u1", "n", json!(i)).await;
    }
    let mut client = gw.connect("u1", "phone").await;
    assert_eq!(client.established["data"]["replayFrom"], 3);
    assert_eq!(client.established["data"]["replayCount"], 3);
    for seq in 3..=5 {
        assert_eq!(client.recv().await["seq"], seq);
    }
    assert_eq!(gw.stats().await["totalQueuedMessages"], 3);
}

#[tokio::test]
async fn inbox_messages_expire_after_the_ttl() {
    let gw = TestGateway::with(|c| c.message_ttl_s = 1).await;
    gw.send_to_user("u1", "n", json!("old")).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    gw.send_to_user("u1", "n", json!("new")).await;
    let mut client = gw.connect("u1", "phone").await;
    assert_eq!(client.established["data"]["replayCount"], 1);
    assert_eq!(client.recv().await["data"], "new");
}

#[tokio::test]
async fn messages_arriving_during_replay_are_delivered_once_in_seq_order() {
    let gw = TestGateway::start().await;
    for i in 1..=50 {
        gw.send_to_user("u1", "n", json!(i)).await;
    }
    let sender = {
        let addr = gw.addr;
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 51..=100 {
                let response = http
                    .post(format!("http://{addr}/v1/send/user"))
                    .bearer_auth(ADMIN_KEY)
                    .json(&json!({"userId": "u1", "app": APP, "message": {"type": "n", "data": i}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        })
    };
    let mut client = gw.connect("u1", "phone").await;
    sender.await.unwrap();
    for expected in 1..=100u64 {
        let m = client.recv().await;
        assert_eq!(m["seq"], expected, "{m}");
        assert_eq!(m["data"], expected);
    }
    client.silent_for(200).await;
}

#[tokio::test]
async fn a_since_from_before_the_inbox_was_lost_hides_nothing() {
    // The embedded broker restarted: the client's since (500) is from the old inbox.
    let gw = TestGateway::start().await;
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
    gw.send_to_user("u1", "n", json!("live")).await;
    assert_eq!(
        client.recv().await["seq"],
        2,
        "live messages are not held back either"
    );
}
