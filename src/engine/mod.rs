//! The engine: one task per client that owns the socket, the queue, the inbox cursor and
//! every timer. The FFI facade talks to it only through [`Command`]s and reads the
//! [`Snapshot`] it publishes on a `watch`; the pure [`state::Machine`] decides, the engine
//! carries the decisions out.

pub mod backoff;
pub mod dispatch;
pub mod heartbeat;
pub mod state;

use crate::callbacks::{InboundMessage, TokenProvider};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, TetherError};
use crate::inbox::{Inbox, Verdict as InboxVerdict};
use crate::lifecycle::{AppState, NetworkState};
use crate::queue::Outbox;
use crate::transport::{connect_url, ConnectError, ConnectRequest, Connection, Connector};
use crate::transport::{Incoming, Outgoing};
use backoff::Backoff;
use dispatch::HostEvent;
use heartbeat::{Heartbeat, Verdict as HeartbeatVerdict};
use state::{Action, ConnectFailure, ConnectionStatus, Event, Machine, Timings};
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tether_protocol::client::{is_reserved, AppMessage, ClientMessage};
use tether_protocol::envelope::raw_json;
use tether_protocol::error::ErrorCode;
use tether_protocol::server::{ErrorData, ServerMessage};
use tether_protocol::{close, names, Envelope};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Most app messages sent and not yet acked: enough to fill a mobile link, few enough that
/// a reconnect does not burst the whole queue into a gateway's rate limiter.
pub const SEND_WINDOW: usize = 32;
/// How long the token provider may take.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a suspected socket has to answer a ping.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(5);
/// Pause before resending after the gateway could not store a message (`unavailable`).
pub const RESEND_PAUSE: Duration = Duration::from_secs(1);
/// How often queued messages are checked for expiry while any are queued (they are
/// also checked before each send).
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(60);
/// Types that are control frames on the wire and so cannot be app messages.
const CONTROL_TYPES: [&str; 4] = ["ping", "join_room", "leave_room", "ack"];

/// What the FFI facade asks of the engine.
#[derive(Debug)]
pub enum Command {
    /// `connect()`.
    Connect,
    /// `disconnect()`.
    Disconnect,
    /// `reconnect()`.
    Reconnect,
    /// `send_message()`; answered once the message is on disk.
    Send {
        /// Type.
        kind: String,
        /// Payload JSON.
        data_json: String,
        /// The id, or why not.
        reply: oneshot::Sender<Result<String, Error>>,
    },
    /// `join_room()`.
    JoinRoom(String),
    /// `leave_room()`.
    LeaveRoom(String),
    /// `set_network()`.
    Network(NetworkState),
    /// `set_app_state()`.
    AppState(AppState),
    /// `shutdown()`; answered after the database is released.
    Shutdown(Option<oneshot::Sender<()>>),
}

/// What the engine publishes after every step; the facade's getters read it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Status.
    pub status: ConnectionStatus,
    /// Sessions established after the first one.
    pub reconnects: u64,
    /// App messages handed to the socket (resends included).
    pub sent: u64,
    /// App messages the gateway acked.
    pub acked: u64,
    /// Messages delivered to the app.
    pub received: u64,
    /// Inbox duplicates dropped.
    pub duplicates_dropped: u64,
    /// Messages dropped for age.
    pub expired: u64,
    /// Messages in the outbound queue.
    pub queued: u32,
    /// Their bytes.
    pub queued_bytes: u64,
    /// When the oldest was stored (ms since the epoch).
    pub oldest_queued_ms: Option<u64>,
    /// Last ping round trip.
    pub last_rtt: Option<Duration>,
    /// When the current session was established.
    pub connected_at: Option<Instant>,
    /// Last message delivered.
    pub last_message: Option<InboundMessage>,
    /// Last error reported.
    pub last_error: Option<Arc<TetherError>>,
}

