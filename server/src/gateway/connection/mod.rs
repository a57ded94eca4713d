//! One task per connection: it owns the socket, answers the client's frames, writes the
//! frames the hub queued for it (all that wait, in one write), and enforces the timeouts
//! and limits of docs/protocol.md §4, §7 and §8. When it ends, the connection's resources are
//! released before the closing handshake.

mod io;
mod messages;
mod policing;

use policing::Strikes;

use super::admission::{self, Admitted};
use super::presence_events::{self, Change};
use super::streams::{self, Check, Positions};
use super::ws::frame::{self, Opcode};
use super::ws::socket::{Incoming, ReadError, WsSocket};
use crate::auth::{Claims, TokenError};
use crate::broker::stream::StreamName;
use crate::broker::Lease;
use crate::broker::{AckOutcome, InboundMessage, Replay, StoreOutcome};
use crate::clock::now_ms;
use crate::hub::{ConnCell, ConnId, ConnInfo, Registration, Topic, ABANDON};
use crate::state::Shared;
use axum::extract::ws::Utf8Bytes;
use metrics::counter;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tether_protocol::client::{ClientMessage, FrameError};
use tether_protocol::names::room_allowed;
use tether_protocol::server::{ConnectionEstablished, ServerMessage, TokenRefreshed};
use tether_protocol::stream::StreamPosition;
use tether_protocol::{close, ErrorCode};
use tokio::time::Instant;
use tracing::{debug, info};

/// Queued frames written in one go.
const MAX_BATCH: usize = 256;
/// Bytes the kernel has not taken before the client counts as not reading (4008).
const MAX_UNSENT: usize = 1024 * 1024;
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What a connection keeps from its token.
pub struct Grant {
    /// Room patterns the user may join (`None`: any).
    pub rooms: Option<Box<[String]>>,
}

/// When a connection holding a token with these claims is closed with 4001 (ms since the
/// epoch): its `exp` plus the leeway.
pub fn token_deadline_ms(claims: &Claims, leeway_s: u64) -> u64 {
    claims.exp.saturating_add(leeway_s).saturating_mul(1000)
}

/// Everything a connection task starts with.
pub struct Session {
    /// Gateway state.
    pub shared: Arc<Shared>,
    /// What the token allows.
    pub grant: Grant,
    /// Client address.
    pub remote: SocketAddr,
    /// Held resources.
    pub admitted: Admitted,
    /// The hub entry.
    pub registration: Registration,
    /// Inbox messages to send right after `connection_established`.
    pub replay: Replay,
    /// The app's broadcast stream, when the gateway keeps one: where the connection
    /// starts, and the messages to send after the inbox replay.
    pub app_stream: Option<streams::Joined>,
}

/// A gap found while writing queued frames.
enum Gap {
    /// Inbox messages before this seq are missing.
    Inbox(u64),
    /// Messages of the stream of `room` after `after` are missing before `upto`.
    Stream {
        room: Option<Arc<str>>,
        after: u64,
        epoch: Arc<str>,
        upto: u64,
    },
}

/// What ended a wait.
enum Wake {
    /// The hub signalled (frames, close, resync).
    Signal,
    /// The socket can take more (false: it failed).
    Writable(bool),
    /// The socket has data (false: it failed).
    Readable(bool),
}

