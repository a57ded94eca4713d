//! docs/protocol.md §2: the handshake, its refusals and their order, and the per-user limit.

mod support;

use support::*;
use tether_server::auth::{Audience, Claims};

#[tokio::test]
async fn a_valid_handshake_gets_connection_established_first() {
    let gw = TestGateway::start().await;
    let client = gw.connect("u1", "phone-1").await;
    let data = &client.established["data"];
    assert_eq!(data["userId"], "u1");
    assert_eq!(data["app"], APP);
    assert_eq!(data["userType"], "customer");
    assert_eq!(data["heartbeatInterval"], 30_000);
    assert_eq!(data["serverId"], gw.gateway().server_id());
    assert!(data["connectionId"]
        .as_str()
        .unwrap()
        .starts_with(gw.gateway().server_id()));
    assert_eq!(data["replayCount"], 0);
    assert!(data["replayFrom"].is_null());
    assert!(client.established["ts"].is_u64());
}

#[tokio::test]
async fn the_token_may_come_in_the_query_for_clients_without_headers() {
    let gw = TestGateway::start().await;
    let token = gw.token("u1");
    let client = gw
        .open(None, &format!("app={APP}&device=d&token={token}"), &[])
        .await;
    assert!(client.is_ok());
}

#[tokio::test]
async fn the_user_type_comes_from_the_token() {
    let gw = TestGateway::start().await;
    let mut claims = Claims::new("ops", &[APP], 60);
    claims.user_type = Some("admin".into());
    let client = gw
        .connect_with(&gw.token_for(&claims), &format!("app={APP}"), &[])
        .await
        .unwrap();
    assert_eq!(client.established["data"]["userType"], "admin");
}

