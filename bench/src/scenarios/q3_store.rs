//! Q3, the SDK queue's storage engine: sled 0.34 (what the queue runs on) against redb
//! (a maintained alternative) on the queue's write pattern, for the decision
//! docs/reliability.md records. Four figures per engine:
//! - durable writes one at a time (each synced before the next, as `send_message` is
//!   before it returns) and in batches of 100 (one sync per batch, as a burst is);
//! - memory and disk: resident memory of the writing process, bytes on disk;
//! - crashes: a writer SIGKILLed at a random point after 50-400 acknowledged writes, ten
//!   times; every acknowledged record must be there when the store is opened again;
//! - size: a stripped cdylib with the engine and one write-and-sync function, built with
//!   the SDK's mobile profile (opt-level s, fat LTO, one codegen unit), less the same
//!   library without the engine.

use super::row;
use crate::orchestrate::Worker;
use crate::report::Row;
use crate::worker::store::{count_records, Engine, Store};
use crate::worker::Role;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const ENGINES: [Engine; 2] = [Engine::Sled, Engine::Redb];
const CRASHES: u32 = 10;
const BATCH: u64 = 100;

/// Runs Q3.
pub async fn run(quick: bool) -> Result<Vec<Row>> {
    let count: u64 = if quick { 500 } else { 2_000 };
    let base = std::env::temp_dir().join(format!("tether-bench-q3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let sizes = library_sizes(&base.join("size")).await;
    let mut rows = Vec::new();
    for engine in ENGINES {
        let dir = base.join(format!("{engine:?}-measure"));
        let mut worker = Worker::spawn(
            &Role::Store(Store {
                engine,
                dir,
                count,
                batch: BATCH,
                crash: false,
            }),
            None,
        )?;
        let mut figures = worker.next(Duration::from_secs(600)).await?;
        worker.stop().await;
        if figures["records"] != json!(2 * count) {
            bail!(
                "{}: {} records after the run, not {}",
                engine.name(),
                figures["records"],
                2 * count
            );
        }
        let (survived, lost) = crash_rounds(engine, &base).await?;
        figures["crashes"] = json!(CRASHES);
        figures["acked_records_checked"] = json!(survived);
        figures["acked_records_lost"] = json!(lost);
        match &sizes {
            Ok(sizes) => figures["library_bytes_added"] = json!(sizes[&format!("{engine:?}")]),
            Err(e) => figures["library_bytes_added"] = json!(format!("not measured: {e}")),
        }
        println!("   {} {figures}", engine.name());
        let verdict = if lost == 0 {
            ""
        } else {
            " FAIL: acknowledged records lost"
        };
        rows.push(row(
            "Q3",
            format!(
                "{}: {count} durable writes, then {count} in batches of {BATCH}{verdict}",
                engine.name()
            ),
            figures,
        ));
        if lost > 0 {
            bail!(
                "{}: {lost} acknowledged records lost in {CRASHES} crashes",
                engine.name()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(rows)
}

/// Kills a writer `CRASHES` times at random points; (acknowledged records checked, lost).
async fn crash_rounds(engine: Engine, base: &Path) -> Result<(u64, u64)> {
    let (mut checked, mut lost) = (0, 0);
    for round in 0..CRASHES {
        let dir = base.join(format!("{engine:?}-crash-{round}"));
        let mut worker = Worker::spawn(
            &Role::Store(Store {
                engine,
                dir: dir.clone(),
                count: 0,
                batch: 1,
                crash: true,
            }),
            None,
        )?;
        let target: u64 = rand::random_range(50..=400);
        let mut acked = 0;
        while acked < target {
            acked = worker.next(Duration::from_secs(60)).await?["acked"]
                .as_u64()
                .context("acked")?;
        }
        worker.kill().await?;
        let keys = count_records(engine, &dir)?;
        let present: std::collections::BTreeSet<u64> = keys.into_iter().collect();
        checked += acked + 1;
        lost += (0..=acked).filter(|k| !present.contains(k)).count() as u64;
    }
    Ok((checked, lost))
}

/// Bytes each engine adds to a stripped mobile-profile cdylib, by building three small
/// libraries in `dir`: one per engine and one without.
async fn library_sizes(dir: &Path) -> Result<serde_json::Map<String, Value>> {
    let baseline = build_library(dir, "none", "", "").await?;
    let mut sizes = serde_json::Map::new();
    let sled_body = r#"
    let db = sled::Config::new().path(p).cache_capacity(4 << 20).mode(sled::Mode::LowSpace).open();
    match db { Ok(db) => (db.insert(key.to_be_bytes(), &[0u8; 200][..]).is_ok() && db.flush().is_ok()) as i32, Err(_) => -1 }"#;
    let redb_body = r#"
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("queue");
    let Ok(db) = redb::Database::create(p) else { return -1 };
    let Ok(txn) = db.begin_write() else { return -1 };
    { let Ok(mut t) = txn.open_table(T) else { return -1 }; if t.insert(key, &[0u8; 200][..]).is_err() { return -1 } }
    txn.commit().is_ok() as i32"#;
    for (engine, dependency, body) in [
        (Engine::Sled, r#"sled = "0.34""#, sled_body),
        (Engine::Redb, r#"redb = "5""#, redb_body),
    ] {
        let bytes =
            build_library(dir, &format!("{engine:?}").to_lowercase(), dependency, body).await?;
        sizes.insert(format!("{engine:?}"), json!(bytes.saturating_sub(baseline)));
    }
    Ok(sizes)
}

async fn build_library(dir: &Path, name: &str, dependency: &str, body: &str) -> Result<u64> {
    let root: PathBuf = dir.join(name);
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[package]\nname = \"size-{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n{dependency}\n\n[profile.release]\nopt-level = \"s\"\nlto = \"fat\"\ncodegen-units = 1\nstrip = \"symbols\"\n\n[workspace]\n"
        ),
    )?;
    let body = if body.is_empty() {
        "let _ = (p, key); 0"
    } else {
        body
    };
    std::fs::write(
        root.join("src/lib.rs"),
        format!(
            "/// # Safety\n/// `path` points to `len` bytes of UTF-8.\n#[no_mangle]\npub unsafe extern \"C\" fn store_put(path: *const u8, len: usize, key: u64) -> i32 {{\n    let Ok(p) = std::str::from_utf8(std::slice::from_raw_parts(path, len)) else {{ return -1 }};\n    {body}\n}}\n"
        ),
    )?;
    let status = tokio::process::Command::new("cargo")
        .args(["build", "--release", "--quiet"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .status()
        .await?;
    if !status.success() {
        bail!("building the {name} size probe failed ({status})");
    }
    let lib = root.join(format!("target/release/libsize_{name}.so"));
    Ok(std::fs::metadata(&lib)
        .with_context(|| format!("{}", lib.display()))?
        .len())
}
