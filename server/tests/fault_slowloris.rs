//! Fault: slowloris on the handshake (docs/reliability.md). Many sockets each trickle
//! their HTTP upgrade request a byte at a time and never finish it.

#![allow(clippy::unwrap_used)] // test helpers panic on purpose

mod support;

use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The two tests count this process's descriptors: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Setup: one gateway with WS_HANDSHAKE_TIMEOUT 1 s.
/// Fault: 200 raw TCP sockets send a partial upgrade request one byte every 200 ms and
/// never complete it.
/// Expected: every one is dropped by the gateway within the head deadline (plus
/// scheduling slack); meanwhile and afterwards real clients connect and are served; the
/// file descriptors the attack held are released.
/// Must not lose: the real clients' handshakes and messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_trickling_handshakes_are_dropped_and_real_clients_get_through() {
    let _serial = SERIAL.lock().await;
    let gw = TestGateway::with(|c| c.handshake_timeout = Duration::from_secs(1)).await;
    let before = open_fds();
    let started = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..200 {
        let addr = gw.addr;
        attackers.push(tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = b"GET /ws?app=shop&device=slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let opened = Instant::now();
            for byte in request.iter() {
                if socket.write_all(&[*byte]).await.is_err() {
                    return opened.elapsed();
                }
                // Between bytes, see whether the gateway hung up.
                let mut buffer = [0u8; 512];
                match tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buffer))
                    .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return opened.elapsed(),
                    Ok(Ok(_)) => {
                        // A 408 answer may come first; the close follows.
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            socket.read_to_end(&mut Vec::new()),
                        )
                        .await;
                        return opened.elapsed();
                    }
                    Err(_) => {}
                }
            }
            panic!("the gateway let a trickling handshake run for the whole request");
        }));
    }
    // While the attack runs, a real client connects and is served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut real = gw.connect("u1", "real").await;
    assert_eq!(
        real.request(serde_json::json!({"type": "ping"})).await["type"],
        "pong"
    );
    let mut longest = Duration::ZERO;
    for attacker in attackers {
        longest = longest.max(attacker.await.unwrap());
    }
    assert!(
        longest < Duration::from_secs(4),
        "a trickling socket lived {longest:?} with a 1 s head deadline"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The descriptors come back (the attackers' ends are closed too, so both sides go).
    eventually("descriptors released", || async {
        open_fds() <= before + 10
    })
    .await;
    gw.connect("u2", "after").await;
}

/// Setup: one gateway with WS_HANDSHAKE_TIMEOUT 1 s.
/// Fault: 100 sockets connect and send nothing at all.
/// Expected: dropped after the head deadline too (the deadline starts at accept, not at
/// the first byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_dropped_after_the_head_deadline() {
    let _serial = SERIAL.lock().await;
    let gw = TestGateway::with(|c| c.handshake_timeout = Duration::from_secs(1)).await;
    let mut sockets = Vec::new();
    for _ in 0..100 {
        sockets.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    let started = Instant::now();
    for mut socket in sockets {
        let mut buffer = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buffer)).await;
        assert!(closed.is_ok(), "a silent socket was kept past 5 s");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    gw.connect("u1", "d").await;
}
