//! The soak run: mixed traffic through two gateway nodes (separate processes) behind a
//! round-robin TCP balancer, on Redis with AOF, with random faults, ending in a ledger
//! check: every durable message published (API answered 200) reached its user's app
//! exactly once, and every app message whose `send_message` returned Ok reached the
//! backend stream exactly once.
//!
//! Traffic: 16 SDK clients (one user each) send an app message every 250 ms and sit in 4
//! rooms; the backend sends to a random user every 20 ms and to a random room every 200
//! ms, through a random live node's `/v1`. Faults, one at a time, every 4-8 s: SIGKILL a
//! node (restarted 1-3 s later on the same port), SIGKILL Redis (restarted from its AOF
//! 1 s later), SIGSTOP Redis for 3 s, kill the nodes' pub/sub connections, cut every
//! client socket at the balancer.
//!
//! `TETHER_SOAK_SECS` is the length: the documented full run is 1800 (30 min,
//! `scripts/reliability soak 1800`); CI runs 75. Ignored in a plain `cargo test`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use sdk_support::Tokens;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether::{ClientConfig, ConnectionStatus, TetherClient};
use tether_server::auth::{mint_token, Claims};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[path = "../server/tests/support/redis.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod redis;

const NODE_ENV: &str = "TETHER_SOAK_NODE";
const SECRET: &str = "soak-jwt-secret-0123456789abcdef-0123456789";
const ADMIN: &str = "soak-admin-key-0123456789";
const APP: &str = "soak";
const CLIENTS: usize = 16;
const ROOMS: usize = 4;

/// A gateway node in its own process: `TETHER_SOAK_NODE="<bind>\n<redis url>"`. A no-op
/// in a normal test run.
#[test]
fn soak_node() {
    let Ok(spec) = std::env::var(NODE_ENV) else {
        return;
    };
    let (bind, redis) = spec.split_once('\n').unwrap();
    let mut config = tether_server::Config::for_tests(SECRET);
    config.bind = bind.parse().unwrap();
    config.admin_api_key = Some(tether_server::config::Secret(ADMIN.into()));
    config.broker =
        tether_server::config::BrokerConfig::Redis(tether_server::config::RedisConfig {
            urls: vec![redis.to_owned()],
            cluster: false,
        });
    config.max_queue_per_user = 100_000;
    config.inbound_max_per_app = 10_000_000;
    config.registry_ttl = Duration::from_secs(10);
    config.heartbeat_interval_ms = 5_000;
    config.connection_timeout_ms = 15_000;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let _gateway = tether_server::Gateway::start(config).await.unwrap();
        println!("SOAKNODE READY");
        std::future::pending::<()>().await;
    });
}

struct Node {
    addr: SocketAddr,
    redis: String,
    child: Option<tokio::process::Child>,
}

