//! Fault: the SDK's process SIGKILLed at random points, many times over (reliability
//! anchors T24). `tests/sdk_crash.rs` kills at three chosen points between send and ack;
//! this one kills anywhere: while opening the database, connecting, sending, receiving,
//! writing the inbox cursor, while the backend keeps publishing to the user.
//!
//! `TETHER_CRASH_CYCLES` sets the number of kills: 200 is the documented full run
//! (`scripts/reliability crash`, also in CI); a plain `cargo test` runs 20.
//! `TETHER_CRASH_SEED` replays a run's kill points (the seed is printed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use rand::{Rng, SeedableRng};
use sdk_support::gateway::{Backend, APP};
use sdk_support::Tokens;
use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether::{
    ClientConfig, ConnectionStatus, EventListener, InboundMessage, TetherClient, TetherError,
};
use tokio::io::{AsyncBufReadExt, BufReader};

const CHILD_ENV: &str = "TETHER_REL_CRASH_CHILD";
const PREFIX: &str = "CRASHCHILD ";

fn say(line: &str) {
    println!("{PREFIX}{line}");
}

/// The child's listener reports each inbox message from inside `on_message`: the SDK
/// counts a message as processed when that call returns, so a kill right after it must
/// find the message already reported (printing later, from another task, would lose the
/// report and make a delivered message look lost).
struct Reporter;

impl EventListener for Reporter {
    fn on_status(&self, _status: ConnectionStatus) {}
    fn on_message(&self, message: InboundMessage) {
        say(&format!("GOT {}", message.seq.unwrap_or(0)));
    }
    fn on_ack(&self, _id: String) {}
    fn on_error(&self, _error: Arc<TetherError>) {}
    fn on_expired(&self, _id: String) {}
    fn on_replaced(&self, _id: String, _by: String) {}
    fn on_stream_reset(&self, _room: Option<String>) {}
}

