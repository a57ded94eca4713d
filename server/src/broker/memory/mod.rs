//! The embedded broker: everything in this process's memory, for one node. It is what
//! `tether-server` runs when no Redis is configured, so a newcomer can start the gateway
//! with one command. Nothing survives a restart (the log says so at start).

use super::idempotency::{self, Marked, Marker};
use super::inbound::InboundLog;
use super::inbox::{Inbox, Retention};
use super::presence;
use super::stream::{History, HistoryLimits, ReadFrom, StreamAppended, StreamName, StreamRead};
use super::{
    frame_with_seq, AckOutcome, Admission, Broker, BrokerError, ClusterStats, InboundMessage,
    Lease, Replay, StoreOutcome, UserDelivery,
};
use crate::clock::now_ms;
use crate::hub::{ConnInfo, Hub, QueuedFrame, Topic};
use crate::ids::ConnRef;
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tether_protocol::api::{Health, InboundPage};
use tether_protocol::close;
use tether_protocol::server::RoomPresence;

/// Limits the embedded broker applies.
#[derive(Debug, Clone, Copy)]
pub struct MemorySettings {
    /// Inbox retention.
    pub retention: Retention,
    /// Dedup window for client message ids, ms.
    pub dedup_ttl_ms: u64,
    /// App messages kept per app.
    pub inbound_max_per_app: usize,
}

type UserKey = (Arc<str>, Arc<str>);

/// What a keyed send marked, by (app, what it sent to, key).
type MarkerKey = (String, String, String);

/// A marker's answer (see [`Marker`]).
#[derive(Debug, Clone)]
enum MarkedSend {
    User(UserDelivery),
    Stream(StreamAppended),
    Live(Option<u64>),
}

/// The markers of keyed sends: (fingerprint, answer, expiry ms).
#[derive(Default)]
struct Markers(HashMap<MarkerKey, (String, MarkedSend, u64)>);

impl Markers {
    /// The answer an earlier send under `marker` recorded for `target`, if any.
    fn find(
        &mut self,
        app: &str,
        target: &str,
        marker: Option<&Marker>,
        now: u64,
    ) -> Result<Option<MarkedSend>, BrokerError> {
        let Some(marker) = marker else {
            return Ok(None);
        };
        // Expired markers go when the map has grown (amortised: never a scan per send).
        if self.0.len() >= 1024 && self.0.len().is_power_of_two() {
            self.0.retain(|_, (_, _, expires)| *expires > now);
        }
        let key = (app.to_owned(), target.to_owned(), marker.key.clone());
        match self.0.get(&key) {
            Some((_, _, expires)) if *expires <= now => Ok(None),
            Some((fingerprint, _, _)) if *fingerprint != marker.fingerprint => {
                Err(BrokerError::KeyReused)
            }
            Some((_, answer, _)) => Ok(Some(answer.clone())),
            None => Ok(None),
        }
    }

    fn record(
        &mut self,
        app: &str,
        target: &str,
        marker: Option<&Marker>,
        answer: MarkedSend,
        now: u64,
    ) {
        if let Some(marker) = marker {
            self.0.insert(
                (app.to_owned(), target.to_owned(), marker.key.clone()),
                (
                    marker.fingerprint.clone(),
                    answer,
                    now.saturating_add(marker.ttl_ms),
                ),
            );
        }
    }
}

fn stream_target(stream: &StreamName) -> String {
    match stream {
        StreamName::Room(room) => format!("r:{room}"),
        StreamName::App => "a".to_owned(),
    }
}

/// The single-node broker.
pub struct MemoryBroker {
    hub: Arc<Hub>,
    settings: MemorySettings,
    // Three independent maps, each behind its own short-held lock; none is held across an
    // await. The inbox lock is held while delivering a user message to the hub so that
    // deliveries leave in seq order.
    leases: Mutex<HashMap<UserKey, Vec<Lease>>>,
    inboxes: Mutex<HashMap<UserKey, Inbox>>,
    inbound: Mutex<InboundLog>,
    idempotency: Mutex<idempotency::Records>,
    /// Streams by (app, name). Held while delivering a stream message to the hub, so
    /// deliveries leave in offset order.
    streams: Mutex<HashMap<(Arc<str>, StreamName), History>>,
    /// Markers of keyed sends; always locked last.
    markers: Mutex<Markers>,
}

