//! Bodies of the gateway's backend HTTP API (docs/protocol.md §9), shared by the gateway,
//! its tests, the bench harness and any Rust backend that calls it.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// The message part of a send request.
#[derive(Debug, Serialize, Deserialize)]
pub struct OutgoingMessage {
    /// Message type (`[a-z0-9_.:-]`, 1-64, not reserved).
    #[serde(rename = "type")]
    pub kind: String,
    /// Optional id chosen by the backend; the gateway makes one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

impl OutgoingMessage {
    /// A message of `kind` carrying `data` (any serialisable value).
    pub fn new<T: Serialize + ?Sized>(kind: impl Into<String>, data: &T) -> OutgoingMessage {
        OutgoingMessage {
            kind: kind.into(),
            id: None,
            data: Some(crate::envelope::to_raw(data)),
        }
    }

    /// The same message with the backend's own id.
    pub fn with_id(mut self, id: impl Into<String>) -> OutgoingMessage {
        self.id = Some(id.into());
        self
    }
}

/// `POST /v1/send/user`
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendToUser {
    /// The user (`sub`).
    pub user_id: String,
    /// The app.
    pub app: String,
    /// The message.
    pub message: OutgoingMessage,
}

/// Answer to `POST /v1/send/user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentToUser {
    /// The message id.
    pub id: String,
    /// Its inbox seq.
    pub seq: u64,
    /// Live connections of the user in the app, on all nodes, at send time.
    pub delivered: u64,
    /// Always true: the message is in the inbox.
    pub queued: bool,
}

/// Most users one `POST /v1/send/users` reaches.
pub const MAX_USERS_PER_SEND: usize = 1000;

/// `POST /v1/send/users`: one message to several users, each through their own inbox.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendToUsers {
    /// The users (`sub`), 1 to [`MAX_USERS_PER_SEND`], no repeats.
    pub user_ids: Vec<String>,
    /// The app.
    pub app: String,
    /// The message (one id for every user).
    pub message: OutgoingMessage,
}

/// Answer to `POST /v1/send/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentToUsers {
    /// The message id, the same in every user's inbox.
    pub id: String,
    /// Users whose inbox has it.
    pub sent: u64,
    /// Users whose inbox could not be reached (each with its error below).
    pub failed: u64,
    /// One entry per user, in the request's order.
    pub users: Vec<UserSent>,
}

/// One user's part of [`SentToUsers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSent {
    /// The user.
    pub user_id: String,
    /// Its seq in this user's inbox, when stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Live connections of the user at send time, when stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// Why this user's inbox could not be reached (nothing stored for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::HttpErrorDetail>,
}

/// `POST /v1/send/room`
#[derive(Debug, Serialize, Deserialize)]
pub struct SendToRoom {
    /// The room.
    pub room: String,
    /// The app.
    pub app: String,
    /// The message.
    pub message: OutgoingMessage,
}

/// Answer to `POST /v1/send/room`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentToRoom {
    /// The message id.
    pub id: String,
    /// Members reached (local + remote), or `null` when the count is not known.
    pub delivered: Option<u64>,
    /// The message's offset in the room's stream (rooms with history only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The room stream's epoch, with `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `POST /v1/send/app`
#[derive(Debug, Serialize, Deserialize)]
pub struct SendToApp {
    /// The app.
    pub app: String,
    /// The message.
    pub message: OutgoingMessage,
}

/// Answer to `POST /v1/send/app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentToApp {
    /// The message id.
    pub id: String,
    /// The message's offset in the app's broadcast stream (when the gateway keeps one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The app stream's epoch, with `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// Answer to `DELETE /v1/connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kicked {
    /// Connections closed with 4403 (on all nodes when known).
    pub kicked: u64,
}

/// One app message as `GET /v1/inbound` returns it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundRecord {
    /// Position in the app's inbound log; pass it as `after` to read on.
    pub cursor: String,
    /// The sender.
    pub user_id: String,
    /// The sender's device, when it gave one.
    pub device: Option<String>,
    /// Message type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The client's message id.
    pub id: String,
    /// Payload.
    pub data: Option<Box<RawValue>>,
    /// When the gateway stored it (ms since the epoch).
    pub ts: u64,
}

