//! The engine: one task per client that owns the socket, the queue, the inbox cursor and
//! every timer. The FFI facade talks to it only through [`Command`]s and reads the
//! [`Snapshot`] it publishes on a `watch`; the pure [`state::Machine`] decides, the engine
//! carries the decisions out.

pub mod backoff;
mod connect;
pub mod dispatch;
pub mod heartbeat;
pub mod hosts;
mod inbound;
mod outbound;
pub mod presence;
mod refresh;
pub mod rooms;
pub mod state;

use connect::Internal;
pub use connect::{classify, TOKEN_TIMEOUT};
pub use outbound::{validate_app_type, EXPIRY_SWEEP, RESEND_PAUSE, SEND_WINDOW};

use crate::callbacks::{InboundMessage, TokenProvider};
use crate::config::Settings;
use crate::error::{Error, TetherError};
use crate::inbox::Inbox;
use crate::lifecycle::{AppState, NetworkState};
use crate::queue::Outbox;
use crate::send_options::SendOptions;
use crate::streams::{StreamKey, Streams};
use crate::transport::{ConnectError, Connection, Connector};
use crate::transport::{Incoming, SocketCommand};
use backoff::Backoff;
use dispatch::{HostEvent, Processed};
use heartbeat::{Heartbeat, Verdict as HeartbeatVerdict};
use state::{Action, ConnectionStatus, Event, Machine, Timings};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tether_protocol::client::ClientMessage;
use tether_protocol::close;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How long a suspected socket has to answer a ping.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// How long `shutdown()` waits for the listener to finish the messages handed to it, so
/// their cursor and positions are written and a clean restart delivers none again.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// Most commands handled in one go before the engine looks at the socket and its
/// timers again (and most sends stored with one sync).
const COMMAND_BATCH: usize = 64;

/// Where a `send_message` hears back.
pub(crate) type Reply = oneshot::Sender<Result<String, Error>>;

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
        /// Replace key and time to live, checked by the facade.
        options: SendOptions,
        /// The id, or why not.
        reply: oneshot::Sender<Result<String, Error>>,
    },
    /// `cancel_message()`; answered whether the message was removed.
    Cancel {
        /// The id `send_message` returned.
        id: String,
        /// Removed, or not queued / on its way already.
        reply: oneshot::Sender<Result<bool, Error>>,
    },
    /// `join_room()`.
    JoinRoom(String),
    /// `leave_room()`.
    LeaveRoom(String),
    /// `room_presence()`; answered by the gateway's answer, an error or a timeout.
    RoomPresence {
        /// A valid room name.
        room: String,
        /// Where the answer goes.
        reply: presence::Reply,
    },
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
    /// Inbox and stream duplicates dropped.
    pub duplicates_dropped: u64,
    /// Streams reported reset (`on_stream_reset`).
    pub stream_resets: u64,
    /// Messages dropped for age or their time to live.
    pub expired: u64,
    /// Messages a newer one with the same replace key took the place of.
    pub replaced: u64,
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
    /// Last message delivered (shared: the snapshot is cloned on every publish).
    pub last_message: Option<Arc<InboundMessage>>,
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
            stream_resets: 0,
            expired: 0,
            replaced: 0,
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

