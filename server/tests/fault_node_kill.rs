//! Fault: a gateway node SIGKILLed mid-traffic (docs/reliability.md). The nodes are
//! real `tether-server` processes sharing one Redis with AOF; the test is their client,
//! their backend and the judge.

#![allow(clippy::unwrap_used)] // test helpers panic on purpose

mod fault_support;
mod support;

use fault_support::{connect, Node, Ws, ADMIN};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::redis::RedisServer;
use support::APP;
use tokio_tungstenite::tungstenite::Message;

/// Tries each node in turn until one accepts (a load balancer's job).
async fn connect_any(addrs: &[String], user: &str, device: &str, since: u64) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for addr in addrs {
            if let Some(ws) = connect(addr, user, device, since).await {
                return ws;
            }
        }
        assert!(Instant::now() < deadline, "no node accepted {user}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send_to_user(http: &reqwest::Client, addr: &str, user: &str, n: u64) -> Option<u64> {
    let answer = http
        .post(format!("http://{addr}/v1/send/user"))
        .bearer_auth(ADMIN)
        .json(&json!({"userId": user, "app": APP, "message": {"type": "n", "data": n}}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json::<Value>().await.ok()?["seq"].as_u64()
}

/// Setup: Redis with AOF, nodes A and B (`tether-server` processes), limit 1 connection
/// per user. A reader (user `reader`, device `phone`) and a writer (user `writer`) are on
/// A; the backend publishes to the reader through B every 5 ms; the writer sends app
/// messages as fast as acks allow, 8 in flight.
/// Fault: SIGKILL node A after 1 s of traffic; restart it 2 s later.
/// Expected: both clients notice the dead socket, reconnect to B at once (the same device
/// replaces its stale registry entry though A's lease is still fresh), the reader replays
/// from its cursor, the writer resends its unacked messages.
/// Must not lose: every user message the API answered 200 for reaches the reader exactly
/// once after seq de-duplication, in seq order; every app message reaches the stream
/// exactly once, acked before the kill or resent after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_traffic_loses_no_acked_message() {
    let redis = RedisServer::start_with_aof();
    let mut a = Node::start(&redis.url(), &[]);
    let b = Node::start(&redis.url(), &[]);
    let addrs = vec![a.addr.clone(), b.addr.clone()];
    let http = reqwest::Client::new();

    // Publisher through B.
    let published = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (published, stop, http, b_addr) = (
            published.clone(),
            stop.clone(),
            http.clone(),
            b.addr.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                if let Some(seq) = send_to_user(&http, &b_addr, "reader", n).await {
                    published.lock().unwrap().insert(seq);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // Reader on A: records every seq, acks as it goes, reconnects on any failure.
    let received = Arc::new(Mutex::new(Vec::<u64>::new()));
    let reader = {
        let (received, addrs) = (received.clone(), addrs.clone());
        let first = a.addr.clone();
        tokio::spawn(async move {
            let mut cursor = 0u64;
            let mut ws = connect(&first, "reader", "phone", 0)
                .await
                .expect("reader on A");
            let mut sessions = 1;
            loop {
                match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                        if let Some(seq) = frame["seq"].as_u64() {
                            received.lock().unwrap().push(seq);
                            if seq > cursor {
                                cursor = seq;
                                let ack = json!({"type": "ack", "data": {"seq": seq}});
                                let _ = ws.send(Message::text(ack.to_string())).await;
                            }
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_))) | Ok(None) => {
                        ws = connect_any(&addrs, "reader", "phone", cursor).await;
                        sessions += 1;
                    }
                    Err(_) => return sessions,
                }
            }
        })
    };

    // Writer on A: ids w0.., 8 unacked at most; resends the unacked after a reconnect.
    let writer = {
        let addrs = addrs.clone();
        let first = a.addr.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut ws = connect(&first, "writer", "w", 0)
                .await
                .expect("writer on A");
            let mut next = 0u64;
            let mut unacked: Vec<String> = Vec::new();
            let mut acked: BTreeSet<String> = BTreeSet::new();
            loop {
                while unacked.len() < 8 && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let id = format!("w{next}");
                    next += 1;
                    unacked.push(id.clone());
                    let frame = json!({"type": "chat", "id": id, "data": next});
                    let _ = ws.send(Message::text(frame.to_string())).await;
                }
                if unacked.is_empty() {
                    return (acked, next);
                }
                match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                        if frame["type"] == "ack" {
                            let id = frame["data"]["id"].as_str().unwrap().to_owned();
                            unacked.retain(|u| *u != id);
                            acked.insert(id);
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                        ws = connect_any(&addrs, "writer", "w", 0).await;
                        for id in &unacked {
                            let frame = json!({"type": "chat", "id": id});
                            let _ = ws.send(Message::text(frame.to_string())).await;
                        }
                    }
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    a.sigkill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _a_again = Node::start(&redis.url(), &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    publisher.await.unwrap();
    let (acked, sent) = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer got every ack")
        .unwrap();

    let published: Vec<u64> = published.lock().unwrap().iter().copied().collect();
    assert!(
        published.len() > 50,
        "too little traffic: {}",
        published.len()
    );
    let last = *published.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().iter().max().copied().unwrap_or(0) < last {
        assert!(Instant::now() < deadline, "the reader never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().unwrap().clone();
    // In order: no seq arrives for the first time after a higher one (a client that
    // drops what is at or below its cursor would lose it). Replays of seen seqs may.
    let mut delivered = BTreeSet::new();
    let mut highest = 0;
    for seq in &got {
        if delivered.insert(*seq) {
            assert!(*seq > highest, "seq {seq} first arrived after {highest}");
            highest = *seq;
        }
    }
    // After de-duplication by seq: each published seq once.
    for seq in &published {
        assert!(delivered.contains(seq), "published seq {seq} was lost");
    }

    // Every app message in the stream exactly once.
    let stream = redis
        .cli(&["XRANGE", "tether:inbound:shop", "-", "+"])
        .unwrap();
    let mut count: HashMap<String, usize> = HashMap::new();
    for line in stream.lines() {
        if line.len() > 1 && line.starts_with('w') && line[1..].chars().all(|c| c.is_ascii_digit())
        {
            *count.entry(line.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(
        acked.len() as u64,
        sent,
        "every message was acked in the end"
    );
    for id in &acked {
        assert_eq!(
            count.get(id),
            Some(&1),
            "{id} stored {:?} times",
            count.get(id)
        );
    }
    assert_eq!(count.len() as u64, sent);
    reader.abort();
    println!(
        "node kill: {} published, {} received ({} duplicates before de-dup), {} app messages",
        published.len(),
        got.len(),
        got.len() - delivered.len(),
        sent
    );
}