/// Why the task ended.
enum End {
    /// Close the socket with this code.
    Close(u16, &'static str),
    /// The client closed (with its code): answer and end.
    ClientClosed(Option<u16>),
    /// The client vanished.
    Gone,
    /// Drop the socket without a close frame (simulated crash).
    Killed,
}

/// Completes the upgrade, then serves the connection until it ends. The session comes
/// boxed so the waiting task does not carry it twice.
pub async fn start(on_upgrade: hyper::upgrade::OnUpgrade, session: Box<Session>) {
    let Some((stream, leftover)) = super::handshake::upgraded_stream(on_upgrade).await else {
        // The session drops here, which gives its resources back.
        debug!("the client went away during the upgrade");
        return;
    };
    // Unboxed in an inner scope: a moved-out Box is freed only when its binding goes
    // out of scope, which for `session` would be the end of the connection.
    let running = {
        let session = session;
        prepare(stream, leftover, *session)
    };
    run(running).await;
}

/// Builds the connection's state (synchronously, so none of it is held twice by the
/// waiting task) and logs the opening.
fn prepare(
    stream: tokio::net::TcpStream,
    leftover: bytes::Bytes,
    session: Session,
) -> Box<Running> {
    let Session {
        shared,
        grant,
        remote,
        admitted,
        registration,
        replay,
        app_stream,
    } = session;
    let socket = WsSocket::new(stream, leftover, shared.config.max_message_bytes);
    let cell = registration.cell;
    let info = cell.info();
    counter!("tether_connections_opened_total").increment(1);
    info!(
        conn = %shared.hub.conn_ref(admitted.id), user = %info.user, app = %info.app, node = %shared.node,
        device = info.device.as_deref().unwrap_or("-"), user_type = %info.user_type, %remote,
        replay = replay.frames.len(),
        "connection opened"
    );
    let id = admitted.id;
    let in_hub = admitted.hand_over();
    let task = Connection {
        shared,
        grant,
        cell,
        id,
        in_hub,
        held: true,
        socket,
        frames_in: 0,
        frames_out: 0,
        sent_upto: 0,
        gaps_checked_upto: 0,
        streams: None,
        strikes: None,
        opened_ms: now_ms(),
    };
    Box::new(Running {
        task,
        replay,
        app_stream,
    })
}

/// What [`run`] works on, handed over boxed: an async fn keeps a copy of its arguments
/// for its whole life, and this task lives as long as the connection.
struct Running {
    task: Connection,
    replay: Replay,
    app_stream: Option<streams::Joined>,
}

/// Serves one connection until it ends, then releases it and closes the socket.
async fn run(running: Box<Running>) {
    // Unboxed in an inner scope so the box is freed now, not when the connection ends.
    let Running {
        mut task,
        replay,
        app_stream,
    } = {
        let running = running;
        *running
    };
    // The greeting and replay are written before the first wait, so the replay is not
    // part of the long-lived task.
    let end = match task.greet(replay, app_stream) {
        Ok(()) => task.serve().await,
        Err(end) => end,
    };
    // Resources go back before the closing handshake, so a client that reconnects at
    // once finds its slot free. A killed node gives nothing back: its registry entries
    // expire as a dead node's would.
    match end {
        End::Killed => task.held = false,
        _ => Box::pin(task.release()).await,
    }
    let code = match end {
        End::Close(code, reason) => {
            Box::pin(task.close(code, reason)).await;
            code
        }
        End::ClientClosed(code) => {
            let code = code.unwrap_or(close::NORMAL);
            Box::pin(task.close(code, "")).await;
            code
        }
        End::Gone | End::Killed => close::ABNORMAL,
    };
    counter!("tether_connections_closed_total", "code" => code.to_string()).increment(1);
    let shared = &task.shared;
    let info = task.cell.info();
    info!(
        conn = %shared.hub.conn_ref(task.id), user = %info.user, app = %info.app, node = %shared.node,
        code, reason = close::describe(code),
        duration_ms = now_ms().saturating_sub(task.opened_ms),
        frames_in = task.frames_in, frames_out = task.frames_out,
        "connection closed"
    );
}

/// A connection's state. It holds the connection's resources (limit slot, hub entry,
/// topics) from the handshake's [`Admitted`] on, and gives them back when it ends, also
/// when dropped without [`Connection::release`] (a panicking task).
struct Connection {
    shared: Arc<Shared>,
    grant: Grant,
    /// Who the connection is, and what the hub shares with it.
    cell: Arc<ConnCell>,
    id: ConnId,
    /// Whether the connection is in the hub (so releasing takes it out).
    in_hub: bool,
    /// Whether the resources are still held.
    held: bool,
    socket: WsSocket,
    frames_in: u64,
    frames_out: u64,
    /// The highest inbox seq this connection has been sent (or had no need of): a user
    /// message at or below it is a duplicate of the replay or of a resync.
    sent_upto: u64,
    /// Gaps up to this seq were filled from the inbox already (what is missing is gone).
    gaps_checked_upto: u64,
    /// Places in the streams the connection reads; allocated at its first stream.
    streams: Option<Box<Positions>>,
    /// What a misbehaving or throttled client has earned; allocated at its first strike,
    /// so a well-behaved connection carries one pointer.
    strikes: Option<Box<Strikes>>,
    /// When the connection opened (ms since the epoch).
    opened_ms: u64,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        admission::release_later(self.shared.clone(), self.id, self.lease(), self.in_hub);
    }
}

