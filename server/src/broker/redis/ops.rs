//! Redis operations shared by the broker (inside a gateway node) and the
//! [`Publisher`](crate::publisher::Publisher) (inside a backend service), so both follow
//! exactly the same rules.

use super::client::Conn;
use super::keys::{StreamKeys, UserKeys};
use super::{int, keys, scripts, seq_frames, unavailable};
use crate::broker::idempotency::{Marked, Marker};
use crate::broker::inbox::Retention;
use crate::broker::stream::{
    new_epoch, HistoryLimits, ReadFrom, StreamAppended, StreamRead, META_TTL_MS,
};
use crate::broker::{idempotency, BrokerError, UserDelivery};
use crate::hub::Topic;
use redis::Value;

/// The result of an inbox append.
pub struct Appended {
    /// Seq and live connections.
    pub delivery: UserDelivery,
    /// When the messages trimmed by the length cap were appended (ms), for the counters.
    pub trimmed_at: Vec<u64>,
    /// Whether the send's marker was found: nothing was appended, `delivery` is the first
    /// send's.
    pub found: bool,
}

impl Appended {
    /// The delivery, marked as found or new.
    pub fn marked(&self) -> Marked<UserDelivery> {
        if self.found {
            Marked::Found(self.delivery)
        } else {
            Marked::New(self.delivery)
        }
    }
}

/// One message for [`append_many`]: the user's keys, the body, the marker (with the
/// marker's key) of a keyed send.
pub struct UserAppend<'a> {
    /// The user's keys.
    pub keys: &'a UserKeys,
    /// The envelope without seq.
    pub body: &'a str,
    /// The keyed send's marker and its key.
    pub marker: Option<(String, &'a Marker)>,
}

fn sharded_arg(conn: &Conn) -> &'static str {
    if conn.sharded() {
        "1"
    } else {
        "0"
    }
}

/// Appends `body` to the (app, user) inbox and publishes it on the user's channel.
///
/// Behind Sentinel with replicas to wait for, the message is published only after they
/// confirmed it: a message that is live on a client must never be one a failover
/// discards, or its seq would be handed out again by the promoted replica and the
/// client would skip the new message as a duplicate. (Live messages may then leave out
/// of seq order; connections fill such gaps from the inbox.)
pub async fn append(
    conn: &Conn,
    retention: Retention,
    app: &str,
    user: &str,
    body: &str,
    marker: Option<&Marker>,
    now: u64,
) -> Result<Appended, BrokerError> {
    let keys = keys::user(app, user);
    let replicas = conn.durable_replicas();
    let publish_mode = if replicas > 0 { "2" } else { sharded_arg(conn) };
    let one = UserAppend {
        keys: &keys,
        body,
        marker: marker.map(|m| (user_marker(app, user, m), m)),
    };
    let invocation = append_invocation(retention, &[one], publish_mode, now);
    let reply: Vec<Value> = conn
        .invoke_confirmed(&invocation, replicas)
        .await
        .map_err(unavailable)?;
    // In mode 2 the script hands back the payload it would have published, last.
    let payload = match reply.first() {
        Some(Value::Array(values)) if replicas > 0 => match values.last() {
            Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
            _ => None,
        },
        _ => None,
    };
    let appended = parse_appended(reply)?
        .pop()
        .ok_or_else(|| malformed("no result"))??;
    if replicas > 0 && !appended.found {
        // Stored and confirmed either way: if it does not go out live, connected clients
        // get it from the inbox when the next message shows the gap, or when they reconnect.
        let seq = appended.delivery.seq;
        match payload {
            Some(payload) => {
                if let Err(e) = publish(conn, &keys.channel, &payload).await {
                    tracing::warn!(error = %e, seq, "stored message not published live");
                }
            }
            None => tracing::warn!(seq, "append reply without its payload; not published live"),
        }
    }
    Ok(appended)
}

