//! Publishing from a Rust backend service straight into Redis, without the HTTP hop:
//! `send_to_user`, `send_to_room`, `send_to_app` and `kick_user` with the same rules and
//! answers as the gateway's `/v1` API (the same validation, the same Lua scripts).
//!
//! ```no_run
//! # async fn demo() -> Result<(), tether_server::publisher::PublishError> {
//! use tether_server::publisher::Publisher;
//! use tether_protocol::api::OutgoingMessage;
//!
//! let publisher = Publisher::connect("redis://127.0.0.1:6379/").await?;
//! let sent = publisher
//!     .send_to_user("shop", "u42", OutgoingMessage::new("order_update", &serde_json::json!({"orderId": 123})))
//!     .await?;
//! println!("seq {} reached {} connections", sent.seq, sent.delivered);
//! # Ok(()) }
//! ```
//!
//! Behind Redis Sentinel, [`Publisher::connect_sentinel`] finds the master through the
//! sentinels and follows it through failovers, as the gateways do.
//!
//! [`Publisher::once`] sends at most once per idempotency key, sharing the records of the
//! gateway's `Idempotency-Key` header: a retry after a timeout cannot deliver twice.

use crate::backend_message::{
    check_app, check_room, check_user, check_users, encode, sent_to_users, Encoded, Invalid,
};
use crate::broker::idempotency::{self, Marked, Marker, Outcome};
use crate::broker::inbox::Retention;
use crate::broker::redis::appender::Appender;
use crate::broker::redis::client::{self, Conn, Target};
use crate::broker::redis::sentinel::{self, SentinelTarget};
use crate::broker::redis::{keys, live_send, ops};
use crate::broker::stream::{StreamAppended, StreamName, StreamSettings};
use crate::broker::BrokerError;
use crate::broker::UserDelivery;
use crate::clock::now_ms;
use crate::hub::Topic;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tether_protocol::api::{
    Kicked, OutgoingMessage, SendToApp, SendToRoom, SendToUser, SendToUsers, SentToApp, SentToRoom,
    SentToUser, SentToUsers,
};
use thiserror::Error;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Why a publish failed. Nothing was sent in either case.
#[derive(Debug, Clone, Error)]
pub enum PublishError {
    /// The request breaks a rule (bad app, user, room, type or id).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Redis could not be reached or refused; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// ([`Publisher::once`]) A send with the same idempotency key is still running;
    /// nothing was sent by this one. Retry in a second.
    #[error("a send with this idempotency key is still being processed; retry shortly")]
    InProgress,
    /// ([`Publisher::once`]) The idempotency key was used with a different request;
    /// nothing was sent.
    #[error("this idempotency key was used with a different request; use a new key")]
    KeyReused,
}

impl From<Invalid> for PublishError {
    fn from(e: Invalid) -> PublishError {
        PublishError::Invalid(e.0)
    }
}

impl From<BrokerError> for PublishError {
    fn from(e: BrokerError) -> PublishError {
        match e {
            BrokerError::Unavailable(m) => PublishError::Unavailable(m),
            BrokerError::BadRequest(m) => PublishError::Invalid(m),
            BrokerError::KeyReused => PublishError::KeyReused,
        }
    }
}

/// A handle for publishing; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Publisher {
    conn: Conn,
    /// Sends to users, batched when they come together.
    appender: Appender,
    retention: Retention,
    /// Inbox count changes (for the gateways' `totalQueuedMessages`), written in batches
    /// by a background task rather than with every message.
    queued: Arc<Counters>,
    /// How long idempotency records are kept ([`Publisher::once`]), ms.
    idempotency_ttl_ms: u64,
    /// Which rooms (and whether apps) keep a history, as on the gateways.
    streams: Arc<StreamSettings>,
    /// Stops the background tasks (following a Sentinel master) with the last handle.
    _stop: Arc<DropGuard>,
}

/// Pending inbox count changes by time bucket, and the retention they are kept for.
struct Counters {
    retention: Mutex<Retention>,
    pending: Mutex<HashMap<u64, i64>>,
}