/// The child: sends numbered app messages back to back and reports every inbox message;
/// with `drain` it instead waits until its queue is empty and exits. Ignored in a normal
/// run: the parent starts it by name with `--ignored` and the spec in its environment.
#[test]
#[ignore = "a child process's entry point: the rel_crash_random tests start it (with --ignored)"]
fn crash_random_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        panic!("not a test of its own: its parent test starts it with {CHILD_ENV} set");
    };
    let parts: Vec<&str> = spec.splitn(5, '\n').collect();
    let (url, token, dir, cycle, drain) = (
        parts[0],
        parts[1],
        parts[2],
        parts[3].parse::<u32>().unwrap(),
        parts[4] == "drain",
    );
    let mut config = ClientConfig::new(url, APP, "crash-device", dir);
    config.backoff_base_ms = 50;
    config.backoff_cap_ms = 300;
    let client = TetherClient::new(config, Arc::new(Reporter), Tokens::fixed(token)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        client.connect();
        if drain {
            let mut watch = client.watch();
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
            // Stay to receive what the parent is still waiting for.
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        for n in 0.. {
            let data = format!(r#"{{"cycle":{cycle},"n":{n}}}"#);
            match client.send_message("crash.random".into(), data).await {
                Ok(id) => say(&format!("QUEUED {id}")),
                // The queue is full: wait for acks.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
}

#[derive(Default)]
struct Cycle {
    queued: Vec<String>,
    got: Vec<u64>,
    killed: bool,
    /// The child ended on its own (it runs until killed): it crashed, e.g. its store
    /// would not open.
    exited: bool,
}

async fn run_cycle(spec: String, kill_after: Option<Duration>, wait_for_seq: Option<u64>) -> Cycle {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_random_child",
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
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut cycle = Cycle::default();
    let started = Instant::now();
    let mut drained = false;
    loop {
        let limit = match kill_after {
            Some(after) => after.saturating_sub(started.elapsed()),
            None => Duration::from_secs(30).saturating_sub(started.elapsed()),
        };
        match tokio::time::timeout(limit, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                let Some(at) = line.find(PREFIX) else {
                    continue;
                };
                let line = &line[at + PREFIX.len()..];
                if let Some(id) = line.strip_prefix("QUEUED ") {
                    cycle.queued.push(id.to_owned());
                } else if let Some(seq) = line.strip_prefix("GOT ") {
                    cycle.got.push(seq.parse().unwrap());
                } else if line == "DRAINED" {
                    drained = true;
                }
                if drained && cycle.got.last().copied() >= wait_for_seq {
                    break;
                }
            }
            Ok(Ok(None)) => {
                cycle.exited = true;
                break;
            }
            Ok(Err(_)) => break,
            Err(_) => {
                assert!(
                    kill_after.is_some(),
                    "the draining child did not finish in 30 s: drained {drained}, waiting for seq {wait_for_seq:?}, got {:?}, queued {}",
                    cycle.got,
                    cycle.queued.len()
                );
                break;
            }
        }
    }
    // SIGKILL: no destructor, no flush. Lines already written to the pipe are read first.
    child.start_kill().unwrap();
    cycle.killed = kill_after.is_some();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await
    {
        if let Some(at) = line.find(PREFIX) {
            let line = &line[at + PREFIX.len()..];
            if let Some(id) = line.strip_prefix("QUEUED ") {
                cycle.queued.push(id.to_owned());
            } else if let Some(seq) = line.strip_prefix("GOT ") {
                cycle.got.push(seq.parse().unwrap());
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    cycle
}

/// Setup: a gateway (embedded broker) publishing a user message to the SDK's user every
/// 20 ms; the SDK in a child process on one storage directory, sending app messages back
/// to back.
/// Fault: SIGKILL the child at a uniformly random moment 0-600 ms after it started,
/// `TETHER_CRASH_CYCLES` times (full run: 200), restarting it on the same directory each
/// time; then a last child drains the queue and receives the rest.
/// Expected: every message whose `send_message` returned Ok (reported before the kill)
/// reaches the backend exactly once; no message is stored twice; within one process the
/// inbox seqs arrive strictly increasing; across processes every published seq reaches
/// the app at least once, and a seq reaches it again only right after a kill (the cursor
/// write of the last messages handed over did not happen: at least once across crashes).
/// Must not lose: any Ok'd app message; any published user message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_lose_no_message_and_store_none_twice() {
    let cycles: u32 = std::env::var("TETHER_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("TETHER_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash: {cycles} cycles, seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    // Rate limits off: this test is about crashes (ordering across refusals has its own
    // test, tests/rel_order_refusals.rs). The inbound list holds every message the run
    // sends: 200 cycles can send more than the default cap of 100,000 per app, and the
    // oldest would be trimmed (as designed) and then look lost.
    let backend = Arc::new(
        Backend::start(|c| {
            c.rate_limit_per_connection = 0;
            c.rate_limit_per_user = 0;
            c.inbound_max_per_app = 10_000_000;
        })
        .await,
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = |cycle: u32, drain: bool| {
        format!(
            "{}\n{}\n{}\n{cycle}\n{}",
            backend.ws_url(),
            Backend::token("crash-user", 3600),
            dir.path().to_str().unwrap(),
            if drain { "drain" } else { "send" }
        )
    };
    let published = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (backend, published, stop) = (backend.clone(), published.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let seq = backend
                    .send_to_user("crash-user", "n", serde_json::json!(n))
                    .await;
                published.lock().unwrap().insert(seq);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let mut runs = Vec::new();
    for cycle in 0..cycles {
        let after = Duration::from_millis(rng.random_range(0..=600));
        runs.push(run_cycle(spec(cycle, false), Some(after), None).await);
    }
    stop.store(true, Ordering::SeqCst);
    publisher.await.unwrap();
    let last = *published.lock().unwrap().iter().max().unwrap();
    let seen_max = runs.iter().flat_map(|r| r.got.iter()).max().copied();
    // The drain waits for the newest seq unless an earlier process already had it.
    let wait_for = (seen_max < Some(last)).then_some(last);
    runs.push(run_cycle(spec(cycles, true), None, wait_for).await);
    let elapsed = started.elapsed();

    // A child that died by itself sent nothing more: its queue would show up below as
    // "lost" messages, hiding the cause (a store that no longer opens, say).
    let exited: Vec<usize> = (0..runs.len()).filter(|i| runs[*i].exited).collect();
    assert!(
        exited.is_empty(),
        "SDK processes ended before they were killed (crashed, e.g. the store did not open; run the child alone for its panic): cycles {exited:?}"
    );

    // Outbound: every Ok'd message stored exactly once.
    let stored = backend.inbound().await;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for m in &stored {
        *count.entry(m.id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let queued: Vec<&String> = runs.iter().flat_map(|r| r.queued.iter()).collect();
    for id in &queued {
        assert_eq!(
            count.get(id.as_str()),
            Some(&1),
            "Ok'd message {id} was lost"
        );
    }
    // Per cycle, what reached the backend is in queue order.
    for cycle in 0..cycles {
        let ns: Vec<u64> = stored
            .iter()
            .filter(|m| m.data["cycle"] == cycle)
            .map(|m| m.data["n"].as_u64().unwrap())
            .collect();
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "cycle {cycle}: {ns:?}");
    }

    // Inbound: at least once across crashes, in order within a process, and repeats
    // only at the tail of a killed process.
    let mut seen_in: HashMap<u64, usize> = HashMap::new();
    let mut repeats = 0;
    for (i, run) in runs.iter().enumerate() {
        assert!(
            run.got.windows(2).all(|w| w[0] < w[1]),
            "cycle {i}: {:?}",
            run.got
        );
        for seq in &run.got {
            if let Some(first) = seen_in.get(seq) {
                repeats += 1;
                let earlier = &runs[*first];
                assert!(earlier.killed, "seq {seq} repeated after a clean exit");
                let tail_start = earlier.got.len().saturating_sub(64);
                assert!(
                    earlier.got[tail_start..].contains(seq),
                    "seq {seq} repeated though it was handed over long before the kill"
                );
            } else {
                seen_in.insert(*seq, i);
            }
        }
    }
    let published = published.lock().unwrap().clone();
    for seq in &published {
        assert!(
            seen_in.contains_key(seq),
            "published seq {seq} never reached the app"
        );
    }
    println!(
        "crash: {cycles} SIGKILLs in {elapsed:?}; {} app messages Ok'd (all stored once, {} stored in all); {} user messages published, all delivered, {repeats} re-deliveries after kills",
        queued.len(),
        stored.len(),
        published.len()
    );
}
