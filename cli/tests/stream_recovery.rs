//! A real SDK process (`tether listen`) SIGKILLed and started again on the same data
//! directory recovers its room with history: the messages published while it was dead
//! arrive once each, in offset order, with no stream reset. Only the last batch the
//! listener handled before the kill may come again (its position was not written yet),
//! and only as the tail of what the first run printed.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{Gw, Running, APP};

const ROOM: &str = "news:1";

/// `tether pub room` with `data`; the gateway's answer.
async fn publish(gw: &Gw, data: Value) -> Value {
    let out = gw
        .run(&[
            "pub",
            "room",
            "--room",
            ROOM,
            "--app",
            APP,
            "--admin-key",
            support::ADMIN_KEY,
            "--type",
            "eta",
            "--data",
            &data.to_string(),
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    out.json()
}

async fn listen(gw: &Gw, token: &str, dir: &str) -> Running {
    let args = [
        "listen",
        "--app",
        APP,
        "--token",
        token,
        "--room",
        ROOM,
        "--device",
        "phone-1",
        "--data-dir",
        dir,
    ];
    let mut running = Running::spawn(gw.tether(&args));
    running.wait_stderr("connected").await;
    running
}

/// Reads lines until the one with `data`; every line read (offset, data).
async fn lines_until(listener: &mut Running, data: &Value) -> Vec<(u64, Value)> {
    let mut got = Vec::new();
    loop {
        let line = listener.next_json().await;
        assert_eq!(line["room"], ROOM, "{line}");
        let offset = line["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("no offset: {line}"));
        got.push((offset, line["data"].clone()));
        if line["data"] == *data {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_listener_restarted_on_its_storage_recovers_the_room() {
    let gw = Gw::start_with(|config| config.room_history = vec!["news:*".into()]).await;
    let token = gw.token("sam").await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap().to_owned();

    let mut first = listen(&gw, &token, &dir).await;
    // The join is asynchronous: publish until the room has its member.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let mut warmup = 0;
    let base = loop {
        let answer = publish(&gw, json!(format!("warmup-{warmup}"))).await;
        if answer["delivered"].as_u64().unwrap_or(0) >= 1 {
            break answer;
        }
        warmup += 1;
        assert!(tokio::time::Instant::now() < deadline, "never joined");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let base_offset = base["offset"]
        .as_u64()
        .expect("a history room answers offsets");
    lines_until(&mut first, &json!(format!("warmup-{warmup}"))).await;
    for i in 0..10 {
        publish(&gw, json!(format!("before-{i}"))).await;
    }
    let before = lines_until(&mut first, &json!("before-9")).await;
    first.child.kill().await.unwrap();

    let mut missed = Vec::new();
    for i in 0..20 {
        let answer = publish(&gw, json!(format!("missed-{i}"))).await;
        missed.push((
            answer["offset"].as_u64().unwrap(),
            json!(format!("missed-{i}")),
        ));
    }
    let mut again = listen(&gw, &token, &dir).await;
    let got = lines_until(&mut again, &json!("missed-19")).await;
    again.child.kill().await.unwrap();
    again.finish().await;

    let split = got.len() - missed.len();
    let (redelivered, recovered) = got.split_at(split);
    assert_eq!(
        recovered,
        missed.as_slice(),
        "the missed stretch, once, in order"
    );
    assert!(
        before.ends_with(redelivered),
        "only the tail of the first run may come again: {redelivered:?}"
    );
    assert!(redelivered.iter().all(|(offset, _)| *offset > base_offset));
    assert!(
        !again.errors.iter().any(|l| l.contains("missed messages")),
        "no stream reset: {:#?}",
        again.errors
    );
}
