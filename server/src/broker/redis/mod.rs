//! The Redis broker: many gateway nodes behave as one.
//!
//! - Cluster-wide rules are Lua scripts ([`scripts`]) over keys that share a hash tag
//!   ([`keys`]): the connection limit with device replacement, the durable inbox with
//!   seq and cursors, de-duplicated inbound messages.
//! - Live delivery is pub/sub on one subscriber connection per node ([`subscriber`]):
//!   a node subscribes to a user, room or app channel only while it holds members for
//!   it (SSUBSCRIBE on a Redis Cluster), and each message is encoded once per node.
//! - A maintenance task ([`maintenance`]) keeps leases and the node heartbeat fresh,
//!   watches the three connections for `/health`, and after the subscriber reconnects
//!   asks every local connection to catch up from its inbox.
//! - Behind Redis Sentinel ([`sentinel`]) the three connections go to the master the
//!   sentinels name and move to the new one after a failover.

pub mod appender;
pub mod client;
pub mod keys;
mod maintenance;
pub mod ops;
mod presence;
pub mod scripts;
pub mod sentinel;
mod subscriber;

use super::idempotency::{self, Marked, Marker};
use super::inbox::Retention;
use super::stream::{HistoryLimits, ReadFrom, StreamAppended, StreamName, StreamRead};
use super::{
    AckOutcome, Admission, Broker, BrokerError, ClusterStats, InboundMessage, Lease, Replay,
    StoreOutcome, UserDelivery,
};
use crate::clock::now_ms;
use crate::hub::{ConnInfo, Hub, Topic};
use crate::ids::ConnRef;
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use client::{Conn, Target};
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tether_protocol::api::{Health, InboundPage, InboundRecord};
use tether_protocol::close;
use tether_protocol::server::RoomPresence;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Settings of the Redis broker.
#[derive(Clone)]
pub struct RedisSettings {
    /// Where Redis is (unused when `sentinel` is set).
    pub target: Target,
    /// Redis behind Sentinel: the master is looked up through the sentinels.
    pub sentinel: Option<sentinel::SentinelTarget>,
    /// Inbox retention.
    pub retention: Retention,
    /// Dedup window for client message ids, ms.
    pub dedup_ttl_ms: u64,
    /// Approximate length cap of each app's inbound stream.
    pub inbound_max_per_app: u64,
    /// Lifetime of a registry entry without refresh, ms.
    pub lease_ms: u64,
}

/// State of one of the broker's Redis connections, for `/health`.
#[derive(Default)]
struct LinkState {
    up: AtomicBool,
}

impl LinkState {
    fn set(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::AcqRel)
    }
    fn label(&self) -> &'static str {
        if self.up.load(Ordering::Acquire) {
            "ready"
        } else {
            "unavailable"
        }
    }
}

pub(crate) struct Inner {
    hub: Arc<Hub>,
    node: Arc<str>,
    settings: RedisSettings,
    /// Scripts and registry commands.
    main: Conn,
    /// Sends to users, batched on `main`.
    appender: appender::Appender,
    /// PUBLISH of room, app and control messages, so fan-out does not queue behind scripts.
    publisher: Conn,
    /// The node's one pub/sub connection.
    subscriber: Conn,
    /// Channels subscribed (confirmed by Redis).
    subscribed: Mutex<HashSet<String>>,
    /// Serialises subscribe/unsubscribe per channel (striped, so different channels do
    /// not wait for each other).
    stripes: Vec<tokio::sync::Mutex<()>>,
    main_link: LinkState,
    publisher_link: LinkState,
    subscriber_link: LinkState,
    /// Set when the subscriber lost its connection: live messages may have been missed.
    missed_live: AtomicBool,
    /// Orders a room's presence re-assertion (exclusive) against its joins and leaves
    /// (shared: they touch different fields), striped by room.
    presence_locks: Vec<tokio::sync::RwLock<()>>,
    /// Rooms whose presence write failed: this node's part is re-asserted next tick.
    presence_retry: Mutex<HashSet<(String, String)>>,
    /// Recent answers for large rooms, so repeated requests cost Redis one read a second.
    presence_cache: Mutex<HashMap<(String, String), (std::time::Instant, RoomPresence)>>,
    latency_ms: AtomicU64,
    /// Inbox count changes not yet written to the shared counters, by time bucket.
    queued_deltas: Mutex<HashMap<u64, i64>>,
    /// Sentinel state (the current master), when Redis is behind Sentinel.
    failover: Option<Arc<sentinel::Failover>>,
    stop: CancellationToken,
}

