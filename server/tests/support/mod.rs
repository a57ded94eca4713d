//! Test support: a real gateway on 127.0.0.1:0, a real WebSocket client, and the HTTP API.
#![allow(dead_code, clippy::unwrap_used)]

pub mod redis;
pub mod sentinel;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tether_server::auth::{mint_token, Claims};
use tether_server::config::Config;
use tether_server::Gateway;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const ADMIN_KEY: &str = "test-admin-key";
pub const APP: &str = "shop";
/// How long a test waits for a frame that must come.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestGateway {
    gateway: Option<Gateway>,
    pub addr: SocketAddr,
    pub config: Config,
    http: reqwest::Client,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::with(|_| {}).await
    }

    pub async fn with(change: impl FnOnce(&mut Config)) -> TestGateway {
        let mut config = Config::for_tests(SECRET);
        change(&mut config);
        let gateway = Gateway::start(config.clone())
            .await
            .expect("gateway starts");
        TestGateway {
            addr: gateway.local_addr(),
            gateway: Some(gateway),
            config,
            http: reqwest::Client::new(),
        }
    }

    /// A gateway node using Redis at `urls` (comma-separated seeds for a cluster).
    pub async fn redis(urls: &str, change: impl FnOnce(&mut Config)) -> TestGateway {
        let urls_owned = urls.to_owned();
        Self::with(move |c| {
            let urls: Vec<String> = urls_owned.split(',').map(str::to_owned).collect();
            c.broker =
                tether_server::config::BrokerConfig::Redis(tether_server::config::RedisConfig {
                    cluster: urls.len() > 1,
                    urls,
                });
            change(c);
        })
        .await
    }

    /// Starts another node with this one's configuration (same Redis, same secrets).
    pub async fn sibling(&self) -> TestGateway {
        let config = self.config.clone();
        Self::with(move |c| *c = config).await
    }

    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway running")
    }

    pub async fn shutdown(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.kill();
        }
    }

    pub fn token(&self, user: &str) -> String {
        mint_token(SECRET.as_bytes(), &Claims::new(user, &[APP], 3600))
    }

    pub fn token_for(&self, claims: &Claims) -> String {
        mint_token(SECRET.as_bytes(), claims)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr)
    }

    /// Opens a connection for `user` on APP with `device` and reads `connection_established`.
    pub async fn connect(&self, user: &str, device: &str) -> Client {
        self.connect_with(
            &self.token(user),
            &format!("app={APP}&device={device}"),
            &[],
        )
        .await
        .unwrap_or_else(|(status, body)| panic!("handshake refused: {status} {body}"))
    }

    /// Opens a connection; `Err((status, body))` when refused.
    pub async fn connect_with(
        &self,
        token: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, Value)> {
        let mut client = self.open(Some(token), query, headers).await?;
        let established = client.recv().await;
        assert_eq!(
            established["type"], "connection_established",
            "{established}"
        );
        client.established = established;
        Ok(client)
    }

    /// Opens a socket without reading anything.
    pub async fn open(
        &self,
        token: Option<&str>,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, Value)> {
        let mut request = self.ws_url(query).into_client_request().expect("request");
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
            );
        }
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Client {
                ws,
                established: Value::Null,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                    .unwrap_or(Value::Null);
                Err((status, body))
            }
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// Expects a refusal and returns (status, error code).
    pub async fn refused(
        &self,
        token: Option<&str>,
        query: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        match self.open(token, query, headers).await {
            Ok(_) => panic!("handshake for {query} was accepted"),
            Err((status, body)) => {
                let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
                assert!(body["error"]["message"].is_string(), "{body}");
                (status, code)
            }
        }
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api_with_key(method, path, body, Some(ADMIN_KEY)).await
    }

    pub async fn api_with_key(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.addr));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("http request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A POST with an `Idempotency-Key`: status, body, and whether the answer says it was
    /// replayed (`Idempotent-Replayed: true`).
    pub async fn api_idempotent(&self, path: &str, body: &Value, key: &str) -> (u16, Value, bool) {
        self.api_idempotent_raw(path, &body.to_string(), key).await
    }

    /// [`TestGateway::api_idempotent`] with the body's bytes as given.
    pub async fn api_idempotent_raw(
        &self,
        path: &str,
        body: &str,
        key: &str,
    ) -> (u16, Value, bool) {
        let response = self
            .http
            .post(format!("http://{}{path}", self.addr))
            .bearer_auth(ADMIN_KEY)
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("http request");
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            replayed,
        )
    }

    pub async fn send_to_user(&self, user: &str, kind: &str, data: Value) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                "/v1/send/user",
                Some(json!({"userId": user, "app": APP, "message": {"type": kind, "data": data}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn send_to_room(&self, room: &str, data: Value) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                "/v1/send/room",
                Some(json!({"room": room, "app": APP, "message": {"type": "room_news", "data": data}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn inbound(&self) -> Vec<Value> {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/v1/inbound?app={APP}&limit=1000"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["messages"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /v1/presence` for `room` of APP (must answer 200).
    pub async fn presence(&self, room: &str) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/v1/presence?app={APP}&room={room}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = self.api(reqwest::Method::GET, "/v1/stats", None).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Polls `check` until it is true or `WAIT` passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub established: Value,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed(u16),
    /// The socket ended without a close frame.
    Dropped,
}

impl Client {
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next text frame, as JSON; panics on anything else or after `WAIT`.
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("socket open")
                .expect("no socket error");
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("frame is JSON")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends a request and returns the next frame.
    pub async fn request(&mut self, value: Value) -> Value {
        self.send(value).await;
        self.recv().await
    }

    /// Waits for the connection to end and returns how.
    pub async fn ended(&mut self) -> Ended {
        self.ended_within(WAIT).await
    }

    pub async fn ended_within(&mut self, wait: Duration) -> Ended {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next())
                .await
                .expect("connection ends within the wait");
            match frame {
                Some(Ok(Message::Close(Some(close)))) => {
                    return Ended::Closed(u16::from(close.code))
                }
                Some(Ok(Message::Close(None))) => {
                    return Ended::Closed(u16::from(CloseCode::Status))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ended::Dropped,
            }
        }
    }

    /// Expects no frame for `ms`.
    pub async fn silent_for(&mut self, ms: u64) {
        if let Ok(frame) = tokio::time::timeout(Duration::from_millis(ms), self.ws.next()).await {
            panic!("expected silence, got {frame:?}");
        }
    }

    pub async fn ack(&mut self, seq: u64) {
        self.send(json!({"type": "ack", "data": {"seq": seq}}))
            .await;
    }
}
