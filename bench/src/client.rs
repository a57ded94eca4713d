//! A load-generator connection speaking one of the dialects under test: Tether's protocol
//! (our gateway, and the ws/Bun peers which implement its join/room subset), or Socket.IO
//! (Engine.IO framing over WebSocket).

use crate::procs::{APP, JWT_SECRET};
use crate::ws::{Frame, Target, Ws};
use anyhow::{anyhow, bail, Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use tether_server::auth::{mint_token, Claims};

/// The ES256 private key this worker signs with, when the run uses ES256 tokens.
static ES256_KEY: OnceLock<EncodingKey> = OnceLock::new();

/// How a server is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Tether's wire protocol.
    Tether,
    /// Socket.IO v4 over WebSocket.
    SocketIo,
}

/// Signs this worker's tokens with ES256 and `private_pem` (PKCS#8) from now on.
pub fn sign_with_es256(private_pem: &str) -> Result<()> {
    let key = EncodingKey::from_ec_pem(private_pem.as_bytes()).context("ES256 private key")?;
    ES256_KEY
        .set(key)
        .map_err(|_| anyhow!("the signing key is already set"))
}

/// A token for `user`, valid for a day: HS256 with the run's secret, or ES256 after
/// [`sign_with_es256`].
pub fn token(user: &str) -> String {
    let claims = Claims::new(user, &[APP], 86_400);
    match ES256_KEY.get() {
        Some(key) => jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, key)
            .unwrap_or_else(|e| unreachable!("ES256 signing with a parsed key failed: {e}")),
        None => mint_token(JWT_SECRET.as_bytes(), &claims),
    }
}

/// Opens an authenticated connection for `user` with `device`, waits for the server's
/// first frame, and joins `room` (waiting for the confirmation) when given.
pub async fn open(
    dialect: Dialect,
    addr: SocketAddr,
    source: Option<IpAddr>,
    user: &str,
    room: Option<&str>,
    read_buffer: usize,
) -> Result<Ws> {
    match dialect {
        Dialect::Tether => {
            let mut ws = open_tether(addr, source, user, "", read_buffer).await?;
            if let Some(room) = room {
                ws.send_text(&format!(
                    r#"{{"type":"join_room","data":{{"room":"{room}"}}}}"#
                ))
                .await?;
                expect_text(&mut ws, b"room_joined").await?;
            }
            Ok(ws)
        }
        Dialect::SocketIo => {
            let token = token(user);
            let path = format!("/socket.io/?EIO=4&transport=websocket&token={token}");
            let target = Target {
                addr,
                path: &path,
                headers: "",
                source,
            };
            let mut ws = Ws::connect(&target, read_buffer).await?;
            // Engine.IO open packet, then connect to the default namespace.
            expect_text(&mut ws, b"0{").await?;
            ws.send_text(&format!(r#"40{{"token":"{token}"}}"#)).await?;
            expect_text(&mut ws, b"40").await?;
            if let Some(room) = room {
                ws.send_text(&format!(r#"42["join_room","{room}"]"#))
                    .await?;
                expect_text(&mut ws, b"room_joined").await?;
            }
            Ok(ws)
        }
    }
}

/// A Tether connection of `user` (device `d-<user>`, `query` appended to the handshake's,
/// e.g. `&since=3`), returned once `connection_established` came.
pub async fn open_tether(
    addr: SocketAddr,
    source: Option<IpAddr>,
    user: &str,
    query: &str,
    read_buffer: usize,
) -> Result<Ws> {
    let path = format!("/ws?app={APP}&device=d-{user}{query}");
    let headers = format!("Authorization: Bearer {}\r\n", token(user));
    let target = Target {
        addr,
        path: &path,
        headers: &headers,
        source,
    };
    let mut ws = Ws::connect(&target, read_buffer).await?;
    expect_text(&mut ws, b"connection_established").await?;
    Ok(ws)
}

async fn expect_text(ws: &mut Ws, needle: &[u8]) -> Result<()> {
    loop {
        match ws.next().await? {
            Frame::Text(text) if text.windows(needle.len()).any(|w| w == needle) => return Ok(()),
            Frame::Text(_) | Frame::Other => continue,
            Frame::Close(code) => bail!(
                "closed with {code} while waiting for {}",
                String::from_utf8_lossy(needle)
            ),
        }
    }
}

/// A heartbeat frame in the dialect (Socket.IO's heartbeat is server-driven: nothing).
pub fn ping(dialect: Dialect) -> Option<&'static str> {
    match dialect {
        Dialect::Tether => Some(r#"{"type":"ping"}"#),
        Dialect::SocketIo => None,
    }
}

/// The answer a dialect needs to a server frame (Engine.IO ping "2" wants pong "3").
pub fn answer(dialect: Dialect, text: &[u8]) -> Option<&'static str> {
    (dialect == Dialect::SocketIo && text == b"2").then_some("3")
}