/// How often the background task writes the inbox counters.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Writes the counters until every handle of the publisher is gone (then once more).
async fn flush_counters(conn: Conn, queued: Weak<Counters>) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        let Some(counters) = queued.upgrade() else {
            return;
        };
        let retention = *counters.retention.lock();
        let deltas: Vec<(u64, i64)> = counters.pending.lock().drain().collect();
        if ops::add_queued(&conn, retention, &deltas).await.is_err() {
            // Keep them for the next round; they are statistics, not messages.
            let mut again = counters.pending.lock();
            for (bucket, delta) in deltas {
                *again.entry(bucket).or_default() += delta;
            }
        }
    }
}

impl Publisher {
    /// Connects to Redis: one URL, or comma-separated seed URLs of a Redis Cluster.
    /// Inbox retention defaults to the gateway's (7 days, 1000 messages); use
    /// [`Publisher::with_retention`] when the gateways run with other values.
    pub async fn connect(urls: &str) -> Result<Publisher, PublishError> {
        let urls: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        let target = Target {
            cluster: urls.len() > 1,
            urls,
        };
        Self::connect_to(target).await
    }

    /// Connects to a Redis Cluster given one or more seed URLs.
    pub async fn connect_cluster(urls: &[&str]) -> Result<Publisher, PublishError> {
        Self::connect_to(Target {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            cluster: true,
        })
        .await
    }

    /// Connects to the master that Redis Sentinel names, and follows it through failovers
    /// (checked once a second, and at once when a command fails like a failover). Sends
    /// to users wait for `target.sync_replicas` replicas (`WAIT`), lowered to the
    /// replicas the master has, as the gateways' do.
    pub async fn connect_sentinel(target: SentinelTarget) -> Result<Publisher, PublishError> {
        let stop = CancellationToken::new();
        let conn = sentinel::open_following(&target, stop.clone())
            .await
            .map_err(|e| PublishError::Unavailable(format!("redis sentinel: {e}")))?;
        Ok(Self::start(conn, stop))
    }

    async fn connect_to(target: Target) -> Result<Publisher, PublishError> {
        let conn = client::open(&target, None, 1)
            .await
            .map_err(|e| PublishError::Unavailable(format!("redis: {e}")))?;
        Ok(Self::start(conn, CancellationToken::new()))
    }