impl Snapshot {
    /// A snapshot with nothing counted yet.
    pub fn new(status: ConnectionStatus) -> Self {
        Snapshot {
            status,
            reconnects: 0,
            sent: 0,
            acked: 0,
            received: 0,
            duplicates_dropped: 0,
            expired: 0,
            queued: 0,
            queued_bytes: 0,
            oldest_queued_ms: None,
            last_rtt: None,
            connected_at: None,
            last_message: None,
            last_error: None,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

enum TokenOutcome {
    Token(String),
    SignedOut,
    Failed(String),
}

enum Internal {
    Token(TokenOutcome),
    Connected {
        generation: u64,
        result: Result<Connection, ConnectError>,
    },
}

/// One socket's session state; gone when the socket is.
struct Session {
    connection: Connection,
    established: bool,
    /// `connection_established` must arrive before this.
    establish_by: Instant,
    heartbeat: Option<Heartbeat>,
    /// Sent on this socket, not acked yet.
    in_flight: BTreeSet<u64>,
    /// The last queue seq sent on this socket.
    send_cursor: Option<u64>,
    /// Sending is paused until then (the gateway could not store a message).
    resend_at: Option<Instant>,
}

/// Everything the engine is built from.
pub struct Parts {
    /// Validated config.
    pub settings: Settings,
    /// The queue (already open).
    pub outbox: Outbox,
    /// How sockets are opened.
    pub connector: Arc<dyn Connector>,
    /// The host's token provider.
    pub tokens: Arc<dyn TokenProvider>,
    /// Seed of the backoff jitter.
    pub seed: u64,
    /// Commands from the facade.
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Events for the dispatcher.
    pub host: mpsc::UnboundedSender<HostEvent>,
    /// Seqs the listener processed.
    pub processed: mpsc::UnboundedReceiver<u64>,
    /// Where the snapshot goes.
    pub snapshot: watch::Sender<Snapshot>,
}

/// The engine task's state.
pub struct Engine {
    settings: Settings,
    machine: Machine,
    outbox: Outbox,
    inbox: Inbox,
    rooms: BTreeSet<String>,
    connector: Arc<dyn Connector>,
    tokens: Arc<dyn TokenProvider>,
    commands: mpsc::UnboundedReceiver<Command>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    processed: mpsc::UnboundedReceiver<u64>,
    host: mpsc::UnboundedSender<HostEvent>,
    snapshot_tx: watch::Sender<Snapshot>,
    snapshot: Snapshot,
    /// The token for the attempt about to open (never logged).
    token: Option<String>,
    token_in_flight: bool,
    token_wanted: bool,
    connect_generation: u64,
    connect_task: Option<AbortHandle>,
    session: Option<Session>,
    retry_at: Option<Instant>,
    grace_at: Option<Instant>,
    stable_at: Option<Instant>,
    sweep_at: Option<Instant>,
    sessions_established: u64,
    stopping: bool,
    shutdown_reply: Option<oneshot::Sender<()>>,
}

async fn next_incoming(session: &mut Option<Session>) -> Incoming {
    match session {
        Some(s) => s
            .connection
            .incoming
            .recv()
            .await
            .unwrap_or(Incoming::Closed(None)),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn earliest(times: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    times.into_iter().flatten().min()
}

impl Engine {
    /// Builds the engine; fails when the stored inbox cursor cannot be read.
    pub fn new(parts: Parts) -> Result<Self, Error> {
        let Parts {
            settings,
            outbox,
            connector,
            tokens,
            seed,
            commands,
            host,
            processed,
            snapshot,
        } = parts;
        let timings = Timings {
            backoff: Backoff::new(settings.backoff_base, settings.backoff_cap),
            background_grace: settings.background_grace,
            backoff_reset_after: settings.backoff_reset_after,
        };
        let inbox = Inbox::new(outbox.inbox_cursor()?);
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let machine = Machine::new(timings, seed);
        Ok(Engine {
            snapshot: Snapshot::new(machine.status().clone()),
            settings,
            machine,
            outbox,
            inbox,
            rooms: BTreeSet::new(),
            connector,
            tokens,
            commands,
            internal_tx,
            internal_rx,
            processed,
            host,
            snapshot_tx: snapshot,
            token: None,
            token_in_flight: false,
            token_wanted: false,
            connect_generation: 0,
            connect_task: None,
            session: None,
            retry_at: None,
            grace_at: None,
            stable_at: None,
            sweep_at: None,
            sessions_established: 0,
            stopping: false,
            shutdown_reply: None,
        })
    }

    /// Runs until shutdown (or until the facade is dropped).
    pub async fn run(mut self) {
        self.expire_old();
        self.publish();
        while !self.stopping {
            let wake = self.next_wake();
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => self.apply(Event::Shutdown),
                },
                Some(internal) = self.internal_rx.recv() => self.on_internal(internal),
                Some(seq) = self.processed.recv() => self.on_processed(seq),
                incoming = next_incoming(&mut self.session) => self.on_incoming(incoming),
                () = sleep_until(wake) => self.on_timers(),
            }
            self.publish();
        }
        if let Err(e) = self.outbox.flush() {
            warn!(error = %e, "final flush failed");
        }
        let reply = self.shutdown_reply.take();
        // Dropping the engine releases the database (and its directory lock) before the
        // caller of shutdown() hears back.
        drop(self);
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }

    fn next_wake(&mut self) -> Option<Instant> {
        let session = self.session.as_mut().map(|s| {
            let heartbeat = s.heartbeat.as_mut().map(Heartbeat::next_wake);
            let establish = (!s.established).then_some(s.establish_by);
            earliest([heartbeat, establish, s.resend_at])
        });
        earliest([
            self.retry_at,
            self.grace_at,
            self.stable_at,
            self.sweep_at,
            session.flatten(),
        ])
    }

    fn publish(&mut self) {
        self.snapshot.status = self.machine.status().clone();
        self.snapshot.queued = self.outbox.len() as u32;
        self.snapshot.queued_bytes = self.outbox.bytes();
        self.snapshot.oldest_queued_ms = self.outbox.oldest_created_ms();
        self.snapshot_tx.send_replace(self.snapshot.clone());
    }

    fn tell(&self, event: HostEvent) {
        // The dispatcher ends only after the engine; a failed send means shutdown.
        let _ = self.host.send(event);
    }

    fn report(&mut self, error: TetherError) {
        warn!(kind = ?error.kind(), "{}", error.message());
        let error = Arc::new(error);
        self.snapshot.last_error = Some(error.clone());
        self.tell(HostEvent::Error(error));
    }

    fn apply(&mut self, event: Event) {
        let before = self.machine.status().clone();
        debug!(?event, "event");
        for action in self.machine.handle(event) {
            self.execute(action);
        }
        let after = self.machine.status().clone();
        if after != before {
            info!(from = ?before, to = ?after, "status");
            self.snapshot.status = after.clone();
            self.tell(HostEvent::Status(after));
        }
    }

    fn execute(&mut self, action: Action) {
        let now = Instant::now();
        match action {
            Action::FetchToken => self.fetch_token(),
            Action::OpenSocket => self.open_socket(),
            Action::CloseSocket(code) => self.close_socket(code),
            Action::ScheduleRetry(delay) => self.retry_at = Some(now + delay),
            Action::CancelRetry => self.retry_at = None,
            Action::StartGrace(delay) => self.grace_at = Some(now + delay),
            Action::CancelGrace => self.grace_at = None,
            Action::StartStable(delay) => self.stable_at = Some(now + delay),
            Action::SessionStarted => self.session_started(),
            Action::Probe => {
                if let Some(heartbeat) = self.session.as_mut().and_then(|s| s.heartbeat.as_mut()) {
                    if let HeartbeatVerdict::Ping(ts) = heartbeat.probe(now, wall_ms()) {
                        debug!("probing the socket");
                        self.send_ping(ts);
                    }
                }
            }
            Action::ReportError(kind, message) => self.report(TetherError::new(kind, message)),
            Action::Stop => self.stopping = true,
        }
    }

    fn fetch_token(&mut self) {
        self.token_wanted = true;
        if self.token_in_flight {
            // Single flight: the answer to the call in progress serves this request too.
            return;
        }
        self.token_in_flight = true;
        let tokens = self.tokens.clone();
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let call = tokio::task::spawn_blocking(move || {
                catch_unwind(AssertUnwindSafe(|| tokens.fetch_token()))
            });
            let outcome = match tokio::time::timeout(TOKEN_TIMEOUT, call).await {
                Err(_) => {
                    TokenOutcome::Failed(format!("no answer within {}s", TOKEN_TIMEOUT.as_secs()))
                }
                Ok(Err(e)) => TokenOutcome::Failed(e.to_string()),
                Ok(Ok(Err(_))) => TokenOutcome::Failed("the token provider threw".into()),
                Ok(Ok(Ok(None))) => TokenOutcome::SignedOut,
                Ok(Ok(Ok(Some(token)))) if token.trim().is_empty() => TokenOutcome::SignedOut,
                Ok(Ok(Ok(Some(token)))) => TokenOutcome::Token(token),
            };
            let _ = internal.send(Internal::Token(outcome));
        });
    }

    fn open_socket(&mut self) {
        let Some(token) = self.token.take() else {
            self.apply(Event::TokenFailed("no token at hand".into()));
            return;
        };
        self.connect_generation += 1;
        let generation = self.connect_generation;
        let request = ConnectRequest {
            url: connect_url(&self.settings, self.inbox.on_connect()),
            token,
        };
        info!(url = %request.url, "connecting");
        let attempt = self.connector.connect(request);
        let internal = self.internal_tx.clone();
        let task = tokio::spawn(async move {
            let result = attempt.await;
            let _ = internal.send(Internal::Connected { generation, result });
        });
        self.connect_task = Some(task.abort_handle());
    }

    fn close_socket(&mut self, code: close::CloseCode) {
        // Abandon whatever is in progress; late answers are recognised and dropped.
        self.token_wanted = false;
        self.token = None;
        self.connect_generation += 1;
        if let Some(task) = self.connect_task.take() {
            task.abort();
        }
        if let Some(session) = self.session.take() {
            let _ = session.connection.outgoing.send(Outgoing::Close(code));
        }
        self.session_ended();
    }

    fn session_ended(&mut self) {
        self.stable_at = None;
        self.snapshot.connected_at = None;
    }

    fn drop_session(&mut self) {
        self.session = None;
        self.session_ended();
    }

    fn session_started(&mut self) {
        self.sessions_established += 1;
        if self.sessions_established > 1 {
            self.snapshot.reconnects += 1;
        }
        self.snapshot.connected_at = Some(Instant::now());
        if let Some(session) = self.session.as_mut() {
            session.established = true;
        }
        let rooms: Vec<String> = self.rooms.iter().cloned().collect();
        for room in rooms {
            self.send_frame(ClientMessage::JoinRoom { room }.to_json());
        }
        self.expire_old();
        self.pump();
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Connect => self.apply(Event::ConnectRequested),
            Command::Disconnect => self.apply(Event::DisconnectRequested),
            Command::Reconnect => self.apply(Event::ReconnectRequested),
            Command::Send {
                kind,
                data_json,
                reply,
            } => {
                let result = self.enqueue(kind, data_json);
                let stored = result.is_ok();
                // Publish first: once send_message returns, stats() counts the message.
                self.publish();
                let _ = reply.send(result);
                if stored {
                    self.pump();
                }
            }
            Command::JoinRoom(room) => {
                if self.rooms.insert(room.clone()) && self.established() {
                    self.send_frame(ClientMessage::JoinRoom { room }.to_json());
                }
            }
            Command::LeaveRoom(room) => {
                if self.rooms.remove(&room) && self.established() {
                    self.send_frame(ClientMessage::LeaveRoom { room }.to_json());
                }
            }
            Command::Network(state) => {
                info!(available = state.available, kind = ?state.kind, "network");
                self.apply(Event::NetworkChanged {
                    available: state.available,
                });
            }
            Command::AppState(state) => {
                info!(?state, "app state");
                self.apply(Event::AppStateChanged(state));
            }
            Command::Shutdown(reply) => {
                self.shutdown_reply = reply;
                self.apply(Event::Shutdown);
            }
        }
    }

