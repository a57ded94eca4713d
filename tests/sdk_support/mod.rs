//! Shared helpers of the SDK tests: a recording event listener, scripted token providers,
//! a scripted in-memory gateway for paused-clock engine tests, a fault-injecting TCP proxy
//! and a handle on a real gateway with its backend HTTP API.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod gateway;
pub mod proxy;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether::engine::Snapshot;
use tether::transport::{
    ConnectError, ConnectRequest, Connection, Connector, Incoming, SocketCommand,
};
use tether::{
    ConnectionStatus, EventListener, InboundMessage, TetherError, TokenError, TokenProvider,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// One callback the listener received.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Status(ConnectionStatus),
    Message(InboundMessage),
    Ack(String),
    Error(TetherError),
    Expired(String),
    Replaced { id: String, by: String },
    StreamReset(Option<String>),
}

/// Records every callback, in order, and lets a test wait for one.
pub struct Recorder {
    tx: mpsc::UnboundedSender<Seen>,
    pub all: Mutex<Vec<Seen>>,
}

impl Recorder {
    pub fn new() -> (Arc<Recorder>, mpsc::UnboundedReceiver<Seen>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Recorder {
                tx,
                all: Mutex::new(Vec::new()),
            }),
            rx,
        )
    }

    fn push(&self, seen: Seen) {
        self.all.lock().unwrap().push(seen.clone());
        let _ = self.tx.send(seen);
    }

    /// The streams reported reset, in order (`None`: the app stream).
    pub fn stream_resets(&self) -> Vec<Option<String>> {
        self.all
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Seen::StreamReset(room) => Some(room.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn acks(&self) -> Vec<String> {
        self.all
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Seen::Ack(id) => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Ids reported by `on_expired`, in order.
    pub fn expired(&self) -> Vec<String> {
        self.all
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Seen::Expired(id) => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// `on_replaced` calls, in order, as (dropped, by).
    pub fn replaced(&self) -> Vec<(String, String)> {
        self.all
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Seen::Replaced { id, by } => Some((id.clone(), by.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn messages(&self) -> Vec<InboundMessage> {
        self.all
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Seen::Message(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn statuses(&self) -> Vec<ConnectionStatus> {
        self.all
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Seen::Status(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }
}

impl EventListener for Recorder {
    fn on_status(&self, status: ConnectionStatus) {
        self.push(Seen::Status(status));
    }
    fn on_message(&self, message: InboundMessage) {
        self.push(Seen::Message(message));
    }
    fn on_ack(&self, id: String) {
        self.push(Seen::Ack(id));
    }
    fn on_error(&self, error: Arc<TetherError>) {
        self.push(Seen::Error((*error).clone()));
    }
    fn on_expired(&self, id: String) {
        self.push(Seen::Expired(id));
    }
    fn on_replaced(&self, id: String, by: String) {
        self.push(Seen::Replaced { id, by });
    }
    fn on_stream_reset(&self, room: Option<String>) {
        self.push(Seen::StreamReset(room));
    }
}

/// Waits (at most `limit`) until `pred` accepts a callback; returns it.
pub async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    limit: Duration,
    mut pred: impl FnMut(&Seen) -> bool,
) -> Seen {
    tokio::time::timeout(limit, async {
        loop {
            let seen = rx.recv().await.expect("listener gone");
            if pred(&seen) {
                return seen;
            }
        }
    })
    .await
    .expect("the expected callback did not come in time")
}

/// Waits (at most `limit`) for the message whose data is `data` (JSON text).
pub async fn message_with(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    limit: Duration,
    data: &str,
) -> InboundMessage {
    match wait_for(
        seen,
        limit,
        |e| matches!(e, Seen::Message(m) if m.data_json == data),
    )
    .await
    {
        Seen::Message(m) => m,
        _ => unreachable!("wait_for returns what the predicate accepted"),
    }
}

/// Waits (at most `limit`) until the client's published snapshot satisfies `pred`.
pub async fn wait_snapshot(
    rx: &mut watch::Receiver<Snapshot>,
    limit: Duration,
    mut pred: impl FnMut(&Snapshot) -> bool,
) -> Snapshot {
    tokio::time::timeout(limit, async {
        loop {
            {
                let s = rx.borrow_and_update();
                if pred(&s) {
                    return s.clone();
                }
            }
            rx.changed().await.expect("engine gone");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("state not reached in time; last: {:?}", rx.borrow().status))
}

/// A token provider answering from a script, then repeating its last answer; the first
/// `failures` calls fail instead.
pub struct Tokens {
    answers: Mutex<VecDeque<Option<String>>>,
    last: Mutex<Option<String>>,
    failures: AtomicU32,
    pub calls: AtomicU32,
}

impl Tokens {
    pub fn fixed(token: &str) -> Arc<Tokens> {
        Tokens::script(vec![Some(token.to_owned())])
    }

    pub fn script(answers: Vec<Option<String>>) -> Arc<Tokens> {
        Arc::new(Tokens {
            answers: Mutex::new(answers.into()),
            last: Mutex::new(None),
            failures: AtomicU32::new(0),
            calls: AtomicU32::new(0),
        })
    }

    /// Fails the first `failures` calls ("token service unavailable"), then gives `token`.
    pub fn failing_first(failures: u32, token: &str) -> Arc<Tokens> {
        let tokens = Tokens::fixed(token);
        tokens.failures.store(failures, Ordering::SeqCst);
        tokens
    }

    /// Replaces every later answer.
    pub fn set(&self, token: Option<String>) {
        self.answers.lock().unwrap().clear();
        *self.last.lock().unwrap() = token;
    }

    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl TokenProvider for Tokens {
    async fn fetch_token(&self) -> Result<Option<String>, TokenError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.failures.load(Ordering::SeqCst) {
            return Err(TokenError::Failed {
                reason: "token service unavailable".into(),
            });
        }
        let mut answers = self.answers.lock().unwrap();
        let mut last = self.last.lock().unwrap();
        if let Some(answer) = answers.pop_front() {
            *last = answer;
        }
        Ok(last.clone())
    }
}

/// The gateway side of one scripted socket.
pub struct FakeSocket {
    pub request: ConnectRequest,
    pub at: Instant,
    pub to_client: mpsc::Sender<Incoming>,
    pub from_client: mpsc::UnboundedReceiver<SocketCommand>,
}

impl FakeSocket {
    pub async fn send(&self, frame: &str) {
        self.to_client
            .send(Incoming::Text(frame.to_owned()))
            .await
            .expect("client gone");
    }

    pub async fn establish(&self, heartbeat_ms: u64) {
        self.establish_expiring(heartbeat_ms, None).await;
    }

    /// `connection_established`, announcing `token_ms` until the gateway would end the
    /// session for its token (as gateways with `refresh_token` do) when given.
    pub async fn establish_expiring(&self, heartbeat_ms: u64, token_ms: Option<u64>) {
        let expiry = token_ms.map_or(String::new(), |ms| format!(r#","tokenExpiresIn":{ms}"#));
        self.send(&format!(
            r#"{{"type":"connection_established","data":{{"connectionId":"c","serverId":"s","userId":"u","app":"a","userType":"customer","heartbeatInterval":{heartbeat_ms},"replayFrom":null,"replayCount":0{expiry}}}}}"#
        ))
        .await;
    }

    /// The gateway ends the socket: with a close `code`, or without a close frame.
    pub async fn close(&self, code: Option<u16>) {
        self.to_client
            .send(Incoming::Closed(code))
            .await
            .expect("client gone");
    }

    /// The next text frame the client sent, decoded.
    pub async fn next_frame(&mut self) -> serde_json::Value {
        match self.from_client.recv().await.expect("client closed") {
            SocketCommand::Text(text) => serde_json::from_str(&text).unwrap(),
            SocketCommand::Close(code) => panic!("client closed with {code}"),
        }
    }

    /// The next frame of type `kind`, skipping others (pings, acks).
    pub async fn next_of(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let frame = self.next_frame().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }
}

/// A connector that plays the gateway: each attempt takes the next scripted answer
/// (accept when the script is empty) and hands the accepted socket to the test.
pub struct ScriptedGateway {
    script: Mutex<VecDeque<Option<ConnectError>>>,
    sockets: mpsc::UnboundedSender<FakeSocket>,
    pub attempts: Mutex<Vec<(Instant, ConnectRequest)>>,
}

impl ScriptedGateway {
    pub fn new() -> (Arc<ScriptedGateway>, mpsc::UnboundedReceiver<FakeSocket>) {
        let (sockets, rx) = mpsc::unbounded_channel();
        (
            Arc::new(ScriptedGateway {
                script: Mutex::new(VecDeque::new()),
                sockets,
                attempts: Mutex::new(Vec::new()),
            }),
            rx,
        )
    }

    /// The next attempts fail with these errors, in order.
    pub fn refuse(&self, errors: impl IntoIterator<Item = ConnectError>) {
        self.script
            .lock()
            .unwrap()
            .extend(errors.into_iter().map(Some));
    }

    pub fn attempt_times(&self) -> Vec<Instant> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Connector for ScriptedGateway {
    fn connect(
        &self,
        request: ConnectRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Connection, ConnectError>> + Send>> {
        let now = Instant::now();
        self.attempts.lock().unwrap().push((now, request.clone()));
        let answer = self.script.lock().unwrap().pop_front().flatten();
        let sockets = self.sockets.clone();
        Box::pin(async move {
            if let Some(error) = answer {
                return Err(error);
            }
            let (to_client, incoming) = mpsc::channel(64);
            let (outgoing, from_client) = mpsc::unbounded_channel();
            sockets
                .send(FakeSocket {
                    request,
                    at: now,
                    to_client,
                    from_client,
                })
                .expect("test gone");
            Ok(Connection { outgoing, incoming })
        })
    }
}

/// The query parameter `name` of a connect request.
pub fn query(request: &ConnectRequest, name: &str) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
