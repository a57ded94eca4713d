//! An echo endpoint compiled only for WebSocket conformance runs (feature
//! `autobahn-echo`): Autobahn's `fuzzingclient` needs a server that sends every message
//! back. It uses the same WebSocket layer and buffer settings as `/ws`, without the
//! protocol on top, so the run measures exactly what clients talk to.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::StreamExt;

/// Autobahn sends messages up to 16 MiB in its limits cases.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// `GET /echo`.
pub async fn handle(upgrade: WebSocketUpgrade) -> Response {
    super::handshake::configure(upgrade)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .max_write_buffer_size(2 * MAX_MESSAGE_BYTES)
        .on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.next().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}
