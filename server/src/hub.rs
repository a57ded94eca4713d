//! The node's local registry: which connections are open here, which user and app each
//! belongs to, which rooms each is in, and delivery of frames to them.
//!
//! The broker hands every message meant for this node to the hub; the hub puts the same
//! encoded bytes into each member's bounded outbound queue without waiting. A member whose
//! queue is full is asked to close with 4008 instead of slowing the others down.
//!
//! One `RwLock` guards the indexes. It is the exception to "one owner per piece of state":
//! deliveries from many tasks (API calls, the Redis subscriber) read it at once, and
//! membership changes are short writes. Nothing awaits while holding it.

use crate::ids::ConnRef;
use crate::metrics::HotMetrics;
use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::{Mutex, RwLock};
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tether_protocol::close;

/// A local connection number.
pub type ConnId = u64;

/// One frame on its way to a client. Cloning shares the bytes.
#[derive(Debug, Clone)]
pub struct QueuedFrame {
    /// The encoded envelope.
    pub text: Utf8Bytes,
    /// The inbox seq, for user messages, so a connection can skip what it already replayed.
    pub seq: Option<u64>,
    /// The stream position, for messages of a stream, so a connection can skip what it
    /// already replayed and fill what it missed.
    pub stream: Option<Arc<StreamMark>>,
}

/// Which stream message a frame is.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamMark {
    /// The room, or `None` for the app's stream.
    pub room: Option<Arc<str>>,
    /// Its offset.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: Arc<str>,
}

impl QueuedFrame {
    /// A user message with its inbox seq.
    pub fn user(text: Utf8Bytes, seq: u64) -> QueuedFrame {
        QueuedFrame {
            text,
            seq: Some(seq),
            stream: None,
        }
    }

    /// A live-only message (or a control frame).
    pub fn live(text: Utf8Bytes) -> QueuedFrame {
        QueuedFrame {
            text,
            seq: None,
            stream: None,
        }
    }

    /// A message of the stream of `room` (`None`: the app's stream).
    pub fn streamed(
        text: Utf8Bytes,
        room: Option<&str>,
        offset: u64,
        epoch: Arc<str>,
    ) -> QueuedFrame {
        QueuedFrame {
            text,
            seq: None,
            stream: Some(Arc::new(StreamMark {
                room: room.map(Arc::from),
                offset,
                epoch,
            })),
        }
    }
}

/// Close code that means "drop the socket without a close frame" (a simulated crash).
pub const ABANDON: u16 = 0;

