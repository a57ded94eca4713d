//! Tether gateway: authenticates mobile clients with JWT, holds their WebSocket
//! connections, and routes messages from the backend to a user (durably, through a
//! per-user inbox), a room or a whole app, on one node or across many through Redis.
//!
//! Layout: [`config`] (environment and flags), [`auth`] (tokens, API key), [`gateway`]
//! (handshake and connection tasks), [`hub`] (this node's connections), [`broker`] (the
//! cross-node seam: embedded or Redis), [`api`] (HTTP `/v1`, health, metrics),
//! [`admin`] (the `/admin` dashboard), [`server`] (start and graceful shutdown).

pub mod admin;
pub mod api;
pub mod auth;
pub mod backend_message;
pub mod broker;
pub mod clock;
pub mod config;
pub mod dev;
pub mod gateway;
pub mod hub;
pub mod ids;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod publisher;
pub mod server;
pub mod state;

pub use config::Config;
pub use server::{Gateway, StartError};
