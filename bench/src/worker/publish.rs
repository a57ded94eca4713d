//! Role `publish` (S4, S5, S6): an open-loop publisher straight into Redis with the Rust
//! `Publisher` (the same Lua scripts as the HTTP API): messages leave on schedule whatever
//! the gateways do, each carrying its send time. For user messages it records every
//! (user, seq) it published, for the ledger check.

use super::{emit, now_ns, wait_for_go, Publish};
use anyhow::{Context, Result};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tether_protocol::api::OutgoingMessage;
use tether_server::publisher::Publisher;

/// Publishes in flight at most; beyond, the offered rate is not met and the report says so.
const MAX_IN_FLIGHT: u64 = 8192;

pub async fn run(config: Publish) -> Result<()> {
    let publisher = Publisher::connect(&config.redis_url)
        .await
        .context("publisher connects")?;
    emit(json!({"ready": 1}));
    wait_for_go().await?;
    let ok = Rc::new(Cell::new(0u64));
    let errors = Rc::new(Cell::new(0u64));
    let in_flight = Rc::new(Cell::new(0u64));
    let ledger = Rc::new(RefCell::new(Vec::<(u64, u64)>::new()));
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
            let index = sent;
            sent += 1;
            let target = rand::random_range(0..config.targets.max(1));
            let message = OutgoingMessage::new("bench", &json!({"s": index, "t": now_ns()}));
            let (publisher, ok, errors, in_flight, ledger) = (
                publisher.clone(),
                ok.clone(),
                errors.clone(),
                in_flight.clone(),
                ledger.clone(),
            );
            let user_kind = config.kind == "user";
            in_flight.set(in_flight.get() + 1);
            tokio::task::spawn_local(async move {
                let result = if user_kind {
                    publisher
                        .send_to_user(crate::procs::APP, &format!("u{target}"), message)
                        .await
                        .map(|s| ledger.borrow_mut().push((target, s.seq)))
                } else {
                    publisher
                        .send_to_room(crate::procs::APP, &format!("g{target}"), message)
                        .await
                        .map(|_| ())
                };
                match result {
                    Ok(()) => ok.set(ok.get() + 1),
                    Err(_) => errors.set(errors.get() + 1),
                }
                in_flight.set(in_flight.get() - 1);
            });
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let drain = Instant::now();
    while in_flight.get() > 0 && drain.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ledger = ledger.borrow();
    emit(json!({"result": {
        "offered_per_s": config.rate_per_s,
        "published": ok.get(),
        "errors": errors.get(),
        "skipped": skipped,
        "seconds": seconds,
        "published_per_s": ok.get() as f64 / seconds.max(1e-9),
        "ledger": *ledger,
    }}));
    Ok(())
}
