//! Room presence in Redis: each node keeps its own part of a room, one hash per (room,
//! node) (`keys::room_presence`), a field per connection of that node in the room, named
//! by the connection's ref (`<node>-<n>`). Joins and leaves write it at once; each node
//! re-asserts its part of every room a slice per maintenance tick (all of it after Redis
//! came back or lost the node's heartbeat, and at the next tick a room whose write
//! failed), which also keeps its hash from expiring while it has members there. A read
//! takes the parts of the nodes whose heartbeat is alive. A node that stopped without
//! closing its connections never counts again, and its parts expire a lease later, so no
//! node ever reads, scans or cleans up another node's part.
//!
//! A re-assertion holds its room's lock exclusively and reads the hub's members under
//! it; joins and leaves hold it shared (they write different fields, and one
//! connection's own joins and leaves come one after another). So a join or leave the hub
//! saw is either in the snapshot or written after the re-assertion: neither can undo the
//! other, and joins to one room never wait for each other.

use super::{keys, scripts, unavailable, Inner};
use crate::broker::presence::summarise;
use crate::broker::BrokerError;
use crate::hub::ConnInfo;
use crate::ids::ConnRef;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_protocol::server::RoomPresence;
use tracing::warn;

/// Room re-assertions in flight at once.
const SYNCS_IN_FLIGHT: usize = 32;
/// Rooms with at least this many connections are answered from a cache ...
const CACHED_FROM: u64 = 1_000;
/// ... this old at most.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// A field's value: who the connection is.
fn entry(user: &str, user_type: &str) -> String {
    serde_json::json!([user, user_type]).to_string()
}

/// A write failed: this node's part of the room is re-asserted at the next tick.
fn retry(inner: &Inner, app: &str, room: &str, e: redis::RedisError) -> BrokerError {
    inner
        .presence_retry
        .lock()
        .insert((app.to_owned(), room.to_owned()));
    unavailable(e)
}

pub(super) async fn enter(
    inner: &Inner,
    app: &str,
    room: &str,
    conn: &ConnRef,
    member: &ConnInfo,
) -> Result<(), BrokerError> {
    let key = keys::room_presence(app, room, &inner.node);
    let _shared = inner.presence_lock(&key).read().await;
    inner
        .main
        .invoke::<i64>(
            scripts::PRESENCE_ENTER
                .key(&key)
                .arg(conn.to_string())
                .arg(entry(&member.user, &member.user_type))
                .arg(inner.settings.lease_ms),
        )
        .await
        .map(drop)
        .map_err(|e| retry(inner, app, room, e))
}

pub(super) async fn leave(
    inner: &Inner,
    app: &str,
    room: &str,
    conn: &ConnRef,
) -> Result<(), BrokerError> {
    let key = keys::room_presence(app, room, &inner.node);
    let _shared = inner.presence_lock(&key).read().await;
    inner
        .main
        .query::<()>(redis::cmd("HDEL").arg(&key).arg(conn.to_string()))
        .await
        .map_err(|e| retry(inner, app, room, e))
}

pub(super) async fn read(
    inner: &Inner,
    app: &str,
    room: &str,
) -> Result<RoomPresence, BrokerError> {
    let cache_key = (app.to_owned(), room.to_owned());
    if let Some((at, presence)) = inner.presence_cache.lock().get(&cache_key) {
        if at.elapsed() < CACHE_FOR {
            return Ok(presence.clone());
        }
    }
    let live: Vec<String> = inner
        .main
        .invoke(&scripts::LIVE_NODES.key(keys::NODES))
        .await
        .map_err(unavailable)?;
    let parts: Vec<HashMap<String, String>> = if live.is_empty() {
        Vec::new()
    } else {
        let mut reads = redis::pipe();
        for node in &live {
            reads
                .cmd("HGETALL")
                .arg(keys::room_presence(app, room, node));
        }
        inner.main.pipeline(&reads).await.map_err(unavailable)?
    };
    let mut present = Vec::with_capacity(parts.iter().map(HashMap::len).sum());
    for (field, value) in parts.into_iter().flatten() {
        // A value this build cannot read (a later build's format) is skipped.
        if let Ok((user, user_type)) = serde_json::from_str::<(String, String)>(&value) {
            present.push((field, user, user_type));
        }
    }
    let presence = summarise(room, present);
    if presence.connections >= CACHED_FROM {
        let mut cache = inner.presence_cache.lock();
        cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        cache.insert(cache_key, (Instant::now(), presence.clone()));
    }
    Ok(presence)
}

/// Where a room falls among the maintenance slices (the same on every tick and node).
pub(super) fn room_number(app: &str, room: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (app, room).hash(&mut hasher);
    hasher.finish()
}

/// The rooms to re-assert this tick: those with members here that `keep` accepts, and
/// those whose write failed since the last tick (also when nobody is left in them here:
/// then the node's fields go).
pub(super) fn due(inner: &Inner, keep: impl Fn(&str, &str) -> bool) -> Vec<(Arc<str>, Arc<str>)> {
    let retry: HashSet<(String, String)> = std::mem::take(&mut *inner.presence_retry.lock());
    let mut rooms: HashSet<(Arc<str>, Arc<str>)> =
        inner.hub.rooms_where(keep).into_iter().collect();
    rooms.extend(
        retry
            .into_iter()
            .map(|(app, room)| (Arc::from(app), Arc::from(room))),
    );
    rooms.into_iter().collect()
}

/// Re-asserts this node's part of one room's presence: its members as the hub has them
/// now, and nothing else.
async fn sync_room(inner: &Inner, app: &str, room: &str) -> redis::RedisResult<i64> {
    let key = keys::room_presence(app, room, &inner.node);
    let _exclusive = inner.presence_lock(&key).write().await;
    let mut invocation = scripts::PRESENCE_SYNC.prepare_invoke();
    invocation.key(&key).arg(inner.settings.lease_ms);
    for (id, user, user_type) in inner.hub.room_members(app, room) {
        invocation
            .arg(inner.hub.conn_ref(id).to_string())
            .arg(entry(&user, &user_type));
    }
    inner.main.invoke(&invocation).await
}

/// Re-asserts this node's part of the presence of `rooms`; a room whose write fails is
/// tried again at the next tick.
pub(super) async fn sync(inner: &Inner, rooms: Vec<(Arc<str>, Arc<str>)>) {
    let mut pending = rooms.into_iter();
    let mut running = FuturesUnordered::new();
    let mut failed = 0usize;
    loop {
        while running.len() < SYNCS_IN_FLIGHT {
            let Some((app, room)) = pending.next() else {
                break;
            };
            running.push(async move { (sync_room(inner, &app, &room).await, app, room) });
        }
        match running.next().await {
            Some((Ok(_), _, _)) => {}
            Some((Err(_), app, room)) => {
                failed += 1;
                inner
                    .presence_retry
                    .lock()
                    .insert((app.to_string(), room.to_string()));
            }
            None => break,
        }
    }
    if failed > 0 {
        warn!(
            failed,
            "room presence sync failed; those rooms go again next tick"
        );
    }
}
