//! Role `storm` (S6): clients that behave like the SDK when their node dies: reconnect
//! with full-jitter exponential backoff (moving to the next node when one refuses),
//! resume with `since` and their device id, ack what they got, and keep a ledger of every
//! inbox seq received (duplicates included) for the lost/duplicated check.

use super::{emit, full_jitter, now_ns, source, Storm};
use crate::ws::{number_after, Frame};
use anyhow::Result;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

#[derive(Default)]
struct Client {
    /// Every seq received, in arrival order.
    seqs: Vec<u64>,
    /// (went down, came back) in ns since the epoch.
    outages: Vec<(u64, Option<u64>)>,
    connects: u32,
}

async fn client_loop(config: Rc<Storm>, i: u32, state: Rc<RefCell<Client>>) {
    let user = format!("u{}", config.first_user + u64::from(i));
    let source = source(&config.sources, i);
    let mut target = i as usize % config.targets.len();
    let mut attempt = 0u32;
    loop {
        let since = state.borrow().seqs.iter().max().copied().unwrap_or(0);
        let mut ws = match crate::client::open_tether(
            config.targets[target],
            source,
            &user,
            &format!("&since={since}"),
            2048,
        )
        .await
        {
            Ok(ws) => ws,
            Err(_) => {
                target = (target + 1) % config.targets.len();
                tokio::time::sleep(full_jitter(attempt, config.base_ms, config.cap_ms)).await;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        {
            let mut state = state.borrow_mut();
            state.connects += 1;
            if let Some(last) = state.outages.last_mut() {
                if last.1.is_none() {
                    last.1 = Some(now_ns());
                }
            }
        }
        loop {
            let seq = match ws.next().await {
                Ok(Frame::Text(text)) => number_after(text, br#""seq":"#),
                Ok(Frame::Other) => None,
                Ok(Frame::Close(_)) | Err(_) => break,
            };
            if let Some(seq) = seq {
                state.borrow_mut().seqs.push(seq);
                let _ = ws
                    .send_text(&format!(r#"{{"type":"ack","data":{{"seq":{seq}}}}}"#))
                    .await;
            }
        }
        state.borrow_mut().outages.push((now_ns(), None));
        // The first retry waits a full-jitter slice of the base, as the SDK does after an
        // abnormal close.
        tokio::time::sleep(full_jitter(0, config.base_ms, config.cap_ms)).await;
    }
}

pub async fn run(config: Storm) -> Result<()> {
    let config = Rc::new(config);
    let clients: Vec<Rc<RefCell<Client>>> = (0..config.count).map(|_| Rc::default()).collect();
    for (i, state) in clients.iter().enumerate() {
        tokio::task::spawn_local(client_loop(config.clone(), i as u32, state.clone()));
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    // Ready once every client connected once.
    loop {
        let up = clients.iter().filter(|c| c.borrow().connects > 0).count();
        if up == clients.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    emit(json!({"ready": clients.len()}));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "stop" {
            break;
        }
    }
    let seqs: Vec<Vec<u64>> = clients.iter().map(|c| c.borrow().seqs.clone()).collect();
    let outages: Vec<Vec<(u64, Option<u64>)>> =
        clients.iter().map(|c| c.borrow().outages.clone()).collect();
    emit(json!({"result": {"first_user": config.first_user, "seqs": seqs, "outages": outages}}));
    Ok(())
}