impl Node {
    async fn start(addr: SocketAddr, redis: &str) -> Node {
        let mut node = Node {
            addr,
            redis: redis.to_owned(),
            child: None,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["soak_node", "--exact", "--nocapture", "--test-threads=1"])
            .env(NODE_ENV, format!("{}\n{}", self.addr, self.redis))
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(self.addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "node {} did not start",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            let _ = child.wait().await;
        }
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A round-robin TCP balancer over the nodes; skips a node that refuses; `cut` drops
/// every open connection.
struct Balancer {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Balancer {
    async fn start(upstreams: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let shared = tasks.clone();
        tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut client, _)) = listener.accept().await {
                next += 1;
                let start = next;
                let upstreams = upstreams.clone();
                let task = tokio::spawn(async move {
                    for i in 0..upstreams.len() {
                        let target = upstreams[(start + i) % upstreams.len()];
                        if let Ok(Ok(mut server)) =
                            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(target))
                                .await
                        {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                    let _ = client.shutdown().await;
                });
                let mut tasks = shared.lock().unwrap();
                tasks.retain(|t| !t.is_finished());
                tasks.push(task);
            }
        });
        Balancer { addr, tasks }
    }

    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// What each client's app saw.
#[derive(Default)]
struct Seen {
    /// Inbox seqs handed to the app, in order (duplicates would show here).
    seqs: Vec<u64>,
    room_messages: u64,
    acked: BTreeSet<String>,
}

struct AppListener {
    seen: Mutex<Seen>,
}

impl tether::EventListener for AppListener {
    fn on_status(&self, _status: ConnectionStatus) {}
    fn on_message(&self, message: tether::InboundMessage) {
        let mut seen = self.seen.lock().unwrap();
        match message.seq {
            Some(seq) => seen.seqs.push(seq),
            None => seen.room_messages += 1,
        }
    }
    fn on_ack(&self, id: String) {
        self.seen.lock().unwrap().acked.insert(id);
    }
    fn on_error(&self, _error: Arc<tether::TetherError>) {}
    fn on_expired(&self, id: String) {
        panic!("message {id} expired during the soak");
    }
    fn on_replaced(&self, id: String, _by: String) {
        panic!("message {id} replaced during the soak, which sets no replace keys");
    }
    fn on_stream_reset(&self, room: Option<String>) {
        panic!("stream {room:?} reset during the soak, which keeps no history");
    }
}

#[derive(Default)]
struct Counters {
    node_kills: AtomicU64,
    redis_kills: AtomicU64,
    redis_stops: AtomicU64,
    subscriber_kills: AtomicU64,
    cuts: AtomicU64,
    published: AtomicU64,
    refused: AtomicU64,
    indeterminate: AtomicU64,
    room_sends: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by scripts/reliability soak [seconds] (full run 1800 s; CI 75 s)"]
async fn soak_ledger_every_durable_message_exactly_once() {
    let secs: u64 = std::env::var("TETHER_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(75);
    let seed: u64 = std::env::var("TETHER_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("soak: {secs} s, seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut redis_server = redis::RedisServer::start_with_aof();
    let redis_url = redis_server.url();
    let addrs = [free_addr(), free_addr()];
    let nodes = Arc::new(tokio::sync::Mutex::new(vec![
        Node::start(addrs[0], &redis_url).await,
        Node::start(addrs[1], &redis_url).await,
    ]));
    let balancer = Balancer::start(addrs.to_vec()).await;

    // Clients.
    let dirs: Vec<tempfile::TempDir> = (0..CLIENTS).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut clients = Vec::new();
    let mut listeners = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let listener = Arc::new(AppListener {
            seen: Mutex::default(),
        });
        let mut config = ClientConfig::new(
            format!("ws://{}/ws", balancer.addr),
            APP,
            format!("soak-device-{i}"),
            dir.path().to_str().unwrap(),
        );
        config.backoff_base_ms = 200;
        config.backoff_cap_ms = 3_000;
        config.connect_timeout_ms = 5_000;
        let token = mint_token(
            SECRET.as_bytes(),
            &Claims::new(format!("soak-user-{i}"), &[APP], secs + 3600),
        );
        let client = TetherClient::new(config, listener.clone(), Tokens::fixed(&token)).unwrap();
        client.connect();
        client.join_room(format!("room-{}", i % ROOMS)).unwrap();
        clients.push(client);
        listeners.push(listener);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let published: Arc<Mutex<BTreeMap<usize, BTreeSet<u64>>>> = Arc::default();
    let sent_ok: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();

    // App messages from every client.
    for (i, client) in clients.iter().enumerate() {
        let (client, stop, sent_ok) = (client.clone(), stop.clone(), sent_ok.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let data = format!(r#"{{"client":{i},"n":{n}}}"#);
                match client.send_message("soak.app".into(), data).await {
                    Ok(id) => {
                        sent_ok.lock().unwrap().push(id);
                        n += 1;
                    }
                    Err(e) => panic!("send_message failed: {}", e.message()),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }

    // The backend: user messages every 20 ms, room messages every 200 ms, to a random
    // node (the HTTP API directly).
    {
        let (stop, counters, published) = (stop.clone(), counters.clone(), published.clone());
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5eed);
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let node = addrs[rng.random_range(0..addrs.len())];
                let room = n % 10 == 0;
                let (path, body, user) = if room {
                    let r = rng.random_range(0..ROOMS);
                    (
                        "/v1/send/room",
                        json!({"room": format!("room-{r}"), "app": APP, "message": {"type": "soak.room", "data": n}}),
                        None,
                    )
                } else {
                    let u = rng.random_range(0..CLIENTS);
                    (
                        "/v1/send/user",
                        json!({"userId": format!("soak-user-{u}"), "app": APP, "message": {"type": "soak.user", "data": n}}),
                        Some(u),
                    )
                };
                let answer = http
                    .post(format!("http://{node}{path}"))
                    .bearer_auth(ADMIN)
                    .json(&body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 200 => {
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        match (user, body["seq"].as_u64()) {
                            (Some(u), Some(seq)) => {
                                published.lock().unwrap().entry(u).or_default().insert(seq);
                                counters.published.fetch_add(1, Ordering::SeqCst);
                            }
                            (Some(_), None) => panic!("200 without a seq: {body}"),
                            (None, _) => {
                                counters.room_sends.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    // 503 (Redis down) or the node is dead: not promised. A 503 after a
                    // Redis timeout may still have been stored: indeterminate.
                    Ok(r) if r.status() == 503 => {
                        counters.refused.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => panic!("unexpected answer {}", r.status()),
                    Err(_) => {
                        counters.indeterminate.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // Chaos, one fault at a time.
    let started = Instant::now();
    let mut last_progress = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        let pause = Duration::from_millis(rng.random_range(4_000..8_000));
        tokio::time::sleep(pause.min(Duration::from_secs(secs).saturating_sub(started.elapsed())))
            .await;
        if started.elapsed() >= Duration::from_secs(secs) {
            break;
        }
        let fault = *[0, 0, 1, 2, 3, 4].choose(&mut rng).unwrap();
        match fault {
            0 => {
                let which = rng.random_range(0..2);
                let down = Duration::from_millis(rng.random_range(1_000..3_000));
                nodes.lock().await[which].sigkill().await;
                tokio::time::sleep(down).await;
                nodes.lock().await[which].spawn().await;
                counters.node_kills.fetch_add(1, Ordering::SeqCst);
            }
            1 => {
                redis_server.kill();
                tokio::time::sleep(Duration::from_secs(1)).await;
                redis_server.restart();
                counters.redis_kills.fetch_add(1, Ordering::SeqCst);
            }
            2 => {
                redis_server.pause();
                tokio::time::sleep(Duration::from_secs(3)).await;
                redis_server.resume();
                counters.redis_stops.fetch_add(1, Ordering::SeqCst);
            }
            3 => {
                redis_server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
                counters.subscriber_kills.fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                balancer.cut();
                counters.cuts.fetch_add(1, Ordering::SeqCst);
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(60) {
            last_progress = Instant::now();
            println!(
                "soak: {:?} in, {} published, {} app messages Ok'd",
                started.elapsed(),
                counters.published.load(Ordering::SeqCst),
                sent_ok.lock().unwrap().len()
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(nodes.lock().await.iter().all(Node::alive));

    // Drain: every queue empty, every user at its newest published seq.
    let published = published.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let queued: u32 = clients.iter().map(|c| c.stats().queued).sum();
        let behind: Vec<usize> = (0..CLIENTS)
            .filter(|u| {
                let newest = published.get(u).and_then(|s| s.iter().max()).copied();
                let got = listeners[*u]
                    .seen
                    .lock()
                    .unwrap()
                    .seqs
                    .iter()
                    .max()
                    .copied();
                got < newest
            })
            .collect();
        if queued == 0 && behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained after 180 s: {queued} queued, users behind: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The ledger.
    let mut delivered_total = 0usize;
    let mut lost = Vec::new();
    let mut duplicated = Vec::new();
    let mut unexpected = 0usize;
    for (u, listener) in listeners.iter().enumerate() {
        let seen = listener.seen.lock().unwrap();
        let mut count: HashMap<u64, usize> = HashMap::new();
        for seq in &seen.seqs {
            *count.entry(*seq).or_default() += 1;
        }
        delivered_total += seen.seqs.len();
        duplicated.extend(count.iter().filter(|(_, n)| **n > 1).map(|(s, _)| (u, *s)));
        assert!(
            seen.seqs.windows(2).all(|w| w[0] < w[1]),
            "user {u}: seqs out of order"
        );
        let mine = published.get(&u).cloned().unwrap_or_default();
        lost.extend(
            mine.iter()
                .filter(|s| !count.contains_key(s))
                .map(|s| (u, *s)),
        );
        unexpected += count.keys().filter(|s| !mine.contains(s)).count();
    }
    let stream = redis_server
        .cli(&["XRANGE", "tether:inbound:soak", "-", "+"])
        .unwrap_or_default();
    let mut stored: HashMap<&str, usize> = HashMap::new();
    let mut lines = stream.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "id" {
            if let Some(id) = lines.next() {
                *stored.entry(id).or_default() += 1;
            }
        }
    }
    let sent_ok = sent_ok.lock().unwrap().clone();
    let app_lost: Vec<&String> = sent_ok
        .iter()
        .filter(|id| !stored.contains_key(id.as_str()))
        .collect();
    let app_twice = stored.values().filter(|n| **n > 1).count();
    let reconnects: u64 = clients.iter().map(|c| c.stats().reconnects).sum();
    let dups_dropped: u64 = clients.iter().map(|c| c.stats().duplicates_dropped).sum();
    let room_received: u64 = listeners
        .iter()
        .map(|l| l.seen.lock().unwrap().room_messages)
        .sum();
    let c = &counters;
    let report = json!({
        "seconds": secs,
        "seed": seed,
        "faults": {
            "node_sigkills": c.node_kills.load(Ordering::SeqCst),
            "redis_sigkills": c.redis_kills.load(Ordering::SeqCst),
            "redis_sigstops_3s": c.redis_stops.load(Ordering::SeqCst),
            "subscriber_kills": c.subscriber_kills.load(Ordering::SeqCst),
            "balancer_cuts": c.cuts.load(Ordering::SeqCst),
        },
        "user_messages": {
            "published_200": c.published.load(Ordering::SeqCst),
            "refused_503": c.refused.load(Ordering::SeqCst),
            "no_answer": c.indeterminate.load(Ordering::SeqCst),
            "delivered_to_apps": delivered_total,
            "lost": lost.len(),
            "delivered_twice_to_an_app": duplicated.len(),
            "delivered_from_unanswered_sends": unexpected,
            "duplicates_dropped_by_sdk": dups_dropped,
        },
        "app_messages": {
            "send_message_ok": sent_ok.len(),
            "stored": stored.len(),
            "lost": app_lost.len(),
            "stored_twice": app_twice,
        },
        "room_messages": {"sent_200": c.room_sends.load(Ordering::SeqCst), "received": room_received},
        "sdk_reconnects": reconnects,
    });
    println!("SOAK REPORT {report}");
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        let _ = std::fs::write(
            std::path::Path::new(&dir).join("soak-report.json"),
            serde_json::to_string_pretty(&report).unwrap(),
        );
    }
    assert!(lost.is_empty(), "published and never delivered: {lost:?}");
    assert!(
        duplicated.is_empty(),
        "delivered twice to an app: {duplicated:?}"
    );
    assert!(app_lost.is_empty(), "Ok'd and never stored: {app_lost:?}");
    assert_eq!(app_twice, 0, "app messages stored twice");
    for client in &clients {
        client.shutdown().await;
    }
}
