//! Identifiers the gateway makes: node ids, connection ids and message ids.

use crate::clock::now_ms;
use std::fmt;
use std::sync::Arc;

/// A new node id, `server_<ms>_<6 hex>` as in docs/protocol.md §9.
pub fn new_server_id() -> String {
    format!(
        "server_{}_{:06x}",
        now_ms(),
        rand::random::<u32>() & 0x00ff_ffff
    )
}

/// A new message id for messages the gateway originates: a UUIDv7, so ids sort by time.
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A connection, unique in the cluster: the node holding it and a number local to that node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// The node's server id.
    pub node: Arc<str>,
    /// The number the node gave the connection.
    pub local: u64,
}

impl fmt::Display for ConnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.node, self.local)
    }
}

impl ConnRef {
    /// Parses the `Display` form back.
    pub fn parse(text: &str) -> Option<ConnRef> {
        let (node, local) = text.rsplit_once('-')?;
        Some(ConnRef {
            node: Arc::from(node),
            local: local.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_have_the_documented_shape() {
        let id = new_server_id();
        let parts: Vec<_> = id.split('_').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[0], "server");
        assert!(parts[1].parse::<u64>().is_ok());
        assert_eq!(parts[2].len(), 6);
    }

    #[test]
    fn connection_refs_round_trip() {
        let r = ConnRef {
            node: Arc::from("server_1_abcdef"),
            local: 42,
        };
        assert_eq!(ConnRef::parse(&r.to_string()), Some(r));
        assert_eq!(ConnRef::parse("nodash"), None);
    }

    #[test]
    fn message_ids_are_unique_and_valid() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
        assert!(tether_protocol::names::validate_id(&a).is_ok());
    }
}
