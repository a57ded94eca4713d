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
use metrics::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tether_protocol::api::{Health, InboundPage};
use tether_protocol::server::RoomPresence;

/// The histogram every operation is recorded in.
pub const OPERATION_DURATION: &str = "tether_broker_operation_duration_seconds";

/// The two histograms of one operation, registered once: recording is then an atomic
/// push, not a registry lookup per call (acks and app messages call the broker each).
struct Pair {
    ok: Histogram,
    error: Histogram,
}

impl Pair {
    fn new(op: &'static str) -> Pair {
        Pair {
            ok: metrics::histogram!(OPERATION_DURATION, "op" => op, "outcome" => "ok"),
            error: metrics::histogram!(OPERATION_DURATION, "op" => op, "outcome" => "error"),
        }
    }

    async fn time<T>(
        &self,
        call: impl Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        let started = Instant::now();
        let result = call.await;
        let histogram = if result.is_ok() {
            &self.ok
        } else {
            &self.error
        };
        histogram.record(started.elapsed().as_secs_f64());
        result
    }
}

/// One [`Pair`] per timed operation, named as the `op` label says.
macro_rules! operations {
    ($($op:ident),* $(,)?) => {
        struct Operations {
            $($op: Pair,)*
        }

        impl Operations {
            fn new() -> Operations {
                Operations { $($op: Pair::new(stringify!($op)),)* }
            }
        }
    };
}

operations!(
    admit,
    release,
    subscribe,
    unsubscribe,
    send_to_user,
    send_to_room,
    send_to_app,
    publish_to_stream,
    read_stream,
    presence_enter,
    presence_leave,
    room_presence,
    kick_user,
    open_inbox,
    read_inbox,
    ack_inbox,
    store_inbound,
    read_inbound,
    cluster_stats,
);

/// Times the broker it wraps.
pub struct Timed {
    inner: Arc<dyn Broker>,
    ops: Operations,
}

impl Timed {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Broker>) -> Timed {
        // The handles must come from the process's recorder, installed here if not yet.
        crate::metrics::prometheus();
        Timed {
            inner,
            ops: Operations::new(),
        }
    }
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
        self.ops.admit.time(self.inner.admit(lease, limit)).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), BrokerError> {
        self.ops.release.time(self.inner.release(lease)).await
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        self.ops.subscribe.time(self.inner.subscribe(topic)).await
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        self.ops
            .unsubscribe
            .time(self.inner.unsubscribe(topic))
            .await
    }

    async fn send_to_user(
        &self,
        app: &str,
        user: &str,
        body: &str,
        marker: Option<&Marker>,
    ) -> Result<Marked<UserDelivery>, BrokerError> {
        let call = self.inner.send_to_user(app, user, body, marker);
        self.ops.send_to_user.time(call).await
    }

    async fn send_to_room(
        &self,
        app: &str,
        room: &str,
        frame: Utf8Bytes,
        marker: Option<&Marker>,
    ) -> Result<Marked<Option<u64>>, BrokerError> {
        let call = self.inner.send_to_room(app, room, frame, marker);
        self.ops.send_to_room.time(call).await
    }

    async fn send_to_app(
        &self,
        app: &str,
        frame: Utf8Bytes,
        marker: Option<&Marker>,
    ) -> Result<Marked<()>, BrokerError> {
        self.ops
            .send_to_app
            .time(self.inner.send_to_app(app, frame, marker))
            .await
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
        self.ops.publish_to_stream.time(call).await
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
        self.ops.read_stream.time(call).await
    }

    async fn presence_enter(
        &self,
        app: &str,
        room: &str,
        conn: &ConnRef,
        member: &ConnInfo,
    ) -> Result<(), BrokerError> {
        let call = self.inner.presence_enter(app, room, conn, member);
        self.ops.presence_enter.time(call).await
    }

    async fn presence_leave(
        &self,
        app: &str,
        room: &str,
        conn: &ConnRef,
    ) -> Result<(), BrokerError> {
        self.ops
            .presence_leave
            .time(self.inner.presence_leave(app, room, conn))
            .await
    }

    async fn room_presence(&self, app: &str, room: &str) -> Result<RoomPresence, BrokerError> {
        self.ops
            .room_presence
            .time(self.inner.room_presence(app, room))
            .await
    }

    async fn kick_user(&self, app: &str, user: &str) -> Result<u64, BrokerError> {
        self.ops
            .kick_user
            .time(self.inner.kick_user(app, user))
            .await
    }

    async fn open_inbox(
        &self,
        app: &str,
        user: &str,
        device: Option<&str>,
        since: Option<u64>,
    ) -> Result<Replay, BrokerError> {
        let call = self.inner.open_inbox(app, user, device, since);
        self.ops.open_inbox.time(call).await
    }

    async fn read_inbox(
        &self,
        app: &str,
        user: &str,
        after: u64,
    ) -> Result<Vec<(u64, Utf8Bytes)>, BrokerError> {
        self.ops
            .read_inbox
            .time(self.inner.read_inbox(app, user, after))
            .await
    }

    async fn ack_inbox(
        &self,
        app: &str,
        user: &str,
        device: Option<&str>,
        seq: u64,
    ) -> Result<AckOutcome, BrokerError> {
        self.ops
            .ack_inbox
            .time(self.inner.ack_inbox(app, user, device, seq))
            .await
    }

    async fn store_inbound(&self, message: InboundMessage) -> Result<StoreOutcome, BrokerError> {
        self.ops
            .store_inbound
            .time(self.inner.store_inbound(message))
            .await
    }

    async fn read_inbound(
        &self,
        app: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<InboundPage, BrokerError> {
        self.ops
            .read_inbound
            .time(self.inner.read_inbound(app, after, limit))
            .await
    }

    async fn cluster_stats(&self) -> Result<ClusterStats, BrokerError> {
        self.ops
            .cluster_stats
            .time(self.inner.cluster_stats())
            .await
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