/// Appends several messages (to one user or many) in one script run, each published live
/// by the script. Only where every key may meet in one script and nothing waits for
/// replicas: a single Redis, or a Sentinel master without `WAIT` (see
/// [`Conn::batches_appends`]). The answers come in the order of `messages`.
pub async fn append_many(
    conn: &Conn,
    retention: Retention,
    messages: &[UserAppend<'_>],
    now: u64,
) -> Result<Vec<Result<Appended, BrokerError>>, BrokerError> {
    let invocation = append_invocation(retention, messages, sharded_arg(conn), now);
    let reply: Vec<Value> = conn.invoke(&invocation).await.map_err(unavailable)?;
    let appended = parse_appended(reply)?;
    if appended.len() != messages.len() {
        return Err(malformed("wrong number of results"));
    }
    Ok(appended)
}

/// The append script's call for `messages` (see [`scripts::APPEND`] for the layout).
fn append_invocation(
    retention: Retention,
    messages: &[UserAppend<'_>],
    publish_mode: &str,
    now: u64,
) -> redis::ScriptInvocation<'static> {
    let mut invocation = scripts::APPEND.prepare_invoke();
    for message in messages {
        let keys = message.keys;
        // A send without a marker still names a key of its user's slot (never read).
        let marker_key = match &message.marker {
            Some((key, _)) => key.clone(),
            None => format!("{}:once:", keys.seq),
        };
        invocation
            .key(&keys.seq)
            .key(&keys.inbox)
            .key(&keys.conns)
            .key(&keys.channel)
            .key(marker_key);
    }
    invocation
        .arg(now)
        .arg(retention.ttl_ms)
        .arg(retention.max_len)
        .arg(publish_mode);
    for message in messages {
        let (fingerprint, ttl) = match &message.marker {
            Some((_, marker)) => (marker.fingerprint.as_str(), marker.ttl_ms),
            None => ("", 0),
        };
        invocation.arg(message.body).arg(fingerprint).arg(ttl);
    }
    invocation
}

/// The marker key of a keyed send to a user.
pub fn user_marker(app: &str, user: &str, marker: &Marker) -> String {
    keys::marker(
        &Topic::User {
            app: app.into(),
            user: user.into(),
        },
        &marker.key,
    )
}

fn malformed(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!("redis: malformed append reply ({what})"))
}

/// The script's answer: per message {seq, live connections, trimmed timestamps...}, or
/// {'e', why} for a message whose keys could not take it (nothing of it was written but,
/// perhaps, its seq).
fn parse_appended(reply: Vec<Value>) -> Result<Vec<Result<Appended, BrokerError>>, BrokerError> {
    reply
        .into_iter()
        .map(|one| {
            let Value::Array(values) = one else {
                return Err(malformed("not an array"));
            };
            if let [Value::BulkString(tag), rest @ ..] = values.as_slice() {
                match tag.as_slice() {
                    b"r" => return Ok(Err(BrokerError::KeyReused)),
                    b"f" => {
                        let numbers: Vec<u64> = rest.iter().filter_map(int).collect();
                        let [seq, delivered] = numbers.as_slice() else {
                            return Err(malformed("marker"));
                        };
                        return Ok(Ok(Appended {
                            delivery: UserDelivery {
                                seq: *seq,
                                delivered: *delivered,
                            },
                            trimmed_at: Vec::new(),
                            found: true,
                        }));
                    }
                    _ => {}
                }
            }
            if let [Value::BulkString(marker), why, ..] = values.as_slice() {
                if marker.as_slice() == b"e" {
                    let why = match why {
                        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                        _ => "unknown".to_owned(),
                    };
                    return Ok(Err(BrokerError::Unavailable(format!(
                        "redis refused this user's inbox ({why})"
                    ))));
                }
            }
            let numbers: Vec<u64> = values.iter().filter_map(int).collect();
            let [seq, delivered, trimmed @ ..] = numbers.as_slice() else {
                return Err(malformed("too short"));
            };
            Ok(Ok(Appended {
                delivery: UserDelivery {
                    seq: *seq,
                    delivered: *delivered,
                },
                trimmed_at: trimmed.to_vec(),
                found: false,
            }))
        })
        .collect()
}