    fn start(conn: Conn, stop: CancellationToken) -> Publisher {
        let retention = Retention {
            ttl_ms: 604_800_000,
            max_len: 1000,
        };
        let queued = Arc::new(Counters {
            retention: Mutex::new(retention),
            pending: Mutex::new(HashMap::new()),
        });
        tokio::spawn(flush_counters(conn.clone(), Arc::downgrade(&queued)));
        Publisher {
            appender: Appender::start(conn.clone()),
            conn,
            retention,
            queued,
            idempotency_ttl_ms: 3_600_000,
            streams: Arc::new(StreamSettings::default()),
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// Sets the inbox retention: use the gateways' `WS_MESSAGE_TTL` (seconds) and
    /// `WS_MAX_QUEUE_PER_USER`.
    pub fn with_retention(mut self, message_ttl_s: u64, max_queue_per_user: u32) -> Publisher {
        self.retention = Retention {
            ttl_ms: message_ttl_s.saturating_mul(1000),
            max_len: max_queue_per_user as usize,
        };
        *self.queued.retention.lock() = self.retention;
        self
    }

    /// Sets how long idempotency records are kept for [`Publisher::once`]: use the
    /// gateways' `API_IDEMPOTENCY_TTL` (seconds; default 3600, 60 to 604800).
    pub fn with_idempotency_ttl(mut self, ttl_s: u64) -> Publisher {
        self.idempotency_ttl_ms = ttl_s
            .clamp(idempotency::MIN_TTL_S, idempotency::MAX_TTL_S)
            .saturating_mul(1000);
        self
    }

    /// Sets which rooms and apps keep a history: use the gateways' `WS_ROOM_HISTORY`,
    /// `WS_ROOM_HISTORY_SIZE`/`_TTL`, `WS_APP_HISTORY_SIZE`/`_TTL` (see
    /// `Config::stream_settings`). A message to such a room or app is appended to its
    /// stream (the answer carries its offset and epoch), so clients recover it after a
    /// reconnect; without this, the publisher's room and app messages are live only and
    /// clients of a room with history see them as gaps.
    pub fn with_streams(mut self, streams: StreamSettings) -> Publisher {
        self.streams = Arc::new(streams);
        self
    }

    /// The sends below, at most once per `idempotency_key` (1 to 255 visible ASCII
    /// characters, scoped by app), exactly as `Idempotency-Key` on the gateway's
    /// `/v1/send/*`, sharing its records: a retry after a timeout, from this process or
    /// through the HTTP API, gets the first answer ([`Replayable::replayed`]) and sends
    /// nothing. See [`PublishError::InProgress`] and [`PublishError::KeyReused`].
    pub fn once<'a>(&'a self, idempotency_key: &'a str) -> Once<'a> {
        Once {
            publisher: self,
            key: idempotency_key,
        }
    }

    /// Durable message to a user: into their inbox and live to every connection.
    pub async fn send_to_user(
        &self,
        app: &str,
        user_id: &str,
        message: OutgoingMessage,
    ) -> Result<SentToUser, PublishError> {
        check_app(app)?;
        check_user(user_id)?;
        Ok(self
            .user_send(app, user_id, encode(message, None)?, None)
            .await?
            .into_inner())
    }

    async fn user_send(
        &self,
        app: &str,
        user_id: &str,
        message: Encoded,
        marker: Option<&Marker>,
    ) -> Result<Marked<SentToUser>, PublishError> {
        let marked = self.append(app, user_id, &message.body, marker).await?;
        Ok(marked.map(|delivery| SentToUser {
            id: message.id,
            seq: delivery.seq,
            delivered: delivery.delivered,
            queued: true,
        }))
    }

    /// Appends to one inbox (batched with the appends queued at the same moment) and
    /// counts it for the gateways' `totalQueuedMessages`.
    async fn append(
        &self,
        app: &str,
        user_id: &str,
        body: &str,
        marker: Option<&Marker>,
    ) -> Result<Marked<UserDelivery>, BrokerError> {
        let now = now_ms();
        let appended = self
            .appender
            .append(self.retention, app, user_id, body, marker)
            .await?;
        if !appended.found {
            let mut pending = self.queued.pending.lock();
            for (bucket, delta) in ops::queued_deltas(self.retention, now, &appended.trimmed_at) {
                *pending.entry(bucket).or_default() += delta;
            }
        }
        Ok(appended.marked())
    }

    /// One durable message to several users (1 to 1,000, no repeats), each through their
    /// own inbox, with one id; the appends go out together. As `POST /v1/send/users`: per
    /// user its seq or its error; [`PublishError::Unavailable`] only when no inbox was
    /// reached.
    pub async fn send_to_users(
        &self,
        app: &str,
        user_ids: &[String],
        message: OutgoingMessage,
    ) -> Result<SentToUsers, PublishError> {
        check_app(app)?;
        check_users(user_ids)?;
        Ok(self
            .users_send(app, user_ids.to_vec(), encode(message, None)?, None)
            .await?
            .into_inner())
    }

    async fn users_send(
        &self,
        app: &str,
        user_ids: Vec<String>,
        message: Encoded,
        marker: Option<&Marker>,
    ) -> Result<Marked<SentToUsers>, PublishError> {
        let appends = user_ids
            .iter()
            .map(|user| self.append(app, user, &message.body, marker));
        let results = futures_util::future::join_all(appends).await;
        Ok(sent_to_users(message.id, user_ids, results)?)
    }

    /// Live message to a room's members on every node.
    pub async fn send_to_room(
        &self,
        app: &str,
        room: &str,
        message: OutgoingMessage,
    ) -> Result<SentToRoom, PublishError> {
        check_app(app)?;
        check_room(room)?;
        Ok(self
            .room_send(app, room, encode(message, Some(room))?, None)
            .await?
            .into_inner())
    }

    async fn room_send(
        &self,
        app: &str,
        room: &str,
        message: Encoded,
        marker: Option<&Marker>,
    ) -> Result<Marked<SentToRoom>, PublishError> {
        let stream = StreamName::Room(Arc::from(room));
        if let Some(appended) = self.stream_send(app, &stream, &message, marker).await? {
            return Ok(appended.map(|a| SentToRoom {
                id: message.id,
                delivered: None,
                offset: Some(a.offset),
                epoch: Some(a.epoch),
            }));
        }
        let topic = keys::stream_topic(app, &stream);
        let marked = live_send(&self.conn, &topic, &message.body, marker).await?;
        Ok(marked.map(|()| SentToRoom {
            id: message.id,
            delivered: None,
            offset: None,
            epoch: None,
        }))
    }

    /// Appends to the stream `name` when it keeps a history; `None` when it is live only.
    async fn stream_send(
        &self,
        app: &str,
        name: &StreamName,
        message: &Encoded,
        marker: Option<&Marker>,
    ) -> Result<Option<Marked<StreamAppended>>, PublishError> {
        let Some(limits) = self.streams.limits_of(name) else {
            return Ok(None);
        };
        let topic = keys::stream_topic(app, name);
        let marker = marker.map(|m| (keys::marker(&topic, &m.key), m));
        let keys = keys::stream(app, name);
        Ok(Some(
            ops::publish_stream(&self.conn, &keys, limits, &message.body, marker, now_ms()).await?,
        ))
    }

    /// Live message to every connection of an app.
    pub async fn send_to_app(
        &self,
        app: &str,
        message: OutgoingMessage,
    ) -> Result<SentToApp, PublishError> {
        check_app(app)?;
        Ok(self
            .app_send(app, encode(message, None)?, None)
            .await?
            .into_inner())
    }

    async fn app_send(
        &self,
        app: &str,
        message: Encoded,
        marker: Option<&Marker>,
    ) -> Result<Marked<SentToApp>, PublishError> {
        if let Some(appended) = self
            .stream_send(app, &StreamName::App, &message, marker)
            .await?
        {
            return Ok(appended.map(|a| SentToApp {
                id: message.id,
                offset: Some(a.offset),
                epoch: Some(a.epoch),
            }));
        }
        let topic = Topic::App {
            app: Arc::from(app),
        };
        let marked = live_send(&self.conn, &topic, &message.body, marker).await?;
        Ok(marked.map(|()| SentToApp {
            id: message.id,
            offset: None,
            epoch: None,
        }))
    }

    /// Closes every connection of a user with 4403, on every node.
    pub async fn kick_user(&self, app: &str, user_id: &str) -> Result<Kicked, PublishError> {
        check_app(app)?;
        check_user(user_id)?;
        Ok(Kicked {
            kicked: ops::kick(&self.conn, app, user_id).await?,
        })
    }
}

/// An answer of [`Publisher::once`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayable<T> {
    /// The send's answer: this call's, or the first call's with the same key.
    pub answer: T,
    /// True when the answer is the first call's: nothing was sent this time.
    pub replayed: bool,
}

/// [`Publisher::once`]: the sends, at most once per idempotency key.
pub struct Once<'a> {
    publisher: &'a Publisher,
    key: &'a str,
}