impl Connection {
    /// Who the connection is.
    fn info(&self) -> &ConnInfo {
        self.cell.info()
    }

    /// The connection's slot in its user's limit.
    fn lease(&self) -> Lease {
        Lease::of(self.info(), self.shared.hub.conn_ref(self.id))
    }

    /// Gives the connection's resources back.
    async fn release(&mut self) {
        self.held = false;
        admission::release(self.shared.clone(), self.id, self.lease(), self.in_hub).await;
    }

    /// Writes `connection_established`, the inbox replay and the app stream's replay.
    fn greet(&mut self, replay: Replay, app_stream: Option<streams::Joined>) -> Result<(), End> {
        let shared = &self.shared;
        let replay_from = replay.frames.first().map(|(seq, _)| *seq);
        self.sent_upto = replay
            .frames
            .last()
            .map_or(replay.after, |(seq, _)| *seq)
            .max(replay.after);
        let established = ServerMessage::ConnectionEstablished(ConnectionEstablished {
            connection_id: shared.hub.conn_ref(self.id).to_string(),
            server_id: shared.node.to_string(),
            user_id: self.info().user.to_string(),
            app: self.info().app.to_string(),
            user_type: self.info().user_type.to_string(),
            heartbeat_interval: shared.config.heartbeat_interval_ms,
            replay_from,
            replay_count: replay.frames.len() as u32,
            token_expires_in: Some(self.cell.expires_at().saturating_sub(now_ms())),
            app_stream: app_stream.as_ref().map(|s| s.answer.clone()),
        })
        .encode(now_ms());
        counter!("tether_inbox_replayed_total").increment(replay.frames.len() as u64);
        let stream_frames = app_stream.as_ref().map_or(&[][..], |s| &s.frames[..]);
        if let Some(joined) = &app_stream {
            counter!("tether_stream_replayed_total").increment(joined.frames.len() as u64);
            self.positions()
                .set(None, &joined.answer.epoch, joined.answer.offset);
        }
        let first = std::iter::once(established.as_bytes())
            .chain(replay.frames.iter().map(|(_, f)| f.as_bytes()))
            .chain(stream_frames.iter().map(|(_, f)| f.as_bytes()));
        self.frames_out += 1 + (replay.frames.len() + stream_frames.len()) as u64;
        if self.socket.send_texts(first).is_err() {
            return Err(End::Gone);
        }
        Ok(())
    }
}

fn error_frame(code: ErrorCode, message: &str, reference: Option<String>) -> String {
    ServerMessage::error(code, message, reference).encode(now_ms())
}

fn read_end(e: ReadError) -> End {
    match e {
        ReadError::Io(_) => End::Gone,
        ReadError::Violation(v) => {
            if v.code == close::MESSAGE_TOO_BIG {
                counter!("tether_frames_oversize_total").increment(1);
            }
            End::Close(v.code, v.reason)
        }
    }
}