    fn established(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.established)
    }

    /// Checks and stores one app message; its id once it is on disk.
    fn enqueue(&mut self, kind: String, data_json: String) -> Result<String, Error> {
        validate_app_type(&kind)?;
        let data = raw_json(&data_json)
            .map_err(|e| Error::Message(format!("data_json is not valid JSON: {e}")))?;
        let id = uuid::Uuid::now_v7().to_string();
        let frame = ClientMessage::App(AppMessage {
            kind: kind.clone(),
            id: id.clone(),
            data: Some(data),
        })
        .to_json();
        if frame.len() > self.settings.max_message_bytes {
            return Err(Error::Message(format!(
                "message is {} bytes encoded, above max_message_bytes ({})",
                frame.len(),
                self.settings.max_message_bytes
            )));
        }
        let message = self.outbox.push(id, kind, data_json, wall_ms())?;
        if self.sweep_at.is_none() {
            self.sweep_at = Some(Instant::now() + EXPIRY_SWEEP);
        }
        debug!(id = %message.id, seq = message.seq, "queued");
        Ok(message.id)
    }

    /// Sends queued messages in order while the window has room.
    fn pump(&mut self) {
        let now = Instant::now();
        let now_ms = wall_ms();
        loop {
            let Some(session) = self.session.as_mut() else {
                return;
            };
            if !session.established
                || session.in_flight.len() >= SEND_WINDOW
                || session.resend_at.is_some_and(|at| at > now)
            {
                return;
            }
            session.resend_at = None;
            let Some(seq) = self.outbox.next_after(session.send_cursor) else {
                return;
            };
            session.send_cursor = Some(seq);
            if self.outbox.is_expired(seq, now_ms) {
                self.drop_expired(seq);
                continue;
            }
            let message = match self.outbox.get(seq) {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(e) => {
                    self.report(Error::from(e).into());
                    return;
                }
            };
            let frame = match raw_json(&message.data_json) {
                Ok(data) => ClientMessage::App(AppMessage {
                    kind: message.kind,
                    id: message.id,
                    data: Some(data),
                })
                .to_json(),
                Err(_) => {
                    // Cannot happen for what enqueue stored; a damaged record is dropped
                    // rather than blocking the queue forever.
                    let _ = self.outbox.remove(seq);
                    self.report(TetherError::new(
                        ErrorKind::Storage,
                        format!("queued message {} was damaged and dropped", message.id),
                    ));
                    continue;
                }
            };
            if let Some(session) = self.session.as_mut() {
                session.in_flight.insert(seq);
            }
            self.snapshot.sent += 1;
            self.send_frame(frame);
        }
    }

    fn drop_expired(&mut self, seq: u64) {
        match self.outbox.remove(seq) {
            Ok(Some(id)) => {
                info!(%id, "message expired before delivery");
                self.snapshot.expired += 1;
                self.tell(HostEvent::Expired(id));
            }
            Ok(None) => {}
            Err(e) => self.report(Error::from(e).into()),
        }
    }

    fn expire_old(&mut self) {
        // Offline for days, a message still expires on time (and is reported then).
        self.sweep_at = (!self.outbox.is_empty()).then(|| Instant::now() + EXPIRY_SWEEP);
        match self.outbox.expire(wall_ms()) {
            Ok(ids) => {
                for id in ids {
                    info!(%id, "message expired before delivery");
                    self.snapshot.expired += 1;
                    self.tell(HostEvent::Expired(id));
                }
            }
            Err(e) => self.report(Error::from(e).into()),
        }
    }

    fn send_frame(&mut self, text: String) {
        if let Some(session) = &self.session {
            // A closed channel means the socket task ended; its Closed event follows.
            let _ = session.connection.outgoing.send(Outgoing::Text(text));
        }
    }

    fn send_ping(&mut self, ts: u64) {
        self.send_frame(
            ClientMessage::Ping {
                ts: Some(ts.to_string()),
            }
            .to_json(),
        );
    }

    fn on_internal(&mut self, internal: Internal) {
        match internal {
            Internal::Token(outcome) => {
                self.token_in_flight = false;
                if !std::mem::take(&mut self.token_wanted) {
                    return;
                }
                match outcome {
                    TokenOutcome::Token(token) => {
                        self.token = Some(token);
                        self.apply(Event::TokenReady);
                    }
                    TokenOutcome::SignedOut => self.apply(Event::SignedOut),
                    TokenOutcome::Failed(reason) => self.apply(Event::TokenFailed(reason)),
                }
            }
            Internal::Connected { generation, result } => {
                if generation != self.connect_generation {
                    // An abandoned attempt; dropping its connection closes it.
                    return;
                }
                self.connect_task = None;
                match result {
                    Ok(connection) => {
                        debug!("socket open, waiting for connection_established");
                        self.session = Some(Session {
                            connection,
                            established: false,
                            establish_by: Instant::now() + self.settings.connect_timeout,
                            heartbeat: None,
                            in_flight: BTreeSet::new(),
                            send_cursor: None,
                            resend_at: None,
                        });
                    }
                    Err(e) => {
                        let failure = classify(&e);
                        self.apply(Event::ConnectFailed(failure));
                    }
                }
            }
        }
    }

    fn on_processed(&mut self, seq: u64) {
        // Coalesce: one durable write and one ack for everything processed so far.
        let mut highest = seq;
        while let Ok(more) = self.processed.try_recv() {
            highest = highest.max(more);
        }
        let Some(cursor) = self.inbox.on_processed(highest) else {
            return;
        };
        if let Err(e) = self.outbox.set_inbox_cursor(cursor) {
            self.report(Error::from(e).into());
            return;
        }
        if self.established() {
            self.send_frame(ClientMessage::Ack { seq: cursor }.to_json());
        }
    }

    fn on_incoming(&mut self, incoming: Incoming) {
        let now = Instant::now();
        match incoming {
            Incoming::Text(text) => {
                if let Some(heartbeat) = self.session.as_mut().and_then(|s| s.heartbeat.as_mut()) {
                    heartbeat.on_frame(now);
                }
                match ServerMessage::parse(&text) {
                    Ok(message) => self.on_server_message(message),
                    Err(e) => self.report(TetherError::new(ErrorKind::Protocol, e.to_string())),
                }
            }
            Incoming::Closed(Some(code)) if code != close::ABNORMAL => {
                info!(
                    code,
                    reason = close::describe(code),
                    "gateway closed the connection"
                );
                self.drop_session();
                self.apply(Event::Closed(code));
            }
            Incoming::Closed(_) => {
                self.drop_session();
                self.apply(Event::Lost("connection lost without a close frame".into()));
            }
            Incoming::Failed(reason) => {
                self.drop_session();
                self.apply(Event::Lost(format!("connection failed: {reason}")));
            }
        }
    }

    fn on_server_message(&mut self, message: ServerMessage) {
        let now = Instant::now();
        match message {
            ServerMessage::ConnectionEstablished(established) => {
                let Some(session) = self.session.as_mut() else {
                    return;
                };
                if session.established {
                    warn!("second connection_established ignored");
                    return;
                }
                info!(
                    connection = %established.connection_id,
                    server = %established.server_id,
                    heartbeat_ms = established.heartbeat_interval,
                    replay = established.replay_count,
                    "session established"
                );
                let interval = match established.heartbeat_interval {
                    0 => Duration::from_secs(30),
                    ms => Duration::from_millis(ms),
                };
                session.heartbeat = Some(Heartbeat::new(interval, PROBE_DEADLINE, now, wall_ms()));
                self.apply(Event::Established);
            }
            ServerMessage::Pong { ts, .. } => {
                if let Some(heartbeat) = self.session.as_mut().and_then(|s| s.heartbeat.as_mut()) {
                    if let Some(rtt) = heartbeat.on_pong(ts.as_deref(), now) {
                        debug!(rtt_ms = rtt.as_millis() as u64, "pong");
                        self.snapshot.last_rtt = Some(rtt);
                    }
                }
            }
            ServerMessage::Ack { id } => match self.outbox.ack(&id) {
                Ok(Some(seq)) => {
                    debug!(%id, "acked");
                    if let Some(session) = self.session.as_mut() {
                        session.in_flight.remove(&seq);
                    }
                    self.snapshot.acked += 1;
                    self.tell(HostEvent::Ack(id));
                    self.pump();
                }
                // A repeated ack (a resend the gateway had stored already).
                Ok(None) => debug!(%id, "ack for a message no longer queued"),
                Err(e) => self.report(Error::from(e).into()),
            },
            ServerMessage::RoomJoined { room } => debug!(%room, "room joined"),
            ServerMessage::RoomLeft { room } => debug!(%room, "room left"),
            ServerMessage::Error(error) => self.on_error_frame(error),
            ServerMessage::Published(envelope) => self.on_published(envelope),
        }
    }

    fn on_error_frame(&mut self, error: ErrorData) {
        let queued = error
            .reference
            .as_deref()
            .and_then(|r| self.outbox.seq_of(r).map(|seq| (r.to_owned(), seq)));
        let text = format!("gateway error {}: {}", error.code, error.message);
        let Some((id, seq)) = queued else {
            self.report(TetherError::new(ErrorKind::Protocol, text));
            return;
        };
        match error.code {
            ErrorCode::InvalidMessage | ErrorCode::MissingId | ErrorCode::ReservedType => {
                // Refused for what it is: resending would be refused again, forever.
                let _ = self.outbox.remove(seq);
                if let Some(session) = self.session.as_mut() {
                    session.in_flight.remove(&seq);
                }
                self.report(TetherError::new(
                    ErrorKind::InvalidMessage,
                    format!("message {id} dropped: {text}"),
                ));
                self.pump();
            }
            _ => {
                // Not stored this time (unavailable, rate limited): resend in order after
                // a pause; the gateway de-duplicates what it had stored already.
                debug!(%id, seq, %text, "message not stored, will resend");
                if let Some(session) = self.session.as_mut() {
                    session.in_flight.clear();
                    // The queue holds only unacked messages: start over from its head.
                    session.send_cursor = None;
                    session.resend_at = Some(Instant::now() + RESEND_PAUSE);
                }
            }
        }
    }

    fn on_published(&mut self, envelope: Envelope) {
        match self.inbox.on_message(envelope.seq) {
            InboxVerdict::Duplicate => {
                debug!(seq = ?envelope.seq, "duplicate dropped");
                self.snapshot.duplicates_dropped += 1;
            }
            InboxVerdict::Restarted { cursor } => {
                if let Err(e) = self.outbox.set_inbox_cursor(cursor) {
                    self.report(Error::from(e).into());
                }
                self.report(TetherError::new(
                    ErrorKind::Protocol,
                    format!(
                        "the gateway's inbox restarted (seq {} at or below the cursor); \
                         following it from {cursor}",
                        envelope.seq.unwrap_or_default()
                    ),
                ));
                self.deliver(envelope);
            }
            InboxVerdict::Deliver => self.deliver(envelope),
        }
    }

    fn deliver(&mut self, envelope: Envelope) {
        debug!(kind = %envelope.kind, seq = ?envelope.seq, "message");
        let message = InboundMessage {
            data_json: envelope.data_json().to_owned(),
            r#type: envelope.kind,
            id: envelope.id.unwrap_or_default(),
            seq: envelope.seq,
            room: envelope.room,
            ts: envelope.ts.unwrap_or(0),
        };
        self.snapshot.received += 1;
        self.snapshot.last_message = Some(message.clone());
        self.tell(HostEvent::Message(message));
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.expire_old();
            self.apply(Event::RetryElapsed);
        }
        if self.grace_at.is_some_and(|at| at <= now) {
            self.grace_at = None;
            self.apply(Event::GraceElapsed);
        }
        if self.stable_at.is_some_and(|at| at <= now) {
            self.stable_at = None;
            self.apply(Event::StableElapsed);
        }
        if self.sweep_at.is_some_and(|at| at <= now) {
            self.expire_old();
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if !session.established && session.establish_by <= now {
            self.drop_session();
            self.apply(Event::Lost(
                "the gateway upgraded but sent no connection_established".into(),
            ));
            return;
        }
        if session.resend_at.is_some_and(|at| at <= now) {
            self.pump();
        }
        let verdict = self
            .session
            .as_mut()
            .and_then(|s| s.heartbeat.as_mut())
            .map(|h| h.on_wake(now, wall_ms()));
        match verdict {
            Some(HeartbeatVerdict::Ping(ts)) => self.send_ping(ts),
            Some(HeartbeatVerdict::Dead) => {
                // Tell the gateway (if it can still hear) and move on.
                self.close_socket(close::GOING_AWAY);
                self.apply(Event::Lost(
                    "no frame from the gateway for two heartbeat intervals".into(),
                ));
            }
            Some(HeartbeatVerdict::Idle) | None => {}
        }
    }
}

