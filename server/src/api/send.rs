//! `POST /v1/send/user|users|room|app` and `DELETE /v1/connections`: how the backend reaches
//! users. Each message is validated and encoded once ([`crate::backend_message`]) and handed to
//! the broker, once per `Idempotency-Key` when the request carries one
//! ([`super::keyed_request`]).

use super::error::{json_body, ApiError};
use super::keyed_request::{once as request_once, Keyed};
use super::params;
use crate::backend_message::{
    check_app, check_room, check_user, check_users, encode, sent_to_users, Invalid,
};
use crate::broker::stream::StreamName;
use crate::state::Shared;
use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use tether_protocol::api::{
    Kicked, OutgoingMessage, SendToApp, SendToRoom, SendToUser, SendToUsers, SentToApp, SentToRoom,
    SentToUser,
};
use tracing::debug;

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        ApiError::invalid(e.0)
    }
}

/// `POST /v1/send/user`: durable, into the user's inbox and live to their connections.
pub async fn to_user(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SendToUser = json_body(&body)?;
    check_app(&request.app)?;
    check_user(&request.user_id)?;
    let keyed = Keyed::from_request(&headers, "/v1/send/user", &request)?;
    let message = encode(keyed_id(&keyed, &request.app, request.message), None)?;
    let (app, user) = (request.app, request.user_id);
    let broker = shared.broker.clone();
    request_once(shared, app.clone(), keyed, move |marker| async move {
        let marked = broker
            .send_to_user(&app, &user, &message.body, marker.as_ref())
            .await?;
        let delivery = marked.clone().into_inner();
        debug!(%app, %user, seq = delivery.seq, delivered = delivery.delivered, "sent to user");
        Ok(marked.map(|delivery| SentToUser {
            id: message.id,
            seq: delivery.seq,
            delivered: delivery.delivered,
            queued: true,
        }))
    })
    .await
}

/// `POST /v1/send/users`: one message, durable, into each user's inbox and live to their
/// connections; one id for all. The sends go out together (on Redis, the appender packs
/// them into few script runs). Per user: its seq, or why not; 503 only when no inbox was
/// reached.
pub async fn to_users(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SendToUsers = json_body(&body)?;
    check_app(&request.app)?;
    check_users(&request.user_ids)?;
    let keyed = Keyed::from_request(&headers, "/v1/send/users", &request)?;
    let message = encode(keyed_id(&keyed, &request.app, request.message), None)?;
    let (app, users) = (request.app, request.user_ids);
    let broker = shared.broker.clone();
    request_once(shared, app.clone(), keyed, move |marker| async move {
        let sends = users
            .iter()
            .map(|user| broker.send_to_user(&app, user, &message.body, marker.as_ref()));
        let results = futures_util::future::join_all(sends).await;
        let answer = sent_to_users(message.id, users, results)?;
        let counts = answer.clone().into_inner();
        debug!(%app, sent = counts.sent, failed = counts.failed, "sent to users");
        Ok(answer)
    })
    .await
}

/// `POST /v1/send/room`: live to the room's members; for a room with history, appended to
/// its stream first (the answer carries the offset and epoch).
pub async fn to_room(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SendToRoom = json_body(&body)?;
    check_app(&request.app)?;
    check_room(&request.room)?;
    let keyed = Keyed::from_request(&headers, "/v1/send/room", &request)?;
    let message = encode(
        keyed_id(&keyed, &request.app, request.message),
        Some(&request.room),
    )?;
    let (app, room) = (request.app, request.room);
    let stream = StreamName::Room(Arc::from(room.as_str()));
    let history = shared.config.history_of(&stream);
    let broker = shared.broker.clone();
    request_once(shared, app.clone(), keyed, move |marker| async move {
        let Some(limits) = history else {
            let marked = broker
                .send_to_room(&app, &room, Utf8Bytes::from(message.body), marker.as_ref())
                .await?;
            return Ok(marked.map(|delivered| SentToRoom {
                id: message.id,
                delivered,
                offset: None,
                epoch: None,
            }));
        };
        let marked = broker
            .publish_to_stream(&app, &stream, &message.body, limits, marker.as_ref())
            .await?;
        Ok(marked.map(|appended| SentToRoom {
            id: message.id,
            delivered: appended.delivered,
            offset: Some(appended.offset),
            epoch: Some(appended.epoch),
        }))
    })
    .await
}

/// `POST /v1/send/app`: live to every connection of the app; appended to the app's stream
/// first when the gateway keeps one.
pub async fn to_app(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SendToApp = json_body(&body)?;
    check_app(&request.app)?;
    let keyed = Keyed::from_request(&headers, "/v1/send/app", &request)?;
    let message = encode(keyed_id(&keyed, &request.app, request.message), None)?;
    let app = request.app;
    let history = shared.config.history_of(&StreamName::App);
    let broker = shared.broker.clone();
    request_once(shared, app.clone(), keyed, move |marker| async move {
        let Some(limits) = history else {
            let marked = broker
                .send_to_app(&app, Utf8Bytes::from(message.body), marker.as_ref())
                .await?;
            return Ok(marked.map(|()| SentToApp {
                id: message.id,
                offset: None,
                epoch: None,
            }));
        };
        let marked = broker
            .publish_to_stream(
                &app,
                &StreamName::App,
                &message.body,
                limits,
                marker.as_ref(),
            )
            .await?;
        Ok(marked.map(|appended| SentToApp {
            id: message.id,
            offset: Some(appended.offset),
            epoch: Some(appended.epoch),
        }))
    })
    .await
}

/// The message of a keyed request that names no id gets the key's derived id, so every
/// retry carries the same one.
fn keyed_id(keyed: &Option<Keyed>, app: &str, mut message: OutgoingMessage) -> OutgoingMessage {
    if let Some(keyed) = keyed {
        message.id.get_or_insert_with(|| keyed.message_id(app));
    }
    message
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
    let app = params::app(query.app)?;
    let user = params::user(query.user_id)?;
    let kicked = shared.broker.kick_user(&app, &user).await?;
    Ok(Json(Kicked { kicked }))
}
