//! The embedded broker: everything in this process's memory, for one node. It is what
//! `tether-server` runs when no Redis is configured, so a newcomer can start the gateway
//! with one command. Nothing survives a restart (the log says so at start).

use super::idempotency;
use super::inbound::InboundLog;
use super::inbox::{Inbox, Retention};
use super::presence;
use super::{
    frame_with_seq, AckOutcome, Admission, Broker, BrokerError, ClusterStats, InboundMessage,
    Lease, Replay, StoreOutcome, UserDelivery,
};
use crate::clock::now_ms;
use crate::hub::{ConnInfo, Hub, Outgoing, Topic};
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
    ) -> Result<UserDelivery, BrokerError> {
        let mut inboxes = self.inboxes.lock();
        let inbox = inboxes.entry(Self::key(app, user)).or_default();
        let (seq, frame) = inbox.append(now_ms(), self.settings.retention, |seq| {
            frame_with_seq(seq, body)
        });
        let delivered = self.hub.deliver_to_user(
            app,
            user,
            &Outgoing {
                text: frame,
                seq: Some(seq),
            },
        );
        Ok(UserDelivery { seq, delivered })
    }

    async fn send_to_room(
        &self,
        app: &str,
        room: &str,
        frame: Utf8Bytes,
    ) -> Result<Option<u64>, BrokerError> {
        Ok(Some(self.hub.deliver_to_room(
            app,
            room,
            &Outgoing {
                text: frame,
                seq: None,
            },
        )))
    }

    async fn send_to_app(&self, app: &str, frame: Utf8Bytes) -> Result<(), BrokerError> {
        self.hub.deliver_to_app(
            app,
            &Outgoing {
                text: frame,
                seq: None,
            },
        );
        Ok(())
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
