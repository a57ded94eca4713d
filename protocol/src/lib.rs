//! Tether wire protocol, version 1 (`docs/protocol.md`).
//!
//! Everything both ends of a Tether connection must agree on lives here and nowhere else:
//! the JSON envelope, the typed client and server message kinds, the rules for names
//! (apps, devices, rooms, types, ids), the close codes with the reconnect advice that goes
//! with each, the error codes, and the bodies of the gateway's HTTP API. The crate does no
//! I/O; the SDK (`tether`) and the gateway (`tether-server`) both build on it.

pub mod api;
pub mod client;
pub mod close;
pub mod depth;
pub mod envelope;
pub mod error;
pub mod names;
pub mod server;
pub mod stream;

pub use client::{AppMessage, ClientMessage, FrameError};
pub use close::{CloseCode, ReconnectAdvice};
pub use envelope::Envelope;
pub use error::{ErrorCode, HttpErrorBody, HttpErrorCode};
pub use names::NameError;
pub use stream::{StreamJoin, StreamPosition};

/// The protocol version this crate implements.
pub const PROTOCOL_VERSION: u32 = 1;

/// Path of the WebSocket endpoint on the gateway.
pub const WS_PATH: &str = "/ws";
