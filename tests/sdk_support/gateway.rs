//! A real `tether-server` gateway (embedded broker) for end-to-end tests, with its
//! backend HTTP API (docs/protocol.md §9) and token minting.

use serde_json::Value;
use std::net::SocketAddr;
use tether_server::auth::{mint_token, Claims};
use tether_server::{Config, Gateway};

pub const SECRET: &str = "sdk-e2e-jwt-secret-0123456789abcdef";
pub const APP: &str = "shoofi-app";
const ADMIN_KEY: &str = "test-admin-key";

/// A running gateway.
pub struct Backend {
    pub gateway: Option<Gateway>,
    pub addr: SocketAddr,
    http: reqwest::Client,
}

/// One stored app message, as `GET /v1/inbound` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub user: String,
    pub device: Option<String>,
    pub kind: String,
    pub id: String,
    pub data: Value,
}

impl Backend {
    /// Starts a gateway; `tune` adjusts the test config (heartbeat, timeouts).
    pub async fn start(tune: impl FnOnce(&mut Config)) -> Backend {
        let mut config = Config::for_tests(SECRET);
        tune(&mut config);
        let gateway = Gateway::start(config).await.expect("gateway starts");
        let addr = gateway.local_addr();
        Backend {
            gateway: Some(gateway),
            addr,
            http: reqwest::Client::new(),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A token for `user`, valid `ttl_s` seconds.
    pub fn token(user: &str, ttl_s: u64) -> String {
        mint_token(SECRET.as_bytes(), &Claims::new(user, &[APP], ttl_s))
    }

    /// Graceful shutdown (1012 to every client).
    pub async fn shutdown(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }

    /// `POST /v1/send/user`; returns the inbox seq.
    pub async fn send_to_user(&self, user: &str, kind: &str, data: Value) -> u64 {
        let answer: Value = self
            .http
            .post(format!("http://{}/v1/send/user", self.addr))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"userId": user, "app": APP, "message": {"type": kind, "data": data}}))
            .send()
            .await
            .expect("send/user")
            .error_for_status()
            .expect("send/user status")
            .json()
            .await
            .expect("send/user body");
        answer["seq"].as_u64().expect("seq")
    }

    /// `POST /v1/send/room`; returns how many members it reached.
    pub async fn send_to_room(&self, room: &str, kind: &str, data: Value) -> Option<u64> {
        let answer: Value = self
            .http
            .post(format!("http://{}/v1/send/room", self.addr))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"room": room, "app": APP, "message": {"type": kind, "data": data}}))
            .send()
            .await
            .expect("send/room")
            .error_for_status()
            .expect("send/room status")
            .json()
            .await
            .expect("send/room body");
        answer["delivered"].as_u64()
    }

    /// `POST /v1/send/room` or, without a room, `POST /v1/send/app`: the whole answer
    /// (`id`, `delivered`, and `offset`/`epoch` for a stream).
    pub async fn publish(&self, room: Option<&str>, kind: &str, data: Value) -> Value {
        let (path, body) = match room {
            Some(room) => (
                "room",
                serde_json::json!({"room": room, "app": APP, "message": {"type": kind, "data": data}}),
            ),
            None => (
                "app",
                serde_json::json!({"app": APP, "message": {"type": kind, "data": data}}),
            ),
        };
        self.http
            .post(format!("http://{}/v1/send/{path}", self.addr))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .expect("send")
            .error_for_status()
            .expect("send status")
            .json()
            .await
            .expect("send body")
    }

    /// `DELETE /v1/connections`: kicks the user (4403).
    pub async fn kick(&self, user: &str) {
        self.http
            .delete(format!("http://{}/v1/connections", self.addr))
            .bearer_auth(ADMIN_KEY)
            .query(&[("app", APP), ("userId", user)])
            .send()
            .await
            .expect("kick")
            .error_for_status()
            .expect("kick status");
    }

    /// Every app message stored so far, oldest first (`GET /v1/inbound`, all pages).
    pub async fn inbound(&self) -> Vec<Inbound> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = self
                .http
                .get(format!("http://{}/v1/inbound", self.addr))
                .bearer_auth(ADMIN_KEY)
                .query(&[("app", APP), ("limit", "500")]);
            if let Some(after) = &after {
                request = request.query(&[("after", after.as_str())]);
            }
            let page: Value = request
                .send()
                .await
                .expect("inbound")
                .error_for_status()
                .expect("inbound status")
                .json()
                .await
                .expect("inbound body");
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                out.push(Inbound {
                    user: m["userId"].as_str().unwrap_or_default().to_owned(),
                    device: m["device"].as_str().map(str::to_owned),
                    kind: m["type"].as_str().unwrap_or_default().to_owned(),
                    id: m["id"].as_str().unwrap_or_default().to_owned(),
                    data: m["data"].clone(),
                });
            }
            after = page["next"].as_str().map(str::to_owned);
            if after.is_none() {
                return out;
            }
        }
    }

    /// Waits (bounded) until `inbound()` holds at least `n` messages.
    pub async fn wait_inbound(&self, n: usize, limit: std::time::Duration) -> Vec<Inbound> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let all = self.inbound().await;
            if all.len() >= n || tokio::time::Instant::now() >= deadline {
                return all;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
