//! A [`Broker`] that times every operation of the one it wraps into the histogram
//! `tether_broker_operation_duration_seconds{op, outcome}` (`outcome`: `ok` or `error`).
//! The gateway runs its broker inside one, so both implementations are measured alike
//! and neither carries metrics code.

use super::idempotency::{self, Marked, Marker};
use super::stream::{HistoryLimits, ReadFrom, StreamAppended, StreamName, StreamRead};
use super::{
    AckOutcome, Admission, Broker, BrokerError, ClusterStats, InboundMessage, Lease, Replay,
    StoreOutcome, UserDelivery,
};
use crate::hub::{ConnInfo, Topic};
use crate::ids::ConnRef;
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tether_protocol::api::{Health, InboundPage};
use tether_protocol::server::RoomPresence;

/// The histogram every operation is recorded in.
pub const OPERATION_DURATION: &str = "tether_broker_operation_duration_seconds";

/// Times the broker it wraps.
pub struct Timed {
    inner: Arc<dyn Broker>,
}

impl Timed {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Broker>) -> Timed {
        Timed { inner }
    }
}

async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    let started = Instant::now();
    let result = call.await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!(OPERATION_DURATION, "op" => op, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

#[async_trait]
impl Broker for Timed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn idempotency(&self) -> &dyn idempotency::Store {
        self.inner.idempotency()
    }

    async fn admit(&self, lease: &Lease, limit: u32) -> Result<Admission, BrokerError> {
        timed("admit", self.inner.admit(lease, limit)).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), BrokerError> {
        timed("release", self.inner.release(lease)).await
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        timed("subscribe", self.inner.subscribe(topic)).await
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        timed("unsubscribe", self.inner.unsubscribe(topic)).await
    }

    async fn send_to_user(
        &self,
        app: &str,
        user: &str,
        body: &str,
        marker: Option<&Marker>,
    ) -> Result<Marked<UserDelivery>, BrokerError> {
        let call = self.inner.send_to_user(app, user, body, marker);
        timed("send_to_user", call).await
    }

    async fn send_to_room(
        &self,
        app: &str,
        room: &str,
        frame: Utf8Bytes,
        marker: Option<&Marker>,
    ) -> Result<Marked<Option<u64>>, BrokerError> {
        let call = self.inner.send_to_room(app, room, frame, marker);
        timed("send_to_room", call).await
    }

    async fn send_to_app(
        &self,
        app: &str,
        frame: Utf8Bytes,
        marker: Option<&Marker>,
    ) -> Result<Marked<()>, BrokerError> {
        timed("send_to_app", self.inner.send_to_app(app, frame, marker)).await
    }

    async fn publish_to_stream(
        &self,
        app: &str,
        stream: &StreamName,
        body: &str,
        limits: HistoryLimits,
        marker: Option<&Marker>,
    ) -> Result<Marked<StreamAppended>, BrokerError> {
        let call = self
            .inner
            .publish_to_stream(app, stream, body, limits, marker);
        timed("publish_to_stream", call).await
    }

    async fn read_stream(
        &self,
        app: &str,
        stream: &StreamName,
        from: ReadFrom<'_>,
        limits: HistoryLimits,
        limit: usize,
    ) -> Result<StreamRead, BrokerError> {
        let call = self.inner.read_stream(app, stream, from, limits, limit);
        timed("read_stream", call).await
    }

    async fn presence_enter(
        &self,
        app: &str,
        room: &str,
        conn: &ConnRef,
        member: &ConnInfo,
    ) -> Result<(), BrokerError> {
        let call = self.inner.presence_enter(app, room, conn, member);
        timed("presence_enter", call).await
    }

    async fn presence_leave(
        &self,
        app: &str,
        room: &str,
        conn: &ConnRef,
    ) -> Result<(), BrokerError> {
        timed("presence_leave", self.inner.presence_leave(app, room, conn)).await
    }

    async fn room_presence(&self, app: &str, room: &str) -> Result<RoomPresence, BrokerError> {
        timed("room_presence", self.inner.room_presence(app, room)).await
    }

    async fn kick_user(&self, app: &str, user: &str) -> Result<u64, BrokerError> {
        timed("kick_user", self.inner.kick_user(app, user)).await
    }

    async fn open_inbox(
        &self,
        app: &str,
        user: &str,
        device: Option<&str>,
        since: Option<u64>,
    ) -> Result<Replay, BrokerError> {
        let call = self.inner.open_inbox(app, user, device, since);
        timed("open_inbox", call).await
    }

    async fn read_inbox(
        &self,
        app: &str,
        user: &str,
        after: u64,
    ) -> Result<Vec<(u64, Utf8Bytes)>, BrokerError> {
        timed("read_inbox", self.inner.read_inbox(app, user, after)).await
    }

    async fn ack_inbox(
        &self,
        app: &str,
        user: &str,
        device: Option<&str>,
        seq: u64,
    ) -> Result<AckOutcome, BrokerError> {
        timed("ack_inbox", self.inner.ack_inbox(app, user, device, seq)).await
    }

    async fn store_inbound(&self, message: InboundMessage) -> Result<StoreOutcome, BrokerError> {
        timed("store_inbound", self.inner.store_inbound(message)).await
    }

    async fn read_inbound(
        &self,
        app: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<InboundPage, BrokerError> {
        timed("read_inbound", self.inner.read_inbound(app, after, limit)).await
    }

    async fn cluster_stats(&self) -> Result<ClusterStats, BrokerError> {
        timed("cluster_stats", self.inner.cluster_stats()).await
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    fn halt(&self) {
        self.inner.halt();
    }
}
