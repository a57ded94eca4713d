//! Fault: the SDK's process suspended with SIGSTOP past the gateway's idle timeout, then
//! resumed (the desktop analogue of iOS suspending an app; docs/reliability.md).
//!
//! The SDK runs in a child process (this test binary run again with `TETHER_REL_STOP_CHILD`
//! set); the parent holds the gateway, stops and resumes the child, and judges.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::gateway::{Backend, APP};
use sdk_support::{Recorder, Seen, Tokens};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tether::{ClientConfig, ConnectionStatus, TetherClient};
use tokio::io::{AsyncBufReadExt, BufReader};

const CHILD_ENV: &str = "TETHER_REL_STOP_CHILD";
const PREFIX: &str = "RELCHILD ";

fn say(line: &str) {
    println!("{PREFIX}{line}");
}

/// The child: a real `TetherClient` that reports what it sees and sends an app message
/// every 300 ms. Ignored in a normal run: the parent starts it with `--ignored`.
#[test]
#[ignore = "a child process's entry point: the rel_sigstop tests start it (with --ignored)"]
fn sigstop_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        panic!("not a test of its own: its parent test starts it with {CHILD_ENV} set");
    };
    let (url, token, dir) = {
        let parts: Vec<&str> = spec.splitn(3, '\n').collect();
        (
            parts[0].to_owned(),
            parts[1].to_owned(),
            parts[2].to_owned(),
        )
    };
    let (recorder, mut seen) = Recorder::new();
    let mut config = ClientConfig::new(&url, APP, "stop-device", &dir);
    config.backoff_base_ms = 200;
    config.backoff_cap_ms = 1_000;
    let client = TetherClient::new(config, recorder, Tokens::fixed(&token)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        client.connect();
        tokio::spawn(async move {
            while let Some(event) = seen.recv().await {
                match event {
                    Seen::Status(ConnectionStatus::Connected) => say("CONNECTED"),
                    Seen::Message(m) => say(&format!("GOT {}", m.seq.unwrap_or(0))),
                    Seen::Ack(id) => say(&format!("ACKED {id}")),
                    _ => {}
                }
            }
        });
        for n in 0.. {
            let id = client
                .send_message("rel.stop".into(), format!(r#"{{"n":{n}}}"#))
                .await
                .unwrap();
            say(&format!("QUEUED {id}"));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
}

/// The child's report lines, as they come, with when they came.
struct ChildLines {
    rx: tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>,
    log: Vec<(Instant, String)>,
}

impl ChildLines {
    /// Waits (at most `limit`) for a line `pred` accepts; returns when it came.
    async fn wait(&mut self, pred: &dyn Fn(&str) -> bool, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(next) = tokio::time::timeout(left, self.rx.recv()).await else {
                let seen: Vec<&str> = self.log.iter().map(|(_, l)| l.as_str()).collect();
                panic!("the child did not report in time; it said: {seen:?}");
            };
            let (at, line) = next.expect("child output ended");
            self.log.push((at, line.clone()));
            if pred(&line) {
                return at;
            }
        }
    }
}

fn signal(pid: u32, signal: &str) {
    assert!(Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// Setup: gateway with heartbeat 1 s and idle timeout 2.5 s; the SDK in a child process,
/// connected, receiving user messages and sending an app message every 300 ms.
/// Fault: SIGSTOP the child for 6 s (more than twice the idle timeout); the backend sends
/// the user a message meanwhile; then SIGCONT.
/// Expected: the gateway closes the silent connection (4000) and frees its slot while the
/// child is stopped; after SIGCONT the SDK does not trust its stale "connected" state: it
/// finds the socket closed, reconnects within a few seconds, gets the message sent while
/// it was stopped (replayed from its cursor), and drains its queue.
/// Must not lose: the user message sent during the stop, and every app message whose
/// `send_message` returned (each stored exactly once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_stopped_past_the_idle_timeout_resumes_and_catches_up() {
    let backend = Backend::start(|c| {
        c.heartbeat_interval_ms = 1_000;
        c.connection_timeout_ms = 2_500;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        "{}\n{}\n{}",
        backend.ws_url(),
        Backend::token("stop-user", 3600),
        dir.path().to_str().unwrap()
    );
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "sigstop_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel::<(Instant, String)>();
    let stdout = child.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Some(at) = line.find(PREFIX) {
                let _ = tx.send((Instant::now(), line[at + PREFIX.len()..].to_owned()));
            }
        }
    });
    let mut child_lines = ChildLines {
        rx: lines,
        log: Vec::new(),
    };
    child_lines
        .wait(&|l| l == "CONNECTED", Duration::from_secs(20))
        .await;
    let seq1 = backend
        .send_to_user("stop-user", "n", serde_json::json!(1))
        .await;
    child_lines
        .wait(&|l| l == format!("GOT {seq1}"), Duration::from_secs(10))
        .await;

    signal(pid, "-STOP");
    let stopped = Instant::now();
    // Sent while the socket is still open: it waits in the stopped process's receive
    // buffer.
    let seq2 = backend
        .send_to_user("stop-user", "n", serde_json::json!(2))
        .await;
    // The gateway drops the silent connection and frees the slot while the child sleeps.
    let stats_url = format!("http://{}/v1/stats", backend.addr);
    let http = reqwest::Client::new();
    let mut freed = false;
    while stopped.elapsed() < Duration::from_secs(5) {
        let stats: serde_json::Value = http
            .get(&stats_url)
            .bearer_auth("test-admin-key")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stats["totalConnections"] == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the gateway kept the stopped client's connection");
    let freed_after = stopped.elapsed();
    // Sent after the gateway dropped the connection: only a replay can bring it.
    let seq2b = backend
        .send_to_user("stop-user", "n", serde_json::json!("2b"))
        .await;
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(stopped.elapsed())).await;
    signal(pid, "-CONT");
    let resumed = Instant::now();
    child_lines
        .wait(&|l| l == format!("GOT {seq2}"), Duration::from_secs(15))
        .await;
    let got2b = child_lines
        .wait(&|l| l == format!("GOT {seq2b}"), Duration::from_secs(15))
        .await;
    let caught_up = got2b.duration_since(resumed);
    let seq3 = backend
        .send_to_user("stop-user", "n", serde_json::json!(3))
        .await;
    child_lines
        .wait(&|l| l == format!("GOT {seq3}"), Duration::from_secs(10))
        .await;
    // Let the queue drain: the last QUEUED id gets its ACKED.
    let last_queued = child_lines
        .log
        .iter()
        .rev()
        .find_map(|(_, l)| l.strip_prefix("QUEUED ").map(str::to_owned))
        .unwrap();
    let acked = format!("ACKED {last_queued}");
    if !child_lines.log.iter().any(|(_, l)| *l == acked) {
        child_lines
            .wait(&|l| l == acked, Duration::from_secs(10))
            .await;
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;

    let log = child_lines.log;
    let queued: Vec<String> = log
        .iter()
        .filter_map(|(_, l)| l.strip_prefix("QUEUED ").map(str::to_owned))
        .collect();
    let stored = backend.inbound().await;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for m in &stored {
        *count.entry(m.id.as_str()).or_default() += 1;
    }
    assert!(count.values().all(|n| *n == 1), "stored twice");
    let up_to = queued.iter().position(|q| *q == last_queued).unwrap();
    for id in &queued[..=up_to] {
        assert_eq!(count.get(id.as_str()), Some(&1), "{id} lost");
    }
    let got: Vec<&str> = log
        .iter()
        .filter_map(|(_, l)| l.strip_prefix("GOT "))
        .collect();
    assert_eq!(got, [seq1, seq2, seq2b, seq3].map(|s| s.to_string()));
    println!(
        "sigstop: slot freed {freed_after:?} after the stop; caught up {caught_up:?} after SIGCONT; {} app messages",
        up_to + 1
    );
}
