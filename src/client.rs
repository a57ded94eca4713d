//! The FFI facade: [`TetherClient`], the object Kotlin, Swift and React Native hold. Every
//! method returns at once (it sends the engine a command or reads its last snapshot) or is
//! `async` and only awaits a channel, so it works from any foreign executor.

use crate::callbacks::{EventListener, InboundMessage, TokenProvider};
use crate::config::{ClientConfig, Settings};
use crate::engine::state::ConnectionStatus;
use crate::engine::{self, dispatch, wall_ms, Command, Engine, Parts, Snapshot};
use crate::error::{Error, TetherError, TetherResult};
use crate::lifecycle::{AppState, NetworkState};
use crate::presence::RoomPresence;
use crate::queue::{Limits, Outbox, SledStore};
use crate::runtime;
use crate::send_options::SendOptions;
use crate::transport::{Connector, WsConnector};
use std::sync::Arc;
use tether_protocol::names;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};

/// Counters and gauges of one client.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClientStats {
    /// Current status.
    pub status: ConnectionStatus,
    /// Sessions established after the first one.
    pub reconnects: u64,
    /// App messages written to the socket (a resend counts again).
    pub sent: u64,
    /// App messages the gateway acknowledged.
    pub acked: u64,
    /// Messages delivered to the listener.
    pub received: u64,
    /// Inbox and stream messages dropped as already delivered.
    pub duplicates_dropped: u64,
    /// Times a stream lost messages for good (`on_stream_reset`).
    pub stream_resets: u64,
    /// Messages dropped unsent because they were older than `max_message_age_s` or
    /// their `ttl_ms`.
    pub expired: u64,
    /// Messages dropped unsent because a newer one with the same `replace_key` came.
    pub replaced: u64,
    /// Messages waiting in the outbound queue.
    pub queued: u32,
    /// Bytes waiting in the outbound queue.
    pub queued_bytes: u64,
    /// Age of the oldest queued message.
    pub oldest_queued_age_ms: Option<u64>,
    /// Round trip of the last answered ping.
    pub last_rtt_ms: Option<u64>,
    /// How long the current session has been up.
    pub connected_for_ms: Option<u64>,
    /// Text of the last error.
    pub last_error: Option<String>,
}

/// Test hooks for [`TetherClient::start`]; production uses the defaults.
#[derive(Default)]
pub struct StartOptions {
    /// Replaces the WebSocket connector (tests script a gateway).
    pub connector: Option<Arc<dyn Connector>>,
    /// Seeds the backoff jitter (random when `None`).
    pub seed: Option<u64>,
}

/// A connection to the Tether gateway that survives what a phone does to it.
#[derive(uniffi::Object)]
pub struct TetherClient {
    commands: mpsc::UnboundedSender<Command>,
    snapshot: watch::Receiver<Snapshot>,
}

impl std::fmt::Debug for TetherClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TetherClient")
            .field("status", &self.snapshot.borrow().status)
            .finish()
    }
}

#[uniffi::export]
impl TetherClient {
    /// Opens the client's database and starts its engine (idle until `connect()`).
    #[uniffi::constructor]
    pub fn new(
        config: ClientConfig,
        listener: Arc<dyn EventListener>,
        tokens: Arc<dyn TokenProvider>,
    ) -> TetherResult<Arc<Self>> {
        let handle = runtime::handle()?;
        let client = Self::start(config, listener, tokens, &handle, StartOptions::default())?;
        Ok(Arc::new(client))
    }

    /// Connects, and keeps connecting after failures. Idempotent.
    pub fn connect(&self) {
        self.command(Command::Connect);
    }

    /// Disconnects and stays disconnected until `connect()`; the queue is kept.
    pub fn disconnect(&self) {
        self.command(Command::Disconnect);
    }

    /// Drops the socket and connects again now, with the backoff reset.
    pub fn reconnect(&self) {
        self.command(Command::Reconnect);
    }

