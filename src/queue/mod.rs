//! The durable outbound queue: every app message is written (and flushed) here before
//! `send_message` returns, keyed by a monotonic sequence, and stays until the gateway's
//! `ack`. The storage sits behind [`QueueStore`] so sled can be swapped for redb without
//! touching the engine; [`Outbox`] adds the limits, the expiry and the id index on top.

mod sled_store;

pub use sled_store::SledStore;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tether_protocol::stream::StreamPosition;

/// A failure of the on-disk store, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage failed while {context}: {reason}")]
pub struct StorageError {
    /// What the store was doing.
    pub context: &'static str,
    /// What went wrong.
    pub reason: String,
}

impl StorageError {
    /// An error while doing `context`.
    pub fn new(context: &'static str, reason: impl ToString) -> Self {
        StorageError {
            context,
            reason: reason.to_string(),
        }
    }
}

/// What a removal the app is told about (replace, cancel) left undone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemovalFailed {
    /// The store refused to remove it: it (and any after it) stays queued and is sent.
    #[error("it could not be removed and will be sent: {0}")]
    NotRemoved(StorageError),
    /// Removed from the queue, but the removal could not be flushed: this process will
    /// not send it; if the app is killed before a later flush succeeds, it may come back
    /// and be sent after the restart.
    #[error(
        "it was removed, but the removal is not on disk yet and may be undone by a crash: {0}"
    )]
    NotFlushed(StorageError),
}

/// The queue is at its limit; the message was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueFull {
    /// `max_queued_messages` reached.
    #[error("outbound queue holds its maximum of {limit} messages; wait for acks")]
    Count {
        /// The limit.
        limit: u32,
    },
    /// `max_queued_bytes` would be passed.
    #[error("outbound queue would pass its maximum of {limit} bytes; wait for acks")]
    Bytes {
        /// The limit.
        limit: u64,
    },
}

/// One queued app message, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Position in the queue; strictly increasing. A seq whose append failed is given
    /// again, after the store has removed whatever that append left (see `SledStore`).
    pub seq: u64,
    /// The message id the gateway de-duplicates by (a UUIDv7).
    pub id: String,
    /// Message type.
    pub kind: String,
    /// Payload, valid JSON text.
    pub data_json: String,
    /// When `send_message` stored it (ms since the epoch).
    pub created_ms: u64,
    /// Latest wins: a later message with the same key replaces this one while it waits.
    pub replace_key: Option<String>,
    /// Dropped instead of sent from this time on (ms since the epoch), besides the
    /// queue's own age limit.
    pub expires_ms: Option<u64>,
}

impl QueuedMessage {
    /// What the message counts against `max_queued_bytes`.
    pub fn size(&self) -> u64 {
        (self.id.len() + self.kind.len() + self.data_json.len()) as u64
    }
}

/// Where the app stands in what it received, written in one durable step: the inbox
/// cursor and stream positions (`Some(room)`, or `None` for the app's broadcast stream;
/// a position of `None` forgets the stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PositionWrite {
    /// The new inbox cursor, if it moved.
    pub inbox_cursor: Option<u64>,
    /// Stream positions that changed.
    pub streams: Vec<(Option<String>, Option<StreamPosition>)>,
}

impl PositionWrite {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.inbox_cursor.is_none() && self.streams.is_empty()
    }
}

/// Durable storage of the queue, the inbox cursor and the stream positions.
/// Implementations must make `append_all` and `write_positions` durable (on disk) before
/// returning.
pub trait QueueStore: Send {
    /// Every queued message, in `seq` order.
    fn load(&self) -> Result<Vec<QueuedMessage>, StorageError>;
    /// One message.
    fn get(&self, seq: u64) -> Result<Option<QueuedMessage>, StorageError>;
    /// Stores messages durably, all or none, with one sync for all of them. A failure
    /// must leave none of them to be loaded later, after a restart included (a caller
    /// told "not stored" may send again, with a new id the gateway cannot de-duplicate).
    fn append_all(&mut self, messages: &[QueuedMessage]) -> Result<(), StorageError>;
    /// Forgets a message. Need not be durable at once: a message removed but resent after
    /// a crash is de-duplicated by the gateway.
    fn remove(&mut self, seq: u64) -> Result<(), StorageError>;
    /// The highest inbox `seq` the app has processed (0 when none).
    fn inbox_cursor(&self) -> Result<u64, StorageError>;
    /// Writes everything pending to disk.
    fn flush(&mut self) -> Result<(), StorageError>;
    /// Every stored stream position: per room (`Some(room)`) and the app's broadcast
    /// stream (`None`). A database written before streams has none.
    fn stream_positions(&self) -> Result<Vec<(Option<String>, StreamPosition)>, StorageError>;
    /// Stores the inbox cursor and stream positions of `write` durably, with one sync:
    /// a stream position is never on disk later than the inbox cursor written with it.
    fn write_positions(&mut self, write: &PositionWrite) -> Result<(), StorageError>;
}