impl MemoryBroker {
    /// A broker delivering to `hub`.
    pub fn new(hub: Arc<Hub>, settings: MemorySettings) -> MemoryBroker {
        MemoryBroker {
            hub,
            settings,
            leases: Mutex::default(),
            inboxes: Mutex::default(),
            inbound: Mutex::default(),
            idempotency: Mutex::default(),
            streams: Mutex::default(),
            markers: Mutex::default(),
        }
    }

    fn key(app: &str, user: &str) -> UserKey {
        (Arc::from(app), Arc::from(user))
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn idempotency(&self) -> &dyn idempotency::Store {
        self
    }

    async fn admit(&self, lease: &Lease, limit: u32) -> Result<Admission, BrokerError> {
        let mut leases = self.leases.lock();
        let held = leases
            .entry((lease.app.clone(), lease.user.clone()))
            .or_default();
        let mut replaced = Vec::new();
        if let Some(device) = &lease.device {
            held.retain(|l| {
                let same = l.device.as_ref() == Some(device);
                if same {
                    replaced.push(l.conn.clone());
                }
                !same
            });
        }
        if held.len() >= limit as usize {
            return Ok(Admission::Full);
        }
        // Exactly one more: most users hold one connection, and the default capacity (4)
        // would cost every connection three unused slots.
        held.reserve_exact(1);
        held.push(lease.clone());
        drop(leases);
        for conn in &replaced {
            self.hub.close_connection(
                conn.local,
                close::REPLACED,
                "replaced by a newer connection of this device",
            );
        }
        Ok(Admission::Admitted { replaced })
    }

    async fn release(&self, lease: &Lease) -> Result<(), BrokerError> {
        let mut leases = self.leases.lock();
        let key = (lease.app.clone(), lease.user.clone());
        if let Some(held) = leases.get_mut(&key) {
            held.retain(|l| l.conn != lease.conn);
            if held.is_empty() {
                leases.remove(&key);
            }
        }
        Ok(())
    }

    async fn subscribe(&self, _topic: &Topic) -> Result<(), BrokerError> {
        // One node: every message is already routed through this process's hub.
        Ok(())
    }

    async fn unsubscribe(&self, _topic: &Topic) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn send_to_user(
        &self,
        app: &str,
        user: &str,
        body: &str,
        marker: Option<&Marker>,
    ) -> Result<Marked<UserDelivery>, BrokerError> {
        let now = now_ms();
        let target = format!("u:{user}");
        let mut inboxes = self.inboxes.lock();
        if let Some(MarkedSend::User(found)) =
            self.markers.lock().find(app, &target, marker, now)?
        {
            return Ok(Marked::Found(found));
        }
        let inbox = inboxes.entry(Self::key(app, user)).or_default();
        let (seq, frame) = inbox.append(now, self.settings.retention, |seq| {
            frame_with_seq(seq, body)
        });
        let delivered = self
            .hub
            .deliver_to_user(app, user, &QueuedFrame::user(frame, seq));
        let delivery = UserDelivery { seq, delivered };
        self.markers
            .lock()
            .record(app, &target, marker, MarkedSend::User(delivery), now);
        metrics::counter!("tether_inbox_appended_total").increment(1);
        Ok(Marked::New(delivery))
    }

    async fn send_to_room(
        &self,
        app: &str,
        room: &str,
        frame: Utf8Bytes,
        marker: Option<&Marker>,
    ) -> Result<Marked<Option<u64>>, BrokerError> {
        let now = now_ms();
        let target = format!("r:{room}");
        let mut markers = self.markers.lock();
        if let Some(MarkedSend::Live(found)) = markers.find(app, &target, marker, now)? {
            return Ok(Marked::Found(found));
        }
        let delivered = Some(
            self.hub
                .deliver_to_room(app, room, &QueuedFrame::live(frame)),
        );
        markers.record(app, &target, marker, MarkedSend::Live(delivered), now);
        Ok(Marked::New(delivered))
    }

    async fn send_to_app(
        &self,
        app: &str,
        frame: Utf8Bytes,
        marker: Option<&Marker>,
    ) -> Result<Marked<()>, BrokerError> {
        let now = now_ms();
        let mut markers = self.markers.lock();
        if let Some(MarkedSend::Live(_)) = markers.find(app, "a", marker, now)? {
            return Ok(Marked::Found(()));
        }
        let delivered = self.hub.deliver_to_app(app, &QueuedFrame::live(frame));
        markers.record(app, "a", marker, MarkedSend::Live(Some(delivered)), now);
        Ok(Marked::New(()))
    }

    async fn publish_to_stream(
        &self,
        app: &str,
        stream: &StreamName,
        body: &str,
        limits: HistoryLimits,
        marker: Option<&Marker>,
    ) -> Result<Marked<StreamAppended>, BrokerError> {
        let now = now_ms();
        let target = stream_target(stream);
        let mut streams = self.streams.lock();
        if let Some(MarkedSend::Stream(found)) =
            self.markers.lock().find(app, &target, marker, now)?
        {
            return Ok(Marked::Found(found));
        }
        let history = stream_entry(&mut streams, app, stream, now);
        let (offset, frame) = history.append(now, limits, body);
        let epoch = history.epoch().clone();
        let outgoing = QueuedFrame::streamed(frame, stream.room(), offset, epoch.clone());
        let delivered = match stream {
            StreamName::Room(room) => self.hub.deliver_to_room(app, room, &outgoing),
            StreamName::App => self.hub.deliver_to_app(app, &outgoing),
        };
        let appended = StreamAppended {
            offset,
            epoch: epoch.to_string(),
            delivered: Some(delivered),
        };
        self.markers.lock().record(
            app,
            &target,
            marker,
            MarkedSend::Stream(appended.clone()),
            now,
        );
        Ok(Marked::New(appended))
    }

    async fn read_stream(
        &self,
        app: &str,
        stream: &StreamName,
        from: ReadFrom<'_>,
        limits: HistoryLimits,
        limit: usize,
    ) -> Result<StreamRead, BrokerError> {
        let now = now_ms();
        let mut streams = self.streams.lock();
        Ok(stream_entry(&mut streams, app, stream, now).read(from, now, limits, limit))
    }

    // One node: the hub's room index is the whole registry, kept by join and leave, so
    // there is nothing more to record.
    async fn presence_enter(
        &self,
        _app: &str,
        _room: &str,
        _conn: &ConnRef,
        _member: &ConnInfo,
    ) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn presence_leave(
        &self,
        _app: &str,
        _room: &str,
        _conn: &ConnRef,
    ) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn room_presence(&self, app: &str, room: &str) -> Result<RoomPresence, BrokerError> {
        let members = self.hub.room_members(app, room);
        Ok(presence::summarise(
            room,
            members
                .into_iter()
                .map(|(id, user, kind)| (self.hub.conn_ref(id).to_string(), user, kind)),
        ))
    }

    async fn kick_user(&self, app: &str, user: &str) -> Result<u64, BrokerError> {
        Ok(self
            .hub
            .close_user(app, user, close::KICKED, "kicked by the backend"))
    }

    async fn open_inbox(
        &self,
        app: &str,
        user: &str,
        device: Option<&str>,
        since: Option<u64>,
    ) -> Result<Replay, BrokerError> {
        let mut inboxes = self.inboxes.lock();
        let inbox = inboxes.entry(Self::key(app, user)).or_default();
        let (after, frames) = inbox.open(device, since, now_ms(), self.settings.retention);
        Ok(Replay { frames, after })
    }

    async fn read_inbox(
        &self,
        app: &str,
        user: &str,
        after: u64,
    ) -> Result<Vec<(u64, Utf8Bytes)>, BrokerError> {
        let mut inboxes = self.inboxes.lock();
        let Some(inbox) = inboxes.get_mut(&Self::key(app, user)) else {
            return Ok(Vec::new());
        };
        inbox.trim(now_ms(), self.settings.retention);
        Ok(inbox.after(after))
    }

    async fn ack_inbox(
        &self,
        app: &str,
        user: &str,
        device: Option<&str>,
        seq: u64,
    ) -> Result<AckOutcome, BrokerError> {
        let mut inboxes = self.inboxes.lock();
        let inbox = inboxes.entry(Self::key(app, user)).or_default();
        Ok(match inbox.ack(device, seq, now_ms()) {
            Ok(()) => AckOutcome::Recorded,
            Err(newest) => AckOutcome::BeyondNewest { newest },
        })
    }

    async fn store_inbound(&self, message: InboundMessage) -> Result<StoreOutcome, BrokerError> {
        Ok(self.inbound.lock().store(
            message,
            now_ms(),
            self.settings.dedup_ttl_ms,
            self.settings.inbound_max_per_app,
        ))
    }

    async fn read_inbound(
        &self,
        app: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<InboundPage, BrokerError> {
        let after = match after {
            None | Some("") => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                BrokerError::BadRequest(format!("after={text:?} is not a cursor from this gateway"))
            })?),
        };
        Ok(self.inbound.lock().read(app, after, limit))
    }

    async fn cluster_stats(&self) -> Result<ClusterStats, BrokerError> {
        let connections = self.leases.lock().values().map(|l| l.len() as u64).sum();
        let now = now_ms();
        let mut inboxes = self.inboxes.lock();
        let mut queued = 0;
        for inbox in inboxes.values_mut() {
            inbox.trim(now, self.settings.retention);
            queued += inbox.len() as u64;
        }
        Ok(ClusterStats {
            connections,
            queued_messages: queued,
            nodes: 1,
        })
    }

    async fn health(&self) -> Health {
        Health {
            status: "healthy".into(),
            broker: Some("memory".into()),
            latency: None,
            connections: None,
        }
    }

    async fn shutdown(&self) {
        self.leases.lock().clear();
    }

    fn halt(&self) {}
}