/// Answer to `GET /v1/inbound`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InboundPage {
    /// Oldest first.
    pub messages: Vec<InboundRecord>,
    /// The cursor to pass as `after` next time (the last message's, or `after` itself).
    pub next: Option<String>,
}

/// Answer to `GET /v1/rooms`: the rooms of an app with members on the answering node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomList {
    /// The node that answered (the list is of its connections only).
    pub server_id: String,
    /// The app.
    pub app: String,
    /// Rooms of the app with members on this node, listed or not.
    pub total: u64,
    /// Most connections first, then by name; at most [`RoomList::MAX_ROOMS`].
    pub rooms: Vec<RoomCount>,
    /// Whether `rooms` stops short of `total`.
    pub truncated: bool,
}

impl RoomList {
    /// Rooms listed at most.
    pub const MAX_ROOMS: usize = 1000;
}

/// One room of a [`RoomList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomCount {
    /// The room.
    pub room: String,
    /// This node's connections in it.
    pub connections: u64,
}

/// Answer to `GET /v1/inbox`: what a user's inbox keeps (the messages their devices get
/// replayed when they connect), after a seq.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxPage {
    /// The app.
    pub app: String,
    /// The user.
    pub user_id: String,
    /// The messages after `after`, oldest first, as clients receive them (each with `seq`).
    pub messages: Vec<Box<RawValue>>,
    /// Whether more follow (read on with `after` = the last one's seq).
    pub more: bool,
}

/// Answer to `GET /v1/history`: a room's (or the app's) stream after a position.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The room, or `null` for the app's broadcast stream.
    pub room: Option<String>,
    /// The stream's epoch now.
    pub epoch: String,
    /// The stream's newest offset (0: nothing published yet in this epoch).
    pub offset: u64,
    /// Whether `messages` starts right after `since` (false: the position's epoch is not
    /// this one, or its messages left the history; `messages` then holds what is kept).
    pub recovered: bool,
    /// The messages after `since` (or the oldest kept), oldest first, as clients receive
    /// them (each with `offset` and `epoch`).
    pub messages: Vec<Box<RawValue>>,
    /// Whether more messages follow (read on with `since` = the last one's offset).
    pub more: bool,
}

/// Answer to `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Connections on this node.
    pub total_connections: u64,
    /// Rooms with members on this node.
    pub total_rooms: u64,
    /// Connections on this node by app.
    pub connections_by_app: BTreeMap<String, u64>,
    /// Connections on this node by user type.
    pub connections_by_type: BTreeMap<String, u64>,
    /// This node.
    pub server_id: String,
    /// Connections registered cluster-wide.
    pub total_redis_connections: u64,
    /// Inbox messages kept cluster-wide.
    pub total_queued_messages: u64,
    /// Live gateway nodes.
    pub nodes: u64,
}

/// Answer to `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// `memory` for the embedded broker; absent with Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Round trip to Redis in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<u64>,
    /// State of each Redis connection (`main`, `subscriber`, `publisher`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_to_user_reads_the_documented_body() {
        let body: SendToUser = serde_json::from_str(
            r#"{"userId":"u1","app":"a","message":{"type":"order_update","data":{"orderId":123}}}"#,
        )
        .unwrap();
        assert_eq!(body.user_id, "u1");
        assert_eq!(body.message.kind, "order_update");
        assert_eq!(body.message.data.unwrap().get(), r#"{"orderId":123}"#);
    }

    #[test]
    fn stats_use_camel_case() {
        let stats = Stats {
            total_connections: 1,
            total_rooms: 0,
            connections_by_app: BTreeMap::from([("a".into(), 1)]),
            connections_by_type: BTreeMap::from([("customer".into(), 1)]),
            server_id: "s".into(),
            total_redis_connections: 1,
            total_queued_messages: 0,
            nodes: 1,
        };
        let json = serde_json::to_string(&stats).unwrap();
        for key in [
            "totalConnections",
            "connectionsByApp",
            "totalRedisConnections",
            "totalQueuedMessages",
            "nodes",
        ] {
            assert!(json.contains(key), "{json}");
        }
    }

    #[test]
    fn memory_health_has_the_documented_shape() {
        let health = Health {
            status: "healthy".into(),
            broker: Some("memory".into()),
            latency: None,
            connections: None,
        };
        assert_eq!(
            serde_json::to_string(&health).unwrap(),
            r#"{"status":"healthy","broker":"memory"}"#
        );
    }
}