/// The broker.
pub struct RedisBroker {
    inner: Arc<Inner>,
}

pub(crate) fn unavailable(e: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {e}"))
}

impl RedisBroker {
    /// Connects the three connections, subscribes to this node's control channel and
    /// starts the background tasks. Fails when Redis cannot be reached.
    pub async fn connect(
        hub: Arc<Hub>,
        settings: RedisSettings,
    ) -> Result<RedisBroker, BrokerError> {
        let (push_tx, push_rx) = tokio::sync::mpsc::unbounded_channel();
        let (main, publisher, subscriber, failover) = match &settings.sentinel {
            Some(target) => {
                let opened = sentinel::open(target, push_tx).await.map_err(unavailable)?;
                (
                    opened.main,
                    opened.publisher,
                    opened.subscriber,
                    Some(opened.failover),
                )
            }
            None => {
                let main = client::open(&settings.target, None, 1)
                    .await
                    .map_err(unavailable)?;
                let publisher = client::open(&settings.target, None, 1)
                    .await
                    .map_err(unavailable)?;
                // The subscriber keeps trying to come back: it is what brings live delivery back.
                let subscriber = client::open(&settings.target, Some(push_tx), 1_000_000)
                    .await
                    .map_err(unavailable)?;
                (main, publisher, subscriber, None)
            }
        };
        let node = hub.node().clone();
        let inner = Arc::new(Inner {
            hub,
            node: node.clone(),
            settings,
            appender: appender::Appender::start(main.clone()),
            main,
            publisher,
            subscriber,
            subscribed: Mutex::default(),
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            main_link: LinkState::default(),
            publisher_link: LinkState::default(),
            subscriber_link: LinkState::default(),
            missed_live: AtomicBool::new(false),
            presence_locks: (0..64).map(|_| tokio::sync::RwLock::new(())).collect(),
            presence_retry: Mutex::default(),
            presence_cache: Mutex::default(),
            latency_ms: AtomicU64::new(0),
            queued_deltas: Mutex::default(),
            failover: failover.clone(),
            stop: CancellationToken::new(),
        });
        for link in [
            &inner.main_link,
            &inner.publisher_link,
            &inner.subscriber_link,
        ] {
            link.set(true);
        }
        inner
            .subscriber
            .subscribe(keys::node_channel(&node))
            .await
            .map_err(unavailable)?;
        tokio::spawn(subscriber::dispatch(inner.clone(), push_rx));
        tokio::spawn(maintenance::run(inner.clone()));
        if let Some(failover) = failover {
            tokio::spawn(sentinel::watch(inner.clone(), failover));
        }
        info!(node = %node, cluster = inner.subscriber.sharded(), "connected to Redis");
        Ok(RedisBroker { inner })
    }
}

impl Inner {
    /// Records inbox count changes for the cluster's `totalQueuedMessages`; the
    /// maintenance task writes them once a second.
    fn count_queued(&self, added_at: u64, trimmed_at: &[u64]) {
        let mut pending = self.queued_deltas.lock();
        for (bucket, delta) in ops::queued_deltas(self.settings.retention, added_at, trimmed_at) {
            *pending.entry(bucket).or_default() += delta;
        }
    }

    /// Serialises work on one channel: striped, so different channels rarely wait for
    /// each other.
    async fn serial(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.stripes[stripe_of(key, self.stripes.len())]
            .lock()
            .await
    }

    /// The lock ordering work on one room's presence.
    fn presence_lock(&self, key: &str) -> &tokio::sync::RwLock<()> {
        &self.presence_locks[stripe_of(key, self.presence_locks.len())]
    }

    /// Subscribes or unsubscribes a topic's channel to match what the hub needs now.
    async fn reconcile(&self, topic: &Topic) -> Result<(), BrokerError> {
        let channel = keys::channel(topic);
        let _serial = self.serial(&channel).await;
        let wanted = self.hub.wants(topic);
        let have = self.subscribed.lock().contains(&channel);
        if wanted && !have {
            self.subscriber
                .subscribe(&channel)
                .await
                .map_err(unavailable)?;
            self.subscribed.lock().insert(channel);
        } else if !wanted && have {
            self.subscriber
                .unsubscribe(&channel)
                .await
                .map_err(unavailable)?;
            self.subscribed.lock().remove(&channel);
        }
        Ok(())
    }
}