/// Appends `body` to a stream and publishes it (behind Sentinel with replicas to wait for,
/// only once they confirmed it, as [`append`] does: a live offset must never be one a
/// failover hands out again).
pub async fn publish_stream(
    conn: &Conn,
    keys: &StreamKeys,
    limits: HistoryLimits,
    body: &str,
    marker: Option<(String, &Marker)>,
    now: u64,
) -> Result<Marked<StreamAppended>, BrokerError> {
    let replicas = conn.durable_replicas();
    let publish_mode = if replicas > 0 { "2" } else { sharded_arg(conn) };
    let (marker_key, fingerprint, marker_ttl) = match &marker {
        Some((key, m)) => (key.clone(), m.fingerprint.as_str(), m.ttl_ms),
        None => (format!("{}:once:", keys.meta), "", 0),
    };
    let mut invocation = scripts::STREAM_PUBLISH.prepare_invoke();
    invocation
        .key(&keys.meta)
        .key(&keys.history)
        .key(&keys.channel)
        .key(marker_key)
        .arg(now)
        .arg(limits.size)
        .arg(limits.ttl_ms)
        .arg(META_TTL_MS)
        .arg(new_epoch())
        .arg(body)
        .arg(publish_mode)
        .arg(fingerprint)
        .arg(marker_ttl);
    let reply: Vec<Value> = conn
        .invoke_confirmed(&invocation, replicas)
        .await
        .map_err(unavailable)?;
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    };
    let bad = || BrokerError::Unavailable("redis: malformed stream reply".into());
    match reply.as_slice() {
        [tag] if text(tag).as_deref() == Some("r") => Err(BrokerError::KeyReused),
        [tag, offset, epoch] if text(tag).as_deref() == Some("f") => {
            Ok(Marked::Found(StreamAppended {
                offset: int(offset).ok_or_else(bad)?,
                epoch: text(epoch).ok_or_else(bad)?,
                delivered: None,
            }))
        }
        [offset, epoch, rest @ ..] => {
            let appended = StreamAppended {
                offset: int(offset).ok_or_else(bad)?,
                epoch: text(epoch).ok_or_else(bad)?,
                delivered: None,
            };
            if let [payload] = rest {
                // Mode 2: stored and confirmed; now it goes out live.
                match text(payload) {
                    Some(payload) => {
                        if let Err(e) = publish(conn, &keys.channel, &payload).await {
                            tracing::warn!(error = %e, offset = appended.offset, "stored stream message not published live");
                        }
                    }
                    None => return Err(bad()),
                }
            }
            Ok(Marked::New(appended))
        }
        _ => Err(bad()),
    }
}

/// Reads a stream (see [`scripts::STREAM_READ`]).
pub async fn read_stream(
    conn: &Conn,
    keys: &StreamKeys,
    from: ReadFrom<'_>,
    limits: HistoryLimits,
    limit: usize,
    now: u64,
) -> Result<StreamRead, BrokerError> {
    let (mode, after, epoch) = match from {
        ReadFrom::Now => ("now", 0, ""),
        ReadFrom::After { offset, epoch } => ("after", offset, epoch.unwrap_or("")),
    };
    let reply: Vec<Value> = conn
        .invoke(
            scripts::STREAM_READ
                .key(&keys.meta)
                .key(&keys.history)
                .arg(mode)
                .arg(after)
                .arg(epoch)
                .arg(now)
                .arg(limits.ttl_ms)
                .arg(limit)
                .arg(new_epoch())
                .arg(META_TTL_MS),
        )
        .await
        .map_err(unavailable)?;
    let bad = || BrokerError::Unavailable("redis: malformed stream read".into());
    let mut values = reply.into_iter();
    let epoch = match values.next() {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes).map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    let mut number = || values.next().as_ref().and_then(int).ok_or_else(bad);
    let top = number()?;
    let recovered = number()? == 1;
    let more = number()? == 1;
    Ok(StreamRead {
        epoch,
        top,
        recovered,
        more,
        frames: seq_frames(values)?,
    })
}

/// A live-only room or app message with a marker (see [`scripts::PUBLISH_ONCE`]).
pub async fn publish_once(
    conn: &Conn,
    topic: &Topic,
    frame: &str,
    marker: &Marker,
) -> Result<Marked<()>, BrokerError> {
    let reply: Vec<String> = conn
        .invoke(
            scripts::PUBLISH_ONCE
                .key(keys::marker(topic, &marker.key))
                .key(keys::channel(topic))
                .arg(&marker.fingerprint)
                .arg(marker.ttl_ms)
                .arg(format!("m {frame}"))
                .arg(sharded_arg(conn)),
        )
        .await
        .map_err(unavailable)?;
    match reply.first().map(String::as_str) {
        Some("n") => Ok(Marked::New(())),
        Some("f") => Ok(Marked::Found(())),
        Some("r") => Err(BrokerError::KeyReused),
        _ => Err(BrokerError::Unavailable(
            "redis: malformed publish reply".into(),
        )),
    }
}