impl Once<'_> {
    /// [`Publisher::send_to_user`], at most once per key.
    pub async fn send_to_user(
        &self,
        app: &str,
        user_id: &str,
        message: OutgoingMessage,
    ) -> Result<Replayable<SentToUser>, PublishError> {
        check_app(app)?;
        check_user(user_id)?;
        let request = SendToUser {
            user_id: user_id.to_owned(),
            app: app.to_owned(),
            message,
        };
        let fingerprint = idempotency::fingerprint("/v1/send/user", &request);
        // Checked before the key is claimed, as the HTTP API does.
        let encoded = encode(self.keyed_id(app, &fingerprint, request.message), None)?;
        let (publisher, app, user) = (self.publisher.clone(), request.app, request.user_id);
        self.run(app.clone(), fingerprint, move |marker| async move {
            publisher
                .user_send(&app, &user, encoded, marker.as_ref())
                .await
        })
        .await
    }

    /// [`Publisher::send_to_users`], at most once per key.
    pub async fn send_to_users(
        &self,
        app: &str,
        user_ids: &[String],
        message: OutgoingMessage,
    ) -> Result<Replayable<SentToUsers>, PublishError> {
        check_app(app)?;
        check_users(user_ids)?;
        let request = SendToUsers {
            user_ids: user_ids.to_vec(),
            app: app.to_owned(),
            message,
        };
        let fingerprint = idempotency::fingerprint("/v1/send/users", &request);
        let encoded = encode(self.keyed_id(app, &fingerprint, request.message), None)?;
        let (publisher, app, users) = (self.publisher.clone(), request.app, request.user_ids);
        self.run(app.clone(), fingerprint, move |marker| async move {
            publisher
                .users_send(&app, users, encoded, marker.as_ref())
                .await
        })
        .await
    }

    /// [`Publisher::send_to_room`], at most once per key.
    pub async fn send_to_room(
        &self,
        app: &str,
        room: &str,
        message: OutgoingMessage,
    ) -> Result<Replayable<SentToRoom>, PublishError> {
        check_app(app)?;
        check_room(room)?;
        let request = SendToRoom {
            room: room.to_owned(),
            app: app.to_owned(),
            message,
        };
        let fingerprint = idempotency::fingerprint("/v1/send/room", &request);
        let encoded = encode(
            self.keyed_id(app, &fingerprint, request.message),
            Some(room),
        )?;
        let (publisher, app, room) = (self.publisher.clone(), request.app, request.room);
        self.run(app.clone(), fingerprint, move |marker| async move {
            publisher
                .room_send(&app, &room, encoded, marker.as_ref())
                .await
        })
        .await
    }

    /// [`Publisher::send_to_app`], at most once per key.
    pub async fn send_to_app(
        &self,
        app: &str,
        message: OutgoingMessage,
    ) -> Result<Replayable<SentToApp>, PublishError> {
        check_app(app)?;
        let request = SendToApp {
            app: app.to_owned(),
            message,
        };
        let fingerprint = idempotency::fingerprint("/v1/send/app", &request);
        let encoded = encode(self.keyed_id(app, &fingerprint, request.message), None)?;
        let (publisher, app) = (self.publisher.clone(), request.app);
        self.run(app.clone(), fingerprint, move |marker| async move {
            publisher.app_send(&app, encoded, marker.as_ref()).await
        })
        .await
    }

    /// The message of a keyed send that names no id gets the key's derived id, as through
    /// the HTTP API, so a retry through either carries the same id.
    fn keyed_id(
        &self,
        app: &str,
        fingerprint: &str,
        mut message: OutgoingMessage,
    ) -> OutgoingMessage {
        message
            .id
            .get_or_insert_with(|| idempotency::derived_id(app, self.key, fingerprint));
        message
    }

    /// Claims, sends, records, on a task of its own: dropping the caller's future (a
    /// timeout around the call) must not stop a send halfway, with the key left claimed
    /// and the message perhaps stored.
    async fn run<T, F, Fut>(
        &self,
        app: String,
        fingerprint: String,
        send: F,
    ) -> Result<Replayable<T>, PublishError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce(Option<Marker>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Marked<T>, PublishError>> + Send + 'static,
    {
        idempotency::check_key(self.key).map_err(PublishError::Invalid)?;
        // The records live in the Redis the publisher writes to (the gateways' own).
        let records = self.publisher.conn.clone();
        let ttl_ms = self.publisher.idempotency_ttl_ms;
        let key = self.key.to_owned();
        let task = tokio::spawn(async move {
            idempotency::once(&records, &app, &key, &fingerprint, ttl_ms, send).await
        });
        let outcome = task.await.map_err(|e| {
            tracing::error!(error = %e, "an idempotent send's task failed");
            PublishError::Unavailable(
                "the send failed inside the publisher; the idempotency key stays claimed \
                     until a retry takes it over (30 s)"
                    .into(),
            )
        })??;
        match outcome {
            Outcome::Sent(answer) => Ok(Replayable {
                answer,
                replayed: false,
            }),
            Outcome::Replayed(text) => serde_json::from_str(&text)
                .map(|answer| Replayable {
                    answer,
                    replayed: true,
                })
                .map_err(|e| {
                    PublishError::Unavailable(format!(
                        "the answer kept under this idempotency key is unreadable: {e}"
                    ))
                }),
            Outcome::InProgress => Err(PublishError::InProgress),
            Outcome::Reused => Err(PublishError::KeyReused),
            Outcome::Corrupt => Err(PublishError::Unavailable(
                "the record under this idempotency key is unreadable; nothing was sent".into(),
            )),
        }
    }
}
