//! The WebSocket side of the gateway: the handshake that decides who may connect
//! ([`handshake`]), and the task that serves one connection ([`connection`]).

pub mod admission;
pub mod connection;
#[cfg(feature = "autobahn-echo")]
pub mod echo;
pub mod handshake;
pub mod origin;
pub mod presence_events;
pub mod streams;
pub mod ws;
