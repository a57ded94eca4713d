//! Crash safety (docs/protocol.md §6, "from a client"): a process running the SDK is killed
//! with SIGKILL right after `send_message` returned and before the gateway's ack could
//! arrive, several times, then restarted on the same storage directory. Every message
//! whose `send_message` returned Ok reaches the backend, and none is stored twice.
//!
//! The child is this test binary run again with `TETHER_SDK_CRASH_CHILD` set: it then
//! runs `crash_child`, which drives a real `TetherClient` (the SDK's own runtime and
//! transport) and reports on stdout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::gateway::{Backend, APP};
use sdk_support::proxy::{FaultProxy, Mode};
use sdk_support::{Recorder, Seen, Tokens};
use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;
use tether::{ClientConfig, ConnectionStatus, TetherClient};
use tokio::io::{AsyncBufReadExt, BufReader};

const CHILD_ENV: &str = "TETHER_SDK_CRASH_CHILD";
const PREFIX: &str = "SDKCHILD ";

/// What the parent asks the child to do.
#[derive(serde::Serialize, serde::Deserialize)]
struct Spec {
    url: String,
    token: String,
    dir: String,
    /// Messages to send; 0 means: connect, wait until the queue is empty, exit.
    send: u32,
    round: u32,
}

fn say(line: &str) {
    println!("{PREFIX}{line}");
}

/// The child's entry point, ignored in a normal run: the parent starts it with `--ignored`.
#[test]
#[ignore = "a child process's entry point: the sdk_crash tests start it (with --ignored)"]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        panic!("not a test of its own: its parent test starts it with {CHILD_ENV} set");
    };
    let spec: Spec = serde_json::from_str(&spec).unwrap();
    let (recorder, mut seen) = Recorder::new();
    let mut config = ClientConfig::new(&spec.url, APP, "crash-device", &spec.dir);
    config.backoff_base_ms = 100;
    config.backoff_cap_ms = 500;
    let client = TetherClient::new(config, recorder, Tokens::fixed(&spec.token)).unwrap();
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // What survived on disk, from the snapshot the client publishes before it returns
    // from `new` (read before connecting: a fast link could drain the queue before a
    // later look).
    let mut watch = client.watch();
    if spec.send == 0 {
        say(&format!("RESUMED {}", watch.borrow_and_update().queued));
    }
    local.block_on(async move {
        client.connect();
        tokio::spawn(async move {
            while let Some(event) = seen.recv().await {
                if let Seen::Ack(id) = event {
                    say(&format!("ACKED {id}"));
                }
            }
            // (ACKED lines are informational: they show in a failing run's output.)
        });
        if spec.send == 0 {
            loop {
                {
                    let s = watch.borrow_and_update();
                    if s.queued == 0 && s.status == ConnectionStatus::Connected {
                        break;
                    }
                }
                watch.changed().await.unwrap();
            }
            say("DRAINED");
            client.shutdown().await;
            return;
        }
        for n in 0..spec.send {
            let data = format!(r#"{{"round":{},"n":{n}}}"#, spec.round);
            let id = client
                .send_message("crash.test".into(), data)
                .await
                .unwrap();
            say(&format!("QUEUED {id}"));
        }
        // Wait to be killed.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

struct ChildRun {
    queued: Vec<String>,
    /// Messages on disk when a restarted child opened the directory.
    resumed_with: Option<u32>,
}

async fn run_child(spec: &Spec, kill_after: Option<usize>) -> ChildRun {
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(exe)
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(spec).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut run = ChildRun {
        queued: Vec::new(),
        resumed_with: None,
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest may print "test crash_child ... " on the same line first.
            let Some(at) = line.find(PREFIX) else {
                continue;
            };
            let line = &line[at + PREFIX.len()..];
            if let Some(id) = line.strip_prefix("QUEUED ") {
                run.queued.push(id.to_owned());
                if Some(run.queued.len()) == kill_after {
                    // SIGKILL: no destructor, no flush, no goodbye.
                    child.start_kill().unwrap();
                    return;
                }
            } else if let Some(n) = line.strip_prefix("RESUMED ") {
                run.resumed_with = Some(n.parse().unwrap());
            } else if line == "DRAINED" {
                return;
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "child did not reach its point in time");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("child did not exit")
        .unwrap();
    if kill_after.is_some() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "the child was killed by SIGKILL");
    } else {
        assert!(status.success());
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_send_and_ack_loses_nothing_and_duplicates_nothing() {
    let backend = Backend::start(|_| {}).await;
    let proxy = FaultProxy::start(backend.addr).await;
    // Each chunk waits 200 ms on the way, so the kill lands before the ack comes back.
    proxy.set_mode(Mode::Delay(Duration::from_millis(200)));
    let dir = tempfile::tempdir().unwrap();
    let spec = |send, round| Spec {
        url: proxy.ws_url(),
        token: Backend::token("crash-user", 3600),
        dir: dir.path().to_str().unwrap().to_owned(),
        send,
        round,
    };
    let mut queued = Vec::new();
    for (round, kill_after) in [(0u32, 3usize), (1, 7), (2, 1)] {
        let run = run_child(&spec(20, round), Some(kill_after)).await;
        assert_eq!(run.queued.len(), kill_after);
        queued.extend(run.queued);
    }
    // Restart on the same directory with a healthy link: the queue drains.
    proxy.set_mode(Mode::Pass);
    let last = run_child(&spec(0, 9), None).await;
    // The kills landed between send_message and the ack: messages were still on disk.
    let resumed_with = last.resumed_with.expect("the child reports what it found");
    assert!(resumed_with >= 1, "nothing was left unacked at the kills");

    let stored = backend.inbound().await;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for m in &stored {
        *count.entry(m.id.as_str()).or_default() += 1;
        assert_eq!(m.user, "crash-user");
        assert_eq!(m.device.as_deref(), Some("crash-device"));
    }
    assert!(
        count.values().all(|n| *n == 1),
        "a message was stored twice"
    );
    for id in &queued {
        assert_eq!(count.get(id.as_str()), Some(&1), "message {id} was lost");
    }
    // Per round, what reached the backend is in the order it was queued.
    for round in 0..3u64 {
        let ns: Vec<u64> = stored
            .iter()
            .filter(|m| m.data["round"] == round)
            .map(|m| m.data["n"].as_u64().unwrap())
            .collect();
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "round {round}: {ns:?}");
    }
}
