//! The log sink: the SDK's tracing output reaches the host, the token never does, and the
//! sink is installed once per process. (Its own test binary: the subscriber is global.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use sdk_support::{wait_snapshot, Recorder, ScriptedGateway, Tokens};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether::{
    set_log_sink, ClientConfig, ConnectionStatus, ErrorKind, LogLevel, LogSink, StartOptions,
    TetherClient,
};

const SECRET_TOKEN: &str = "eyJ-very-secret-token";

#[derive(Default)]
struct Lines(Mutex<Vec<(LogLevel, String, String)>>);

impl LogSink for Lines {
    fn log(&self, level: LogLevel, target: String, message: String) {
        self.0.lock().unwrap().push((level, target, message));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_gets_the_sdk_logs_without_the_token() {
    let lines = Arc::new(Lines::default());
    set_log_sink(lines.clone(), LogLevel::Trace).unwrap();
    let again = set_log_sink(Arc::new(Lines::default()), LogLevel::Info).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::InvalidConfig);

    let dir = tempfile::tempdir().unwrap();
    let (gateway, mut sockets) = ScriptedGateway::new();
    let (recorder, _seen) = Recorder::new();
    let client = TetherClient::start(
        ClientConfig::new(
            "ws://gw.test/ws",
            "app",
            "device",
            dir.path().to_str().unwrap(),
        ),
        recorder,
        Tokens::fixed(SECRET_TOKEN),
        &tokio::runtime::Handle::current(),
        StartOptions {
            connector: Some(gateway),
            seed: Some(1),
        },
    )
    .unwrap();
    client.connect();
    let socket = sockets.recv().await.unwrap();
    assert_eq!(socket.request.token, SECRET_TOKEN);
    socket.establish(30_000).await;
    let mut watch = client.watch();
    wait_snapshot(&mut watch, Duration::from_secs(10), |s| {
        s.status == ConnectionStatus::Connected
    })
    .await;
    client
        .send_message("chat".into(), r#"{"body":"private words"}"#.into())
        .await
        .unwrap();
    client.shutdown().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = lines
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(level, target, message)| {
                *level == LogLevel::Info
                    && target.starts_with("tether")
                    && message.contains("session established")
            });
        if seen {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no info line arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (level, _, message) in lines.0.lock().unwrap().iter() {
        assert!(!message.contains(SECRET_TOKEN), "token logged: {message}");
        if *level >= LogLevel::Info {
            assert!(!message.contains("private words"), "body logged: {message}");
        }
    }
}
