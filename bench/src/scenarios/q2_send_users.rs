//! Q2, a backend reaching many users at once: the same message to 1,000 users through
//! their inboxes, three ways: `POST /v1/send/user` once per user one after the other,
//! the same with 32 requests in flight, and one `POST /v1/send/users` with the 1,000
//! user ids. One node with Redis on the server CPU; the caller is this process (HTTP/1.1
//! keep-alive, not pinned). Reports messages stored per second and the servers' CPU
//! (gateway and Redis) per 1,000 messages.

use super::servers::{self, Kind};
use super::{row, SERVER_CPU};
use crate::procs::{self, ADMIN_KEY, APP};
use crate::report::Row;
use anyhow::{bail, Context, Result};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::time::Instant;

/// Users per round.
const USERS: usize = 1_000;

/// Runs Q2.
pub async fn run(quick: bool) -> Result<Vec<Row>> {
    let rounds = if quick { 3 } else { 10 };
    let servers = servers::start(Kind::Tether, 1, true, &[], SERVER_CPU).await?;
    let base = format!("http://{}", servers.addrs()[0]);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let pids = servers.pids();
    let users: Vec<String> = (0..USERS).map(|n| format!("q2-user-{n}")).collect();
    let message = json!({"type": "order_update", "data": {"orderId": 123, "status": "delivered"}});
    let mut rows = Vec::new();
    for (case, in_flight) in [
        ("POST /v1/send/user per user, one after the other", Some(1)),
        ("POST /v1/send/user per user, 32 in flight", Some(32)),
        ("one POST /v1/send/users with 1,000 users", None),
    ] {
        let cpu_before = cpu(&pids)?;
        let started = Instant::now();
        for _ in 0..rounds {
            match in_flight {
                Some(width) => {
                    let sends = stream::iter(users.iter().map(|user| {
                        let body = json!({"userId": user, "app": APP, "message": message});
                        post(&http, &base, "/v1/send/user", body)
                    }))
                    .buffer_unordered(width);
                    let answers: Vec<Result<Value>> = sends.collect().await;
                    for answer in answers {
                        answer?;
                    }
                }
                None => {
                    let body = json!({"userIds": users, "app": APP, "message": message});
                    let answer = post(&http, &base, "/v1/send/users", body).await?;
                    if answer["sent"] != USERS {
                        bail!("send/users stored {} of {USERS}", answer["sent"]);
                    }
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let used = cpu(&pids)? - cpu_before;
        let messages = (rounds * USERS) as f64;
        rows.push(row(
            "Q2",
            format!("tether 1 node (Redis), {USERS} users: {case}"),
            json!({
                "rounds": rounds,
                "messages_per_s": (messages / seconds).round(),
                "ms_per_1000_users": (1000.0 * seconds / rounds as f64).round(),
                "server_cpu_ms_per_1k": (1e6 * used / messages * 10.0).round() / 10.0,
            }),
        ));
    }
    Ok(rows)
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Result<Value> {
    let response = http
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = response.status();
    let answer: Value = response.json().await?;
    if !status.is_success() {
        bail!("POST {path}: {status} {answer}");
    }
    Ok(answer)
}

/// CPU seconds used so far by the server processes (gateway and Redis).
fn cpu(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|pid| procs::cpu_seconds(*pid)).sum()
}
