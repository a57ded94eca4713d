//! Runs the built `tether` binary against a real gateway (embedded broker) started in
//! this process on 127.0.0.1:0 with a known secret and admin key.
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tether_server::{Config, Gateway};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const SECRET: &str = "cli-test-jwt-secret-0123456789abcdef";
/// `Config::for_tests` sets this admin key.
pub const ADMIN_KEY: &str = "test-admin-key";
pub const APP: &str = "demo";
/// How long a test waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(15);

/// Variables the binary reads; a test sets what it means to.
const ENV: [&str; 8] = [
    "TETHER_URL",
    "TETHER_WS_URL",
    "TETHER_APP",
    "TETHER_TOKEN",
    "TETHER_ADMIN_KEY",
    "ADMIN_API_KEY",
    "JWT_SECRET",
    "RUST_LOG",
];

/// A running gateway.
pub struct Gw {
    pub gateway: Gateway,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Gw {
    pub async fn start() -> Gw {
        Gw::start_with(|_| {}).await
    }

    /// A gateway with `tune` applied to the test config.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Gw {
        let mut config = Config::for_tests(SECRET);
        tune(&mut config);
        let gateway = Gateway::start(config).await.unwrap();
        let base = format!("http://{}", gateway.local_addr());
        Gw { gateway, base }
    }

    /// `tether ARGS` with `--server` in the environment.
    pub fn tether(&self, args: &[&str]) -> Command {
        let mut cmd = tether(args);
        cmd.env("TETHER_URL", &self.base);
        cmd
    }

    /// Runs `tether ARGS` to its end.
    pub async fn run(&self, args: &[&str]) -> Out {
        run(self.tether(args)).await
    }

    /// A token from `tether token` for `user` on APP.
    pub async fn token(&self, user: &str) -> String {
        let out = self
            .run(&["token", "--user", user, "--app", APP, "--secret", SECRET])
            .await;
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout.trim().to_owned()
    }

    /// `GET path` with the admin key.
    pub async fn get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// `tether ARGS` with none of the variables it reads.
pub fn tether(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in ENV {
        cmd.env_remove(name);
    }
    cmd
}

/// What a finished run printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs a command to its end (bounded).
pub async fn run(mut cmd: Command) -> Out {
    let output = tokio::time::timeout(WAIT * 2, cmd.output())
        .await
        .expect("the command did not finish in time")
        .unwrap();
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A command still running, its output read line by line.
pub struct Running {
    pub child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every stderr line read so far.
    pub errors: Vec<String>,
}

fn lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            errors: Vec::new(),
        }
    }

    /// Waits until a stderr line contains `text`.
    pub async fn wait_stderr(&mut self, text: &str) {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.stderr.recv().await {
                let hit = line.contains(text);
                self.errors.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            found == Ok(true),
            "no stderr line with {text:?}; stderr so far: {:#?}",
            self.errors
        );
    }

    /// The next stdout line, as JSON.
    pub async fn next_json(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.stdout.recv())
            .await
            .unwrap_or_else(|_| panic!("no stdout line in time; stderr: {:#?}", self.errors))
            .unwrap_or_else(|| panic!("stdout closed; stderr: {:#?}", self.errors));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }

    /// Waits for the exit; its code (stderr read to its end into `errors`).
    pub async fn finish(&mut self) -> i32 {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the command did not exit; stderr: {:#?}", self.errors))
            .unwrap();
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(2), self.stderr.recv()).await
        {
            self.errors.push(line);
        }
        status.code().unwrap_or(-1)
    }

    /// The stdout lines not read yet (after the process ended).
    pub async fn stdout_rest(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(1), self.stdout.recv()).await
        {
            rest.push(line);
        }
        rest
    }
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