#[tokio::test]
async fn a_missing_or_bad_token_is_401_invalid_token() {
    let gw = TestGateway::start().await;
    let query = format!("app={APP}&device=d");
    assert_eq!(
        gw.refused(None, &query, &[]).await,
        (401, "invalid_token".into())
    );
    assert_eq!(
        gw.refused(Some("garbage"), &query, &[]).await,
        (401, "invalid_token".into())
    );
    let other = tether_server::auth::mint_token(
        b"some-other-secret-some-other-secret!",
        &Claims::new("u", &[APP], 60),
    );
    assert_eq!(
        gw.refused(Some(&other), &query, &[]).await,
        (401, "invalid_token".into())
    );
    let (status, code) = gw
        .refused(None, &query, &[("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
}

#[tokio::test]
async fn an_expired_token_is_401_token_expired() {
    let gw = TestGateway::start().await;
    let mut claims = Claims::new("u1", &[APP], 0);
    claims.exp -= 60;
    let (status, code) = gw
        .refused(Some(&gw.token_for(&claims)), &format!("app={APP}"), &[])
        .await;
    assert_eq!((status, code.as_str()), (401, "token_expired"));
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let gw = TestGateway::with(|c| {
        c.jwt.issuer = Some("https://auth.example".into());
        c.jwt.audience = Some("tether".into());
    })
    .await;
    let mut claims = Claims::new("u1", &[APP], 60);
    assert_eq!(
        gw.refused(Some(&gw.token_for(&claims)), &format!("app={APP}"), &[])
            .await
            .1,
        "invalid_token"
    );
    claims.iss = Some("https://auth.example".into());
    claims.aud = Some("tether".into());
    assert!(gw
        .connect_with(&gw.token_for(&claims), &format!("app={APP}"), &[])
        .await
        .is_ok());
    // RFC 7519's array form: the configured audience among several.
    claims.aud = Some(Audience::Many(vec!["billing".into(), "tether".into()]));
    assert!(gw
        .connect_with(&gw.token_for(&claims), &format!("app={APP}"), &[])
        .await
        .is_ok());
    claims.aud = Some(Audience::Many(vec!["billing".into()]));
    assert_eq!(
        gw.refused(Some(&gw.token_for(&claims)), &format!("app={APP}"), &[])
            .await
            .1,
        "invalid_token"
    );
}

#[tokio::test]
async fn bad_parameters_are_400_invalid_params() {
    let gw = TestGateway::start().await;
    let token = gw.token("u1");
    for query in [
        "device=d".to_owned(),
        "app=".to_owned(),
        "app=has%20space".to_owned(),
        format!("app={}", "a".repeat(65)),
        format!("app={APP}&device=bad%2Fdevice"),
        format!("app={APP}&device="),
        format!("app={APP}&since=-1"),
        format!("app={APP}&since=abc"),
    ] {
        assert_eq!(
            gw.refused(Some(&token), &query, &[]).await,
            (400, "invalid_params".into()),
            "{query}"
        );
    }
}

#[tokio::test]
async fn an_app_the_token_does_not_grant_is_403() {
    let gw = TestGateway::start().await;
    let (status, code) = gw
        .refused(Some(&gw.token("u1")), "app=other-app", &[])
        .await;
    assert_eq!((status, code.as_str()), (403, "app_forbidden"));
}

#[tokio::test]
async fn requests_with_an_origin_are_refused_unless_allowed() {
    let gw = TestGateway::start().await;
    let token = gw.token("u1");
    let query = format!("app={APP}");
    let (status, code) = gw
        .refused(Some(&token), &query, &[("origin", "https://evil.example")])
        .await;
    assert_eq!((status, code.as_str()), (403, "origin_forbidden"));

    let gw = TestGateway::with(|c| c.allowed_origins = vec!["https://*.shop.example".into()]).await;
    let token = gw.token("u1");
    assert!(gw
        .open(
            Some(&token),
            &query,
            &[("origin", "https://app.shop.example")]
        )
        .await
        .is_ok());
    assert_eq!(
        gw.refused(Some(&token), &query, &[("origin", "https://evil.example")])
            .await
            .1,
        "origin_forbidden"
    );
}

#[tokio::test]
async fn checks_run_in_order_origin_token_params_app_limits() {
    let gw = TestGateway::with(|c| c.max_connections_per_user = 1).await;
    let good = gw.token("u1");
    let _holder = gw.connect("u1", "first").await;
    let evil = [("origin", "https://evil.example")];
    // Everything wrong at once: origin answers first.
    assert_eq!(
        gw.refused(Some("bad"), "app=", &evil).await.1,
        "origin_forbidden"
    );
    // Then the token, before the parameters.
    assert_eq!(
        gw.refused(Some("bad"), "app=", &[]).await.1,
        "invalid_token"
    );
    // Then the parameters, before the app.
    assert_eq!(
        gw.refused(Some(&good), "app=other&since=x", &[]).await.1,
        "invalid_params"
    );
    // Then the app, before the limits.
    assert_eq!(
        gw.refused(Some(&good), "app=other&device=second", &[])
            .await
            .1,
        "app_forbidden"
    );
    // Finally the limit.
    assert_eq!(
        gw.refused(Some(&good), &format!("app={APP}&device=second"), &[])
            .await
            .1,
        "too_many_connections"
    );
}

#[tokio::test]
async fn the_connection_limit_counts_other_devices() {
    let gw = TestGateway::with(|c| c.max_connections_per_user = 2).await;
    let _a = gw.connect("u1", "a").await;
    let _b = gw.connect("u1", "b").await;
    let (status, code) = gw
        .refused(Some(&gw.token("u1")), &format!("app={APP}&device=c"), &[])
        .await;
    assert_eq!((status, code.as_str()), (429, "too_many_connections"));
    // Another user is not affected.
    gw.connect("u2", "c").await;
}

#[tokio::test]
async fn a_closed_connection_frees_its_slot() {
    let gw = TestGateway::with(|c| c.max_connections_per_user = 1).await;
    let mut a = gw.connect("u1", "a").await;
    a.ws.close(None).await.unwrap();
    a.ended().await;
    // The slot is released right after the close; allow the task a moment.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match gw
            .connect_with(&gw.token("u1"), &format!("app={APP}&device=b"), &[])
            .await
        {
            Ok(_) => break,
            Err((429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn replaced_device_connection_is_closed_with_4409() {
    let gw = TestGateway::with(|c| c.max_connections_per_user = 1).await;
    let mut old = gw.connect("u1", "phone").await;
    let _new = gw.connect("u1", "phone").await;
    assert_eq!(old.ended().await, Ended::Closed(4409));
    assert_eq!(gw.stats().await["totalConnections"], 1);
}

#[tokio::test]
async fn handshakes_beyond_the_per_ip_rate_are_429_with_retry_after() {
    let gw = TestGateway::with(|c| c.handshake_rate_per_ip = 1).await;
    let token = gw.token("u1");
    let query = format!("app={APP}");
    let mut refused = None;
    for _ in 0..10 {
        match gw.open(Some(&token), &query, &[]).await {
            Ok(_) => {}
            Err((status, body)) => {
                refused = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refused.expect("the rate limit answers within 10 attempts");
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn a_draining_node_answers_503_shutting_down() {
    let mut gw = TestGateway::start().await;
    let addr = gw.addr;
    let mut client = gw.connect("u1", "d").await;
    let token = gw.token("u2");
    gw.shutdown().await;
    assert_eq!(client.ended().await, Ended::Closed(1012));
    // The listener is gone after shutdown: a new handshake cannot even connect.
    let refused =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?app={APP}&token={token}")).await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn a_client_that_trickles_its_handshake_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw =
        TestGateway::with(|c| c.handshake_timeout = std::time::Duration::from_millis(300)).await;
    let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    socket
        .write_all(b"GET /ws?app=shop HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 256];
    // The gateway closes the socket (possibly after a 408 answer) once the deadline passes.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the half-sent handshake was never dropped");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    // Other clients are served meanwhile and afterwards.
    gw.connect("u1", "d").await;
}
