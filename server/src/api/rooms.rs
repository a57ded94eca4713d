//! `GET /v1/rooms`: the rooms of an app with members on this node, with their connection
//! counts, for dashboards (the cluster-wide view of one room is `GET /v1/presence`).

use super::error::ApiError;
use super::params;
use crate::state::Shared;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use tether_protocol::api::{RoomCount, RoomList};

/// Query of `GET /v1/rooms`.
#[derive(Debug, Deserialize)]
pub struct RoomsQuery {
    app: Option<String>,
}

/// Lists this node's rooms of the app, most connections first.
pub async fn read(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<RoomsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RoomList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let app = params::app(query.app)?;
    let rooms = shared.hub.rooms_of_app(&app);
    let total = rooms.len() as u64;
    let listed: Vec<RoomCount> = rooms
        .into_iter()
        .take(RoomList::MAX_ROOMS)
        .map(|(room, connections)| RoomCount {
            room: room.to_string(),
            connections,
        })
        .collect();
    Ok(Json(RoomList {
        server_id: shared.hub.node().to_string(),
        app,
        total,
        truncated: (listed.len() as u64) < total,
        rooms: listed,
    }))
}
