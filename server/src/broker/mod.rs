//! The cross-node seam. Everything that has to be true for the whole cluster goes through
//! a [`Broker`]: the per-user connection limit, the durable inboxes, the de-duplicated
//! inbound log, and live delivery to users, rooms and apps on every node.
//!
//! Two implementations: [`memory::MemoryBroker`] (one node, nothing survives a restart;
//! what `tether-server` runs without Redis) and the Redis one. The gateway code only
//! sees this trait. A broker delivers to this node's connections through the [`Hub`].

pub mod idempotency;
pub mod inbound;
pub mod inbox;
pub mod memory;
pub mod presence;
pub mod redis;
pub mod stream;
pub mod timed;

use crate::hub::Topic;
use crate::ids::ConnRef;
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use idempotency::{Marked, Marker};
use serde_json::value::RawValue;
use std::sync::Arc;
use stream::{HistoryLimits, ReadFrom, StreamAppended, StreamName, StreamRead};
use tether_protocol::api::{Health, InboundPage};
use tether_protocol::server::RoomPresence;
use thiserror::Error;

/// A broker failure. Whatever needed the broker did not happen; callers report it, never
/// a false success.
#[derive(Debug, Clone, Error)]
pub enum BrokerError {
    /// The backing store cannot be reached or refused the operation; retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// A request the broker cannot serve as asked (a malformed cursor, ...).
    #[error("{0}")]
    BadRequest(String),
    /// The send's `Idempotency-Key` marks a different request (see
    /// [`idempotency::Marker`]); nothing was sent.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
}

/// A connection's claim on one of its user's connection slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// App.
    pub app: Arc<str>,
    /// User.
    pub user: Arc<str>,
    /// Device, when the client gave one (a new connection of the same device replaces the old).
    pub device: Option<Arc<str>>,
    /// The connection.
    pub conn: ConnRef,
}

impl Lease {
    /// The slot of connection `conn`, who is `info`.
    pub fn of(info: &crate::hub::ConnInfo, conn: ConnRef) -> Lease {
        Lease {
            app: info.app.clone(),
            user: info.user.clone(),
            device: info.device.clone(),
            conn,
        }
    }
}

/// The answer to a connection-limit check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The connection holds a slot. `replaced` lists older connections of the same device,
    /// which the broker has asked to close with 4409.
    Admitted {
        /// Connections replaced by this one.
        replaced: Vec<ConnRef>,
    },
    /// The user is at the limit with other devices.
    Full,
}

/// Inserts `seq` into an encoded envelope that lacks it (field order does not matter in JSON,
/// so the broker never decodes the body; a Lua script can do the same with two strings).
pub fn frame_with_seq(seq: u64, body: &str) -> String {
    let rest = body.strip_prefix('{').unwrap_or(body);
    format!("{{\"seq\":{seq},{rest}")
}

/// The result of a send to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserDelivery {
    /// The inbox seq given to the message.
    pub seq: u64,
    /// Live connections of the user in the app, on all nodes, at send time.
    pub delivered: u64,
}

/// What to replay to a connecting device.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Inbox messages after the device's position, oldest first: (seq, frame).
    pub frames: Vec<(u64, Utf8Bytes)>,
    /// The position replay started after (max of the device cursor and `since`).
    pub after: u64,
}

/// The result of a cumulative inbox ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The device's cursor is at (at least) the acked seq.
    Recorded,
    /// The seq is above the newest message of the inbox.
    BeyondNewest {
        /// The newest seq.
        newest: u64,
    },
}

/// A client app message on its way to the backend.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// App.
    pub app: Arc<str>,
    /// Sender.
    pub user: Arc<str>,
    /// Sender's device.
    pub device: Option<Arc<str>>,
    /// Type.
    pub kind: String,
    /// The client's id.
    pub id: String,
    /// Payload.
    pub data: Option<Box<RawValue>>,
    /// When the gateway received it.
    pub ts: u64,
}

/// Whether an inbound message was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored for the backend.
    Stored,
    /// Already stored within the dedup window; not stored again.
    Duplicate,
}

/// Cluster-wide counts for `/v1/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Connections registered on all nodes.
    pub connections: u64,
    /// Inbox messages kept.
    pub queued_messages: u64,
    /// Live nodes.
    pub nodes: u64,
}

