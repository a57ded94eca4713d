//! Shared by the `fault_*` tests: gateway nodes as real `tether-server` processes (so
//! they can be SIGKILLed, or started under a faked clock), with the backend API key.
#![allow(dead_code, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tether-server");
pub const ADMIN: &str = "fault-tests-admin-key-0123";

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
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        let node = Node {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&node.addr).is_err() {
            assert!(Instant::now() < deadline, "node did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        node
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
