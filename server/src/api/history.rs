//! `GET /v1/history`: a stream's kept messages (a room with history, or an app's
//! broadcasts), for backends and dashboards. The history is a buffer for clients that
//! reconnect, not an archive: it holds the last `WS_ROOM_HISTORY_SIZE` messages of
//! `WS_ROOM_HISTORY_TTL` seconds (`WS_APP_HISTORY_*` for apps).

use super::error::ApiError;
use super::params;
use crate::broker::stream::{ReadFrom, StreamName};
use crate::state::Shared;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use tether_protocol::api::History;
use tether_protocol::stream::StreamPosition;
use tether_protocol::HttpErrorCode;

/// Most messages one read returns.
pub const MAX_LIMIT: usize = 1000;
/// Messages one read returns when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 100;

/// Query of `GET /v1/history`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    app: Option<String>,
    room: Option<String>,
    since: Option<u64>,
    epoch: Option<String>,
    limit: Option<usize>,
}

/// Reads the stream after `since` (default 0: the oldest kept), at most `limit` messages.
pub async fn read(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<History>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let app = params::app(query.app)?;
    let name = match &query.room {
        Some(room) => {
            params::check_room(room)?;
            StreamName::Room(Arc::from(room.as_str()))
        }
        None => StreamName::App,
    };
    if let Some(epoch) = &query.epoch {
        StreamPosition::validate_epoch(epoch)
            .map_err(|e| ApiError::invalid(format!("epoch: {e}")))?;
    }
    let limit = params::limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let Some(limits) = shared.config.history_of(&name) else {
        let what = match &query.room {
            Some(room) => format!("room {room:?} keeps no history (WS_ROOM_HISTORY)"),
            None => "this gateway keeps no app broadcasts (WS_APP_HISTORY_SIZE is 0)".to_owned(),
        };
        return Err(ApiError::new(HttpErrorCode::NotFound, what));
    };
    let from = ReadFrom::After {
        offset: query.since.unwrap_or(0),
        epoch: query.epoch.as_deref(),
    };
    let read = shared
        .broker
        .read_stream(&app, &name, from, limits, limit)
        .await
        .map_err(ApiError::unreadable)?;
    let messages = read
        .frames
        .into_iter()
        .map(|(_, frame)| RawValue::from_string(frame.as_str().to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ApiError::new(
                HttpErrorCode::Internal,
                format!("a kept message is not JSON: {e}"),
            )
        })?;
    Ok(Json(History {
        room: query.room,
        epoch: read.epoch,
        offset: read.top,
        recovered: read.recovered,
        messages,
        more: read.more,
    }))
}
