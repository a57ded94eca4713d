//! Crash safety of latest wins and cancel: once `send_message_with` has reported a message
//! replaced, or `cancel_message` answered true, a SIGKILL a moment later must not bring that
//! message back (it would be sent after the restart although the app was told it never
//! would be).
//!
//! The child is this test binary run again with `TETHER_SDK_REPLACE_CHILD` set to a storage
//! directory: it then runs `replace_child`, which queues, replaces and cancels through a real
//! `TetherClient` (never connected), reports the ids on stdout and waits to be killed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::{Recorder, Tokens};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;
use tether::queue::{Limits, Outbox, SledStore};
use tether::{ClientConfig, SendOptions, TetherClient};
use tokio::io::{AsyncBufReadExt, BufReader};

const CHILD_ENV: &str = "TETHER_SDK_REPLACE_CHILD";
const PREFIX: &str = "REPLACECHILD ";

/// The child's entry point, ignored in a normal run: the parent starts it with `--ignored`.
#[test]
#[ignore = "a child process's entry point: the sdk_crash_replace tests start it (with --ignored)"]
fn replace_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        panic!("not a test of its own: its parent test starts it with {CHILD_ENV} set");
    };
    let config = ClientConfig::new("ws://127.0.0.1:9/ws", "crash-app", "crash-device", &dir);
    let (recorder, _seen) = Recorder::new();
    let client = TetherClient::new(config, recorder, Tokens::fixed("t")).unwrap();
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    local.block_on(async move {
        let latest = || SendOptions {
            replace_key: Some("where".into()),
            ttl_ms: None,
        };
        let first = client
            .send_message_with("location".into(), "1".into(), latest())
            .await
            .unwrap();
        let note = client
            .send_message("note".into(), "2".into())
            .await
            .unwrap();
        let newest = client
            .send_message_with("location".into(), "3".into(), latest())
            .await
            .unwrap();
        assert!(client.cancel_message(note.clone()).await.unwrap());
        println!("{PREFIX}{first} {note} {newest}");
        std::io::stdout().flush().unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_and_cancelled_messages_stay_gone_after_a_sigkill() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut child = tokio::process::Command::new(exe)
            .args([
                "replace_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ids = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                // libtest may print "test replace_child ... " on the same line first.
                if let Some(at) = line.find(PREFIX) {
                    return line[at + PREFIX.len()..].to_owned();
                }
            }
            panic!("the child ended without reporting");
        })
        .await
        .expect("the child reports within 30 s");
        // SIGKILL at once: no destructor, no flush, no goodbye.
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        let ids: Vec<&str> = ids.split(' ').collect();
        let [_first, _note, newest] = ids.as_slice() else {
            panic!("{ids:?}");
        };

        let outbox = Outbox::open(
            Box::new(SledStore::open(dir.path()).unwrap()),
            Limits {
                max_count: 100,
                max_bytes: 1 << 20,
                max_age: Duration::from_secs(3600),
            },
        )
        .unwrap();
        let mut left = Vec::new();
        let mut cursor = None;
        while let Some(seq) = outbox.next_after(cursor) {
            left.push(outbox.get(seq).unwrap().unwrap().id);
            cursor = Some(seq);
        }
        assert_eq!(left, [newest.to_string()], "round {round}");
    }
}
