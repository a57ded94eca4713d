//! Shared by the `fault_*` tests: gateway nodes as real `tether-server` processes (so
//! they can be SIGKILLed, or started under a faked clock), with the backend API key.
#![allow(dead_code, clippy::unwrap_used)]

use futures_util::StreamExt;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tether_server::auth::{mint_token, Claims};
use tokio_tungstenite::tungstenite::Message;

pub const BIN: &str = env!("CARGO_BIN_EXE_tether-server");
pub const ADMIN: &str = "fault-tests-admin-key-0123";

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket of `user`'s `device` on the node at `addr`, resuming after inbox seq
/// `since`, once `connection_established` came; None when the node refused or is gone.
pub async fn connect(addr: &str, user: &str, device: &str, since: u64) -> Option<Ws> {
    let app = super::support::APP;
    let token = mint_token(
        super::support::SECRET.as_bytes(),
        &Claims::new(user, &[app], 3600),
    );
    let url = format!("ws://{addr}/ws?app={app}&device={device}&since={since}&token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("connection_established") => Some(ws),
        _ => None,
    }
}

/// A `tether-server` process on a free loopback port; SIGKILLed when dropped.
pub struct Node {
    child: Child,
    pub addr: String,
}

impl Node {
    /// A node on `redis` with `env` added to the defaults (1 connection per user, rate
    /// limits off, warnings only).
    pub fn start(redis: &str, env: &[(&str, &str)]) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(BIN);
        command
            .current_dir(std::env::temp_dir())
            .env("JWT_SECRET", super::support::SECRET)
            .env("ADMIN_API_KEY", ADMIN)
            .env("REDIS_URL", redis)
            .env("WS_MAX_CONNECTIONS_PER_USER", "1")
            .env("WS_RATE_LIMIT", "0")
            .env("WS_RATE_LIMIT_PER_USER", "0")
            .env("RUST_LOG", "warn")
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("the node exited ({status}): {stderr}");
            }
            assert!(Instant::now() < deadline, "node did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Warnings go on to the test's stderr, where a failing test shows them.
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stderr, &mut std::io::stderr());
        });
        Node { child, addr }
    }

    /// SIGKILL, and reap.
    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
