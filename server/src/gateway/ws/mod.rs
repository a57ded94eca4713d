//! WebSocket (RFC 6455) for the gateway, written for many mostly idle connections: the
//! upgrade handshake ([`upgrade`]), framing as pure functions ([`frame`]), and a socket
//! that keeps no buffers while idle and writes queued frames in one system call
//! ([`socket`]). No extensions (no permessage-deflate), no subprotocols.

pub mod frame;
pub mod socket;
pub mod upgrade;
