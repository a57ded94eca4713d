//! docs/protocol.md §9: the backend HTTP API, its authentication and errors, stats, health and
//! metrics.

mod support;

use reqwest::Method;
use serde_json::json;
use support::*;

#[tokio::test]
async fn the_api_needs_the_admin_key() {
    let gw = TestGateway::start().await;
    let body = Some(json!({"userId": "u", "app": APP, "message": {"type": "n"}}));
    for key in [None, Some("wrong-key"), Some("")] {
        let (status, error) = gw
            .api_with_key(Method::POST, "/v1/send/user", body.clone(), key)
            .await;
        assert_eq!(status, 401, "{key:?}");
        assert_eq!(error["error"]["code"], "unauthorized");
        assert!(error["error"]["message"].is_string());
    }
    let (status, _) = gw.api_with_key(Method::GET, "/v1/stats", None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn without_an_admin_key_configured_the_api_refuses_every_call() {
    let gw = TestGateway::with(|c| c.admin_api_key = None).await;
    let (status, error) = gw.api(Method::GET, "/v1/stats", None).await;
    assert_eq!(status, 401);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ADMIN_API_KEY"));
}

#[tokio::test]
async fn malformed_bodies_are_400_with_the_error_body() {
    let gw = TestGateway::start().await;
    for (path, body) in [
        (
            "/v1/send/user",
            json!({"app": APP, "message": {"type": "n"}}),
        ),
        (
            "/v1/send/user",
            json!({"userId": "u", "app": "bad app", "message": {"type": "n"}}),
        ),
        (
            "/v1/send/user",
            json!({"userId": "", "app": APP, "message": {"type": "n"}}),
        ),
        (
            "/v1/send/user",
            json!({"userId": "u", "app": APP, "message": {"type": "Bad Type"}}),
        ),
        (
            "/v1/send/user",
            json!({"userId": "u", "app": APP, "message": {"type": "n", "id": "has space"}}),
        ),
        (
            "/v1/send/room",
            json!({"room": "bad room", "app": APP, "message": {"type": "n"}}),
        ),
        ("/v1/send/app", json!({"app": APP})),
        ("/v1/send/app", json!("not an object")),
    ] {
        let (status, error) = gw.api(Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, 400, "{path} {body}");
        assert_eq!(error["error"]["code"], "invalid_request", "{path} {body}");
    }
    let (status, _) = gw
        .api(Method::DELETE, "/v1/connections?app=shop", None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn reserved_types_are_refused_by_the_api_too() {
    let gw = TestGateway::start().await;
    for kind in [
        "connection_established",
        "pong",
        "room_joined",
        "room_left",
        "error",
    ] {
        let (status, error) = gw
            .api(
                Method::POST,
                "/v1/send/app",
                Some(json!({"app": APP, "message": {"type": kind}})),
            )
            .await;
        assert_eq!(status, 400, "{kind}");
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reserved"));
    }
}

#[tokio::test]
async fn a_backend_id_is_kept_on_the_message() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    let (status, sent) = gw
        .api(
            Method::POST,
            "/v1/send/user",
            Some(json!({"userId": "u1", "app": APP, "message": {"type": "n", "id": "order-123-delivered"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(sent["id"], "order-123-delivered");
    assert_eq!(client.recv().await["id"], "order-123-delivered");
}

#[tokio::test]
async fn stats_count_this_node_and_the_cluster() {
    let gw = TestGateway::start().await;
    let mut a = gw.connect("u1", "d").await;
    let _b = gw.connect("u2", "d").await;
    let mut claims = tether_server::auth::Claims::new("ops", &["admin-app"], 60);
    claims.user_type = Some("admin".into());
    let _c = gw
        .connect_with(&gw.token_for(&claims), "app=admin-app", &[])
        .await
        .unwrap();
    a.request(json!({"type": "join_room", "data": {"room": "r"}}))
        .await;
    gw.send_to_user("offline-user", "n", json!(1)).await;
    let stats = gw.stats().await;
    assert_eq!(stats["totalConnections"], 3);
    assert_eq!(stats["totalRooms"], 1);
    assert_eq!(stats["connectionsByApp"], json!({APP: 2, "admin-app": 1}));
    assert_eq!(
        stats["connectionsByType"],
        json!({"customer": 2, "admin": 1})
    );
    assert_eq!(stats["serverId"], gw.gateway().server_id());
    assert_eq!(stats["totalRedisConnections"], 3);
    assert_eq!(stats["totalQueuedMessages"], 1);
    assert_eq!(stats["nodes"], 1);
}

#[tokio::test]
async fn health_needs_no_key_and_names_the_embedded_broker() {
    let gw = TestGateway::start().await;
    let (status, health) = gw.api_with_key(Method::GET, "/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health, json!({"status": "healthy", "broker": "memory"}));
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let gw = TestGateway::start().await;
    let _client = gw.connect("u1", "d").await;
    let (status, text) = gw.api_with_key(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap();
    assert!(text.contains("# TYPE tether_connections gauge"), "{text}");
    assert!(
        text.contains("# TYPE tether_connections_opened_total counter"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_are_404_with_the_error_body() {
    let gw = TestGateway::start().await;
    let (status, error) = gw.api(Method::GET, "/v2/nothing", None).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], "not_found");
}

#[tokio::test]
async fn api_bodies_nested_deeper_than_64_levels_are_400() {
    let gw = TestGateway::start().await;
    let mut data = json!(1);
    for _ in 0..100 {
        data = json!([data]);
    }
    let body = json!({"userId": "u1", "app": APP, "message": {"type": "n", "data": data}});
    let (status, error) = gw.api(Method::POST, "/v1/send/user", Some(body)).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "invalid_request");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("64 levels"));
}

#[tokio::test]
async fn a_wrong_method_is_405_with_the_error_body_and_allow() {
    let gw = TestGateway::start().await;
    let response = reqwest::Client::new()
        .delete(format!("http://{}/v1/stats", gw.addr))
        .bearer_auth(support::ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let allow = response.headers().get("allow").cloned();
    assert_eq!(
        allow.as_ref().and_then(|v| v.to_str().ok()),
        Some("GET,HEAD")
    );
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(body["error"]["message"].as_str().unwrap().contains("Allow"));
}

#[tokio::test]
async fn api_requests_are_counted_by_route_and_status() {
    let gw = TestGateway::start().await;
    let (status, _) = gw.api(Method::GET, "/v1/stats", None).await;
    assert_eq!(status, 200);
    let (status, _) = gw
        .api_with_key(Method::GET, "/v1/stats", None, Some("wrong-key"))
        .await;
    assert_eq!(status, 401);
    let (_, text) = gw.api_with_key(Method::GET, "/metrics", None, None).await;
    let text = text.as_str().unwrap();
    for status in ["200", "401"] {
        let wanted = format!("route=\"/v1/stats\",status=\"{status}\"");
        assert!(
            text.lines()
                .any(|l| l.starts_with("tether_api_requests_total{") && l.contains(&wanted)),
            "no tether_api_requests_total line with {wanted}: {text}"
        );
    }
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_send_deliver_once() {
    let gw = TestGateway::start().await;
    let mut client = gw.connect("u1", "d").await;
    let join = client
        .request(json!({"type": "join_room", "data": {"room": "orders:1"}}))
        .await;
    assert_eq!(join["type"], "room_joined");
    let to_user = json!({"userId": "u1", "app": APP, "message": {"type": "order_update", "data": {"orderId": 123, "status": "delivered"}}});
    let (status, first, replayed) = gw
        .api_idempotent("/v1/send/user", &to_user, "order-123-delivered")
        .await;
    assert_eq!((status, replayed), (200, false), "{first}");
    assert_eq!(client.recv().await["seq"], first["seq"]);
    // The backend timed out and retries, with the body written out differently: the same
    // answer, nothing sent.
    let relaid = format!(
        "{{ \"message\": {{\"data\": {{\"status\": \"delivered\",\n \"orderId\": 123}}, \"type\": \"order_update\"}},\n  \"app\": \"{APP}\", \"userId\": \"u1\" }}"
    );
    assert_ne!(relaid, to_user.to_string(), "other bytes");
    let (status, again, replayed) = gw
        .api_idempotent_raw("/v1/send/user", &relaid, "order-123-delivered")
        .await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, first);
    // The key names that request only.
    let mut other = to_user.clone();
    other["message"]["data"]["status"] = json!("returned");
    let (status, error, _) = gw
        .api_idempotent("/v1/send/user", &other, "order-123-delivered")
        .await;
    assert_eq!(status, 422);
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
    let (status, _, _) = gw
        .api_idempotent("/v1/send/room", &to_user, "order-123-delivered")
        .await;
    assert_eq!(status, 400, "checked before the key: not a room send");
    client.silent_for(200).await;

    // Room and app sends, and a new key for a new send.
    let to_room = json!({"room": "orders:1", "app": APP, "message": {"type": "eta", "data": 5}});
    let to_app = json!({"app": APP, "message": {"type": "notice"}});
    for (path, body) in [("/v1/send/room", &to_room), ("/v1/send/app", &to_app)] {
        // A key belongs to one request of the app: each path its own.
        let (once, twice) = (format!("{path}#1"), format!("{path}#2"));
        let (_, first, _) = gw.api_idempotent(path, body, &once).await;
        let (status, again, replayed) = gw.api_idempotent(path, body, &once).await;
        assert_eq!((status, replayed, &again), (200, true, &first), "{path}");
        assert_eq!(client.recv().await["id"], first["id"], "{path}");
        client.silent_for(200).await;
        let (status, fresh, replayed) = gw.api_idempotent(path, body, &twice).await;
        assert_eq!((status, replayed), (200, false));
        assert_ne!(fresh["id"], first["id"]);
        assert_eq!(client.recv().await["id"], fresh["id"]);
    }
    // Keys are per app.
    let (status, _, replayed) = gw
        .api_idempotent(
            "/v1/send/app",
            &json!({"app": "other-app", "message": {"type": "notice"}}),
            "/v1/send/app#1",
        )
        .await;
    assert_eq!((status, replayed), (200, false));
    // (The recorder is the process's: other tests may add to it, never take away.)
    let metrics = gw.api(Method::GET, "/metrics", None).await.1;
    let replayed: f64 = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(r#"tether_api_idempotency_total{outcome="replayed"} "#))
        .expect("the replay counter")
        .parse()
        .unwrap();
    assert!(replayed >= 3.0, "{replayed}");
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_400() {
    let gw = TestGateway::start().await;
    let body = json!({"app": APP, "message": {"type": "notice"}});
    for key in ["has space", &"k".repeat(256)] {
        let (status, error, _) = gw.api_idempotent("/v1/send/app", &body, key).await;
        assert_eq!(status, 400, "{key}");
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"));
    }
}

#[tokio::test]
async fn one_message_reaches_several_users_each_through_their_own_inbox() {
    let gw = TestGateway::start().await;
    let mut customer = gw.connect("customer-42", "phone").await;
    let mut courier = gw.connect("courier-7", "phone").await;
    // The customer's inbox already holds one message: seqs are per inbox.
    gw.send_to_user("customer-42", "n", json!("earlier")).await;
    assert_eq!(customer.recv().await["seq"], 1);
    let (status, sent) = gw
        .api(
            Method::POST,
            "/v1/send/users",
            Some(
                json!({"userIds": ["customer-42", "courier-7", "store-3"], "app": APP,
                "message": {"type": "order_update", "data": {"orderId": 123}}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(
        (sent["sent"].as_u64(), sent["failed"].as_u64()),
        (Some(3), Some(0))
    );
    let users = sent["users"].as_array().unwrap();
    let seqs: Vec<(&str, u64, u64)> = users
        .iter()
        .map(|u| {
            (
                u["userId"].as_str().unwrap(),
                u["seq"].as_u64().unwrap(),
                u["delivered"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seqs,
        [
            ("customer-42", 2, 1),
            ("courier-7", 1, 1),
            ("store-3", 1, 0)
        ]
    );
    for (client, seq) in [(&mut customer, 2), (&mut courier, 1)] {
        let m = client.recv().await;
        assert_eq!(
            (m["id"].clone(), m["seq"].as_u64()),
            (sent["id"].clone(), Some(seq))
        );
    }
    // Offline: it waits in the inbox.
    let mut store = gw.connect("store-3", "tablet").await;
    let m = store.recv().await;
    assert_eq!(
        (m["id"].clone(), m["type"].as_str()),
        (sent["id"].clone(), Some("order_update"))
    );
    for bad in [
        json!([]),
        json!(["a", "b", "a"]),
        json!(["a", ""]),
        json!((0..1001).map(|n| format!("u{n}")).collect::<Vec<_>>()),
    ] {
        let (status, error) = gw
            .api(
                Method::POST,
                "/v1/send/users",
                Some(json!({"userIds": bad, "app": APP, "message": {"type": "n"}})),
            )
            .await;
        assert_eq!(status, 400, "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("userIds"),
            "{error}"
        );
    }
    customer.silent_for(100).await;
}