/// The cross-node backplane.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// `memory` or `redis`.
    fn name(&self) -> &'static str;

    /// Where the backend API's `Idempotency-Key` records live, so every gateway of the
    /// cluster sees them.
    fn idempotency(&self) -> &dyn idempotency::Store;

    /// Checks the per-user limit and reserves a slot in one step (replacing older
    /// connections of the same device).
    async fn admit(&self, lease: &Lease, limit: u32) -> Result<Admission, BrokerError>;
    /// Gives a slot back (connection closed or never upgraded). Releasing twice is harmless.
    async fn release(&self, lease: &Lease) -> Result<(), BrokerError>;

    /// Starts routing a topic's messages to this node (it gained its first member here).
    /// Returns once messages published from now on will arrive.
    async fn subscribe(&self, topic: &Topic) -> Result<(), BrokerError>;
    /// Stops routing a topic here (its last local member left). Implementations check
    /// [`Hub::wants`](crate::hub::Hub::wants) so a late unsubscribe never undoes a newer
    /// subscribe.
    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BrokerError>;

    /// Appends to the user's inbox and delivers live on every node, in seq order. `body`
    /// is the encoded envelope without `seq` ([`crate::backend_message::Encoded::body`]). With a
    /// marker, a send that finds the marker of an earlier one sends nothing and answers its
    /// delivery (see [`Marker`]).
    async fn send_to_user(
        &self,
        app: &str,
        user: &str,
        body: &str,
        marker: Option<&Marker>,
    ) -> Result<Marked<UserDelivery>, BrokerError>;
    /// Delivers to the members of a room without history on every node; the count when
    /// known. Marked like [`Broker::send_to_user`].
    async fn send_to_room(
        &self,
        app: &str,
        room: &str,
        frame: Utf8Bytes,
        marker: Option<&Marker>,
    ) -> Result<Marked<Option<u64>>, BrokerError>;
    /// Delivers to every connection of the app on every node (an app without history).
    async fn send_to_app(
        &self,
        app: &str,
        frame: Utf8Bytes,
        marker: Option<&Marker>,
    ) -> Result<Marked<()>, BrokerError>;
    /// Appends to a stream's history and delivers live on every node, in offset order, in
    /// one step. `body` is the encoded envelope without `offset` and `epoch`. Marked like
    /// [`Broker::send_to_user`].
    async fn publish_to_stream(
        &self,
        app: &str,
        stream: &StreamName,
        body: &str,
        limits: HistoryLimits,
        marker: Option<&Marker>,
    ) -> Result<Marked<StreamAppended>, BrokerError>;
    /// Reads a stream's history from `from`, at most `limit` messages. A stream nobody
    /// published to yet gets its epoch here, so the answer always has one.
    async fn read_stream(
        &self,
        app: &str,
        stream: &StreamName,
        from: ReadFrom<'_>,
        limits: HistoryLimits,
        limit: usize,
    ) -> Result<StreamRead, BrokerError>;
    /// Records that a connection joined a room, for [`Broker::room_presence`].
    async fn presence_enter(
        &self,
        app: &str,
        room: &str,
        conn: &ConnRef,
        member: &crate::hub::ConnInfo,
    ) -> Result<(), BrokerError>;
    /// Records that a connection left a room (or closed).
    async fn presence_leave(
        &self,
        app: &str,
        room: &str,
        conn: &ConnRef,
    ) -> Result<(), BrokerError>;
    /// Who is in a room, on every node.
    async fn room_presence(&self, app: &str, room: &str) -> Result<RoomPresence, BrokerError>;

    /// Closes every connection of the user with 4403 on every node; the count when known.
    async fn kick_user(&self, app: &str, user: &str) -> Result<u64, BrokerError>;

    /// Positions a connecting device in the user's inbox and returns what to replay.
    async fn open_inbox(
        &self,
        app: &str,
        user: &str,
        device: Option<&str>,
        since: Option<u64>,
    ) -> Result<Replay, BrokerError>;
    /// Inbox messages after `after`, oldest first, without touching any cursor (a
    /// connection catching up on what it may have missed live).
    async fn read_inbox(
        &self,
        app: &str,
        user: &str,
        after: u64,
    ) -> Result<Vec<(u64, Utf8Bytes)>, BrokerError>;
    /// Records a device's cumulative ack.
    async fn ack_inbox(
        &self,
        app: &str,
        user: &str,
        device: Option<&str>,
        seq: u64,
    ) -> Result<AckOutcome, BrokerError>;

    /// Stores a client app message for the backend, once per (app, user, id).
    async fn store_inbound(&self, message: InboundMessage) -> Result<StoreOutcome, BrokerError>;
    /// Reads stored app messages after a cursor, oldest first.
    async fn read_inbound(
        &self,
        app: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<InboundPage, BrokerError>;

    /// Cluster-wide counts.
    async fn cluster_stats(&self) -> Result<ClusterStats, BrokerError>;
    /// Health for `/health`; `status` is `healthy` only when everything works.
    async fn health(&self) -> Health;
    /// Drops this node's registry entries (graceful shutdown).
    async fn shutdown(&self);
    /// Stops background work at once without cleaning up, as a crashed node would.
    fn halt(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_goes_in_front_of_the_body() {
        assert_eq!(
            frame_with_seq(42, r#"{"type":"x","id":"1"}"#),
            r#"{"seq":42,"type":"x","id":"1"}"#
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&frame_with_seq(7, r#"{"type":"t"}"#)).unwrap();
        assert_eq!(parsed["seq"], 7);
    }
}
