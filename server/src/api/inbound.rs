//! `GET /v1/inbound`: how a backend reads the app messages clients sent, page by page.

use super::error::ApiError;
use super::params;
use crate::state::Shared;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use tether_protocol::api::InboundPage;

/// Largest page.
pub const MAX_LIMIT: usize = 1000;
/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 100;

/// Query of `GET /v1/inbound`.
#[derive(Debug, Deserialize)]
pub struct InboundQuery {
    app: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// Reads app messages after the cursor `after`, oldest first.
pub async fn read(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<InboundQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InboundPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let app = params::app(query.app)?;
    let limit = params::limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = shared
        .broker
        .read_inbound(&app, query.after.as_deref(), limit)
        .await;
    Ok(Json(page.map_err(ApiError::unreadable)?))
}
