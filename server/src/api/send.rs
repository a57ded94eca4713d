//! `POST /v1/send/user|room|app` and `DELETE /v1/connections`: how the backend reaches
//! users. Each message is validated, encoded once, and handed to the broker.

use super::error::{json_body, ApiError};
use crate::broker::UserMessage;
use crate::clock::now_ms;
use crate::ids::new_message_id;
use crate::state::Shared;
use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use tether_protocol::api::{
    Kicked, OutgoingMessage, SendToApp, SendToRoom, SendToUser, SentToApp, SentToRoom, SentToUser,
};
use tether_protocol::client::is_reserved;
use tether_protocol::{names, Envelope};
use tracing::debug;

/// Checks a backend message and encodes its envelope (without `seq`), with an id and `ts`.
fn envelope(message: OutgoingMessage, room: Option<&str>) -> Result<(String, String), ApiError> {
    names::validate_type(&message.kind).map_err(|e| ApiError::invalid(format!("message.{e}")))?;
    if is_reserved(&message.kind) {
        return Err(ApiError::invalid(format!(
            "message.type {} is reserved for the gateway",
            message.kind
        )));
    }
    let id = match message.id {
        Some(id) => {
            names::validate_id(&id).map_err(|e| ApiError::invalid(format!("message.{e}")))?;
            id
        }
        None => new_message_id(),
    };
    let mut envelope = Envelope::new(message.kind);
    envelope.id = Some(id.clone());
    envelope.room = room.map(str::to_owned);
    envelope.data = message.data;
    envelope.ts = Some(now_ms());
    Ok((id, envelope.to_json()))
}

fn check<T>(result: Result<T, names::NameError>) -> Result<T, ApiError> {
    result.map_err(|e| ApiError::invalid(e.to_string()))
}

/// `POST /v1/send/user`: durable, into the user's inbox and live to their connections.
pub async fn to_user(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<SentToUser>, ApiError> {
    let request: SendToUser = json_body(&body)?;
    check(names::validate_app(&request.app))?;
    names::validate_user_id(&request.user_id)
        .map_err(|e| ApiError::invalid(e.to_string().replacen("sub", "userId", 1)))?;
    let (id, body) = envelope(request.message, None)?;
    let delivery = shared
        .broker
        .send_to_user(
            &request.app,
            &request.user_id,
            UserMessage {
                id: id.clone(),
                body,
            },
        )
        .await?;
    debug!(app = %request.app, user = %request.user_id, seq = delivery.seq, delivered = delivery.delivered, "sent to user");
    Ok(Json(SentToUser {
        id,
        seq: delivery.seq,
        delivered: delivery.delivered,
        queued: true,
    }))
}

/// `POST /v1/send/room`: live to the room's members.
pub async fn to_room(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<SentToRoom>, ApiError> {
    let request: SendToRoom = json_body(&body)?;
    check(names::validate_app(&request.app))?;
    check(names::validate_room(&request.room))?;
    let (id, frame) = envelope(request.message, Some(&request.room))?;
    let delivered = shared
        .broker
        .send_to_room(&request.app, &request.room, Utf8Bytes::from(frame))
        .await?;
    Ok(Json(SentToRoom { id, delivered }))
}

/// `POST /v1/send/app`: live to every connection of the app.
pub async fn to_app(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<SentToApp>, ApiError> {
    let request: SendToApp = json_body(&body)?;
    check(names::validate_app(&request.app))?;
    let (id, frame) = envelope(request.message, None)?;
    shared
        .broker
        .send_to_app(&request.app, Utf8Bytes::from(frame))
        .await?;
    Ok(Json(SentToApp { id }))
}

/// Query of `DELETE /v1/connections`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KickQuery {
    app: Option<String>,
    user_id: Option<String>,
}

/// `DELETE /v1/connections?app=&userId=`: closes the user's connections with 4403.
pub async fn kick(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<KickQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Kicked>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let app = query
        .app
        .ok_or_else(|| ApiError::invalid("app is required"))?;
    let user = query
        .user_id
        .ok_or_else(|| ApiError::invalid("userId is required"))?;
    check(names::validate_app(&app))?;
    names::validate_user_id(&user)
        .map_err(|e| ApiError::invalid(e.to_string().replacen("sub", "userId", 1)))?;
    let kicked = shared.broker.kick_user(&app, &user).await?;
    Ok(Json(Kicked { kicked }))
}
