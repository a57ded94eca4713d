//! The load-generator process: one role per process (several processes share a run, each
//! under the 20,000 open-file limit and from its own source addresses). It talks to the
//! orchestrator with JSON lines: it prints `{"ready":..}` once set up, waits for `go` on
//! stdin when the role is timed, and prints `{"result":..}` at the end.

mod broadcast;
mod connect;
mod hold;
mod listen;
mod proxy;
mod publish;
mod recover;
mod send_room;
pub mod store;
mod storm;

use crate::client::Dialect;
use crate::ws::Ws;
use anyhow::Result;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;

/// What a worker does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Open connections and keep them alive (S1).
    Hold(Hold),
    /// Subscribers in one room and a publisher (S3, S7).
    Broadcast(Broadcast),
    /// Authenticated upgrades as fast as possible, then churn (S2).
    Connect(Connect),
    /// Connections that record the latency of every message they get (S4, S5).
    Listen(Listen),
    /// An open-loop publisher straight into Redis (S4, S5, S6).
    Publish(Publish),
    /// Clients that reconnect with full-jitter backoff and keep a ledger (S6).
    Storm(Storm),
    /// A fault proxy in front of a gateway that cuts the connections it carries (S8).
    Proxy(Proxy),
    /// Subscribers of a room with history that rejoin with their position (S8).
    Recover(Recover),
    /// An open-loop publisher through `POST /v1/send/room` keeping the confirmed
    /// offsets (S8).
    SendRoom(SendRoom),
    /// Durable writes into a storage engine, measured or until killed (Q3).
    Store(store::Store),
}

/// Settings of [`Role::Hold`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    /// Dialect.
    pub dialect: Dialect,
    /// Servers; connection i goes to `targets[i % len]`.
    pub targets: Vec<SocketAddr>,
    /// Source addresses; connection i uses `sources[i % len]`.
    pub sources: Vec<IpAddr>,
    /// User number of the first connection (users are `u<n>`).
    pub first_user: u64,
    /// Connections.
    pub count: u32,
    /// Users per room (0: no room).
    pub room_size: u32,
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Connections opened at once.
    pub concurrency: usize,
}

/// The room the subscribers of [`Role::Broadcast`] join.
pub const BROADCAST_ROOM: &str = "broadcast";

/// Settings of [`Role::Broadcast`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Broadcast {
    /// Dialect.
    pub dialect: Dialect,
    /// Servers the subscribers connect to (round robin).
    pub targets: Vec<SocketAddr>,
    /// Where messages are published (`POST /v1/send/room`).
    pub publish_to: SocketAddr,
    /// Source addresses.
    pub sources: Vec<IpAddr>,
    /// Subscribers.
    pub subscribers: u32,
    /// Messages in flight (closed loop: a message is done when every subscriber has it);
    /// 0 for an open loop at `rate_per_s`.
    pub window: u32,
    /// Open-loop publish rate.
    pub rate_per_s: u32,
    /// Subscribers that read only `slow_bytes_per_s` (S7).
    pub slow_readers: u32,
    /// Read rate of a slow subscriber.
    pub slow_bytes_per_s: u64,
    /// Warm-up, s.
    pub warmup_s: u64,
    /// Measured time, s.
    pub measure_s: u64,
    /// Padding added to each message's data, bytes.
    pub padding: usize,
}

/// Settings of [`Role::Connect`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connect {
    /// Servers (round robin).
    pub targets: Vec<SocketAddr>,
    /// Source addresses (round robin; churn needs many ports).
    pub sources: Vec<IpAddr>,
    /// First user number.
    pub first_user: u64,
    /// Connections opened in the burst, and held during the churn.
    pub count: u32,
    /// Upgrades in flight during the burst.
    pub concurrency: usize,
    /// Connect+disconnect per second on top of the held connections (0: no churn).
    pub churn_per_s: u32,
    /// How long the churn lasts, s.
    pub churn_s: u64,
    /// The file of an ES256 private key (PKCS#8 PEM) to sign tokens with; HS256 when
    /// absent.
    pub es256_private_key_file: Option<String>,
}

/// Settings of [`Role::Listen`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listen {
    /// Servers (round robin).
    pub targets: Vec<SocketAddr>,
    /// Source addresses.
    pub sources: Vec<IpAddr>,
    /// First user number (users `u<n>`).
    pub first_user: u64,
    /// Connections.
    pub count: u32,
    /// Users per group room `g<n / group>` (0: no room).
    pub group: u32,
}

