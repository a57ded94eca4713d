//! Prometheus metrics. The recorder is process-wide (the `metrics` crate has one global
//! recorder), installed once; hot-path counters are registered once and kept as handles so
//! a delivery costs one atomic add, not a registry lookup.

use metrics::{counter, gauge, Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder can only be present if the embedding program installed its own;
        // then ours still renders whatever is registered through it (nothing), which is
        // the embedding program's choice.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
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
        }
    }
}

impl Default for HotMetrics {
    fn default() -> Self {
        Self::new()
    }
}
