//! Fault: the SDK's storage fills up or turns read-only while the app sends (reliability
//! anchors T25). `send_message` promises Ok only after the message is on disk, so a full
//! or read-only disk must give an error, never a false Ok.
//!
//! The storage is a small tmpfs this test mounts (root needed; without root the test says
//! why and passes, unless `TETHER_REQUIRE_ROOT=1`, which CI sets).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::{Recorder, Tokens};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tether::queue::{QueueStore, SledStore};
use tether::{ClientConfig, ErrorKind, TetherClient};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A tmpfs mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tether-rel"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs failed");
        Tmpfs {
            dir,
            _parent: parent,
        }
    }

    fn remount(&self, options: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    assert!(
        std::env::var("TETHER_REQUIRE_ROOT").as_deref() != Ok("1"),
        "TETHER_REQUIRE_ROOT=1 but not root"
    );
    println!("skipped: mounting a tmpfs needs root");
    true
}

fn client(dir: &Path) -> Result<Arc<TetherClient>, Arc<tether::TetherError>> {
    let (recorder, _seen) = Recorder::new();
    // Never connected: the messages stay queued, so every byte stays on the disk.
    let config = ClientConfig::new(
        "ws://127.0.0.1:9/ws",
        "shop",
        "disk-device",
        dir.to_str().unwrap(),
    );
    TetherClient::new(config, recorder, Tokens::fixed("unused"))
}

/// Fills the file system until a write fails.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.flush();
    path
}

fn stored_ids(dir: &Path) -> Vec<String> {
    let store = SledStore::open(dir).unwrap();
    store.load().unwrap().into_iter().map(|m| m.id).collect()
}

/// Setup: the SDK's storage directory on an 8 MiB tmpfs, the client offline so every
/// message stays queued on disk.
/// Fault: a filler file takes all free space; the app keeps calling `send_message` with
/// 16 KiB messages (up to 400 times).
/// Expected: `send_message` fails with `Storage` once sled cannot write (it may succeed
/// while sled's preallocated segments have room); no panic; after the space is freed, a
/// client opened again on the same directory has every message that got Ok and takes
/// new ones.
/// Must not lose: any message whose `send_message` returned Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_storage_errors_never_a_false_ok() {
    if skip_unless_root() {
        return;
    }
    let fs = Tmpfs::mount("8m");
    let db = fs.dir.join("db");
    let sdk = client(&db).unwrap();
    let first = sdk
        .send_message("rel.disk".into(), r#"{"n":-1}"#.into())
        .await
        .unwrap();
    let filler = fill(&fs.dir);
    let payload = format!(r#"{{"pad":"{}"}}"#, "x".repeat(16 * 1024));
    let mut ok = vec![first];
    let mut errors = Vec::new();
    for _ in 0..400 {
        match sdk.send_message("rel.disk".into(), payload.clone()).await {
            Ok(id) => ok.push(id),
            Err(e) => {
                errors.push(e);
                if errors.len() >= 3 {
                    break;
                }
            }
        }
    }
    // A burst of calls at once: stored together with one sync, so all of them or none
    // (each answer says which).
    let burst = futures_util::future::join_all(
        (0..20).map(|_| sdk.send_message("rel.disk".into(), payload.clone())),
    )
    .await;
    let burst_ok = burst.iter().filter(|r| r.is_ok()).count();
    for answer in burst {
        match answer {
            Ok(id) => ok.push(id),
            Err(e) => errors.push(e),
        }
    }
    println!("disk full: burst of 20 at once: {burst_ok} Ok");
    assert!(
        !errors.is_empty(),
        "{} sends succeeded on a full disk",
        ok.len()
    );
    for e in &errors {
        assert_eq!(e.kind(), ErrorKind::Storage, "{}", e.message());
    }
    println!(
        "disk full: {} Ok before the first error; errors: {}",
        ok.len(),
        errors[0].message()
    );
    // Room again. A client opened again at once on the same directory works and has
    // every Ok'd message (the running client's own recovery has its own test below).
    std::fs::remove_file(&filler).unwrap();
    sdk.shutdown().await;
    drop(sdk);
    let again = client(&db).expect("reopens once the disk has room");
    let after = again
        .send_message("rel.disk".into(), r#"{"n":"after"}"#.into())
        .await
        .expect("a reopened client takes messages");
    again.shutdown().await;
    drop(again);
    ok.push(after);
    let on_disk = stored_ids(&db);
    for id in &ok {
        assert!(on_disk.contains(id), "{id} got Ok but is not on disk");
    }
    // And nothing that got an error came back to be sent after all.
    assert_eq!(
        on_disk.len(),
        ok.len(),
        "a message that got an error is on disk"
    );
}

/// Setup: a client's database on a tmpfs.
/// Fault: the file system is remounted read-only, (a) while the client runs, if the
/// kernel allows it with sled's files open, and (b) before the client opens it.
/// Expected: (a) `send_message` fails (Storage), never Ok; (b) the constructor returns a
/// Storage error, no panic.
/// Must not lose: the messages queued before (still there once writable again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_storage_is_an_error_at_send_and_at_open() {
    if skip_unless_root() {
        return;
    }
    let fs = Tmpfs::mount("16m");
    let db = fs.dir.join("db");
    let sdk = client(&db).unwrap();
    let kept = sdk.send_message("rel.ro".into(), "1".into()).await.unwrap();
    if fs.remount("ro") {
        let result = sdk.send_message("rel.ro".into(), "2".into()).await;
        match result {
            Ok(id) => panic!("send_message returned Ok ({id}) on a read-only file system"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Storage, "{}", e.message());
                println!("read-only while running: {}", e.message());
            }
        }
        assert!(fs.remount("rw"));
    } else {
        println!("read-only while running: the kernel refused the remount (files open for writing: EBUSY); case (a) not reachable this way");
    }
    sdk.shutdown().await;
    drop(sdk);
    assert!(fs.remount("ro"));
    match client(&db) {
        Ok(_) => panic!("opened a read-only database for writing"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Storage, "{}", e.message());
            println!("read-only at open: {}", e.message());
        }
    }
    assert!(fs.remount("rw"));
    assert!(stored_ids(&db).contains(&kept));
}

/// Setup: as above, one client kept running throughout.
/// Fault: the disk fills while the app sends; then the filler is deleted.
/// Expected: once the disk has room, the same running client takes messages again (sled
/// keeps its first I/O error, so the store reopens the database); exactly the messages
/// answered Ok are queued (a message whose write failed half-way is removed).
/// Must not lose: any message whose `send_message` returned Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_client_recovers_once_the_full_disk_has_room() {
    if skip_unless_root() {
        return;
    }
    let fs = Tmpfs::mount("8m");
    let sdk = client(&fs.dir.join("db")).unwrap();
    sdk.send_message("t".into(), "1".into()).await.unwrap();
    let filler = fill(&fs.dir);
    let payload = format!(r#""{}""#, "x".repeat(16 * 1024));
    let mut stored = 1;
    let mut failed = false;
    for _ in 0..100 {
        match sdk.send_message("t".into(), payload.clone()).await {
            Ok(_) => stored += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Storage);
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the disk never filled");
    std::fs::remove_file(&filler).unwrap();
    sdk.send_message("t".into(), "2".into())
        .await
        .expect("send_message works again once the disk has room");
    assert_eq!(sdk.stats().queued, stored + 1);
    sdk.shutdown().await;
}