fn stripe_of(text: &str, stripes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    (hasher.finish() % stripes as u64) as usize
}

pub(crate) fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

fn frame(value: Value) -> Option<Utf8Bytes> {
    match value {
        Value::BulkString(bytes) => Utf8Bytes::try_from(bytes).ok(),
        Value::SimpleString(text) => Some(Utf8Bytes::from(text)),
        _ => None,
    }
}

/// How long an inbox read waits for a Sentinel move to finish before it gives up.
const MOVE_WAIT: Duration = Duration::from_secs(3);

/// Waits while the sentinels name a master this node has not moved to yet: an inbox read
/// there could show a client an entry the promotion discards (see `Failover::moving`).
/// Unavailable when the move takes longer than [`MOVE_WAIT`]; the catch-up after the move
/// then delivers what the read would have.
async fn inbox_readable(inner: &Inner) -> Result<(), BrokerError> {
    let Some(failover) = &inner.failover else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + MOVE_WAIT;
    while failover.moving() {
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::Unavailable(
                "redis: moving to the master the sentinels name".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A live-only room or app message: plain PUBLISH, or with its marker in one script.
pub(crate) async fn live_send(
    conn: &Conn,
    topic: &Topic,
    frame: &str,
    marker: Option<&Marker>,
) -> Result<Marked<()>, BrokerError> {
    match marker {
        None => ops::publish_frame(conn, topic, frame)
            .await
            .map(|()| Marked::New(())),
        Some(marker) => ops::publish_once(conn, topic, frame, marker).await,
    }
}

/// Reads `{seq, frame, seq, frame, ...}` (or offsets and frames).
pub(crate) fn seq_frames(
    values: impl Iterator<Item = Value>,
) -> Result<Vec<(u64, Utf8Bytes)>, BrokerError> {
    let values: Vec<Value> = values.collect();
    values
        .chunks(2)
        .map(|pair| match pair {
            [seq, body] => int(seq)
                .zip(frame(body.clone()))
                .ok_or_else(|| BrokerError::Unavailable("redis: malformed inbox entry".into())),
            _ => Err(BrokerError::Unavailable(
                "redis: malformed inbox reply".into(),
            )),
        })
        .collect()
}

#[async_trait]
impl Broker for RedisBroker {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn idempotency(&self) -> &dyn idempotency::Store {
        &self.inner.main
    }

    async fn admit(&self, lease: &Lease, limit: u32) -> Result<Admission, BrokerError> {
        let inner = &self.inner;
        let keys = keys::user(&lease.app, &lease.user);
        let reply: Vec<Value> = inner
            .main
            .invoke(
                scripts::ADMIT
                    .key(&keys.conns)
                    .arg(lease.conn.to_string())
                    .arg(lease.device.as_deref().unwrap_or(""))
                    .arg(limit)
                    .arg(inner.settings.lease_ms),
            )
            .await
            .map_err(unavailable)?;
        let mut reply = reply.into_iter();
        if reply.next().as_ref().and_then(int) != Some(1) {
            return Ok(Admission::Full);
        }
        let mut replaced = Vec::new();
        for id in reply {
            let Some(conn) = frame(id).and_then(|text| ConnRef::parse(&text)) else {
                continue;
            };
            if conn.node == inner.node {
                inner.hub.close_connection(
                    conn.local,
                    close::REPLACED,
                    "replaced by a newer connection of this device",
                );
            } else if let Err(e) = ops::publish(
                &inner.publisher,
                &keys::node_channel(&conn.node),
                &format!("r{}", conn.local),
            )
            .await
            {
                // The old connection's lease is gone already; it lingers until its node
                // hears of it or it closes by itself.
                warn!(error = %e, old = %conn, "could not tell a node to close a replaced connection");
            }
            replaced.push(conn);
        }
        Ok(Admission::Admitted { replaced })
    }

    async fn release(&self, lease: &Lease) -> Result<(), BrokerError> {
        let keys = keys::user(&lease.app, &lease.user);
        self.inner
            .main
            .query::<i64>(
                redis::cmd("HDEL")
                    .arg(&keys.conns)
                    .arg(lease.conn.to_string()),
            )
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        self.inner.reconcile(topic).await
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        self.inner.reconcile(topic).await
    }

    async fn send_to_user(
        &self,
        app: &str,
        user: &str,
        body: &str,
        marker: Option<&Marker>,
    ) -> Result<Marked<UserDelivery>, BrokerError> {
        let inner = &self.inner;
        let now = now_ms();
        let appended = inner
            .appender
            .append(inner.settings.retention, app, user, body, marker)
            .await?;
        if !appended.found {
            inner.count_queued(now, &appended.trimmed_at);
            metrics::counter!("tether_inbox_appended_total").increment(1);
        }
        Ok(appended.marked())
    }

    async fn send_to_room(
        &self,
        app: &str,
        room: &str,
        frame: Utf8Bytes,
        marker: Option<&Marker>,
    ) -> Result<Marked<Option<u64>>, BrokerError> {
        let topic = Topic::Room {
            app: Arc::from(app),
            room: Arc::from(room),
        };
        // Members on other nodes are not counted anywhere; the protocol allows null.
        live_send(&self.inner.publisher, &topic, frame.as_str(), marker)
            .await
            .map(|marked| marked.map(|()| None))
    }

    async fn send_to_app(
        &self,
        app: &str,
        frame: Utf8Bytes,
        marker: Option<&Marker>,
    ) -> Result<Marked<()>, BrokerError> {
        let topic = Topic::App {
            app: Arc::from(app),
        };
        live_send(&self.inner.publisher, &topic, frame.as_str(), marker).await
    }

    async fn publish_to_stream(
        &self,
        app: &str,
        stream: &StreamName,
        body: &str,
        limits: HistoryLimits,
        marker: Option<&Marker>,
    ) -> Result<Marked<StreamAppended>, BrokerError> {
        let topic = keys::stream_topic(app, stream);
        let marker = marker.map(|m| (keys::marker(&topic, &m.key), m));
        ops::publish_stream(
            &self.inner.main,
            &keys::stream(app, stream),
            limits,
            body,
            marker,
            now_ms(),
        )
        .await
    }

    async fn read_stream(
        &self,
        app: &str,
        stream: &StreamName,
        from: ReadFrom<'_>,
        limits: HistoryLimits,
        limit: usize,
    ) -> Result<StreamRead, BrokerError> {
        inbox_readable(&self.inner).await?;
        ops::read_stream(
            &self.inner.main,
            &keys::stream(app, stream),
            from,
            limits,
            limit,
            now_ms(),
        )
        .await
    }

    async fn presence_enter(
        &self,
        app: &str,
        room: &str,
        conn: &ConnRef,
        member: &ConnInfo,
    ) -> Result<(), BrokerError> {
        presence::enter(&self.inner, app, room, conn, member).await
    }

    async fn presence_leave(
        &self,
        app: &str,
        room: &str,
        conn: &ConnRef,
    ) -> Result<(), BrokerError> {
        presence::leave(&self.inner, app, room, conn).await
    }

    async fn room_presence(&self, app: &str, room: &str) -> Result<RoomPresence, BrokerError> {
        presence::read(&self.inner, app, room).await
    }

    async fn kick_user(&self, app: &str, user: &str) -> Result<u64, BrokerError> {
        ops::kick(&self.inner.main, app, user).await
    }

    async fn open_inbox(
        &self,
        app: &str,
        user: &str,
        device: Option<&str>,
        since: Option<u64>,
    ) -> Result<Replay, BrokerError> {
        let inner = &self.inner;
        inbox_readable(inner).await?;
        let keys = keys::user(app, user);
        let reply: Vec<Value> = inner
            .main
            .invoke(
                scripts::OPEN
                    .key(&keys.inbox)
                    .key(&keys.cursors)
                    .key(&keys.seq)
                    .arg(now_ms())
                    .arg(inner.settings.retention.ttl_ms)
                    .arg(device.unwrap_or(""))
                    .arg(since.unwrap_or(0)),
            )
            .await
            .map_err(unavailable)?;
        let mut reply = reply.into_iter();
        let after = reply
            .next()
            .as_ref()
            .and_then(int)
            .ok_or_else(|| BrokerError::Unavailable("redis: malformed open reply".into()))?;
        Ok(Replay {
            frames: seq_frames(reply)?,
            after,
        })
    }

    async fn read_inbox(
        &self,
        app: &str,
        user: &str,
        after: u64,
    ) -> Result<Vec<(u64, Utf8Bytes)>, BrokerError> {
        let inner = &self.inner;
        inbox_readable(inner).await?;
        let keys = keys::user(app, user);
        let reply: Vec<Value> = inner
            .main
            .invoke(
                scripts::READ
                    .key(&keys.inbox)
                    .arg(after)
                    .arg(now_ms())
                    .arg(inner.settings.retention.ttl_ms),
            )
            .await
            .map_err(unavailable)?;
        seq_frames(reply.into_iter())
    }

    async fn ack_inbox(
        &self,
        app: &str,
        user: &str,
        device: Option<&str>,
        seq: u64,
    ) -> Result<AckOutcome, BrokerError> {
        let inner = &self.inner;
        let keys = keys::user(app, user);
        let reply: Vec<u64> = inner
            .main
            .invoke(
                scripts::ACK
                    .key(&keys.seq)
                    .key(&keys.cursors)
                    .arg(device.unwrap_or(""))
                    .arg(seq)
                    .arg(now_ms())
                    .arg(inner.settings.retention.ttl_ms),
            )
            .await
            .map_err(unavailable)?;
        match reply.as_slice() {
            [1, _] => Ok(AckOutcome::Recorded),
            [0, newest] => Ok(AckOutcome::BeyondNewest { newest: *newest }),
            _ => Err(BrokerError::Unavailable(
                "redis: malformed ack reply".into(),
            )),
        }
    }

    async fn store_inbound(&self, message: InboundMessage) -> Result<StoreOutcome, BrokerError> {
        let inner = &self.inner;
        let stored: i64 = inner
            .main
            .invoke_durable(
                scripts::STORE_INBOUND
                    .key(keys::inbound_seen(&message.app, &message.user, &message.id))
                    .key(keys::inbound_stream(&message.app))
                    .arg(inner.settings.dedup_ttl_ms)
                    .arg(inner.settings.inbound_max_per_app)
                    .arg(&*message.user)
                    .arg(&message.kind)
                    .arg(&message.id)
                    .arg(message.data.as_deref().map_or("null", |d| d.get()))
                    .arg(message.ts)
                    .arg(message.device.as_deref().unwrap_or("")),
            )
            .await
            .map_err(unavailable)?;
        Ok(if stored == 1 {
            StoreOutcome::Stored
        } else {
            StoreOutcome::Duplicate
        })
    }

    async fn read_inbound(
        &self,
        app: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<InboundPage, BrokerError> {
        let start = match after {
            None | Some("") => "-".to_owned(),
            Some(cursor) => {
                let valid = cursor
                    .split_once('-')
                    .is_some_and(|(ms, n)| ms.parse::<u64>().is_ok() && n.parse::<u64>().is_ok());
                if !valid {
                    return Err(BrokerError::BadRequest(format!(
                        "after={cursor:?} is not a stream cursor (<ms>-<n>)"
                    )));
                }
                format!("({cursor}")
            }
        };
        let reply: redis::streams::StreamRangeReply = self
            .inner
            .main
            .query(
                redis::cmd("XRANGE")
                    .arg(keys::inbound_stream(app))
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit),
            )
            .await
            .map_err(unavailable)?;
        let messages: Vec<InboundRecord> =
            reply.ids.into_iter().filter_map(inbound_record).collect();
        let next = messages
            .last()
            .map(|m| m.cursor.clone())
            .or_else(|| after.filter(|a| !a.is_empty()).map(str::to_owned));
        Ok(InboundPage { messages, next })
    }

    async fn cluster_stats(&self) -> Result<ClusterStats, BrokerError> {
        let inner = &self.inner;
        let now = now_ms();
        let nodes: Vec<String> = inner
            .main
            .invoke(&scripts::LIVE_NODES.key(keys::NODES))
            .await
            .map_err(unavailable)?;
        let connections = if nodes.is_empty() {
            0
        } else {
            let counts: Vec<Option<u64>> = inner
                .main
                .query(
                    redis::cmd("MGET").arg(
                        nodes
                            .iter()
                            .map(|n| keys::node_connections(n))
                            .collect::<Vec<_>>(),
                    ),
                )
                .await
                .map_err(unavailable)?;
            counts.into_iter().flatten().sum()
        };
        let bucket = ops::bucket_ms(inner.settings.retention);
        let first = now.saturating_sub(inner.settings.retention.ttl_ms) / bucket;
        let buckets: Vec<String> = (first..=now / bucket).map(keys::queued_bucket).collect();
        let queued: Vec<Option<i64>> = inner
            .main
            .query(redis::cmd("MGET").arg(buckets))
            .await
            .map_err(unavailable)?;
        let pending: i64 = inner.queued_deltas.lock().values().sum();
        let queued = queued.into_iter().flatten().sum::<i64>() + pending;
        Ok(ClusterStats {
            connections,
            queued_messages: queued.max(0) as u64,
            nodes: nodes.len() as u64,
        })
    }

    async fn health(&self) -> Health {
        let inner = &self.inner;
        let links = [
            ("main", &inner.main_link),
            ("subscriber", &inner.subscriber_link),
            ("publisher", &inner.publisher_link),
        ];
        let healthy = links
            .iter()
            .all(|(_, link)| link.up.load(Ordering::Acquire));
        Health {
            status: if healthy { "healthy" } else { "unhealthy" }.into(),
            broker: None,
            latency: Some(inner.latency_ms.load(Ordering::Relaxed)),
            connections: Some({
                let mut states = links
                    .iter()
                    .map(|(name, link)| ((*name).to_owned(), link.label().to_owned()))
                    .collect::<BTreeMap<_, _>>();
                if let Some(failover) = &inner.failover {
                    // Behind Sentinel: whether the sentinels name a usable master, and
                    // which server the connections use.
                    let label = if failover.sentinels_ok() {
                        "ready"
                    } else {
                        "unavailable"
                    };
                    states.insert("sentinel".to_owned(), label.to_owned());
                    states.insert(
                        "master".to_owned(),
                        failover.master().unwrap_or_else(|| "unknown".to_owned()),
                    );
                }
                states
            }),
        }
    }

    async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        maintenance::flush_queued(inner).await;
        // Separate commands (the keys live in different slots of a cluster), many at once.
        let leases = futures_util::stream::iter(inner.hub.connections())
            .map(|(id, info)| async move {
                let keys = keys::user(&info.app, &info.user);
                let conn = inner.hub.conn_ref(id).to_string();
                inner
                    .main
                    .query::<i64>(redis::cmd("HDEL").arg(&keys.conns).arg(conn))
                    .await
                    .is_ok()
            })
            .buffer_unordered(64)
            .collect::<Vec<bool>>();
        let mut node_entries = redis::pipe();
        node_entries
            .cmd("ZREM")
            .arg(keys::NODES)
            .arg(&*inner.node)
            .ignore()
            .cmd("DEL")
            .arg(keys::node_connections(&inner.node))
            .ignore();
        let node = inner.main.pipeline::<()>(&node_entries);
        let done =
            tokio::time::timeout(Duration::from_secs(2), async { (leases.await, node.await) })
                .await;
        if !matches!(&done, Ok((leases, Ok(()))) if leases.iter().all(|ok| *ok)) {
            warn!(node = %inner.node, "could not remove all of this node's registry entries; they expire on their own");
        }
    }

    fn halt(&self) {
        self.inner.stop.cancel();
    }
}

fn inbound_record(entry: redis::streams::StreamId) -> Option<InboundRecord> {
    let text = |field: &str| -> Option<String> {
        match entry.map.get(field)? {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
            Value::SimpleString(text) => Some(text.clone()),
            _ => None,
        }
    };
    let device = text("device").filter(|d| !d.is_empty());
    let data = text("data").and_then(|d| serde_json::value::RawValue::from_string(d).ok());
    Some(InboundRecord {
        cursor: entry.id.clone(),
        user_id: text("user")?,
        device,
        kind: text("type")?,
        id: text("id")?,
        data,
        ts: text("ts")?.parse().ok()?,
    })
}