    /// Queues an app message; returns its id once it is on disk. It is sent now when
    /// connected, else after the next connect, until the gateway acknowledges it
    /// (`on_ack`) or it expires (`on_expired`).
    pub async fn send_message(&self, r#type: String, data_json: String) -> TetherResult<String> {
        self.send_message_with(r#type, data_json, SendOptions::default())
            .await
    }

    /// `send_message` with a replace key (latest wins among the messages still waiting)
    /// and a time to live; see [`SendOptions`].
    pub async fn send_message_with(
        &self,
        r#type: String,
        data_json: String,
        options: SendOptions,
    ) -> TetherResult<String> {
        options.validate()?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Send {
                kind: r#type,
                data_json,
                options,
                reply,
            })
            .map_err(|_| Error::Shutdown)?;
        match answer.await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(Error::Shutdown.into()),
        }
    }

    /// Takes back a queued message that is not on its way: true when it was removed (it
    /// will not be sent again; one written to an earlier connection that ended before its
    /// ack may have reached the gateway all the same), false when it is not queued
    /// (acked, expired, replaced, cancelled, or not an id of this client) or is written to
    /// the open connection and waiting for the gateway's ack.
    pub async fn cancel_message(&self, id: String) -> TetherResult<bool> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Cancel { id, reply })
            .map_err(|_| Error::Shutdown)?;
        match answer.await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(Error::Shutdown.into()),
        }
    }

    /// Joins a room now (when connected) and again after every reconnect.
    pub fn join_room(&self, room: String) -> TetherResult<()> {
        names::validate_room(&room).map_err(|e| Error::Message(e.to_string()))?;
        self.command(Command::JoinRoom(room));
        Ok(())
    }

    /// Who is in a room this client has joined, on every gateway node. Needs an open
    /// connection (`Network` at once otherwise) and a valid room name (`InvalidMessage`);
    /// the gateway refuses rooms the connection is not in (`Auth`: join the room first).
    /// Calls for the same room at the same time share one request. Fails with `Network`
    /// when the connection drops or no answer comes within 10 s.
    pub async fn room_presence(&self, room: String) -> TetherResult<RoomPresence> {
        names::validate_room(&room).map_err(|e| Error::Message(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::RoomPresence { room, reply })
            .map_err(|_| Error::Shutdown)?;
        match answer.await {
            Ok(result) => result.map(Into::into).map_err(Into::into),
            Err(_) => Err(Error::Shutdown.into()),
        }
    }

    /// Leaves a room and stops re-joining it.
    pub fn leave_room(&self, room: String) -> TetherResult<()> {
        names::validate_room(&room).map_err(|e| Error::Message(e.to_string()))?;
        self.command(Command::LeaveRoom(room));
        Ok(())
    }

    /// What the OS says about the network.
    pub fn set_network(&self, state: NetworkState) {
        self.command(Command::Network(state));
    }

    /// Whether the app is in the foreground.
    pub fn set_app_state(&self, state: AppState) {
        self.command(Command::AppState(state));
    }

    /// The current status.
    pub fn status(&self) -> ConnectionStatus {
        self.snapshot.borrow().status.clone()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> ClientStats {
        let s = self.snapshot.borrow();
        let now_ms = wall_ms();
        ClientStats {
            status: s.status.clone(),
            reconnects: s.reconnects,
            sent: s.sent,
            acked: s.acked,
            received: s.received,
            duplicates_dropped: s.duplicates_dropped,
            stream_resets: s.stream_resets,
            expired: s.expired,
            replaced: s.replaced,
            queued: s.queued,
            queued_bytes: s.queued_bytes,
            oldest_queued_age_ms: s.oldest_queued_ms.map(|t| now_ms.saturating_sub(t)),
            last_rtt_ms: s.last_rtt.map(|d| d.as_millis() as u64),
            connected_for_ms: s.connected_at.map(|at| {
                tokio::time::Instant::now()
                    .saturating_duration_since(at)
                    .as_millis() as u64
            }),
            last_error: s.last_error.as_ref().map(|e| e.to_string()),
        }
    }

    /// The last message delivered.
    pub fn last_message(&self) -> Option<InboundMessage> {
        self.snapshot.borrow().last_message.as_deref().cloned()
    }

    /// The last error reported.
    pub fn last_error(&self) -> Option<Arc<TetherError>> {
        self.snapshot.borrow().last_error.clone()
    }

    /// Stops the engine, closes the socket and releases the database; returns once it is
    /// released. Every later call fails with `Shutdown` or does nothing.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown(Some(reply))).is_ok() {
            let _ = done.await;
        }
    }
}

impl TetherClient {
    /// Starts a client on `runtime` (the SDK's own in production, a test's runtime in
    /// tests, so they can pause the clock).
    pub fn start(
        config: ClientConfig,
        listener: Arc<dyn EventListener>,
        tokens: Arc<dyn TokenProvider>,
        runtime: &Handle,
        options: StartOptions,
    ) -> Result<Self, Error> {
        let settings = Settings::from_config(&config)?;
        let connector: Arc<dyn Connector> = match options.connector {
            Some(connector) => connector,
            None => Arc::new(WsConnector::new(&settings)?),
        };
        let store = SledStore::open(&settings.storage_dir)?;
        let outbox = Outbox::open(
            Box::new(store),
            Limits {
                max_count: settings.max_queued_messages,
                max_bytes: settings.max_queued_bytes,
                max_age: settings.max_message_age,
            },
        )?;
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (host, host_rx) = mpsc::unbounded_channel();
        let (processed_tx, processed) = mpsc::unbounded_channel();
        let (durable, durable_rx) = watch::channel(0);
        let (snapshot_tx, snapshot) = watch::channel(Snapshot::new(ConnectionStatus::Idle));
        let engine = Engine::new(Parts {
            settings,
            outbox,
            connector,
            tokens,
            seed: options.seed.unwrap_or_else(rand::random),
            commands,
            host,
            processed,
            durable,
            snapshot: snapshot_tx,
        })?;
        runtime.spawn(dispatch::run(listener, host_rx, processed_tx, durable_rx));
        runtime.spawn(engine.run());
        Ok(TetherClient {
            commands: commands_tx,
            snapshot,
        })
    }

    fn command(&self, command: Command) {
        // Fails only after shutdown, when there is nothing left to do.
        let _ = self.commands.send(command);
    }

    /// A receiver of every snapshot the engine publishes (for Rust callers and tests
    /// that want to wait for a state instead of polling).
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }
}

impl Drop for TetherClient {
    fn drop(&mut self) {
        // The foreign side released the object: stop the engine and free the database.
        let _ = self.commands.send(Command::Shutdown(None));
    }
}

/// Re-exported for the engine's users.
pub use engine::SEND_WINDOW;