/// The stream `name` of `app`, made (with a new epoch) when it does not exist or went
/// unused for so long that a Redis stream's counter would have expired.
fn stream_entry<'a>(
    streams: &'a mut HashMap<(Arc<str>, StreamName), History>,
    app: &str,
    name: &StreamName,
    now: u64,
) -> &'a mut History {
    let key = (Arc::from(app), name.clone());
    let history = streams.entry(key).or_insert_with(|| History::new(now));
    if history.idle(now) {
        *history = History::new(now);
    }
    history
}

#[async_trait]
impl idempotency::Store for MemoryBroker {
    async fn claim_idempotency(
        &self,
        app: &str,
        key: &str,
        claim: &str,
        fingerprint: &str,
        ttl_ms: u64,
    ) -> Result<idempotency::Claim, BrokerError> {
        Ok(self
            .idempotency
            .lock()
            .claim(app, key, claim, fingerprint, ttl_ms, now_ms()))
    }

    async fn complete_idempotency(
        &self,
        app: &str,
        key: &str,
        pending: &str,
        done: &str,
    ) -> Result<bool, BrokerError> {
        Ok(self
            .idempotency
            .lock()
            .complete(app, key, pending, done, now_ms()))
    }

    async fn release_idempotency(
        &self,
        app: &str,
        key: &str,
        pending: &str,
    ) -> Result<(), BrokerError> {
        self.idempotency.lock().release(app, key, pending);
        Ok(())
    }
}
