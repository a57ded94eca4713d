//! Role `connect` (S2): authenticated upgrades as fast as the server takes them (upgrade
//! latency = TCP connect to `connection_established`), then connect+disconnect churn at a
//! fixed rate on top of the held connections.

use super::{emit, histogram, percentiles, source, wait_for_go, Connect};
use crate::client::{self, Dialect};
use anyhow::{Context, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub async fn run(config: Connect) -> Result<()> {
    if let Some(file) = &config.es256_private_key_file {
        let pem = std::fs::read_to_string(file)
            .with_context(|| format!("reading the ES256 key {file}"))?;
        client::sign_with_es256(&pem)?;
    }
    emit(json!({"ready": 0}));
    wait_for_go().await?;
    let latency = Rc::new(RefCell::new(histogram()));
    let started = Instant::now();
    let held: Vec<_> = futures_util::stream::iter(0..config.count)
        .map(|i| {
            let target = config.targets[i as usize % config.targets.len()];
            let user = format!("u{}", config.first_user + u64::from(i));
            let source = source(&config.sources, i);
            let latency = latency.clone();
            async move {
                let at = Instant::now();
                let ws = client::open(Dialect::Tether, target, source, &user, None, 512).await;
                if ws.is_ok() {
                    let _ = latency
                        .borrow_mut()
                        .record((at.elapsed().as_micros() as u64).max(1));
                }
                ws
            }
        })
        .buffer_unordered(config.concurrency)
        .collect()
        .await;
    let burst_s = started.elapsed().as_secs_f64();
    let opened = held.iter().filter(|r| r.is_ok()).count();
    if let Some(Err(e)) = held.iter().find(|r| r.is_err()) {
        eprintln!("upgrade failed: {e:#}");
    }
    let burst_latency = percentiles(&latency.borrow());

    // Churn: `churn_per_s` connect+disconnect a second, with the burst's connections held.
    let churn_latency = Rc::new(RefCell::new(histogram()));
    let (ok, failed, attempted) = (
        Rc::new(Cell::new(0u64)),
        Rc::new(Cell::new(0u64)),
        Cell::new(0u64),
    );
    if config.churn_per_s > 0 {
        let start = Instant::now();
        let end = start + Duration::from_secs(config.churn_s);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut next_user = config.first_user + u64::from(config.count);
        while Instant::now() < end {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * f64::from(config.churn_per_s)) as u64;
            while attempted.get() < due {
                let i = attempted.get() as u32;
                attempted.set(attempted.get() + 1);
                let target = config.targets[i as usize % config.targets.len()];
                let source = source(&config.sources, i.wrapping_add(config.count));
                let user = format!("u{next_user}");
                next_user += 1;
                let (latency, ok, failed) = (churn_latency.clone(), ok.clone(), failed.clone());
                tokio::task::spawn_local(async move {
                    let at = Instant::now();
                    match client::open(Dialect::Tether, target, source, &user, None, 512).await {
                        Ok(ws) => {
                            let _ = latency
                                .borrow_mut()
                                .record((at.elapsed().as_micros() as u64).max(1));
                            ok.set(ok.get() + 1);
                            ws.close().await;
                        }
                        Err(_) => failed.set(failed.get() + 1),
                    }
                });
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    drop(held);
    emit(json!({"result": {
        "opened": opened,
        "failed": config.count as usize - opened,
        "burst_seconds": burst_s,
        "upgrades_per_s": opened as f64 / burst_s.max(1e-9),
        "burst_latency_us": burst_latency,
        "churn_attempted": attempted.get(),
        "churn_ok": ok.get(),
        "churn_failed": failed.get(),
        "churn_latency_us": percentiles(&churn_latency.borrow()),
        "churn_hist": crate::report::encode_histogram(&churn_latency.borrow())?,
    }}));
    let _: &Histogram<u64> = &latency.borrow();
    Ok(())
}
