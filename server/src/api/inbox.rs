//! `GET /v1/inbox`: what a user's inbox keeps, page by page, for dashboards and support
//! ("did the message reach this user's inbox?"). Reading moves no device's cursor.

use super::error::ApiError;
use super::params;
use crate::state::Shared;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use tether_protocol::api::InboxPage;
use tether_protocol::HttpErrorCode;

/// Largest page.
pub const MAX_LIMIT: usize = 1000;
/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 100;

/// Query of `GET /v1/inbox`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxQuery {
    app: Option<String>,
    user_id: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// Reads the user's inbox after seq `after` (default 0: the oldest kept), oldest first.
pub async fn read(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<InboxQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InboxPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let app = params::app(query.app)?;
    let user = params::user(query.user_id)?;
    let limit = params::limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let kept = shared
        .broker
        .read_inbox(&app, &user, query.after.unwrap_or(0))
        .await
        .map_err(ApiError::unreadable)?;
    let more = kept.len() > limit;
    let messages = kept
        .into_iter()
        .take(limit)
        .map(|(_, frame)| RawValue::from_string(frame.as_str().to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ApiError::new(
                HttpErrorCode::Internal,
                format!("an inbox message is not JSON: {e}"),
            )
        })?;
    Ok(Json(InboxPage {
        app,
        user_id: user,
        messages,
        more,
    }))
}