/// Refuses types that are not app messages: bad names, server-only and control types.
pub fn validate_app_type(kind: &str) -> Result<(), Error> {
    names::validate_type(kind).map_err(|e| Error::Message(e.to_string()))?;
    if is_reserved(kind) || CONTROL_TYPES.contains(&kind) {
        return Err(Error::Message(format!(
            "type {kind:?} is reserved by the protocol"
        )));
    }
    Ok(())
}

/// Sorts a failed attempt by what to do next (PROTOCOL.md §2's table).
pub fn classify(error: &ConnectError) -> ConnectFailure {
    match error {
        ConnectError::Refused {
            status: 401,
            message,
            ..
        } => ConnectFailure::Unauthorized(format!("gateway refused the token: {message}")),
        ConnectError::Refused {
            status: 400 | 403,
            message,
            code,
            ..
        } => ConnectFailure::Fatal(format!(
            "gateway refused the connection ({}): {message}",
            code.map_or("no code".to_string(), |c| format!("{c:?}"))
        )),
        ConnectError::Refused { retry_after, .. } => ConnectFailure::Retryable {
            reason: error.to_string(),
            retry_after: *retry_after,
        },
        ConnectError::Timeout(_) | ConnectError::Network(_) => ConnectFailure::Retryable {
            reason: error.to_string(),
            retry_after: None,
        },
    }
}
