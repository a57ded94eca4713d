//! [`QueueStore`] on sled 0.34: queued messages in the tree `outbox` keyed by their
//! big-endian seq (so key order is queue order), the inbox cursor in the default tree, and
//! stream positions in the default tree under `stream:app` and `stream:room:<name>` (JSON
//! `{offset, epoch}`; a database from before streams simply has none).
//! sled buffers writes and flushes every 500 ms on its own; the durable operations call
//! `flush()` themselves.
//!
//! sled keeps the first I/O error it meets (a full disk, say) and fails every later call
//! with it. So after any failure the store drops its handles and opens the database again
//! on the next call: once the disk has room, the running client works again. A message
//! whose append failed is removed at that reopening if part of it reached the disk, since
//! its caller was told it was not stored.

use super::{PositionWrite, QueueStore, QueuedMessage, StorageError};
use backon::{BlockingRetryable, ConstantBuilder};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tether_protocol::stream::StreamPosition;

const OUTBOX_TREE: &str = "outbox";
const INBOX_CURSOR_KEY: &[u8] = b"inbox_cursor";
const STREAM_PREFIX: &str = "stream:";

/// The key of a stream's position: `stream:app` or `stream:room:<name>`.
fn stream_key(room: Option<&str>) -> String {
    match room {
        None => format!("{STREAM_PREFIX}app"),
        Some(room) => format!("{STREAM_PREFIX}room:{room}"),
    }
}

/// sled's page cache. Its default is 1 GiB, far too much for a phone; the queue and the
/// positions are small, and 4 MiB keeps them in memory.
pub const CACHE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: String,
    created_ms: u64,
    /// Added in November 2026; records written before have neither field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replace_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
}

/// The sled-backed store. Holds sled's directory lock until dropped.
pub struct SledStore {
    dir: PathBuf,
    // A mutex so read calls (`&self`) can reopen too; the engine is the only caller, so
    // it is never contended.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The database and its outbox tree; `None` after a failure, until reopened.
    open: Option<(sled::Db, sled::Tree)>,
    /// Messages whose append failed, to remove at the next opening.
    undo: Vec<u64>,
}

/// How long opening waits for sled's directory lock, and how often it looks again. When a
/// store is dropped, sled's background I/O threads can hold the lock a moment longer; a
/// client started again at once on the same directory (or the reopening after a failure)
/// would otherwise fail with "could not acquire lock". A lock held for longer than this
/// is another live client on the same directory: a real error.
const LOCK_WAIT_TRIES: usize = 100;
const LOCK_WAIT_STEP: Duration = Duration::from_millis(20);

/// sled reports a held lock as `Io(Other)` with the text "could not acquire lock on ...".
fn lock_busy(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

/// sled 0.34 writes a snapshot at every opening that recovers new log entries: into
/// `snap.<lsn>.generating`, renamed to `snap.<lsn>` once written and synced. But it also
/// reads `.generating` files as snapshots (its directory filter skips only `.in___motion`),
/// and the highest name wins: a process killed while writing one (an empty or cut file)
/// leaves a "snapshot" that fails its checksum, and every later opening of the directory
/// fails with "Read corrupted data" - the queued messages are never sent again. Such a
/// file was never published: removing it gives exactly the state of a process killed
/// just before the write began (the previous snapshot plus the log), which sled recovers
/// from. Only while holding sled's own lock on the `db` file, so a live opening's
/// snapshot is never touched; when the lock is held, sled's opening reports it.
fn discard_unfinished_snapshots(dir: &Path) -> std::io::Result<()> {
    use fs2::FileExt;
    // Read-only is enough for the lock, and leaves a read-only directory's error to sled.
    let db = match std::fs::File::open(dir.join("db")) {
        Ok(db) => db,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if db.try_lock_exclusive().is_err() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
        }
    }
    // Dropping `db` releases the lock for sled.
    Ok(())
}

fn open_db(dir: &Path) -> Result<(sled::Db, sled::Tree), StorageError> {
    let open = || {
        discard_unfinished_snapshots(dir).map_err(sled::Error::Io)?;
        sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::LowSpace)
            .open()
    };
    let db = open
        .retry(
            ConstantBuilder::default()
                .with_delay(LOCK_WAIT_STEP)
                .with_max_times(LOCK_WAIT_TRIES),
        )
        .sleep(std::thread::sleep)
        .when(lock_busy)
        .call()
        .map_err(|e| StorageError::new("opening the database", e))?;
    let outbox = db
        .open_tree(OUTBOX_TREE)
        .map_err(|e| StorageError::new("opening the outbox", e))?;
    Ok((db, outbox))
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::new("creating the storage directory", e))?;
        let open = open_db(dir)?;
        Ok(SledStore {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                open: Some(open),
                undo: Vec::new(),
            }),
        })
    }

    /// Runs `op` on the database, reopening it first when a failure closed it; a failure
    /// of `op` closes it (and schedules `undo_on_failure` for removal).
    fn with<T>(
        &self,
        context: &'static str,
        undo_on_failure: &[u64],
        op: impl FnOnce(&sled::Db, &sled::Tree) -> Result<T, sled::Error>,
    ) -> Result<T, StorageError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.open.is_none() {
            let (db, outbox) = open_db(&self.dir)?;
            if !state.undo.is_empty() {
                state
                    .undo
                    .iter()
                    .try_for_each(|seq| outbox.remove(seq.to_be_bytes()).map(|_| ()))
                    .and_then(|_| db.flush().map(|_| ()))
                    .map_err(|e| StorageError::new("removing a message that failed to store", e))?;
                state.undo.clear();
            }
            state.open = Some((db, outbox));
        }
        let Some((db, outbox)) = state.open.as_ref() else {
            unreachable!("opened above")
        };
        match op(db, outbox) {
            Ok(value) => Ok(value),
            Err(e) => {
                state.open = None;
                state.undo.extend_from_slice(undo_on_failure);
                Err(StorageError::new(context, e))
            }
        }
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<QueuedMessage, StorageError> {
        let seq = u64::from_be_bytes(
            key.try_into()
                .map_err(|_| StorageError::new("reading the outbox", "key is not 8 bytes"))?,
        );
        let stored: Stored = serde_json::from_slice(value)
            .map_err(|e| StorageError::new("decoding a queued message", e))?;
        Ok(QueuedMessage {
            seq,
            id: stored.id,
            kind: stored.kind,
            data_json: stored.data,
            created_ms: stored.created_ms,
            replace_key: stored.replace_key,
            expires_ms: stored.expires_ms,
        })
    }
}

