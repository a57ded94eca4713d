//! An echo endpoint compiled only for WebSocket conformance runs (feature
//! `autobahn-echo`): Autobahn's `fuzzingclient` needs a server that sends every message
//! back. It uses the same WebSocket layer as `/ws` ([`super::ws`]) without the protocol
//! on top, so the run measures exactly what clients talk to.

use super::handshake::{switching_protocols, upgraded_stream};
use super::ws::frame::Opcode;
use super::ws::socket::{Incoming, ReadError, WsSocket};
use super::ws::upgrade;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Autobahn sends messages up to 16 MiB in its limits cases.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// `GET /echo`.
pub async fn handle(mut request: Request) -> Response {
    let accept = match upgrade::accept_key(request.method(), request.version(), request.headers()) {
        Ok(accept) => accept,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Some((stream, leftover)) = upgraded_stream(on_upgrade).await {
            echo(WsSocket::new(stream, leftover, MAX_MESSAGE_BYTES)).await;
        }
    });
    switching_protocols(accept)
}

async fn echo(mut socket: WsSocket) {
    let mut events = Vec::new();
    let mut result = socket.decode_buffered(&mut events).map(|()| true);
    loop {
        match result {
            Ok(true) => {}
            Ok(false) | Err(ReadError::Io(_)) => return,
            Err(ReadError::Violation(v)) => {
                let _ = socket.send_close(v.code, v.reason);
                let _ = socket.flush().await;
                return;
            }
        }
        for event in events.drain(..) {
            let sent = match &event {
                Incoming::Text(text) => socket.send([(Opcode::Text, text.as_bytes())]),
                Incoming::Binary(data) => socket.send([(Opcode::Binary, data.as_slice())]),
                Incoming::Ping | Incoming::Pong => Ok(()),
                Incoming::Close(code) => {
                    let _ = socket.send_close(code.unwrap_or(1000), "");
                    let _ = socket.flush().await;
                    return;
                }
            };
            if sent.is_err() || socket.flush().await.is_err() {
                return;
            }
        }
        if socket.readable().await.is_err() {
            return;
        }
        result = socket.read_available(&mut events);
    }
}