/// Settings of [`Role::Publish`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publish {
    /// Redis URL the gateways share.
    pub redis_url: String,
    /// `room` (to `g<n>`, n < `targets`) or `user` (to `u<n>`, n < `targets`).
    pub kind: String,
    /// Number of rooms or users to spread messages over.
    pub targets: u64,
    /// Offered messages per second (open loop).
    pub rate_per_s: u32,
    /// Duration, s.
    pub duration_s: u64,
}

/// Settings of [`Role::Storm`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Storm {
    /// Servers; a client starts on `targets[i % len]` and moves on when that fails.
    pub targets: Vec<SocketAddr>,
    /// Source addresses.
    pub sources: Vec<IpAddr>,
    /// First user number.
    pub first_user: u64,
    /// Clients.
    pub count: u32,
    /// Backoff base, ms.
    pub base_ms: u64,
    /// Backoff cap, ms.
    pub cap_ms: u64,
}

/// Settings of [`Role::Proxy`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proxy {
    /// The gateway behind it.
    pub upstream: SocketAddr,
    /// Source address of its connections to the gateway.
    pub source: Option<IpAddr>,
}

/// Settings of [`Role::Recover`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recover {
    /// The gateway.
    pub direct: SocketAddr,
    /// The fault proxy in front of it.
    pub proxied: SocketAddr,
    /// Subscriber i goes through the proxy when `i % cut_every == 0` (0: none does).
    pub cut_every: u32,
    /// Source addresses.
    pub sources: Vec<IpAddr>,
    /// First user number (users `r<n>`).
    pub first_user: u64,
    /// Subscribers.
    pub count: u32,
    /// The room (one with history).
    pub room: String,
}

/// Settings of [`Role::SendRoom`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendRoom {
    /// The gateway taking the sends.
    pub target: SocketAddr,
    /// The room.
    pub room: String,
    /// Offered messages per second (open loop).
    pub rate_per_s: u32,
    /// Duration, s.
    pub duration_s: u64,
}

/// A full-jitter reconnect delay: uniform in 0..=min(cap, base * 2^attempt) ms.
fn full_jitter(attempt: u32, base_ms: u64, cap_ms: u64) -> std::time::Duration {
    let ceiling = cap_ms.min(base_ms.saturating_mul(1u64 << attempt.min(20)));
    std::time::Duration::from_millis(rand::random_range(0..=ceiling))
}

/// Ns since the epoch (all processes of a run share the box's clock).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn emit(value: serde_json::Value) {
    println!("{value}");
}

/// Reads stdin lines until `word` (or the end of stdin, which also counts).
async fn wait_for(word: &str) -> Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == word {
            return Ok(());
        }
    }
    Ok(())
}

async fn wait_for_go() -> Result<()> {
    wait_for("go").await
}

/// Runs a role to its end.
pub fn run(role: Role) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        match role {
            Role::Hold(config) => hold::run_hold(config).await,
            Role::Broadcast(config) => broadcast::run_broadcast(config).await,
            Role::Connect(config) => connect::run(config).await,
            Role::Listen(config) => listen::run(config).await,
            Role::Publish(config) => publish::run(config).await,
            Role::Storm(config) => storm::run(config).await,
            Role::Proxy(config) => proxy::run(config).await,
            Role::Recover(config) => recover::run(config).await,
            Role::SendRoom(config) => send_room::run(config).await,
            Role::Store(config) => store::run(config),
        }
    })
}

/// Opens connections `0..count` with bounded concurrency; `make(i)` opens one.
async fn open_all<F, Fut>(count: u32, concurrency: usize, make: F) -> (Vec<Ws>, u32)
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<Ws>>,
{
    use futures_util::StreamExt;
    let mut opened = Vec::with_capacity(count as usize);
    let mut failed = 0;
    let mut pending = futures_util::stream::iter(0..count)
        .map(&make)
        .buffer_unordered(concurrency);
    while let Some(result) = pending.next().await {
        match result {
            Ok(ws) => opened.push(ws),
            Err(e) => {
                if failed < 3 {
                    eprintln!("connect failed: {e:#}");
                }
                failed += 1;
            }
        }
    }
    (opened, failed)
}

/// A latency histogram in µs (1 µs .. 60 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|e| unreachable!("valid bounds: {e}"))
}

/// p50/p90/p99/p99.9/max of a histogram.
pub fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "count": h.len(),
    })
}

/// The source address for connection `i`.
pub fn source(sources: &[IpAddr], i: u32) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[i as usize % sources.len()])
}
