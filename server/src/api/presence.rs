//! `GET /v1/presence`: who is in a room, on every node, for backends (the same answer a
//! member gets with `room_presence`).

use super::error::ApiError;
use super::params;
use crate::state::Shared;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use tether_protocol::server::RoomPresence;

/// Query of `GET /v1/presence`.
#[derive(Debug, Deserialize)]
pub struct PresenceQuery {
    app: Option<String>,
    room: Option<String>,
}

/// Lists the room's users with their connection counts.
pub async fn read(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<PresenceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RoomPresence>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let app = params::app(query.app)?;
    let room = params::room(query.room)?;
    let presence = shared.broker.room_presence(&app, &room).await;
    Ok(Json(presence.map_err(ApiError::unreadable)?))
}
