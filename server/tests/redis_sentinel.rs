//! Redis Sentinel: a gateway configured with the sentinels follows the master through a
//! failover (forced with `SENTINEL FAILOVER`, or the master SIGKILLed) without a restart.
//! Every send answered 200 is in the new master's inbox and reaches the connected
//! client (live or by the catch-up after the move), sends work again within a bounded
//! time, and `/health` comes back to 200 naming the new master.

mod support;

use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::sentinel::SentinelSet;
use support::*;
use tether_protocol::api::OutgoingMessage;
use tether_server::broker::redis::sentinel::SentinelTarget;
use tether_server::config::{Cli, Config};
use tether_server::publisher::Publisher;

/// How long the gateway may take to use the new master once the sentinels name it.
const RECOVERY: Duration = Duration::from_secs(15);

async fn health(gw: &TestGateway) -> (u16, Value) {
    gw.api_with_key(reqwest::Method::GET, "/health", None, None)
        .await
}

async fn sentinel_gateway(set: &SentinelSet) -> TestGateway {
    let config = set.config();
    TestGateway::with(move |c| c.broker = tether_server::config::BrokerConfig::Sentinel(config))
        .await
}

/// One send to `u1` and the answer: (status, message id when 200).
async fn send(http: &reqwest::Client, gw: std::net::SocketAddr, n: u64) -> (u16, Option<String>) {
    let response = http
        .post(format!("http://{gw}/v1/send/user"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"userId": "u1", "app": APP, "message": {"type": "n", "data": n}}))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let Ok(response) = response else {
        return (0, None);
    };
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let id = body["id"].as_str().map(str::to_owned);
    (status, id.filter(|_| status == 200))
}

/// Every answer of the background sender: n -> (status, id).
type Answers = Arc<Mutex<BTreeMap<u64, (u16, Option<String>)>>>;