/// One socket's session state; gone when the socket is.
struct Session {
    connection: Connection,
    established: bool,
    /// The address this socket went to (index into url + fallbacks).
    host: usize,
    /// `connection_established` must arrive before this.
    establish_by: Instant,
    heartbeat: Option<Heartbeat>,
    /// Sent on this socket, not acked yet: the send window.
    in_flight: BTreeSet<u64>,
    /// Written to this socket and not acked or refused for good: the gateway may have
    /// them, so they are never expired, replaced or cancelled while this socket lives.
    /// Unlike `in_flight`, kept when a retryable error restarts the window.
    written: BTreeSet<u64>,
    /// The last queue seq sent on this socket.
    send_cursor: Option<u64>,
    /// Sending is paused until then (the gateway could not store a message).
    resend_at: Option<Instant>,
    /// When the gateway ends the session for its token (4001), as it announced.
    token_deadline: Option<Instant>,
    /// When to send it a fresh token (see [`refresh`]).
    refresh_at: Option<Instant>,
    /// A `refresh_token` is out, with the token of this digest; only then is a
    /// `token_refreshed` an answer.
    refresh_sent: Option<u64>,
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
    /// What the listener processed, batch by batch.
    pub processed: mpsc::UnboundedReceiver<Processed>,
    /// The highest batch whose positions are written, for the dispatcher (see
    /// [`dispatch::run`]).
    pub durable: watch::Sender<u64>,
    /// Where the snapshot goes.
    pub snapshot: watch::Sender<Snapshot>,
}

/// The engine task's state.
pub struct Engine {
    settings: Settings,
    machine: Machine,
    outbox: Outbox,
    inbox: Inbox,
    streams: Streams,
    rooms: rooms::Rooms,
    presence: presence::Presence,
    connector: Arc<dyn Connector>,
    tokens: Arc<dyn TokenProvider>,
    commands: mpsc::UnboundedReceiver<Command>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    processed: mpsc::UnboundedReceiver<Processed>,
    durable: watch::Sender<u64>,
    host: mpsc::UnboundedSender<HostEvent>,
    /// Messages handed to the dispatcher that the listener has not returned for yet.
    unprocessed: u64,
    /// Callbacks due, held until the snapshot they follow from is published (see
    /// [`Engine::publish`]).
    told: Vec<HostEvent>,
    snapshot_tx: watch::Sender<Snapshot>,
    snapshot: Snapshot,
    /// The app stream position the last attempt asked to recover from (`appOffset`).
    app_since_sent: Option<tether_protocol::stream::StreamPosition>,
    /// The token for the attempt about to open (never logged).
    token: Option<String>,
    /// A digest of the token the socket was opened with (or last refreshed to), to tell
    /// a provider that hands the same token back.
    token_digest: Option<u64>,
    token_in_flight: bool,
    token_wanted: bool,
    /// The answer to the call in flight goes to the session as `refresh_token`.
    refresh_wanted: bool,
    /// The provider's call in flight, cancelled at shutdown.
    token_task: Option<AbortHandle>,
    connect_generation: u64,
    connect_task: Option<AbortHandle>,
    session: Option<Session>,
    retry_at: Option<Instant>,
    grace_at: Option<Instant>,
    stable_at: Option<Instant>,
    sweep_at: Option<Instant>,
    /// Which gateway address the next attempt uses.
    hosts: hosts::Hosts,
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

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(call) = self.token_task.take() {
            // A provider still working (a refresh that hangs) is told to stop, also when
            // the engine ends without reaching the end of `run` (a panic).
            call.abort();
        }
    }
}