/// What the rest of the gateway shares with one connection's task: who it is, its
/// outbound queue (allocated only while frames wait), its close request, and its resync
/// flag, behind one wake-up. The hub and the brokers write; the connection's task reads.
/// Kept in one allocation, so the hub's index and the task each hold one pointer to it.
#[derive(Debug)]
pub struct ConnCell {
    info: ConnInfo,
    queue: Mutex<VecDeque<QueuedFrame>>,
    capacity: usize,
    /// The connection task's waker, and whether anything happened since it last looked.
    waker: AtomicWaker,
    signalled: AtomicBool,
    close: OnceLock<(u16, &'static str)>,
    resync: AtomicBool,
    /// When the client last sent anything (ms since the epoch), for the idle timeout.
    last_seen_ms: AtomicU64,
    /// When its token stops being valid (ms since the epoch, leeway included).
    expires_ms: AtomicU64,
}

impl ConnCell {
    fn new(info: ConnInfo, capacity: usize) -> ConnCell {
        ConnCell {
            info,
            queue: Mutex::new(VecDeque::new()),
            capacity,
            waker: AtomicWaker::new(),
            signalled: AtomicBool::new(false),
            close: OnceLock::new(),
            resync: AtomicBool::new(false),
            last_seen_ms: AtomicU64::new(crate::clock::now_ms()),
            expires_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Who the connection is.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// Queues a frame; false when the queue is full.
    fn offer(&self, frame: &QueuedFrame) -> bool {
        let mut queue = self.queue.lock();
        if queue.len() >= self.capacity {
            return false;
        }
        queue.push_back(frame.clone());
        drop(queue);
        self.signal();
        true
    }

    /// Hands up to `max` queued frames to `each`, oldest first; a frame for which `each`
    /// returns false stays at the head of the queue and the hand-over stops.
    pub fn take(&self, max: usize, mut each: impl FnMut(&QueuedFrame) -> bool) {
        let mut queue = self.queue.lock();
        for _ in 0..max {
            let Some(frame) = queue.front() else { break };
            if !each(frame) {
                break;
            }
            queue.pop_front();
        }
        if queue.is_empty() && queue.capacity() > 16 {
            // A burst is over: an idle connection keeps no queue memory.
            *queue = VecDeque::new();
        }
    }

    /// Whether frames wait.
    pub fn has_frames(&self) -> bool {
        !self.queue.lock().is_empty()
    }

    /// Asks the connection to close with `code` ([`ABANDON`]: without a close frame);
    /// the first request wins.
    pub fn request_close(&self, code: u16, reason: &'static str) {
        if self.close.set((code, reason)).is_ok() {
            self.signal();
        }
    }

    /// The close request, if one was made.
    pub fn close_requested(&self) -> Option<(u16, &'static str)> {
        self.close.get().copied()
    }

    /// Asks the connection to re-read its inbox.
    pub fn request_resync(&self) {
        self.resync.store(true, Ordering::Release);
        self.signal();
    }

    /// Whether a resync was asked for (and clears the request).
    pub fn take_resync(&self) -> bool {
        self.resync.swap(false, Ordering::AcqRel)
    }

    /// Notes that the client sent something.
    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Sets when the connection's token expires.
    pub fn expire_at(&self, ms: u64) {
        self.expires_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection's token expires (ms since the epoch, leeway included).
    pub fn expires_at(&self) -> u64 {
        self.expires_ms.load(Ordering::Relaxed)
    }

    fn signal(&self) {
        self.signalled.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready when something happened since the last call: frames queued, a close or a
    /// resync requested. (Registers the waker first, so no signal is lost.)
    pub fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.signalled.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits for [`ConnCell::poll_signal`].
    pub async fn woken(&self) {
        std::future::poll_fn(|cx| self.poll_signal(cx)).await;
    }
}

/// A channel the broker subscribes to while this node has members for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Messages for one user of one app.
    User {
        /// App.
        app: Arc<str>,
        /// User id.
        user: Arc<str>,
    },
    /// Messages for every connection of one app.
    App {
        /// App.
        app: Arc<str>,
    },
    /// Messages for one room of one app.
    Room {
        /// App.
        app: Arc<str>,
        /// Room name.
        room: Arc<str>,
    },
}

/// Who a connection is.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// App.
    pub app: Arc<str>,
    /// User id.
    pub user: Arc<str>,
    /// Device id, when the client gave one.
    pub device: Option<Arc<str>>,
    /// User type from the token.
    pub user_type: Arc<str>,
}

type Member = Arc<ConnCell>;

struct Entry {
    member: Member,
    rooms: Vec<Arc<str>>,
}

type Key = (Arc<str>, Arc<str>);

#[derive(Default)]
struct State {
    conns: HashMap<ConnId, Entry>,
    users: HashMap<Key, Vec<ConnId>>,
    rooms: HashMap<Key, HashMap<ConnId, Member>>,
    apps: HashMap<Arc<str>, HashMap<ConnId, Member>>,
    /// Connections per user type; its keys are the one copy of each type name.
    types: HashMap<Arc<str>, u64>,
}

/// Why a room join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The connection is in the maximum number of rooms.
    TooManyRooms,
    /// The connection is gone.
    NotConnected,
}

/// What a registration handed back.
pub struct Registration {
    /// The connection's number.
    pub id: ConnId,
    /// What the connection shares with the hub: its queue, close and resync requests.
    pub cell: Arc<ConnCell>,
    /// Topics this node needs from now on (the user's and the app's, when this is their
    /// first connection here).
    pub new_topics: Vec<Topic>,
}

/// Counts of what this node holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalStats {
    /// Connections.
    pub connections: u64,
    /// Rooms with at least one member here.
    pub rooms: u64,
    /// Connections by app.
    pub by_app: BTreeMap<String, u64>,
    /// Connections by user type.
    pub by_type: BTreeMap<String, u64>,
}

/// The node's connections.
pub struct Hub {
    node: Arc<str>,
    state: RwLock<State>,
    next_id: AtomicU64,
    queue_capacity: usize,
    metrics: HotMetrics,
}

impl Hub {
    /// A hub for node `node` whose connections queue at most `queue_capacity` frames.
    pub fn new(node: Arc<str>, queue_capacity: usize) -> Hub {
        Hub {
            node,
            state: RwLock::new(State::default()),
            next_id: AtomicU64::new(1),
            queue_capacity,
            metrics: HotMetrics::new(),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// The cluster-wide reference of a local connection.
    pub fn conn_ref(&self, id: ConnId) -> ConnRef {
        ConnRef {
            node: self.node.clone(),
            local: id,
        }
    }

    /// Reserves a connection number.
    pub fn allocate_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers connection `id`, from then on reachable by user and app deliveries.
    pub fn register(&self, id: ConnId, mut info: ConnInfo) -> Registration {
        let mut state = self.state.write();
        // Connections share one copy of each app, user and user type name.
        if let Some((app, _)) = state.apps.get_key_value(&info.app) {
            info.app = app.clone();
        }
        if let Some(((_, user), _)) = state
            .users
            .get_key_value(&(info.app.clone(), info.user.clone()))
        {
            info.user = user.clone();
        }
        let (user_type, count) = interned(&mut state.types, info.user_type);
        info.user_type = user_type;
        *count += 1;
        let cell = Arc::new(ConnCell::new(info, self.queue_capacity));
        let member: Member = cell.clone();
        let info = cell.info();
        let users = state
            .users
            .entry((info.app.clone(), info.user.clone()))
            .or_default();
        // Exactly one more: most users hold one connection here.
        users.reserve_exact(1);
        users.push(id);
        let mut new_topics = Vec::new();
        if users.len() == 1 {
            new_topics.push(Topic::User {
                app: info.app.clone(),
                user: info.user.clone(),
            });
        }
        let app_members = state.apps.entry(info.app.clone()).or_default();
        app_members.insert(id, member.clone());
        if app_members.len() == 1 {
            new_topics.push(Topic::App {
                app: info.app.clone(),
            });
        }
        state.conns.insert(
            id,
            Entry {
                member,
                rooms: Vec::new(),
            },
        );
        drop(state);
        self.metrics.connections.increment(1.0);
        Registration {
            id,
            cell,
            new_topics,
        }
    }

    /// Removes a connection from every index; returns the topics this node no longer needs.
    pub fn unregister(&self, id: ConnId) -> Vec<Topic> {
        let mut state = self.state.write();
        let Some(entry) = state.conns.remove(&id) else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        let info = entry.member.info();
        if let Some(count) = state.types.get_mut(&info.user_type) {
            *count -= 1;
            if *count == 0 {
                state.types.remove(&info.user_type);
            }
        }
        let user_key = (info.app.clone(), info.user.clone());
        if let Some(ids) = state.users.get_mut(&user_key) {
            ids.retain(|c| *c != id);
            if ids.is_empty() {
                state.users.remove(&user_key);
                gone.push(Topic::User {
                    app: user_key.0.clone(),
                    user: user_key.1.clone(),
                });
            }
        }
        if let Some(members) = state.apps.get_mut(&info.app) {
            members.remove(&id);
            if members.is_empty() {
                state.apps.remove(&info.app);
                gone.push(Topic::App {
                    app: info.app.clone(),
                });
            }
        }
        for room in entry.rooms {
            if let Some(topic) = remove_from_room(&mut state, &info.app, room, id) {
                gone.push(topic);
            }
        }
        drop(state);
        self.metrics.connections.decrement(1.0);
        gone
    }

    /// Adds the connection to a room. `Ok(Some(topic))` when the room is new on this node;
    /// joining a room twice is not an error.
    pub fn join_room(
        &self,
        id: ConnId,
        room: &str,
        max_rooms: u32,
    ) -> Result<Option<Topic>, JoinRefused> {
        let mut state = self.state.write();
        let state = &mut *state;
        let Some(entry) = state.conns.get_mut(&id) else {
            return Err(JoinRefused::NotConnected);
        };
        if entry.rooms.iter().any(|r| &**r == room) {
            return Ok(None);
        }
        if entry.rooms.len() >= max_rooms as usize {
            return Err(JoinRefused::TooManyRooms);
        }
        let app = entry.member.info().app.clone();
        // Members of a room share one copy of its name.
        let ((app, room), members) = interned(&mut state.rooms, (app, Arc::from(room)));
        members.insert(id, entry.member.clone());
        // Exactly one more: most connections are in a room or two.
        entry.rooms.reserve_exact(1);
        entry.rooms.push(room.clone());
        Ok((members.len() == 1).then_some(Topic::Room { app, room }))
    }

    /// Who a connection is, while it is registered.
    pub fn info_of(&self, id: ConnId) -> Option<ConnInfo> {
        self.state
            .read()
            .conns
            .get(&id)
            .map(|entry| entry.member.info().clone())
    }

    /// The rooms a connection is in.
    pub fn rooms_of(&self, id: ConnId) -> Vec<Arc<str>> {
        self.state
            .read()
            .conns
            .get(&id)
            .map(|entry| entry.rooms.clone())
            .unwrap_or_default()
    }

    /// This node's rooms of `app` with their connection counts, most connections first,
    /// then by name. Walks every room of the node: for the admin API, not a hot path.
    pub fn rooms_of_app(&self, app: &str) -> Vec<(Arc<str>, u64)> {
        let state = self.state.read();
        let mut rooms: Vec<(Arc<str>, u64)> = state
            .rooms
            .iter()
            .filter(|((a, _), _)| &**a == app)
            .map(|((_, room), members)| (room.clone(), members.len() as u64))
            .collect();
        drop(state);
        rooms.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rooms
    }

    /// Removes the connection from a room; `Some(topic)` when the room is now empty here.
    pub fn leave_room(&self, id: ConnId, room: &str) -> Option<Topic> {
        let mut state = self.state.write();
        let entry = state.conns.get_mut(&id)?;
        let index = entry.rooms.iter().position(|r| &**r == room)?;
        let room = entry.rooms.swap_remove(index);
        let app = entry.member.info().app.clone();
        remove_from_room(&mut state, &app, room, id)
    }

    /// Delivers a frame to every local connection of a user; returns how many got it.
    pub fn deliver_to_user(&self, app: &str, user: &str, frame: &QueuedFrame) -> u64 {
        let state = self.state.read();
        let key: (Arc<str>, Arc<str>) = (Arc::from(app), Arc::from(user));
        let Some(ids) = state.users.get(&key) else {
            return 0;
        };
        let delivered = ids
            .iter()
            .filter_map(|id| state.conns.get(id))
            .filter(|entry| self.offer(&entry.member, frame))
            .count() as u64;
        self.metrics.deliveries_user.increment(delivered);
        record_lag(&self.metrics.lag_user, frame, delivered);
        delivered
    }

    /// Delivers a frame to every local member of a room; returns how many got it.
    pub fn deliver_to_room(&self, app: &str, room: &str, frame: &QueuedFrame) -> u64 {
        let state = self.state.read();
        let key: (Arc<str>, Arc<str>) = (Arc::from(app), Arc::from(room));
        let Some(members) = state.rooms.get(&key) else {
            return 0;
        };
        let delivered = members.values().filter(|m| self.offer(m, frame)).count() as u64;
        self.metrics.deliveries_room.increment(delivered);
        record_lag(&self.metrics.lag_room, frame, delivered);
        delivered
    }

    /// Delivers a frame to every local connection of an app; returns how many got it.
    pub fn deliver_to_app(&self, app: &str, frame: &QueuedFrame) -> u64 {
        let state = self.state.read();
        let Some(members) = state.apps.get(app) else {
            return 0;
        };
        let delivered = members.values().filter(|m| self.offer(m, frame)).count() as u64;
        self.metrics.deliveries_app.increment(delivered);
        record_lag(&self.metrics.lag_app, frame, delivered);
        delivered
    }

    /// Puts a frame in a member's queue without waiting. A full queue means the client
    /// does not keep up: it is closed with 4008 (what it missed of its inbox is replayed
    /// when it reconnects).
    fn offer(&self, member: &Member, frame: &QueuedFrame) -> bool {
        if member.close_requested().is_some() {
            return false;
        }
        if member.offer(frame) {
            return true;
        }
        self.metrics.slow_consumers.increment(1);
        member.request_close(close::POLICY_VIOLATION, "too slow: outbound queue full");
        false
    }

    /// Live connections of a user on this node.
    pub fn user_connections(&self, app: &str, user: &str) -> u64 {
        let key: (Arc<str>, Arc<str>) = (Arc::from(app), Arc::from(user));
        self.state
            .read()
            .users
            .get(&key)
            .map_or(0, |ids| ids.len() as u64)
    }

    /// Asks every local connection of a user to close; returns how many.
    pub fn close_user(&self, app: &str, user: &str, code: u16, reason: &'static str) -> u64 {
        let state = self.state.read();
        let key: (Arc<str>, Arc<str>) = (Arc::from(app), Arc::from(user));
        let Some(ids) = state.users.get(&key) else {
            return 0;
        };
        for entry in ids.iter().filter_map(|id| state.conns.get(id)) {
            entry.member.request_close(code, reason);
        }
        ids.len() as u64
    }

    /// Asks one connection to close; false when it is not here.
    pub fn close_connection(&self, id: ConnId, code: u16, reason: &'static str) -> bool {
        match self.state.read().conns.get(&id) {
            Some(entry) => {
                entry.member.request_close(code, reason);
                true
            }
            None => false,
        }
    }

    /// Asks every connection to close (graceful shutdown).
    pub fn close_all(&self, code: u16, reason: &'static str) -> u64 {
        let state = self.state.read();
        for entry in state.conns.values() {
            entry.member.request_close(code, reason);
        }
        state.conns.len() as u64
    }

    /// Whether this node has members for a topic right now.
    pub fn wants(&self, topic: &Topic) -> bool {
        let state = self.state.read();
        match topic {
            Topic::User { app, user } => state.users.contains_key(&(app.clone(), user.clone())),
            Topic::App { app } => state.apps.contains_key(app),
            Topic::Room { app, room } => state.rooms.contains_key(&(app.clone(), room.clone())),
        }
    }

    /// Closes connections whose token expired (4001) or whose client has been silent for
    /// `timeout_ms` (4000). One pass over the node's connections replaces a timer per
    /// connection; the gateway runs it a few times per timeout.
    pub fn sweep(&self, now_ms: u64, timeout_ms: u64) {
        for entry in self.state.read().conns.values() {
            let cell = &entry.member;
            if now_ms >= cell.expires_ms.load(Ordering::Relaxed) {
                cell.request_close(close::TOKEN_EXPIRED, "token expired");
            } else if now_ms.saturating_sub(cell.last_seen_ms.load(Ordering::Relaxed)) >= timeout_ms
            {
                cell.request_close(
                    close::HEARTBEAT_TIMEOUT,
                    "nothing received within the connection timeout",
                );
            }
        }
    }

    /// Asks every connection to re-read its inbox after what it was last sent.
    pub fn request_resync(&self) {
        for entry in self.state.read().conns.values() {
            entry.member.request_resync();
        }
    }

    /// Every topic this node needs (to resubscribe after a broker reconnect).
    pub fn topics(&self) -> Vec<Topic> {
        let state = self.state.read();
        let users = state.users.keys().map(|(app, user)| Topic::User {
            app: app.clone(),
            user: user.clone(),
        });
        let rooms = state.rooms.keys().map(|(app, room)| Topic::Room {
            app: app.clone(),
            room: room.clone(),
        });
        let apps = state.apps.keys().map(|app| Topic::App { app: app.clone() });
        users.chain(apps).chain(rooms).collect()
    }

    /// Every local connection with its identity (to release registry leases).
    pub fn connections(&self) -> Vec<(ConnId, ConnInfo)> {
        self.connections_where(|_| true)
    }

    /// The local connections whose number `keep` accepts, with their identity (to
    /// refresh a slice of the registry leases without copying every connection's).
    pub fn connections_where(&self, keep: impl Fn(ConnId) -> bool) -> Vec<(ConnId, ConnInfo)> {
        self.state
            .read()
            .conns
            .iter()
            .filter(|(id, _)| keep(**id))
            .map(|(id, e)| (*id, e.member.info().clone()))
            .collect()
    }

    /// Who is in a room on this node: each local member's number, user and user type.
    pub fn room_members(&self, app: &str, room: &str) -> Vec<(ConnId, Arc<str>, Arc<str>)> {
        let key: Key = (Arc::from(app), Arc::from(room));
        self.state
            .read()
            .rooms
            .get(&key)
            .map_or_else(Vec::new, |members| {
                members
                    .iter()
                    .map(|(id, m)| (*id, m.info().user.clone(), m.info().user_type.clone()))
                    .collect()
            })
    }

    /// The (app, room) pairs with members on this node that `keep` accepts.
    pub fn rooms_where(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<(Arc<str>, Arc<str>)> {
        self.state
            .read()
            .rooms
            .keys()
            .filter(|(app, room)| keep(app, room))
            .cloned()
            .collect()
    }

    /// Counts for `/v1/stats`.
    pub fn stats(&self) -> LocalStats {
        let state = self.state.read();
        let mut stats = LocalStats {
            connections: state.conns.len() as u64,
            rooms: state.rooms.len() as u64,
            ..LocalStats::default()
        };
        for (app, members) in &state.apps {
            stats.by_app.insert(app.to_string(), members.len() as u64);
        }
        for (user_type, count) in &state.types {
            stats.by_type.insert(user_type.to_string(), *count);
        }
        stats
    }
}

/// The map's own copy of `key` (inserted with a default value when absent) and its value:
/// how connections come to share one copy of a name.
fn interned<K: Eq + Hash + Clone, V: Default>(map: &mut HashMap<K, V>, key: K) -> (K, &mut V) {
    match map.entry(key) {
        MapEntry::Occupied(found) => (found.key().clone(), found.into_mut()),
        MapEntry::Vacant(new) => {
            let key = new.key().clone();
            (key, new.insert(V::default()))
        }
    }
}

fn remove_from_room(
    state: &mut State,
    app: &Arc<str>,
    room: Arc<str>,
    id: ConnId,
) -> Option<Topic> {
    let key = (app.clone(), room);
    let members = state.rooms.get_mut(&key)?;
    members.remove(&id);
    if members.is_empty() {
        state.rooms.remove(&key);
        return Some(Topic::Room {
            app: key.0,
            room: key.1,
        });
    }
    None
}

/// Records a message's publish-to-fan-out lag, when this node had someone to give it to.
fn record_lag(histogram: &metrics::Histogram, frame: &QueuedFrame, delivered: u64) {
    if delivered == 0 {
        return;
    }
    if let Some(lag) = crate::metrics::seconds_since_ts(&frame.text, crate::clock::now_ms()) {
        histogram.record(lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(app: &str, user: &str) -> ConnInfo {
        ConnInfo {
            app: Arc::from(app),
            user: Arc::from(user),
            device: None,
            user_type: Arc::from("customer"),
        }
    }

    fn frame(text: &str) -> QueuedFrame {
        QueuedFrame::live(Utf8Bytes::from(text))
    }

    #[test]
    fn rooms_are_scoped_by_app_and_dropped_when_empty() {
        let hub = Hub::new(Arc::from("n"), 8);
        let a = hub.register(hub.allocate_id(), info("a", "u1"));
        let b = hub.register(hub.allocate_id(), info("b", "u2"));
        assert!(hub.join_room(a.id, "orders", 10).unwrap().is_some());
        assert!(
            hub.join_room(a.id, "orders", 10).unwrap().is_none(),
            "joining twice is a no-op"
        );
        assert!(
            hub.join_room(b.id, "orders", 10).unwrap().is_some(),
            "same name, other app"
        );
        assert_eq!(hub.deliver_to_room("a", "orders", &frame("x")), 1);
        assert_eq!(hub.stats().rooms, 2);
        assert_eq!(
            hub.leave_room(a.id, "orders"),
            Some(Topic::Room {
                app: Arc::from("a"),
                room: Arc::from("orders")
            })
        );
        assert_eq!(hub.stats().rooms, 1);
        assert_eq!(hub.deliver_to_room("a", "orders", &frame("x")), 0);
    }

    #[test]
    fn the_room_cap_is_per_connection() {
        let hub = Hub::new(Arc::from("n"), 8);
        let a = hub.register(hub.allocate_id(), info("a", "u1"));
        assert!(hub.join_room(a.id, "r1", 2).is_ok());
        assert!(hub.join_room(a.id, "r2", 2).is_ok());
        assert_eq!(hub.join_room(a.id, "r3", 2), Err(JoinRefused::TooManyRooms));
    }

    #[test]
    fn unregister_reports_topics_no_longer_needed() {
        let hub = Hub::new(Arc::from("n"), 8);
        let user = Topic::User {
            app: Arc::from("a"),
            user: Arc::from("u1"),
        };
        let app = Topic::App {
            app: Arc::from("a"),
        };
        let room = Topic::Room {
            app: Arc::from("a"),
            room: Arc::from("r"),
        };
        let a = hub.register(hub.allocate_id(), info("a", "u1"));
        assert_eq!(a.new_topics, vec![user.clone(), app.clone()]);
        let b = hub.register(hub.allocate_id(), info("a", "u1"));
        assert!(
            b.new_topics.is_empty(),
            "second connection of the same user"
        );
        hub.join_room(a.id, "r", 10).unwrap();
        assert!(hub.wants(&room) && hub.wants(&user) && hub.wants(&app));
        let gone = hub.unregister(a.id);
        assert_eq!(gone, vec![room.clone()]);
        assert!(!hub.wants(&room));
        let gone = hub.unregister(b.id);
        assert_eq!(gone, vec![user.clone(), app.clone()]);
        assert!(!hub.wants(&user) && !hub.wants(&app));
        assert_eq!(hub.stats(), LocalStats::default());
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_slow_member_only() {
        let hub = Hub::new(Arc::from("n"), 8);
        let slow = hub.register(hub.allocate_id(), info("a", "slow"));
        let fast = hub.register(hub.allocate_id(), info("a", "fast"));
        for i in 0..8 {
            assert_eq!(hub.deliver_to_app("a", &frame(&i.to_string())), 2);
            let mut got = 0;
            fast.cell.take(64, |_| {
                got += 1;
                true
            });
            assert_eq!(got, 1);
        }
        assert_eq!(hub.deliver_to_app("a", &frame("overflow")), 1);
        assert_eq!(
            slow.cell.close_requested(),
            Some((close::POLICY_VIOLATION, "too slow: outbound queue full"))
        );
        assert!(fast.cell.close_requested().is_none());
        assert!(fast.cell.has_frames(), "the fast member got the last frame");
        fast.cell.take(64, |_| true);
        assert!(!fast.cell.has_frames());
    }

    #[tokio::test]
    async fn close_requests_reach_the_connection_once() {
        let hub = Hub::new(Arc::from("n"), 8);
        let a = hub.register(hub.allocate_id(), info("a", "u1"));
        assert_eq!(hub.close_user("a", "u1", close::KICKED, "kicked"), 1);
        hub.close_connection(a.id, close::REPLACED, "replaced");
        a.cell.woken().await;
        assert_eq!(
            a.cell.close_requested(),
            Some((close::KICKED, "kicked")),
            "first request wins"
        );
        assert!(!hub.close_connection(999, close::KICKED, "x"));
    }

    #[test]
    fn the_sweep_closes_silent_and_expired_connections_only() {
        let hub = Hub::new(Arc::from("n"), 8);
        let silent = hub.register(hub.allocate_id(), info("a", "u1"));
        let expired = hub.register(hub.allocate_id(), info("a", "u2"));
        let fine = hub.register(hub.allocate_id(), info("a", "u3"));
        let now = crate::clock::now_ms();
        silent.cell.touch(now - 10_000);
        expired.cell.expire_at(now - 1);
        fine.cell.touch(now);
        fine.cell.expire_at(now + 60_000);
        hub.sweep(now, 5_000);
        assert_eq!(
            silent.cell.close_requested().map(|c| c.0),
            Some(close::HEARTBEAT_TIMEOUT)
        );
        assert_eq!(
            expired.cell.close_requested().map(|c| c.0),
            Some(close::TOKEN_EXPIRED)
        );
        assert_eq!(fine.cell.close_requested(), None);
    }

    #[test]
    fn stats_count_by_app_and_type() {
        let hub = Hub::new(Arc::from("n"), 8);
        hub.register(hub.allocate_id(), info("a", "u1"));
        hub.register(hub.allocate_id(), info("a", "u2"));
        let mut admin = info("b", "u3");
        admin.user_type = Arc::from("admin");
        let admin_id = hub.register(hub.allocate_id(), admin).id;
        let stats = hub.stats();
        assert_eq!(stats.connections, 3);
        assert_eq!(
            stats.by_app,
            BTreeMap::from([("a".into(), 2), ("b".into(), 1)])
        );
        assert_eq!(
            stats.by_type,
            BTreeMap::from([("admin".into(), 1), ("customer".into(), 2)])
        );
        hub.unregister(admin_id);
        assert_eq!(
            hub.stats().by_type,
            BTreeMap::from([("customer".into(), 2)]),
            "a type goes with its last connection"
        );
    }

    #[test]
    fn connections_share_one_copy_of_each_name() {
        let hub = Hub::new(Arc::from("n"), 8);
        let a = hub.register(hub.allocate_id(), info("a", "u1"));
        let b = hub.register(hub.allocate_id(), info("a", "u1"));
        let c = hub.register(hub.allocate_id(), info("a", "u2"));
        let (ai, bi, ci) = (a.cell.info(), b.cell.info(), c.cell.info());
        assert!(Arc::ptr_eq(&ai.app, &bi.app) && Arc::ptr_eq(&ai.app, &ci.app));
        assert!(Arc::ptr_eq(&ai.user, &bi.user));
        assert!(Arc::ptr_eq(&ai.user_type, &ci.user_type));
        hub.join_room(a.id, "r", 10).unwrap();
        hub.join_room(c.id, "r", 10).unwrap();
        let state = hub.state.read();
        let room_of = |id| state.conns[&id].rooms[0].clone();
        assert!(Arc::ptr_eq(&room_of(a.id), &room_of(c.id)));
        assert_eq!(
            state.conns[&a.id].rooms.capacity(),
            1,
            "a connection's room list is sized exactly"
        );
    }
}
