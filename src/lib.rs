//! Tether SDK core. The engine, transport and durable queue arrive with the SDK issue;
//! for now the crate re-exports the wire protocol it will speak.

pub use tether_protocol as protocol;