impl Engine {
    /// Builds the engine; fails when the stored inbox cursor or stream positions cannot
    /// be read.
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
            durable,
            snapshot,
        } = parts;
        let timings = Timings {
            backoff: Backoff::new(settings.backoff_base, settings.backoff_cap),
            background_grace: settings.background_grace,
            backoff_reset_after: settings.backoff_reset_after,
        };
        let inbox = Inbox::new(outbox.inbox_cursor()?);
        let streams = Streams::new(outbox.stream_positions()?);
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let machine = Machine::new(timings, seed);
        let hosts = hosts::Hosts::new(1 + settings.fallback_urls.len());
        let mut engine = Engine {
            snapshot: Snapshot::new(machine.status().clone()),
            settings,
            machine,
            outbox,
            inbox,
            streams,
            rooms: rooms::Rooms::default(),
            presence: presence::Presence::default(),
            connector,
            tokens,
            commands,
            internal_tx,
            internal_rx,
            processed,
            durable,
            host,
            unprocessed: 0,
            told: Vec::new(),
            snapshot_tx: snapshot,
            app_since_sent: None,
            token: None,
            token_digest: None,
            token_in_flight: false,
            token_wanted: false,
            refresh_wanted: false,
            token_task: None,
            connect_generation: 0,
            connect_task: None,
            session: None,
            retry_at: None,
            grace_at: None,
            stable_at: None,
            sweep_at: None,
            hosts,
            sessions_established: 0,
            stopping: false,
            shutdown_reply: None,
        };
        // Published before the engine runs, so `stats()` right after construction already
        // counts the messages waiting on disk.
        engine.publish();
        Ok(engine)
    }

    /// Runs until shutdown (or until the facade is dropped).
    pub async fn run(mut self) {
        self.expire_old();
        self.publish();
        while !self.stopping {
            let wake = self.next_wake();
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.on_commands(command),
                    None => self.apply(Event::Shutdown),
                },
                Some(internal) = self.internal_rx.recv() => self.on_internal(internal),
                Some(done) = self.processed.recv() => self.on_processed(done),
                incoming = next_incoming(&mut self.session) => self.on_incoming(incoming),
                () = sleep_until(wake) => self.on_timers(),
            }
            self.publish();
        }
        self.drain_processed().await;
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

    /// Waits (at most [`SHUTDOWN_DRAIN`]) until the listener returned for every message
    /// handed to it, writing their cursor and positions as it goes.
    async fn drain_processed(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        while self.unprocessed > 0 {
            match tokio::time::timeout_at(deadline, self.processed.recv()).await {
                Ok(Some(done)) => self.on_processed(done),
                Ok(None) => return,
                Err(_) => {
                    warn!(
                        messages = self.unprocessed,
                        "the listener did not finish before shutdown; those messages come again"
                    );
                    return;
                }
            }
        }
    }

    fn next_wake(&mut self) -> Option<Instant> {
        let session = self.session.as_mut().map(|s| {
            let heartbeat = s.heartbeat.as_mut().map(Heartbeat::next_wake);
            let establish = (!s.established).then_some(s.establish_by);
            earliest([heartbeat, establish, s.resend_at, s.refresh_at])
        });
        earliest([
            self.retry_at,
            self.grace_at,
            self.stable_at,
            self.sweep_at,
            self.presence.next_deadline(),
            session.flatten(),
        ])
    }

    fn publish(&mut self) {
        self.snapshot.status = self.machine.status().clone();
        self.snapshot.queued = self.outbox.len() as u32;
        self.snapshot.queued_bytes = self.outbox.bytes();
        self.snapshot.oldest_queued_ms = self.outbox.oldest_created_ms();
        self.snapshot_tx.send_replace(self.snapshot.clone());
        // Only now the listener hears what happened: an app reading `status()` or
        // `stats()` in a callback sees the state the callback follows from, never an
        // older one (`on_status(Connected)` with `stats()` still `Connecting`).
        for event in self.told.drain(..) {
            // The dispatcher ends only after the engine; a failed send means shutdown.
            let _ = self.host.send(event);
        }
    }

    fn tell(&mut self, event: HostEvent) {
        self.told.push(event);
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

    fn session_ended(&mut self) {
        self.stable_at = None;
        self.snapshot.connected_at = None;
        // What was written to that socket may expire again (and be reported) offline.
        self.schedule_sweep();
        // The answers to requests sent on that socket will never come.
        self.presence.fail_all(|room| {
            Error::Network(format!(
                "the connection closed before the gateway answered room_presence for room {room}"
            ))
        });
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
        let streams = &self.streams;
        let joins = self
            .rooms
            .rejoin_all(|room| streams.since(&StreamKey::of(Some(room))).cloned());
        for join in joins {
            self.send_frame(join.to_json());
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
                options,
                reply,
            } => {
                let result = self.enqueue(kind, data_json, options);
                let stored = result.is_ok();
                // Publish first: once send_message returns, stats() counts the message.
                self.publish();
                let _ = reply.send(result);
                if stored {
                    self.pump();
                }
            }
            Command::Cancel { id, reply } => {
                let result = self.cancel(&id);
                self.publish();
                let _ = reply.send(result);
            }
            Command::JoinRoom(room) => {
                // A position stored by an earlier run of the app recovers what it missed
                // while it was not running.
                let since = self.streams.since(&StreamKey::of(Some(&room))).cloned();
                if let Some(join) = self.rooms.join(room, since) {
                    if self.established() {
                        self.send_frame(join.to_json());
                    }
                }
            }
            Command::LeaveRoom(room) => {
                self.streams.forget(&StreamKey::of(Some(&room)));
                self.write_positions(None);
                if let Some(leave) = self.rooms.leave(&room) {
                    if self.established() {
                        self.send_frame(leave.to_json());
                    }
                }
            }
            Command::RoomPresence { room, reply } => self.ask_presence(room, reply),
            Command::Network(state) => {
                info!(available = state.available, kind = ?state.kind, "network");
                if state.available {
                    // Failures seen on the old path (or with none) say nothing about the
                    // primary.
                    self.hosts.start_over();
                }
                self.apply(Event::NetworkChanged {
                    available: state.available,
                });
            }
            Command::AppState(state) => {
                info!(?state, "app state");
                if state == AppState::Foreground {
                    // The monotonic clock stood still while the phone slept: the ten
                    // minutes on a fallback may long be over.
                    self.hosts.start_over();
                }
                self.apply(Event::AppStateChanged(state));
            }
            Command::Shutdown(reply) => {
                self.shutdown_reply = reply;
                self.presence.fail_all(|_| Error::Shutdown);
                self.apply(Event::Shutdown);
            }
        }
    }

    /// Handles `first` and the run of sends that replace nothing already waiting behind
    /// it (at most [`COMMAND_BATCH`]), in order: they are stored together, with one sync
    /// for all of them, so a burst of `send_message` calls costs one disk flush instead
    /// of one each (on a phone, an fsync is milliseconds). Any other command ends the
    /// run: the sends before it are stored and answered, it is handled, and the engine
    /// goes back to its socket and timers, so it never spends more than one sync for
    /// the run and one command's work before reading what the gateway sent.
    fn on_commands(&mut self, first: Command) {
        let mut staged = Vec::new();
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(command) = next.take() {
            match command {
                Command::Send {
                    kind,
                    data_json,
                    options,
                    reply,
                } if options.replace_key.is_none() => {
                    self.stage(kind, data_json, options.ttl_ms, reply, &mut staged);
                }
                other => {
                    self.store_staged(&mut staged);
                    self.on_command(other);
                    return;
                }
            }
            handled += 1;
            if handled < COMMAND_BATCH && !self.stopping {
                next = self.commands.try_recv().ok();
            }
        }
        self.store_staged(&mut staged);
    }

    fn established(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.established)
    }

    fn send_frame(&mut self, text: String) {
        if let Some(session) = &self.session {
            // A closed channel means the socket task ended; its Closed event follows.
            let _ = session.connection.outgoing.send(SocketCommand::Text(text));
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
        if self.presence.next_deadline().is_some_and(|at| at <= now) {
            self.presence.expire(now);
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if !session.established && session.establish_by <= now {
            let waited = ConnectError::Timeout(self.settings.connect_timeout);
            if self.hosts.failed(session.host, &waited, now) {
                info!("the next attempt tries another gateway address");
            }
            self.drop_session();
            self.apply(Event::Lost(
                "the gateway upgraded but sent no connection_established".into(),
            ));
            return;
        }
        if session.resend_at.is_some_and(|at| at <= now) {
            self.pump();
        }
        if self
            .session
            .as_ref()
            .and_then(|s| s.refresh_at)
            .is_some_and(|at| at <= now)
        {
            self.start_refresh();
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
