//! [`QueueStore`] on sled 0.34: queued messages in the tree `outbox` keyed by their
//! big-endian seq (so key order is queue order), the inbox cursor in the default tree.
//! sled buffers writes and flushes every 500 ms on its own; the durable operations call
//! `flush()` themselves.

use super::{QueueStore, QueuedMessage, StorageError};
use serde::{Deserialize, Serialize};
use std::path::Path;

const OUTBOX_TREE: &str = "outbox";
const INBOX_CURSOR_KEY: &[u8] = b"inbox_cursor";

/// sled's page cache. Its default is 1 GiB, far too much for a phone (ecosystem.md §4.2).
pub const CACHE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: String,
    created_ms: u64,
}

/// The sled-backed store. Holds sled's directory lock until dropped.
pub struct SledStore {
    db: sled::Db,
    outbox: sled::Tree,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::new("creating the storage directory", e))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|e| StorageError::new("opening the database", e))?;
        let outbox = db
            .open_tree(OUTBOX_TREE)
            .map_err(|e| StorageError::new("opening the outbox", e))?;
        Ok(SledStore { db, outbox })
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
        })
    }
}

impl QueueStore for SledStore {
    fn load(&self) -> Result<Vec<QueuedMessage>, StorageError> {
        self.outbox
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(|e| StorageError::new("reading the outbox", e))?;
                Self::decode(&key, &value)
            })
            .collect()
    }

    fn get(&self, seq: u64) -> Result<Option<QueuedMessage>, StorageError> {
        let key = seq.to_be_bytes();
        self.outbox
            .get(key)
            .map_err(|e| StorageError::new("reading a queued message", e))?
            .map(|value| Self::decode(&key, &value))
            .transpose()
    }

    fn append(&mut self, message: &QueuedMessage) -> Result<(), StorageError> {
        let value = serde_json::to_vec(&Stored {
            id: message.id.clone(),
            kind: message.kind.clone(),
            data: message.data_json.clone(),
            created_ms: message.created_ms,
        })
        .map_err(|e| StorageError::new("encoding a message", e))?;
        self.outbox
            .insert(message.seq.to_be_bytes(), value)
            .map_err(|e| StorageError::new("writing a message", e))?;
        self.flush()
    }

    fn remove(&mut self, seq: u64) -> Result<(), StorageError> {
        self.outbox
            .remove(seq.to_be_bytes())
            .map_err(|e| StorageError::new("removing a message", e))?;
        Ok(())
    }

    fn inbox_cursor(&self) -> Result<u64, StorageError> {
        match self
            .db
            .get(INBOX_CURSOR_KEY)
            .map_err(|e| StorageError::new("reading the inbox cursor", e))?
        {
            None => Ok(0),
            Some(bytes) => Ok(u64::from_be_bytes(bytes.as_ref().try_into().map_err(
                |_| StorageError::new("reading the inbox cursor", "value is not 8 bytes"),
            )?)),
        }
    }

    fn set_inbox_cursor(&mut self, seq: u64) -> Result<(), StorageError> {
        self.db
            .insert(INBOX_CURSOR_KEY, &seq.to_be_bytes())
            .map_err(|e| StorageError::new("writing the inbox cursor", e))?;
        self.flush()
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| StorageError::new("flushing to disk", e))
    }
}
