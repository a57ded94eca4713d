//! Prometheus metrics. The recorder is process-wide (the `metrics` crate has one global
//! recorder), installed once; hot-path counters are registered once and kept as handles so
//! a delivery costs one atomic add, not a registry lookup.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_process::Collector;
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<Collector> = OnceLock::new();
static UPKEEP: OnceLock<()> = OnceLock::new();

/// Buckets of every latency histogram, seconds: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often the recorder folds the samples histograms gathered into their buckets
/// (rendering does it too; this bounds the memory between scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        #[allow(clippy::expect_used)] // the bucket list is a non-empty constant
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .expect("LATENCY_BUCKETS is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder can only be present if the embedding program installed its own;
        // then ours still renders whatever is registered through it (nothing), which is
        // the embedding program's choice.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        PROCESS.get_or_init(|| {
            let process = Collector::default();
            process.describe();
            process
        });
        handle
    })
}

/// Installs the recorder and starts its upkeep thread (once per process, whatever the
/// number of gateways in it; a thread, not a task, so it outlives any one runtime).
pub fn start() {
    prometheus();
    UPKEEP.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(|| loop {
                std::thread::sleep(UPKEEP_EVERY);
                prometheus().run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded at each scrape only");
        }
    });
}

/// The Prometheus text of `/metrics`: the process figures (`process_*`: CPU, memory,
/// open files, threads) read now, then everything recorded.
pub fn render() -> String {
    let handle = prometheus();
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    handle.render()
}

/// Seconds from a frame's `ts` (ms since the epoch, the last field of every envelope the
/// gateway encodes) to `now_ms`; None for a frame without one. A `ts` ahead of this
/// node's clock (another node's clock runs ahead) counts as 0.
pub fn seconds_since_ts(frame: &str, now_ms: u64) -> Option<f64> {
    let head = frame.strip_suffix('}')?;
    let digits = head.len() - head.bytes().rev().take_while(u8::is_ascii_digit).count();
    let ts: u64 = head[digits..].parse().ok()?;
    if !head[..digits].ends_with(r#""ts":"#) {
        return None;
    }
    Some(now_ms.saturating_sub(ts) as f64 / 1000.0)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "tether_handshake_duration_seconds",
        Unit::Seconds,
        "From a /ws request to its answer (101, or a refusal), by outcome (accepted, refused)"
    );
    describe_histogram!(
        "tether_api_request_duration_seconds",
        Unit::Seconds,
        "Backend API requests, from arrival to answer, by route"
    );
    describe_histogram!(
        crate::broker::timed::OPERATION_DURATION,
        Unit::Seconds,
        "Broker operations (Redis round trips, or the embedded broker), by op and outcome (ok, error)"
    );
    describe_histogram!(
        "tether_delivery_lag_seconds",
        Unit::Seconds,
        "From a message's ts (stamped when the backend's send was accepted) to this node queueing it for its connections, by target; across nodes it includes their clock difference"
    );
    describe_gauge!(
        "tether_connections",
        "Open WebSocket connections on this node"
    );
    describe_counter!(
        "tether_connections_opened_total",
        "WebSocket connections accepted"
    );
    describe_counter!(
        "tether_connections_closed_total",
        "WebSocket connections closed, by close code"
    );
    describe_counter!(
        "tether_handshakes_refused_total",
        "Handshakes refused, by error code"
    );
    describe_counter!("tether_frames_in_total", "Frames received from clients");
    describe_counter!("tether_frames_out_total", "Frames handed to client sockets");
    describe_counter!(
        "tether_frames_oversize_total",
        "Client frames above WS_MAX_MESSAGE_BYTES (closed with 1009)"
    );
    describe_counter!(
        "tether_frames_invalid_total",
        "Client frames refused as invalid"
    );
    describe_counter!(
        "tether_slow_consumers_total",
        "Connections closed because their outbound queue overflowed"
    );
    describe_counter!(
        "tether_deliveries_total",
        "Messages delivered to local connections, by target"
    );
    describe_counter!(
        "tether_inbox_appended_total",
        "Messages appended to user inboxes"
    );
    describe_counter!(
        "tether_inbox_replayed_total",
        "Inbox messages replayed on connect"
    );
    describe_counter!(
        "tether_inbound_stored_total",
        "Client app messages stored for the backend"
    );
    describe_counter!(
        "tether_inbound_duplicates_total",
        "Client app messages recognised as resends"
    );
    describe_counter!(
        "tether_presence_events_total",
        "Join and leave events sent to rooms (WS_PRESENCE_EVENTS), by kind"
    );
    describe_counter!(
        "tether_token_refreshes_total",
        "refresh_token requests, by outcome (accepted, refused)"
    );
    describe_counter!(
        "tether_api_requests_total",
        "Backend API requests, by route and status"
    );
    describe_counter!(
        "tether_api_idempotency_total",
        "Backend sends with an Idempotency-Key, by outcome (first, replayed, in_progress, reused, corrupt, not_recorded)"
    );
}

/// Handles for the counters touched per frame or per delivery.
#[derive(Clone)]
pub struct HotMetrics {
    /// Open connections.
    pub connections: Gauge,
    /// Frames received.
    pub frames_in: Counter,
    /// Frames written.
    pub frames_out: Counter,
    /// Deliveries to users.
    pub deliveries_user: Counter,
    /// Deliveries to room members.
    pub deliveries_room: Counter,
    /// Deliveries to whole apps.
    pub deliveries_app: Counter,
    /// Slow consumers closed.
    pub slow_consumers: Counter,
    /// Publish-to-fan-out lag of user messages.
    pub lag_user: Histogram,
    /// ... of room messages.
    pub lag_room: Histogram,
    /// ... of app broadcasts.
    pub lag_app: Histogram,
}

impl HotMetrics {
    /// Registers (or finds) the handles.
    pub fn new() -> HotMetrics {
        prometheus();
        HotMetrics {
            connections: gauge!("tether_connections"),
            frames_in: counter!("tether_frames_in_total"),
            frames_out: counter!("tether_frames_out_total"),
            deliveries_user: counter!("tether_deliveries_total", "target" => "user"),
            deliveries_room: counter!("tether_deliveries_total", "target" => "room"),
            deliveries_app: counter!("tether_deliveries_total", "target" => "app"),
            slow_consumers: counter!("tether_slow_consumers_total"),
            lag_user: histogram!("tether_delivery_lag_seconds", "target" => "user"),
            lag_room: histogram!("tether_delivery_lag_seconds", "target" => "room"),
            lag_app: histogram!("tether_delivery_lag_seconds", "target" => "app"),
        }
    }
}

impl Default for HotMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::seconds_since_ts;

    #[test]
    fn the_lag_is_read_from_the_envelopes_last_field() {
        let frame = r#"{"type":"n","id":"a","data":{"ts":5},"ts":1000}"#;
        assert_eq!(seconds_since_ts(frame, 1250), Some(0.25));
        // A clock behind the sender's: no negative lag.
        assert_eq!(seconds_since_ts(frame, 900), Some(0.0));
        // No ts at the end: nothing, even with a "ts" inside the data.
        assert_eq!(seconds_since_ts(r#"{"type":"n","data":{"ts":5}}"#, 9), None);
        assert_eq!(seconds_since_ts(r#"{"type":"n","seq":5}"#, 9), None);
        assert_eq!(seconds_since_ts(r#"{"type":"n","ts":}"#, 9), None);
        assert_eq!(seconds_since_ts("", 9), None);
    }
}
