//! Tether SDK core: a mobile real-time connection that survives what a phone does to it.
//!
//! [`TetherClient`] (exported to Kotlin, Swift and React Native through uniffi) owns one
//! engine task on the SDK's runtime. The engine runs the pure connection state machine
//! ([`engine::state`]), the WebSocket transport ([`transport`]), the heartbeat, the durable
//! outbound queue in sled ([`queue`]), the inbox cursor ([`inbox`]) and the stream
//! positions ([`streams`]). See `docs/sdk.md`.

uniffi::setup_scaffolding!();

#[cfg(any(target_os = "android", test))]
pub mod android;
pub mod callbacks;
pub mod client;
pub mod config;
pub mod engine;
pub mod error;
pub mod inbox;
pub mod lifecycle;
pub mod logging;
pub mod presence;
pub mod queue;
pub mod runtime;
pub mod send_options;
pub mod streams;
pub mod transport;

pub use callbacks::{EventListener, InboundMessage, LogLevel, LogSink, TokenError, TokenProvider};
pub use client::{ClientStats, StartOptions, TetherClient};
pub use config::ClientConfig;
pub use engine::state::ConnectionStatus;
pub use error::{ErrorKind, TetherError, TetherResult};
pub use lifecycle::{AppState, NetworkKind, NetworkState};
pub use logging::set_log_sink;
pub use presence::{PresenceMember, RoomPresence};
pub use send_options::SendOptions;
pub use tether_protocol as protocol;
