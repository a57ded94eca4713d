//! Role `store` (Q3): the SDK's write pattern on a storage engine, in a process of its
//! own so its memory is its own. Two engines: sled 0.34 set up as the SDK's queue is
//! (`cache_capacity` 4 MiB, `Mode::LowSpace`, `flush()` after every write), and redb with
//! its default durability (`Durability::Immediate`: the commit is on disk when it
//! returns). A record is 200 bytes under a big-endian u64 key, as the queue's are about.
//!
//! Modes: `measure` writes `count` records one durable write at a time, then `count` more
//! in batches of `batch` (one sync per batch), reopens the store and emits the figures;
//! `crash` writes one durable record at a time forever, printing `{"acked": n}` after
//! each, until the parent SIGKILLs it and checks with [`count_records`] that every acked
//! record survived.

use super::emit;
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Engine {
    /// sled 0.34, as `src/queue/sled_store.rs` opens it.
    Sled,
    /// redb, default durability.
    Redb,
}

impl Engine {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled 0.34",
            Engine::Redb => "redb 5",
        }
    }
}

/// Settings of [`super::Role::Store`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Store {
    /// The engine.
    pub engine: Engine,
    /// A fresh directory for its files.
    pub dir: PathBuf,
    /// Records written one at a time (and as many again in batches), in `measure` mode.
    pub count: u64,
    /// Records per batch.
    pub batch: u64,
    /// Write until killed instead of measuring.
    pub crash: bool,
}

const RECORD: [u8; 200] = [b'x'; 200];
const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("queue");
/// sled's cache, as the SDK sets it.
const SLED_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// An open store.
enum Open {
    Sled(sled::Db),
    Redb(redb::Database),
}

fn open(engine: Engine, dir: &Path) -> Result<Open> {
    Ok(match engine {
        Engine::Sled => Open::Sled(
            sled::Config::new()
                .path(dir)
                .cache_capacity(SLED_CACHE_BYTES)
                .mode(sled::Mode::LowSpace)
                .open()?,
        ),
        Engine::Redb => {
            std::fs::create_dir_all(dir)?;
            Open::Redb(redb::Database::create(dir.join("queue.redb"))?)
        }
    })
}

impl Open {
    /// Writes `keys` and returns once they are on disk (one sync).
    fn put_durable(&self, keys: std::ops::Range<u64>) -> Result<()> {
        match self {
            Open::Sled(db) => {
                let mut batch = sled::Batch::default();
                for key in keys {
                    batch.insert(&key.to_be_bytes(), &RECORD[..]);
                }
                db.apply_batch(batch)?;
                db.flush()?;
            }
            Open::Redb(db) => {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(REDB_TABLE)?;
                    for key in keys {
                        table.insert(key, &RECORD[..])?;
                    }
                }
                txn.commit()?;
            }
        }
        Ok(())
    }

    /// The keys stored, in order.
    fn keys(&self) -> Result<Vec<u64>> {
        let mut keys = Vec::new();
        match self {
            Open::Sled(db) => {
                for entry in db.iter() {
                    let (key, _) = entry?;
                    keys.push(u64::from_be_bytes(key.as_ref().try_into()?));
                }
            }
            Open::Redb(db) => {
                use redb::{ReadableDatabase, ReadableTable};
                let txn = db.begin_read()?;
                match txn.open_table(REDB_TABLE) {
                    Ok(table) => {
                        for entry in table.iter()? {
                            keys.push(entry?.0.value());
                        }
                    }
                    Err(redb::TableError::TableDoesNotExist(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(keys)
    }
}

/// Opens the store a killed `crash` worker left and returns its keys (what survived).
pub fn count_records(engine: Engine, dir: &Path) -> Result<Vec<u64>> {
    open(engine, dir)
        .with_context(|| format!("{} does not open after the kill", engine.name()))?
        .keys()
}

/// Resident memory of this process, bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Runs the role.
pub fn run(config: Store) -> Result<()> {
    let rss_start = rss_bytes();
    let store = open(config.engine, &config.dir)?;
    if config.crash {
        let mut key = 0u64;
        loop {
            store.put_durable(key..key + 1)?;
            emit(json!({"acked": key}));
            key += 1;
        }
    }
    let rss_open = rss_bytes();
    let mut latency = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    for key in 0..config.count {
        let one = Instant::now();
        store.put_durable(key..key + 1)?;
        latency.record(one.elapsed().as_micros() as u64)?;
    }
    let single_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut key = config.count;
    while key < 2 * config.count {
        let end = (key + config.batch).min(2 * config.count);
        store.put_durable(key..end)?;
        key = end;
    }
    let batched_s = started.elapsed().as_secs_f64();
    let rss_written = rss_bytes();
    drop(store);
    let disk = disk_bytes(&config.dir);
    let started = Instant::now();
    let store = open(config.engine, &config.dir)?;
    let stored = store.keys()?.len() as u64;
    let reopen_ms = started.elapsed().as_secs_f64() * 1000.0;
    emit(json!({
        "durable_writes_per_s": config.count as f64 / single_s,
        "write_p50_us": latency.value_at_quantile(0.5),
        "write_p99_us": latency.value_at_quantile(0.99),
        "batched_records_per_s": config.count as f64 / batched_s,
        "records": stored,
        "reopen_and_scan_ms": reopen_ms,
        "disk_bytes": disk,
        "rss_open_kb": rss_open.saturating_sub(rss_start) / 1024,
        "rss_after_writes_kb": rss_written.saturating_sub(rss_start) / 1024,
    }));
    Ok(())
}
