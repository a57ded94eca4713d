//! docs/protocol.md §4 and §6: rooms (join, leave, claims, caps, app scope) and live delivery
//! to a room and to a whole app.

mod support;

use serde_json::json;
use support::*;
use tether_server::auth::Claims;

async fn join(client: &mut Client, room: &str) -> serde_json::Value {
    client
        .request(json!({"type": "join_room", "data": {"room": room}}))
        .await
}

#[tokio::test]
async fn members_of_a_room_get_its_messages_live_and_others_do_not() {
    let gw = TestGateway::start().await;
    let mut a = gw.connect("u1", "d").await;
    let mut b = gw.connect("u2", "d").await;
    let mut outsider = gw.connect("u3", "d").await;
    let joined = join(&mut a, "orders:7").await;
    assert_eq!(joined["type"], "room_joined");
    assert_eq!(joined["data"]["room"], "orders:7");
    join(&mut b, "orders:7").await;

    let sent = gw
        .send_to_room("orders:7", json!({"status": "delivered"}))
        .await;
    assert_eq!(sent["delivered"], 2);
    for client in [&mut a, &mut b] {
        let m = client.recv().await;
        assert_eq!(m["type"], "room_news");
        assert_eq!(m["room"], "orders:7");
        assert_eq!(m["id"], sent["id"]);
        assert_eq!(m["data"], json!({"status": "delivered"}));
        assert!(m["ts"].is_u64());
        assert!(m.get("seq").is_none(), "room messages carry no seq");
    }
    outsider.silent_for(200).await;
}

#[tokio::test]
async fn leaving_a_room_stops_its_messages_and_empty_rooms_are_dropped() {
    let gw = TestGateway::start().await;
    let mut a = gw.connect("u1", "d").await;
    join(&mut a, "lobby").await;
    assert_eq!(gw.stats().await["totalRooms"], 1);
    let left = a
        .request(json!({"type": "leave_room", "data": {"room": "lobby"}}))
        .await;
    assert_eq!(left["type"], "room_left");
    assert_eq!(left["data"]["room"], "lobby");
    assert_eq!(gw.stats().await["totalRooms"], 0);
    assert_eq!(gw.send_to_room("lobby", json!(1)).await["delivered"], 0);
    a.silent_for(200).await;
}

#[tokio::test]
async fn rooms_are_scoped_by_app() {
    let gw = TestGateway::start().await;
    let claims = Claims::new("u1", &[APP, "other"], 60);
    let token = gw.token_for(&claims);
    let mut in_shop = gw
        .connect_with(&token, &format!("app={APP}&device=a"), &[])
        .await
        .unwrap();
    let mut in_other = gw
        .connect_with(&token, "app=other&device=b", &[])
        .await
        .unwrap();
    join(&mut in_shop, "news").await;
    join(&mut in_other, "news").await;
    gw.send_to_room("news", json!("for shop")).await;
    assert_eq!(in_shop.recv().await["data"], "for shop");
    in_other.silent_for(200).await;
}

#[tokio::test]
async fn the_rooms_claim_limits_what_may_be_joined() {
    let gw = TestGateway::start().await;
    let mut claims = Claims::new("u1", &[APP], 60);
    claims.rooms = Some(vec!["orders:*".into(), "lobby".into()]);
    let mut client = gw
        .connect_with(&gw.token_for(&claims), &format!("app={APP}"), &[])
        .await
        .unwrap();
    assert_eq!(join(&mut client, "orders:1").await["type"], "room_joined");
    assert_eq!(join(&mut client, "lobby").await["type"], "room_joined");
    let refused = join(&mut client, "admin").await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["data"]["code"], "forbidden");
    assert_eq!(refused["data"]["ref"], "join_room", "no id: the type");
    let refused = client
        .request(json!({"type": "join_room", "id": "j-7", "data": {"room": "admin"}}))
        .await;
    assert_eq!(
        refused["data"]["ref"], "j-7",
        "the request's id when it has one"
    );
}

#[tokio::test]
async fn a_connection_is_in_at_most_the_configured_number_of_rooms() {
    let gw = TestGateway::with(|c| c.max_rooms_per_connection = 2).await;
    let mut client = gw.connect("u1", "d").await;
    join(&mut client, "r1").await;
    join(&mut client, "r2").await;
    assert_eq!(
        join(&mut client, "r2").await["type"],
        "room_joined",
        "joining again is not a new room"
    );
    assert_eq!(
        join(&mut client, "r3").await["data"]["code"],
        "too_many_rooms"
    );
}

#[tokio::test]
async fn invalid_room_names_are_refused() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    for room in ["", "has space", "wild*", &"r".repeat(129)] {
        let error = join(&mut client, room).await;
        assert_eq!(error["data"]["code"], "invalid_room", "{room:?}");
    }
}

#[tokio::test]
async fn a_closed_connection_leaves_its_rooms() {
    let gw = TestGateway::start().await;
    let mut a = gw.connect("u1", "d").await;
    join(&mut a, "lobby").await;
    drop(a);
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.stats().await["totalRooms"] != 0 {
        assert!(tokio::time::Instant::now() < deadline, "room not dropped");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn send_to_app_reaches_every_connection_of_the_app_only() {
    let gw = TestGateway::start().await;
    let mut a = gw.connect("u1", "d").await;
    let mut b = gw.connect("u2", "d").await;
    let claims = Claims::new("u3", &["other"], 60);
    let mut elsewhere = gw
        .connect_with(&gw.token_for(&claims), "app=other", &[])
        .await
        .unwrap();
    let (status, sent) = gw
        .api(
            reqwest::Method::POST,
            "/v1/send/app",
            Some(json!({"app": APP, "message": {"type": "system_announcement", "data": {"text": "maintenance at 2"}}})),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    for client in [&mut a, &mut b] {
        let m = client.recv().await;
        assert_eq!(m["type"], "system_announcement");
        assert_eq!(m["id"], sent["id"]);
        assert!(m.get("seq").is_none() && m.get("room").is_none());
    }
    elsewhere.silent_for(200).await;
}

#[tokio::test]
async fn room_and_app_messages_are_never_replayed() {
    let gw = TestGateway::start().await;
    let mut a = gw.connect("u1", "d").await;
    join(&mut a, "lobby").await;
    drop(a);
    gw.send_to_room("lobby", json!(1)).await;
    gw.api(
        reqwest::Method::POST,
        "/v1/send/app",
        Some(json!({"app": APP, "message": {"type": "x"}})),
    )
    .await;
    let mut again = gw.connect("u1", "d").await;
    assert_eq!(again.established["data"]["replayCount"], 0);
    again.silent_for(200).await;
}
