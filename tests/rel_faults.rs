//! SDK fault tests against the real gateway (embedded broker) through the fault proxy:
//! a cut between the gateway storing a client message and the ack reaching the client,
//! and a captive portal answering HTML instead of `101 Switching Protocols`.
//! Each test names its setup, the fault, the expected outcome and what must not be lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::gateway::{Backend, APP};
use sdk_support::proxy::{FaultProxy, Mode};
use sdk_support::{wait_snapshot, Recorder, Seen, Tokens};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether::{ClientConfig, ConnectionStatus, ErrorKind, TetherClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

fn client(url: &str, dir: &tempfile::TempDir, recorder: Arc<Recorder>) -> Arc<TetherClient> {
    let mut config = ClientConfig::new(url, APP, "rel-device", dir.path().to_str().unwrap());
    config.backoff_base_ms = 100;
    config.backoff_cap_ms = 800;
    config.connect_timeout_ms = 2_000;
    TetherClient::new(
        config,
        recorder,
        Tokens::fixed(&Backend::token("rel-user", 3600)),
    )
    .unwrap()
}

/// Setup: SDK -> fault proxy (every chunk delayed 300 ms) -> gateway.
/// Fault: for each of 5 messages, as soon as the gateway has stored it (seen through
/// `GET /v1/inbound`), the proxy cuts every socket: the ack is still in the proxy and
/// never reaches the SDK.
/// Expected: the SDK reconnects, resends the unacked message with the same id, the
/// gateway recognises the id and acks again without storing it twice; `on_ack` fires
/// once per message.
/// Must not lose: any message; and none may be stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_between_store_and_ack_resends_and_stores_once() {
    let backend = Backend::start(|_| {}).await;
    let proxy = FaultProxy::start(backend.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let (recorder, _seen) = Recorder::new();
    let sdk = client(&proxy.ws_url(), &dir, recorder.clone());
    sdk.connect();
    let mut watch = sdk.watch();
    let mut ids = Vec::new();
    for n in 0..5 {
        wait_snapshot(&mut watch, WAIT, |s| {
            s.status == ConnectionStatus::Connected && s.queued == 0
        })
        .await;
        proxy.set_mode(Mode::Delay(Duration::from_millis(300)));
        let id = sdk
            .send_message("rel.cut".into(), format!(r#"{{"n":{n}}}"#))
            .await
            .unwrap();
        // Stored, and the ack is on its way through the 300 ms delay: cut now.
        let deadline = Instant::now() + WAIT;
        while !backend.inbound().await.iter().any(|m| m.id == id) {
            assert!(Instant::now() < deadline, "message {n} never stored");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            !recorder.acks().contains(&id),
            "the ack arrived before the cut"
        );
        proxy.cut();
        proxy.set_mode(Mode::Pass);
        ids.push(id);
    }
    wait_snapshot(&mut watch, WAIT, |s| s.queued == 0).await;
    let stored = backend.inbound().await;
    for id in &ids {
        assert_eq!(
            stored.iter().filter(|m| m.id == *id).count(),
            1,
            "{id} stored"
        );
        assert_eq!(
            recorder.acks().iter().filter(|a| *a == id).count(),
            1,
            "on_ack for {id}"
        );
    }
    assert_eq!(stored.len(), ids.len());
    let stats = sdk.stats();
    assert!(stats.sent >= 10, "each message was sent twice: {stats:?}");
    assert!(stats.reconnects >= 5);
    sdk.shutdown().await;
}

/// A captive portal: answers every request with `answer` and closes; counts requests.
async fn portal(answer: &'static str) -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, hits)
}

const HTML_200: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 60\r\nConnection: close\r\n\r\n<html><body><a href=\"/login\">Log in to Wi-Fi</a></body></html>";
const REDIRECT_302: &str = "HTTP/1.1 302 Found\r\nLocation: http://portal.example/login\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const NOT_HTTP: &str = "SSH-2.0-OpenSSH_9.2\r\n";

/// Setup: the SDK's URL leads (through the proxy) to a captive portal: a server that
/// answers the upgrade with an HTML login page (200), a redirect (302), or something
/// that is not HTTP at all. Backoff base 100 ms, cap 800 ms.
/// Fault: 4 s of portal, during which the app queues a message.
/// Expected: each attempt fails and is reported (`on_error`, kind Network or Protocol),
/// the status is Reconnecting with a growing attempt count, attempts follow the backoff
/// (at most ~ 4 s / mean delay, far from a hot loop; bound 25), no crash; when the portal
/// is gone (the proxy now leads to the gateway) the SDK connects on its next attempt.
/// Must not lose: the message queued during the portal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captive_portal_is_reported_backs_off_and_keeps_the_queue() {
    for answer in [HTML_200, REDIRECT_302, NOT_HTTP] {
        let backend = Backend::start(|_| {}).await;
        let (portal_addr, hits) = portal(answer).await;
        let proxy = FaultProxy::start(portal_addr).await;
        let dir = tempfile::tempdir().unwrap();
        let (recorder, _seen) = Recorder::new();
        let sdk = client(&proxy.ws_url(), &dir, recorder.clone());
        sdk.connect();
        let id = sdk
            .send_message("rel.portal".into(), "{}".into())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let attempts = proxy.accepted();
        let errors: Vec<_> = recorder
            .all
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Seen::Error(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        let first_line = answer.lines().next().unwrap();
        assert!(
            (2..=25).contains(&attempts),
            "{first_line}: {attempts} attempts in 4 s"
        );
        if answer != NOT_HTTP {
            assert_eq!(u64::from(hits.load(Ordering::SeqCst)), attempts);
        }
        assert!(!errors.is_empty(), "{first_line}: nothing reported");
        assert!(
            errors
                .iter()
                .all(|e| matches!(e.kind(), ErrorKind::Network | ErrorKind::Protocol)),
            "{first_line}: {errors:?}"
        );
        let statuses = recorder.statuses();
        let highest = statuses
            .iter()
            .filter_map(|s| match s {
                ConnectionStatus::Reconnecting { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        assert!(
            highest >= 2,
            "{first_line}: attempts do not grow: {statuses:?}"
        );
        assert!(!statuses
            .iter()
            .any(|s| matches!(s, ConnectionStatus::Failed { .. })));
        assert_eq!(sdk.stats().queued, 1);
        println!(
            "captive portal {first_line:?}: {attempts} attempts in 4 s, {} errors, first: {}",
            errors.len(),
            errors[0].message()
        );

        // The user logs in to the Wi-Fi: the way to the gateway opens.
        proxy.set_upstream(backend.addr);
        let mut watch = sdk.watch();
        wait_snapshot(&mut watch, WAIT, |s| s.queued == 0).await;
        let stored = backend.inbound().await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].id, id);
        sdk.shutdown().await;
    }
}