/// Publishes an encoded room or app message on its channel.
pub async fn publish_frame(conn: &Conn, topic: &Topic, frame: &str) -> Result<(), BrokerError> {
    publish(conn, &keys::channel(topic), &format!("m {frame}")).await
}

/// Publishes a raw payload (PUBLISH, or SPUBLISH on a cluster).
pub async fn publish(conn: &Conn, channel: &str, payload: &str) -> Result<(), BrokerError> {
    let command = if conn.sharded() {
        "SPUBLISH"
    } else {
        "PUBLISH"
    };
    conn.query::<i64>(redis::cmd(command).arg(channel).arg(payload))
        .await
        .map(|_| ())
        .map_err(unavailable)
}

/// Counts the user's live connections and tells every node to close them with 4403.
pub async fn kick(conn: &Conn, app: &str, user: &str) -> Result<u64, BrokerError> {
    let keys = keys::user(app, user);
    conn.invoke(
        scripts::KICK
            .key(&keys.conns)
            .key(&keys.channel)
            .arg(sharded_arg(conn)),
    )
    .await
    .map_err(unavailable)
}

/// Width of one time bucket of the inbox message counters.
pub fn bucket_ms(retention: Retention) -> u64 {
    (retention.ttl_ms / 100).max(1000)
}

/// Adds inbox count changes (by time bucket) to the cluster's counters.
pub async fn add_queued(
    conn: &Conn,
    retention: Retention,
    deltas: &[(u64, i64)],
) -> Result<(), BrokerError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let keep_ms = retention.ttl_ms + 2 * bucket_ms(retention);
    let mut pipe = redis::pipe();
    for (bucket, delta) in deltas {
        let key = keys::queued_bucket(*bucket);
        pipe.cmd("INCRBY").arg(&key).arg(*delta).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(keep_ms).ignore();
    }
    conn.pipeline::<()>(&pipe).await.map_err(unavailable)
}

/// Groups one append (and what it trimmed) into bucket deltas.
pub fn queued_deltas(retention: Retention, added_at: u64, trimmed_at: &[u64]) -> Vec<(u64, i64)> {
    let bucket = bucket_ms(retention);
    let mut deltas: Vec<(u64, i64)> = vec![(added_at / bucket, 1)];
    for at in trimmed_at {
        let b = at / bucket;
        match deltas.iter_mut().find(|(k, _)| *k == b) {
            Some((_, d)) => *d -= 1,
            None => deltas.push((b, -1)),
        }
    }
    deltas
}

/// The idempotency records in Redis, for a gateway's broker and a `Publisher` alike: the
/// claim is one script on Redis's clock, the answer a durable write like the send it
/// follows.
#[async_trait::async_trait]
impl idempotency::Store for Conn {
    async fn claim_idempotency(
        &self,
        app: &str,
        key: &str,
        claim: &str,
        fingerprint: &str,
        ttl_ms: u64,
    ) -> Result<idempotency::Claim, BrokerError> {
        let (claimed, record): (i64, String) = self
            .invoke(
                scripts::IDEMPOTENCY_CLAIM
                    .key(keys::idempotency(app, key))
                    .arg(claim)
                    .arg(fingerprint)
                    .arg(ttl_ms)
                    .arg(idempotency::ABANDONED_AFTER_MS),
            )
            .await
            .map_err(unavailable)?;
        Ok(if claimed == 1 {
            idempotency::Claim::Claimed(record)
        } else {
            idempotency::Claim::Found(record)
        })
    }

    async fn complete_idempotency(
        &self,
        app: &str,
        key: &str,
        pending: &str,
        done: &str,
    ) -> Result<bool, BrokerError> {
        let replaced: i64 = self
            .invoke_durable(
                scripts::IDEMPOTENCY_COMPLETE
                    .key(keys::idempotency(app, key))
                    .arg(pending)
                    .arg(done),
            )
            .await
            .map_err(unavailable)?;
        Ok(replaced == 1)
    }

    async fn release_idempotency(
        &self,
        app: &str,
        key: &str,
        pending: &str,
    ) -> Result<(), BrokerError> {
        let _: i64 = self
            .invoke(
                scripts::IDEMPOTENCY_RELEASE
                    .key(keys::idempotency(app, key))
                    .arg(pending),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
