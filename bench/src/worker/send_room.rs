//! Role `send_room` (S8): an open-loop publisher through `POST /v1/send/room`, each
//! message carrying its send time. It keeps the ledger of what the gateway confirmed:
//! the offset and epoch of every answer, against which the subscribers are judged.

use super::{emit, now_ns, wait_for_go, SendRoom};
use crate::procs::{ADMIN_KEY, APP};
use anyhow::Result;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Requests in flight at most; beyond, the offered rate is not met and the result says so.
const MAX_IN_FLIGHT: u64 = 256;

#[derive(Default)]
struct Ledger {
    offsets: Vec<u64>,
    epochs: BTreeSet<String>,
    errors: u64,
    last_error: Option<String>,
}

pub async fn run(config: SendRoom) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("http://{}/v1/send/room", config.target);
    emit(json!({"ready": 1}));
    wait_for_go().await?;
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    let in_flight = Rc::new(Cell::new(0u64));
    let mut skipped = 0u64;
    let mut sent = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs(config.duration_s);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while Instant::now() < end {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * f64::from(config.rate_per_s)) as u64;
        while sent + skipped < due {
            if in_flight.get() >= MAX_IN_FLIGHT {
                skipped += 1;
                continue;
            }
            let body = json!({
                "room": config.room,
                "app": APP,
                "message": {"type": "bench", "data": {"s": sent, "t": now_ns()}},
            });
            sent += 1;
            in_flight.set(in_flight.get() + 1);
            let (http, url, ledger, in_flight) =
                (http.clone(), url.clone(), ledger.clone(), in_flight.clone());
            tokio::task::spawn_local(async move {
                let answer = async {
                    let response = http
                        .post(&url)
                        .bearer_auth(ADMIN_KEY)
                        .json(&body)
                        .send()
                        .await?
                        .error_for_status()?;
                    response.json::<serde_json::Value>().await
                }
                .await;
                let mut ledger = ledger.borrow_mut();
                match answer {
                    Ok(answer) => match (answer["offset"].as_u64(), answer["epoch"].as_str()) {
                        (Some(offset), Some(epoch)) => {
                            ledger.offsets.push(offset);
                            if !ledger.epochs.contains(epoch) {
                                ledger.epochs.insert(epoch.to_owned());
                            }
                        }
                        _ => {
                            ledger.errors += 1;
                            ledger.last_error = Some(format!("no offset in {answer}"));
                        }
                    },
                    Err(e) => {
                        ledger.errors += 1;
                        ledger.last_error = Some(e.to_string());
                    }
                }
                in_flight.set(in_flight.get() - 1);
            });
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let drain = Instant::now();
    while in_flight.get() > 0 && drain.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut ledger = ledger.borrow_mut();
    ledger.offsets.sort_unstable();
    emit(json!({"result": {
        "offered_per_s": config.rate_per_s,
        "published": ledger.offsets.len(),
        "errors": ledger.errors,
        "last_error": ledger.last_error,
        "skipped": skipped,
        "seconds": seconds,
        "published_per_s": ledger.offsets.len() as f64 / seconds.max(1e-9),
        "offsets": ledger.offsets,
        "epochs": ledger.epochs,
    }}));
    Ok(())
}