/// Sends to `u1` every 20 ms until `stop`, recording every answer.
fn start_sender(
    gw: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> (Answers, tokio::task::JoinHandle<()>) {
    let answers: Answers = Arc::default();
    let recorded = answers.clone();
    let task = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut n = 1000;
        while !stop.load(Ordering::Acquire) {
            let answer = send(&http, gw, n).await;
            recorded.lock().insert(n, answer);
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (answers, task)
}

/// The inbox of (shop, u1) on the server at `port`, as message ids.
fn inbox_ids(server: &support::redis::RedisServer) -> HashSet<String> {
    let out = server
        .cli(&["LRANGE", "tether:{u:shop:u1}:inbox", "0", "-1"])
        .unwrap_or_default();
    out.lines()
        .filter_map(|member| {
            let frame = member.split_once(':')?.1;
            let value: Value = serde_json::from_str(frame).ok()?;
            value["id"].as_str().map(str::to_owned)
        })
        .collect()
}

enum Trigger {
    /// `SENTINEL FAILOVER mymaster`: the old master lives on as a replica.
    Forced,
    /// SIGKILL of the master: the sentinels notice it down and promote the replica.
    Kill,
}

async fn survive_a_failover(trigger: Trigger) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "tether_server::broker=info".into()),
        )
        .with_test_writer()
        .try_init();
    let mut set = SentinelSet::start(2);
    let gw = sentinel_gateway(&set).await;
    let (status, body) = health(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections"]["sentinel"], "ready", "{body}");
    assert_eq!(
        body["connections"]["master"],
        format!("127.0.0.1:{}", set.master.port),
        "{body}"
    );

    let mut client = gw.connect("u1", "phone").await;
    for n in 0..3 {
        let sent = gw.send_to_user("u1", "n", json!(n)).await;
        assert_eq!(client.recv().await["id"], sent["id"]);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (answers, sender) = start_sender(gw.addr, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let triggered = Instant::now();
    match trigger {
        Trigger::Forced => set.force_failover(),
        Trigger::Kill => set.master.kill(),
    }
    let promote = tokio::task::block_in_place(|| {
        set.wait_for_promotion(Duration::from_secs(30));
        Instant::now()
    });

    // Bounded recovery: /health 200 on the new master, and a send answered 200.
    let new_master = format!("127.0.0.1:{}", set.replica.port);
    loop {
        let (status, body) = health(&gw).await;
        if status == 200 && body["connections"]["master"] == new_master.as_str() {
            break;
        }
        assert!(
            promote.elapsed() < RECOVERY,
            "health not back on the new master {RECOVERY:?} after the promotion: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_ok_after = loop {
        let ok_after: Option<u64> = answers
            .lock()
            .iter()
            .rev()
            .find(|(_, (status, _))| *status == 200)
            .map(|(n, _)| *n);
        let recent_ok = answers
            .lock()
            .iter()
            .rev()
            .take(3)
            .all(|(_, (status, _))| *status == 200);
        if recent_ok && ok_after.is_some() {
            break promote.elapsed();
        }
        assert!(
            promote.elapsed() < RECOVERY,
            "sends did not work again within {RECOVERY:?} of the promotion"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Keep sending a little on the new master, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    sender.await.expect("the sender task ends");

    let answers = answers.lock().clone();
    let ok: Vec<String> = answers
        .values()
        .filter_map(|(status, id)| id.clone().filter(|_| *status == 200))
        .collect();
    let failed = answers
        .values()
        .filter(|(status, _)| *status != 200)
        .count();
    for (n, (status, _)) in &answers {
        assert!(
            *status == 200 || *status == 503,
            "send {n} answered {status}: only 200 or 503 (unavailable) are allowed"
        );
    }
    eprintln!(
        "failover: promotion {:?} after the trigger, sends ok again {:?} after it; {} sends answered 200, {} answered 503",
        promote - triggered,
        first_ok_after,
        ok.len(),
        failed
    );
    assert!(ok.len() > 10, "too few sends succeeded: {answers:?}");

    // Durable: every send answered 200 is in the new master's inbox.
    let stored = inbox_ids(&set.replica);
    let lost: Vec<&String> = ok.iter().filter(|id| !stored.contains(*id)).collect();
    if !lost.is_empty() {
        eprintln!(
            "new master inbox: {:?}",
            set.replica
                .cli(&["LRANGE", "tether:{u:shop:u1}:inbox", "0", "-1"])
                .unwrap_or_default()
        );
        eprintln!(
            "seq on the new master: {:?}",
            set.replica.cli(&["GET", "tether:{u:shop:u1}:seq"])
        );
    }
    assert!(
        lost.is_empty(),
        "{} of {} sends answered 200 are not in the new master's inbox: {lost:?}",
        lost.len(),
        ok.len()
    );

    // The connection that stayed open got every one of them (live, or by the catch-up
    // from its inbox after the move), in seq order, none twice.
    let mut missing: HashSet<String> = ok.iter().cloned().collect();
    let mut last_seq = 3;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the connected client never got {} messages answered 200: {missing:?}",
            missing.len()
        );
        let frame = client.recv().await;
        assert_eq!(frame["type"], "n", "{frame}");
        let seq = frame["seq"].as_u64().expect("a user message has a seq");
        assert!(
            seq > last_seq,
            "seq {seq} after {last_seq}: out of order or twice"
        );
        last_seq = seq;
        if let Some(id) = frame["id"].as_str() {
            missing.remove(id);
        }
    }

    // Everything works on the new master: a new connection replays the whole inbox,
    // live delivery goes on.
    let mut tablet = gw.connect("u1", "tablet").await;
    let mut replayed = HashSet::new();
    while replayed.len() < stored.len() {
        let frame = tablet.recv().await;
        replayed.insert(
            frame["id"]
                .as_str()
                .expect("a message has an id")
                .to_owned(),
        );
    }
    assert!(ok.iter().all(|id| replayed.contains(id)));
    let after = gw.send_to_user("u1", "n", json!("after")).await;
    // Before it, the client that stayed connected may still get sends answered 503 that
    // were stored all the same (their replica wait timed out; they are in the inbox and
    // fill the gap in front of "after"), in seq order; nothing else.
    loop {
        let frame = client.recv().await;
        let seq = frame["seq"].as_u64().expect("a user message has a seq");
        assert!(
            seq > last_seq,
            "seq {seq} after {last_seq}: out of order or twice"
        );
        last_seq = seq;
        if frame["id"] == after["id"] {
            break;
        }
        let refused = frame["data"]
            .as_u64()
            .and_then(|n| answers.get(&n))
            .is_some_and(|(status, _)| *status != 200);
        assert!(
            refused,
            "only a send answered 503 may come before it: {frame}"
        );
        eprintln!("a send answered 503 was stored and reached the client: {frame}");
    }
    assert_eq!(tablet.recv().await["id"], after["id"]);
    let (status, body) = health(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections"]["master"], new_master.as_str(), "{body}");
}

/// A backend's `Publisher` given the sentinels finds the master, and after a failover
/// sends again through the new one: the message is stored there and reaches the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_publisher_follows_the_master_through_a_failover() {
    let set = SentinelSet::start(1);
    let gw = sentinel_gateway(&set).await;
    let mut client = gw.connect("u1", "phone").await;
    let target = SentinelTarget::from(&set.config());
    let publisher = Publisher::connect_sentinel(target).await.unwrap();
    let message = |n: &str| OutgoingMessage::new("n", &json!(n));
    let before = publisher
        .send_to_user(APP, "u1", message("before"))
        .await
        .unwrap();
    assert_eq!(before.seq, 1);
    assert_eq!(client.recv().await["id"], before.id.as_str());

    set.force_failover();
    tokio::task::block_in_place(|| set.wait_for_promotion(Duration::from_secs(30)));
    let deadline = Instant::now() + RECOVERY;
    let after = loop {
        match publisher.send_to_user(APP, "u1", message("after")).await {
            Ok(sent) => break sent,
            Err(e) => {
                // The demoted master refuses writes (READONLY) until the publisher moves.
                assert!(Instant::now() < deadline, "sends not back: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // Seq 2, or more when a try that failed was stored and confirmed all the same (its
    // answer lost in the move): the new master holds every message up to it.
    assert!(
        after.seq >= 2,
        "the inbox moved with the promotion: {after:?}"
    );
    let stored = set
        .replica
        .cli(&["LLEN", "tether:{u:shop:u1}:inbox"])
        .map(|out| out.trim().to_owned());
    assert_eq!(
        stored,
        Some(after.seq.to_string()),
        "all are on the new master"
    );
    // A try that failed during the move may still have reached the client live (its
    // answer lost, as with any retried send); anything else is a bug.
    loop {
        let got = client.recv().await;
        if got["id"] == after.id.as_str() {
            break;
        }
        assert_eq!(
            got["data"], "after",
            "only an earlier try of the send: {got}"
        );
    }
}

/// The length of (shop, u1)'s inbox on the replica (the master after a failover).
fn replica_inbox_len(set: &SentinelSet) -> Option<String> {
    set.replica
        .cli(&["LLEN", "tether:{u:shop:u1}:inbox"])
        .map(|out| out.trim().to_owned())
}

/// A Publisher whose routine checks are 60 s apart and which waits for no replica, after
/// a first send (seq 1) that has reached the replica: from here on, nothing but a
/// sentinel's announcement can move it before a failover's first send.
async fn publisher_that_rarely_checks(set: &SentinelSet) -> Publisher {
    let mut target = SentinelTarget::from(&set.config());
    target.check_interval = Duration::from_secs(60);
    target.sync_replicas = 0;
    let publisher = Publisher::connect_sentinel(target)
        .await
        .expect("the publisher finds the master");
    let first = publisher
        .send_to_user(APP, "u1", OutgoingMessage::new("n", &json!(1)))
        .await
        .expect("the first send");
    assert_eq!(first.seq, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica_inbox_len(set).as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "the replica never got seq 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher
}

/// After a failover, the first send goes to the new master and is its seq 2.
async fn first_send_reaches_the_new_master(set: &SentinelSet, publisher: &Publisher) {
    let after = publisher
        .send_to_user(APP, "u1", OutgoingMessage::new("n", &json!(2)))
        .await
        .expect("the first send after the promotion goes to the new master");
    assert_eq!(after.seq, 2);
    assert_eq!(replica_inbox_len(set).as_deref(), Some("2"));
}

/// A sentinel's `+switch-master` announcement moves a follower at once rather than at its
/// next routine check: with checks 60 s apart and no traffic that could fail and trigger
/// one meanwhile, the first send after the promotion already goes to the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_master_announcement_moves_the_publisher_before_its_next_check() {
    let set = SentinelSet::start(1);
    let publisher = publisher_that_rarely_checks(&set).await;
    set.force_failover();
    tokio::task::block_in_place(|| set.wait_for_promotion(Duration::from_secs(30)));
    // Room for the announcement to arrive and the move to finish; a routine check would
    // come only 60 s after the start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first_send_reaches_the_new_master(&set, &publisher).await;
}

/// The sentinel a follower listens to freezes with its sockets open (its host died
/// without closing them): the follower notices (its PING goes unanswered), listens to the
/// next sentinel instead, and moves at that one's announcement, still long before its
/// next routine check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_sentinel_is_left_for_one_that_announces() {
    let set = SentinelSet::start(2);
    let publisher = publisher_that_rarely_checks(&set).await;
    let (frozen, awake) = (&set.sentinels[0], &set.sentinels[1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while frozen.subscribers() != 1 {
        assert!(
            Instant::now() < deadline,
            "not listening to the first sentinel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    frozen.pause();
    let deadline = Instant::now() + Duration::from_secs(20);
    while awake.subscribers() == 0 {
        assert!(
            Instant::now() < deadline,
            "still listening to the frozen sentinel"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    set.force_failover_via(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while awake.master_port() != Some(set.replica.port) {
        assert!(Instant::now() < deadline, "no promotion");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Room for the announcement and the move (the check first waits out the frozen
    // sentinel's 1 s timeout); a routine check would come only 60 s after the start.
    tokio::time::sleep(Duration::from_secs(4)).await;
    first_send_reaches_the_new_master(&set, &publisher).await;
    frozen.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_failover_loses_no_acknowledged_send() {
    survive_a_failover(Trigger::Forced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_without_losing_an_acknowledged_send() {
    survive_a_failover(Trigger::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_and_database_reach_the_new_master() {
    const PASSWORD: &str = "data-pass-0123";
    let set = SentinelSet::start_with_password(1, Some(PASSWORD));
    let mut config = set.config();
    config.password = Some(tether_server::config::Secret(PASSWORD.to_owned()));
    config.db = 2;
    let gw = TestGateway::with(move |c| {
        c.broker = tether_server::config::BrokerConfig::Sentinel(config)
    })
    .await;
    let mut client = gw.connect("u1", "phone").await;
    let before = gw.send_to_user("u1", "n", json!("before")).await;
    assert_eq!(client.recv().await["id"], before["id"]);
    let in_db = |server: &support::redis::RedisServer| {
        server
            .cli(&[
                "-a",
                PASSWORD,
                "--no-auth-warning",
                "-n",
                "2",
                "EXISTS",
                "tether:{u:shop:u1}:seq",
            ])
            .map(|out| out.trim().to_owned())
    };
    assert_eq!(
        in_db(&set.master).as_deref(),
        Some("1"),
        "the inbox is in db 2"
    );

    set.force_failover();
    tokio::task::block_in_place(|| set.wait_for_promotion(Duration::from_secs(30)));
    let new_master = format!("127.0.0.1:{}", set.replica.port);
    let deadline = Instant::now() + RECOVERY;
    loop {
        let (status, body) = health(&gw).await;
        if status == 200 && body["connections"]["master"] == new_master.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not back on the new master: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = loop {
        let (status, body) = gw
            .api(
                reqwest::Method::POST,
                "/v1/send/user",
                Some(
                    json!({"userId": "u1", "app": APP, "message": {"type": "n", "data": "after"}}),
                ),
            )
            .await;
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "sends not back: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(client.recv().await["id"], after["id"]);
    assert_eq!(after["seq"], 2);
    assert_eq!(in_db(&set.replica).as_deref(), Some("1"));
}

#[tokio::test]
async fn start_up_fails_clearly_when_no_sentinel_answers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = Config::for_tests(SECRET);
    config.broker =
        tether_server::config::BrokerConfig::Sentinel(tether_server::config::SentinelConfig {
            sentinels: vec![("127.0.0.1".to_owned(), port)],
            master_name: "mymaster".to_owned(),
            sentinel_password: None,
            password: Some(tether_server::config::Secret("data-secret".to_owned())),
            db: 0,
            sync_replicas: 1,
            check_interval: Duration::from_secs(1),
        });
    let err = match tether_server::Gateway::start(config).await {
        Ok(_) => panic!("a gateway started without any sentinel"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("mymaster"), "{err}");
    assert!(!err.contains("data-secret"), "{err}");
}

fn parse(args: &[&str]) -> Result<Config, String> {
    use clap::Parser;
    let mut argv = vec!["tether-server", "--jwt-secret", SECRET];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    Config::from_cli(&cli, None).map_err(|e| e.to_string())
}

#[test]
fn sentinel_settings_errors_name_the_variable() {
    let ok = parse(&[
        "--redis-sentinels",
        "10.0.0.1:26379,10.0.0.2:26379",
        "--redis-sentinel-master",
        "mymaster",
        "--redis-password",
        "pw",
        "--redis-db",
        "1",
    ])
    .unwrap();
    let sentinel = ok.broker.sentinel().cloned().unwrap();
    assert_eq!(sentinel.sentinels.len(), 2);
    assert_eq!((sentinel.db, sentinel.sync_replicas), (1, 1));
    assert_eq!(sentinel.check_interval, Duration::from_secs(1));
    assert!(ok.broker.redis().is_none());

    for (args, expected) in [
        (
            vec![
                "--redis-sentinels",
                "s:26379",
                "--redis-sentinel-master",
                "m",
                "--redis-url",
                "redis://r:6379",
            ],
            "REDIS_SENTINELS: cannot be used together with REDIS_URL",
        ),
        (
            vec![
                "--redis-sentinels",
                "s:26379",
                "--redis-sentinel-master",
                "m",
                "--redis-host",
                "r",
            ],
            "REDIS_SENTINELS: cannot be used together with REDIS_HOST",
        ),
        (
            vec![
                "--redis-sentinels",
                "s:26379",
                "--redis-sentinel-master",
                "m",
                "--redis-cluster",
                "true",
            ],
            "REDIS_SENTINELS: cannot be used together with REDIS_CLUSTER",
        ),
        (
            vec!["--redis-sentinels", "s:26379"],
            "REDIS_SENTINEL_MASTER: is required",
        ),
        (
            vec![
                "--redis-sentinels",
                "s:26379",
                "--redis-sentinel-master",
                " ",
            ],
            "REDIS_SENTINEL_MASTER:",
        ),
        (
            vec![
                "--redis-sentinels",
                "s:port",
                "--redis-sentinel-master",
                "m",
            ],
            "REDIS_SENTINELS: \"s:port\" is not host:port",
        ),
        (
            vec!["--redis-sentinels", "", "--redis-sentinel-master", "m"],
            "REDIS_SENTINELS: lists no sentinel",
        ),
        (
            vec![
                "--redis-sentinels",
                "s:26379",
                "--redis-sentinel-master",
                "m",
                "--redis-sentinel-password",
                "",
            ],
            "REDIS_SENTINEL_PASSWORD: is empty",
        ),
        (
            vec!["--redis-sentinel-password", "x"],
            "REDIS_SENTINEL_PASSWORD: is set but REDIS_SENTINELS is not",
        ),
        (
            vec![
                "--redis-sentinels",
                "s:26379",
                "--redis-sentinel-master",
                "m",
                "--redis-sentinel-check-interval",
                "50",
            ],
            "REDIS_SENTINEL_CHECK_INTERVAL: 50 ms is outside 100-60000",
        ),
    ] {
        let err = parse(&args).unwrap_err();
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    let err = parse(&[
        "--redis-sentinels",
        "s:26379",
        "--redis-sentinel-master",
        "m",
        "--redis-sentinel-sync-replicas",
        "lots",
    ])
    .unwrap_err();
    assert!(err.contains("REDIS_SENTINEL_SYNC_REPLICAS"), "{err}");
}