/// Bounds of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most messages.
    pub max_count: u32,
    /// Most bytes (see [`QueuedMessage::size`]).
    pub max_bytes: u64,
    /// Older messages are dropped instead of sent.
    pub max_age: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    size: u64,
    created_ms: u64,
    replace_key: Option<String>,
    expires_ms: Option<u64>,
}

/// A message for [`Outbox::push_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Its id (a UUIDv7).
    pub id: String,
    /// Message type.
    pub kind: String,
    /// Payload, valid JSON text.
    pub data_json: String,
    /// Dropped instead of sent once queued this long (ms), counted from the write.
    pub ttl_ms: Option<u64>,
}

/// What `send_message` asks of the queue beyond the message itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keeping {
    /// Latest wins: queued messages with this key that may still be replaced go.
    pub replace_key: Option<String>,
    /// Dropped instead of sent from this time on (ms since the epoch).
    pub expires_ms: Option<u64>,
}

/// A stored message and the ids of the queued messages it replaced, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The message as stored.
    pub message: QueuedMessage,
    /// Ids of the messages it replaced (same replace key), oldest first.
    pub replaced: Vec<String>,
    /// Removing the replaced messages did not fully succeed.
    pub failed: Option<RemovalFailed>,
}

/// The queue: a store plus an in-memory index of what it holds (ids, sizes, ages), so
/// limits and acks never scan the disk.
pub struct Outbox {
    store: Box<dyn QueueStore>,
    limits: Limits,
    index: BTreeMap<u64, Entry>,
    by_id: HashMap<String, u64>,
    /// Seqs of queued messages per replace key, in queue order.
    by_key: HashMap<String, Vec<u64>>,
    bytes: u64,
    next_seq: u64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.index.len())
            .field("bytes", &self.bytes)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl Outbox {
    /// Opens the queue over a store, indexing what it already holds.
    pub fn open(store: Box<dyn QueueStore>, limits: Limits) -> Result<Self, StorageError> {
        let mut outbox = Outbox {
            store,
            limits,
            index: BTreeMap::new(),
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            bytes: 0,
            next_seq: 1,
        };
        for message in outbox.store.load()? {
            outbox.index_message(&message);
        }
        Ok(outbox)
    }

    fn index_message(&mut self, message: &QueuedMessage) {
        self.bytes += message.size();
        self.next_seq = self.next_seq.max(message.seq + 1);
        self.by_id.insert(message.id.clone(), message.seq);
        if let Some(key) = &message.replace_key {
            self.by_key
                .entry(key.clone())
                .or_default()
                .push(message.seq);
        }
        self.index.insert(
            message.seq,
            Entry {
                id: message.id.clone(),
                size: message.size(),
                created_ms: message.created_ms,
                replace_key: message.replace_key.clone(),
                expires_ms: message.expires_ms,
            },
        );
    }

    /// Stores new messages that replace nothing (no replace key) durably, in one write
    /// with one sync: what a burst of `send_message` calls costs. Each gets its own
    /// answer: stored, or refused by a limit (counting the ones before it in the batch);
    /// the ones within limits are stored together, or, when the store fails, none is.
    pub fn push_all(
        &mut self,
        batch: Vec<NewMessage>,
        now_ms: u64,
    ) -> Vec<Result<QueuedMessage, crate::error::Error>> {
        let mut answers = Vec::with_capacity(batch.len());
        let mut accepted: Vec<QueuedMessage> = Vec::with_capacity(batch.len());
        let mut bytes = self.bytes;
        for new in batch {
            let message = QueuedMessage {
                seq: self.next_seq + accepted.len() as u64,
                id: new.id,
                kind: new.kind,
                data_json: new.data_json,
                created_ms: now_ms,
                replace_key: None,
                expires_ms: new.ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
            };
            match self.room_for(self.index.len() + accepted.len(), bytes, &message) {
                Err(full) => answers.push(Err(full.into())),
                Ok(()) => {
                    bytes += message.size();
                    accepted.push(message.clone());
                    answers.push(Ok(message));
                }
            }
        }
        if accepted.is_empty() {
            return answers;
        }
        match self.store.append_all(&accepted) {
            Ok(()) => {
                for message in &accepted {
                    self.index_message(message);
                }
                answers
            }
            Err(e) => answers
                .into_iter()
                .map(|answer| answer.and_then(|_| Err(e.clone().into())))
                .collect(),
        }
    }

    /// Whether `message` fits beside `count` messages of `bytes` already queued (or
    /// staying queued).
    fn room_for(&self, count: usize, bytes: u64, message: &QueuedMessage) -> Result<(), QueueFull> {
        if count >= self.limits.max_count as usize {
            return Err(QueueFull::Count {
                limit: self.limits.max_count,
            });
        }
        if bytes + message.size() > self.limits.max_bytes {
            return Err(QueueFull::Bytes {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// Stores a new message durably; fails when a limit would be passed.
    pub fn push(
        &mut self,
        id: String,
        kind: String,
        data_json: String,
        now_ms: u64,
    ) -> Result<QueuedMessage, crate::error::Error> {
        self.push_keeping(id, kind, data_json, now_ms, Keeping::default(), |_| true)
            .map(|pushed| pushed.message)
    }

    /// Stores a new message durably, then forgets the queued messages with its replace
    /// key that `replaceable` allows (those not on their way already). The limits count
    /// what is queued once they are gone. Fails, storing nothing and replacing nothing,
    /// when a limit would be passed.
    pub fn push_keeping(
        &mut self,
        id: String,
        kind: String,
        data_json: String,
        now_ms: u64,
        keeping: Keeping,
        replaceable: impl Fn(u64) -> bool,
    ) -> Result<Pushed, crate::error::Error> {
        let victims: Vec<u64> = keeping
            .replace_key
            .as_ref()
            .and_then(|key| self.by_key.get(key))
            .map(|seqs| seqs.iter().copied().filter(|s| replaceable(*s)).collect())
            .unwrap_or_default();
        let freed_bytes: u64 = victims
            .iter()
            .filter_map(|seq| self.index.get(seq))
            .map(|e| e.size)
            .sum();
        let message = QueuedMessage {
            seq: self.next_seq,
            id,
            kind,
            data_json,
            created_ms: now_ms,
            replace_key: keeping.replace_key,
            expires_ms: keeping.expires_ms,
        };
        self.room_for(
            self.index.len() - victims.len(),
            self.bytes - freed_bytes,
            &message,
        )?;
        self.store.append_all(std::slice::from_ref(&message))?;
        self.index_message(&message);
        // The new message is on disk: the caller is told it is queued whatever happens
        // next. A replaced message that cannot be removed stays and is sent as well; one
        // removed but not flushed is gone unless the app is killed before the next flush.
        let (replaced, failed) = self.remove_durably(victims);
        Ok(Pushed {
            message,
            replaced,
            failed,
        })
    }

    /// Removes `seqs` and flushes, so that what the app was told is gone does not come
    /// back after a crash; the ids removed (even when the flush failed), and what was
    /// left undone, if anything.
    fn remove_durably(&mut self, seqs: Vec<u64>) -> (Vec<String>, Option<RemovalFailed>) {
        let mut removed = Vec::with_capacity(seqs.len());
        let mut failed = None;
        for seq in seqs {
            match self.remove(seq) {
                Ok(Some(id)) => removed.push(id),
                Ok(None) => {}
                Err(e) => {
                    failed = Some(RemovalFailed::NotRemoved(e));
                    break;
                }
            }
        }
        if !removed.is_empty() {
            if let Err(e) = self.store.flush() {
                // What was removed is reported as such; a refusal to remove outranks it.
                failed = failed.or(Some(RemovalFailed::NotFlushed(e)));
            }
        }
        (removed, failed)
    }

    /// Forgets message `id` when `removable` allows it (it is not on its way already).
    /// Whether it was removed; [`RemovalFailed::NotFlushed`] means it was.
    pub fn cancel(
        &mut self,
        id: &str,
        removable: impl Fn(u64) -> bool,
    ) -> Result<bool, RemovalFailed> {
        match self.by_id.get(id).copied() {
            Some(seq) if removable(seq) => match self.remove_durably(vec![seq]) {
                (_, Some(failed)) => Err(failed),
                (removed, None) => Ok(!removed.is_empty()),
            },
            _ => Ok(false),
        }
    }

    /// The gateway stored message `id`: forget it. Returns its seq when it was queued.
    pub fn ack(&mut self, id: &str) -> Result<Option<u64>, StorageError> {
        let Some(seq) = self.by_id.get(id).copied() else {
            return Ok(None);
        };
        self.remove(seq)?;
        Ok(Some(seq))
    }

    /// Forgets message `seq` (acked, expired, or refused for good).
    pub fn remove(&mut self, seq: u64) -> Result<Option<String>, StorageError> {
        let Some(entry) = self.index.get(&seq) else {
            return Ok(None);
        };
        self.store.remove(seq)?;
        self.bytes -= entry.size;
        self.by_id.remove(&entry.id);
        if let Some(key) = &entry.replace_key {
            if let Some(seqs) = self.by_key.get_mut(key) {
                seqs.retain(|s| *s != seq);
                if seqs.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        Ok(self.index.remove(&seq).map(|e| e.id))
    }

    /// The first queued seq after `after` (from the start when `None`).
    pub fn next_after(&self, after: Option<u64>) -> Option<u64> {
        let from = after.map_or(0, |s| s.saturating_add(1));
        self.index.range(from..).next().map(|(seq, _)| *seq)
    }

    /// The seq of message `id`, when queued.
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        self.by_id.get(id).copied()
    }

    /// Reads a queued message.
    pub fn get(&self, seq: u64) -> Result<Option<QueuedMessage>, StorageError> {
        if !self.index.contains_key(&seq) {
            return Ok(None);
        }
        self.store.get(seq)
    }

    /// Whether message `seq` is past its age limit or its own expiry at `now_ms`.
    pub fn is_expired(&self, seq: u64, now_ms: u64) -> bool {
        self.index
            .get(&seq)
            .is_some_and(|e| now_ms > self.deadline_ms(e))
    }

    /// The last ms at which `entry` may still be sent.
    fn deadline_ms(&self, entry: &Entry) -> u64 {
        let max_age_ms = self.limits.max_age.as_millis().min(u128::from(u64::MAX)) as u64;
        let aged = entry.created_ms.saturating_add(max_age_ms);
        entry.expires_ms.map_or(aged, |at| at.min(aged))
    }

    /// When the next queued message that `removable` allows expires (ms since the epoch;
    /// the last ms it may still be sent).
    pub fn next_deadline_ms(&self, removable: impl Fn(u64) -> bool) -> Option<u64> {
        self.index
            .iter()
            .filter(|(seq, _)| removable(**seq))
            .map(|(_, e)| self.deadline_ms(e))
            .min()
    }

    /// Drops every message past its age limit or time to live that `removable` allows;
    /// returns their ids, oldest first, and the failure that stopped it, if any (the ids
    /// before it were dropped all the same).
    pub fn expire(
        &mut self,
        now_ms: u64,
        removable: impl Fn(u64) -> bool,
    ) -> (Vec<String>, Option<StorageError>) {
        let expired: Vec<u64> = self
            .index
            .iter()
            .filter(|(seq, e)| now_ms > self.deadline_ms(e) && removable(**seq))
            .map(|(seq, _)| *seq)
            .collect();
        let mut ids = Vec::with_capacity(expired.len());
        for seq in expired {
            match self.remove(seq) {
                Ok(Some(id)) => ids.push(id),
                Ok(None) => {}
                Err(e) => return (ids, Some(e)),
            }
        }
        (ids, None)
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// When the oldest queued message was stored (ms since the epoch).
    pub fn oldest_created_ms(&self) -> Option<u64> {
        self.index.values().map(|e| e.created_ms).min()
    }

    /// The inbox cursor kept in the same store.
    pub fn inbox_cursor(&self) -> Result<u64, StorageError> {
        self.store.inbox_cursor()
    }

    /// Stores the inbox cursor durably.
    pub fn set_inbox_cursor(&mut self, seq: u64) -> Result<(), StorageError> {
        self.write_positions(&PositionWrite {
            inbox_cursor: Some(seq),
            streams: Vec::new(),
        })
    }

    /// Stores the inbox cursor and stream positions durably, with one sync.
    pub fn write_positions(&mut self, write: &PositionWrite) -> Result<(), StorageError> {
        if write.is_empty() {
            return Ok(());
        }
        self.store.write_positions(write)
    }

    /// Writes everything pending to disk.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        self.store.flush()
    }

    /// Every stored stream position (see [`QueueStore::stream_positions`]).
    pub fn stream_positions(&self) -> Result<Vec<(Option<String>, StreamPosition)>, StorageError> {
        self.store.stream_positions()
    }

    /// Stores or forgets one stream's position, durably.
    pub fn set_stream_position(
        &mut self,
        room: Option<&str>,
        position: Option<&StreamPosition>,
    ) -> Result<(), StorageError> {
        self.write_positions(&PositionWrite {
            inbox_cursor: None,
            streams: vec![(room.map(str::to_owned), position.cloned())],
        })
    }
}
