//! `GET /v1/stats`, `GET /health` and `GET /metrics`.

use super::error::ApiError;
use crate::state::Shared;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use tether_protocol::api::Stats;

/// This node's counts and the cluster's.
pub async fn stats(State(shared): State<Arc<Shared>>) -> Result<Json<Stats>, ApiError> {
    let local = shared.hub.stats();
    let cluster = shared.broker.cluster_stats().await?;
    Ok(Json(Stats {
        total_connections: local.connections,
        total_rooms: local.rooms,
        connections_by_app: local.by_app,
        connections_by_type: local.by_type,
        server_id: shared.node.to_string(),
        total_redis_connections: cluster.connections,
        total_queued_messages: cluster.queued_messages,
        nodes: cluster.nodes,
    }))
}

/// 200 when the broker is healthy, 503 otherwise.
pub async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let health = shared.broker.health().await;
    let status = if health.status == "healthy" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

/// Prometheus text format.
pub async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}