impl QueueStore for SledStore {
    fn load(&self) -> Result<Vec<QueuedMessage>, StorageError> {
        let pairs = self.with("reading the outbox", &[], |_, outbox| {
            outbox.iter().collect::<Result<Vec<_>, _>>()
        })?;
        pairs
            .iter()
            .map(|(key, value)| Self::decode(key, value))
            .collect()
    }

    fn get(&self, seq: u64) -> Result<Option<QueuedMessage>, StorageError> {
        let key = seq.to_be_bytes();
        self.with("reading a queued message", &[], |_, outbox| outbox.get(key))?
            .map(|value| Self::decode(&key, &value))
            .transpose()
    }

    fn append_all(&mut self, messages: &[QueuedMessage]) -> Result<(), StorageError> {
        let mut encoded = Vec::with_capacity(messages.len());
        for message in messages {
            let value = serde_json::to_vec(&Stored {
                id: message.id.clone(),
                kind: message.kind.clone(),
                data: message.data_json.clone(),
                created_ms: message.created_ms,
                replace_key: message.replace_key.clone(),
                expires_ms: message.expires_ms,
            })
            .map_err(|e| StorageError::new("encoding a message", e))?;
            encoded.push((message.seq.to_be_bytes(), value));
        }
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
        // Then one flush for all: a burst of sends costs one sync, not one each. All or
        // none: several go in as one sled batch (atomic on disk too, so a kill after a
        // failed flush cannot bring back part of a burst its callers were told failed);
        // one goes in as a plain insert (a batch costs a single send ~50 us more). When
        // any step fails, what was written is also removed at the next opening (`undo`),
        // and the caller indexes none.
        self.with("writing messages", &seqs, |db, outbox| {
            if encoded.len() == 1 {
                for (key, value) in encoded {
                    outbox.insert(key, value)?;
                }
            } else {
                let mut batch = sled::Batch::default();
                for (key, value) in encoded {
                    batch.insert(&key, value);
                }
                outbox.apply_batch(batch)?;
            }
            db.flush().map(|_| ())
        })
    }

    fn remove(&mut self, seq: u64) -> Result<(), StorageError> {
        self.with("removing a message", &[], |_, outbox| {
            outbox.remove(seq.to_be_bytes()).map(|_| ())
        })
    }

    fn inbox_cursor(&self) -> Result<u64, StorageError> {
        match self.with("reading the inbox cursor", &[], |db, _| {
            db.get(INBOX_CURSOR_KEY)
        })? {
            None => Ok(0),
            Some(bytes) => Ok(u64::from_be_bytes(bytes.as_ref().try_into().map_err(
                |_| StorageError::new("reading the inbox cursor", "value is not 8 bytes"),
            )?)),
        }
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.with("flushing to disk", &[], |db, _| db.flush().map(|_| ()))
    }

    fn stream_positions(&self) -> Result<Vec<(Option<String>, StreamPosition)>, StorageError> {
        let pairs = self.with("reading stream positions", &[], |db, _| {
            db.scan_prefix(STREAM_PREFIX).collect::<Result<Vec<_>, _>>()
        })?;
        pairs
            .into_iter()
            .map(|(key, value)| {
                let key = String::from_utf8_lossy(&key);
                let name = key.strip_prefix(STREAM_PREFIX).unwrap_or(&key);
                let room = name.strip_prefix("room:").map(str::to_owned);
                let position: StreamPosition = serde_json::from_slice(&value)
                    .map_err(|e| StorageError::new("decoding a stream position", e))?;
                Ok((room, position))
            })
            .collect()
    }

    fn write_positions(&mut self, write: &PositionWrite) -> Result<(), StorageError> {
        let streams = write
            .streams
            .iter()
            .map(|(room, position)| {
                let value = position
                    .as_ref()
                    .map(serde_json::to_vec)
                    .transpose()
                    .map_err(|e| StorageError::new("encoding a stream position", e))?;
                Ok((stream_key(room.as_deref()), value))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        self.with(
            "writing the inbox cursor and stream positions",
            &[],
            |db, _| {
                let mut batch = sled::Batch::default();
                if let Some(seq) = write.inbox_cursor {
                    batch.insert(INBOX_CURSOR_KEY, seq.to_be_bytes().to_vec());
                }
                for (key, value) in streams {
                    match value {
                        Some(value) => batch.insert(key.as_bytes(), value),
                        None => batch.remove(key.as_bytes()),
                    }
                }
                db.apply_batch(batch)?;
                db.flush().map(|_| ())
            },
        )
    }
}
