//! One task per connection: it owns the socket, answers the client's frames, writes the
//! frames the hub queued for it (all that wait, in one write), and enforces the timeouts
//! and limits of docs/protocol.md §4, §7 and §8. When it ends, the connection's resources are
//! released before the closing handshake.

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

/// Bad frames tolerated per minute before the connection is closed with 4008.
const MAX_VIOLATIONS_PER_MINUTE: usize = 10;
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

/// A connection's record of refusals and bad frames.
#[derive(Default)]
struct Strikes {
    /// When each recent bad frame came (the last minute's).
    violations: VecDeque<Instant>,
    /// An app message refused with a retryable code, which must come again before any
    /// later one is stored.
    held_for: Option<(String, ErrorCode)>,
    /// Frames refused for rate in the current minute.
    rate_refusals: Option<(Instant, u32)>,
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

    async fn serve(&mut self) -> End {
        if self.socket.has_buffered_input() {
            let mut events = Vec::new();
            if let Err(end) = self.socket.decode_buffered(&mut events).map_err(read_end) {
                return end;
            }
            if let Some(end) = Box::pin(self.handle_events(&mut events)).await {
                return end;
            }
        }

        loop {
            if let Some((code, reason)) = self.cell.close_requested() {
                return if code == ABANDON {
                    End::Killed
                } else {
                    End::Close(code, reason)
                };
            }
            if self.shared.draining() {
                // Admitted just before shutdown began, after every socket was told to close.
                return End::Close(close::SERVICE_RESTART, "server restarting");
            }
            if self.cell.take_resync() {
                if let Some(end) = Box::pin(self.resync()).await {
                    return end;
                }
            }
            if self.socket.unsent() == 0 && self.cell.has_frames() {
                match self.write_queued() {
                    Ok(None) => {}
                    Ok(Some(Gap::Inbox(gap))) => {
                        // Fill the gap from the inbox first (what is gone for good, trimmed
                        // by length or age, stays a gap); then the queued frames go on.
                        if let Some(end) = Box::pin(self.resync()).await {
                            return end;
                        }
                        self.gaps_checked_upto = gap;
                        continue;
                    }
                    Ok(Some(Gap::Stream {
                        room,
                        after,
                        epoch,
                        upto,
                    })) => {
                        // The same for a stream, from its history.
                        if let Some(end) =
                            Box::pin(self.fill_stream(room.clone(), after, epoch)).await
                        {
                            return end;
                        }
                        self.positions().gap_checked(room.as_deref(), upto);
                        continue;
                    }
                    Err(e) => {
                        debug!(error = %e, "write failed");
                        return End::Gone;
                    }
                }
            }
            if self.socket.unsent() > MAX_UNSENT {
                return End::Close(close::POLICY_VIOLATION, "too slow: not reading");
            }
            // One small hand-written wait instead of a select over separate futures: an
            // idle connection's task stays a few hundred bytes.
            let this = &*self;
            let woke = std::future::poll_fn(|cx| {
                if this.cell.poll_signal(cx).is_ready() {
                    return Poll::Ready(Wake::Signal);
                }
                if this.socket.unsent() > 0 {
                    if let Poll::Ready(ready) = this.socket.poll_write_ready(cx) {
                        return Poll::Ready(Wake::Writable(ready.is_ok()));
                    }
                }
                if let Poll::Ready(ready) = this.socket.poll_read_ready(cx) {
                    return Poll::Ready(Wake::Readable(ready.is_ok()));
                }
                Poll::Pending
            })
            .await;
            match woke {
                Wake::Signal => {}
                Wake::Writable(ok) => {
                    if !ok || self.socket.write_pending().is_err() {
                        return End::Gone;
                    }
                }
                Wake::Readable(ok) => {
                    if !ok {
                        return End::Gone;
                    }
                    let mut events = Vec::new();
                    match self.socket.read_available(&mut events) {
                        Ok(true) => {}
                        Ok(false) => return End::Gone,
                        Err(e) => return read_end(e),
                    }
                    if !events.is_empty() {
                        // Any frame counts as life (the hub's sweep closes silent ones).
                        self.cell.touch(now_ms());
                        // Boxed: handling a frame (broker calls and all) needs far more
                        // state than waiting does, and only for a moment.
                        if let Some(end) = Box::pin(self.handle_events(&mut events)).await {
                            return end;
                        }
                    }
                }
            }
        }
    }

    /// Writes the frames the hub queued, as many as wait (up to a batch), in one write.
    /// Returns the gap a user or stream message would leave after what was sent (live
    /// messages were missed); it stays queued until the gap is filled.
    fn write_queued(&mut self) -> std::io::Result<Option<Gap>> {
        let Connection {
            cell,
            socket,
            sent_upto,
            gaps_checked_upto,
            streams,
            ..
        } = self;
        let gaps_checked_upto = *gaps_checked_upto;
        let mut gap = None;
        let written = socket.send_with(|out| {
            let mut written = 0u64;
            cell.take(MAX_BATCH, |frame| {
                if let Some(seq) = frame.seq {
                    // Already sent by the replay or a fill: it arrived live meanwhile.
                    if seq <= *sent_upto {
                        return true;
                    }
                    if seq > *sent_upto + 1 && seq > gaps_checked_upto {
                        gap = Some(Gap::Inbox(seq));
                        return false;
                    }
                    *sent_upto = seq;
                }
                if let (Some(mark), Some(positions)) = (&frame.stream, streams.as_mut()) {
                    match positions.check(mark) {
                        Check::Send => {}
                        Check::Duplicate => return true,
                        Check::Gap { after, epoch } => {
                            gap = Some(Gap::Stream {
                                room: mark.room.clone(),
                                after,
                                epoch,
                                upto: mark.offset,
                            });
                            return false;
                        }
                    }
                }
                frame::write_frame(out, Opcode::Text, frame.text.as_bytes());
                written += 1;
                true
            });
            written
        })?;
        self.frames_out += written;
        self.shared.metrics.frames_out.increment(written);
        Ok(gap)
    }

    /// The connection's stream places, allocated at the first stream.
    fn positions(&mut self) -> &mut Positions {
        self.streams.get_or_insert_with(Box::default)
    }

    /// Sends what the stream of `room` holds after `after` (of `epoch`): a gap, or what
    /// may have been missed while the broker's subscription was down.
    async fn fill_stream(
        &mut self,
        room: Option<Arc<str>>,
        after: u64,
        epoch: Arc<str>,
    ) -> Option<End> {
        let shared = self.shared.clone();
        let name = match &room {
            Some(room) => StreamName::Room(room.clone()),
            None => StreamName::App,
        };
        let limits = shared.config.history_of(&name)?;
        let app = self.info().app.clone();
        match streams::fill(&*shared.broker, &app, &name, after, &epoch, limits).await {
            Ok(frames) => {
                let (last, _) = frames.last()?;
                counter!("tether_stream_gap_filled_total").increment(frames.len() as u64);
                self.positions().set(room.as_deref(), &epoch, *last);
                return self.send_frames(frames.iter().map(|(_, f)| f.as_bytes()));
            }
            Err(e) => {
                debug!(error = %e, "stream fill failed; the client recovers when it joins again")
            }
        }
        None
    }

    /// Sends frames (counted); `Some(End::Gone)` when the socket is gone.
    fn send_frames<'a>(&mut self, frames: impl ExactSizeIterator<Item = &'a [u8]>) -> Option<End> {
        if frames.len() == 0 {
            return None;
        }
        self.frames_out += frames.len() as u64;
        self.socket.send_texts(frames).is_err().then_some(End::Gone)
    }

    /// Live messages may have been missed (the broker's subscription was down): sends what
    /// the inbox, and each stream the connection reads, hold after what it got.
    async fn resync(&mut self) -> Option<End> {
        let held = self.streams.as_ref().map(|p| p.held()).unwrap_or_default();
        for (room, epoch, after) in held {
            if let Some(end) = Box::pin(self.fill_stream(room, after, epoch)).await {
                return Some(end);
            }
        }
        let shared = self.shared.clone();
        match shared
            .broker
            .read_inbox(&self.info().app, &self.info().user, self.sent_upto)
            .await
        {
            Ok(frames) if !frames.is_empty() => {
                self.sent_upto = frames.last().map_or(self.sent_upto, |(seq, _)| *seq);
                return self.send_frames(frames.iter().map(|(_, f)| f.as_bytes()));
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "resync failed; the client catches up when it reconnects"),
        }
        None
    }

    async fn handle_events(&mut self, events: &mut Vec<Incoming>) -> Option<End> {
        for event in std::mem::take(events) {
            match event {
                Incoming::Text(text) => {
                    self.frames_in += 1;
                    self.shared.metrics.frames_in.increment(1);
                    let replies = match self.handle_text(&text).await {
                        Ok(replies) => replies,
                        Err(end) => return Some(end),
                    };
                    if let Some(end) = self.send_frames(replies.iter().map(String::as_bytes)) {
                        return Some(end);
                    }
                }
                Incoming::Binary(_) => {
                    return Some(End::Close(
                        close::UNSUPPORTED_DATA,
                        "binary frames are not accepted",
                    ))
                }
                // Pings are answered by the socket; any frame counts as life.
                Incoming::Ping | Incoming::Pong => {}
                Incoming::Close(code) => return Some(End::ClientClosed(code)),
            }
        }
        None
    }

    /// Sends a close frame and waits briefly for the client's answer, so the client reads
    /// the code before the socket goes away.
    async fn close(&mut self, code: u16, reason: &str) {
        let socket = &mut self.socket;
        let _ = tokio::time::timeout(CLOSE_GRACE, async move {
            if socket.send_close(code, reason).is_err() || socket.flush().await.is_err() {
                return;
            }
            let mut events = Vec::new();
            loop {
                if socket.readable().await.is_err() {
                    return;
                }
                match socket.read_available(&mut events) {
                    Ok(true) if events.iter().any(|e| matches!(e, Incoming::Close(_))) => return,
                    Ok(true) => events.clear(),
                    Ok(false) | Err(_) => return,
                }
            }
        })
        .await;
    }

    /// Answers one text frame; `Err` ends the connection.
    async fn handle_text(&mut self, text: &str) -> Result<Vec<String>, End> {
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err(FrameError::NotJson) => {
                counter!("tether_frames_invalid_total", "reason" => "not_json").increment(1);
                return Err(End::Close(close::INVALID_PAYLOAD, "frame is not JSON"));
            }
            Err(FrameError::Rejected {
                code,
                message,
                reference,
            }) => {
                counter!("tether_frames_invalid_total", "reason" => code.as_str()).increment(1);
                self.violation()?;
                return Ok(vec![error_frame(code, &message, reference)]);
            }
        };
        let app_id = match &message {
            ClientMessage::App(app) => Some(app.id.clone()),
            _ => None,
        };
        let connection_over = self
            .shared
            .conn_limiter
            .as_ref()
            .is_some_and(|l| l.check_key(&self.id).is_err());
        let user_over = !connection_over
            && self.shared.user_limiter.as_ref().is_some_and(|l| {
                l.check_key(&(self.info().app.clone(), self.info().user.clone()))
                    .is_err()
            });
        if connection_over || user_over {
            self.rate_refusal()?;
            let text = if connection_over {
                "slow down: too many frames on this connection"
            } else {
                "slow down: too many frames from this user"
            };
            if let Some(id) = &app_id {
                self.hold_order(id, ErrorCode::RateLimited);
            }
            // A refused refresh_token is named, so the client can tell and try again.
            let reference = match &message {
                ClientMessage::RefreshToken { .. } => Some("refresh_token".to_owned()),
                _ => app_id,
            };
            return Ok(vec![error_frame(ErrorCode::RateLimited, text, reference)]);
        }
        // Order of app messages: once one was refused with a retryable code, later ones on
        // this connection wait until it comes again, so none is stored before it.
        let held_for = self.strikes.as_ref().and_then(|s| s.held_for.as_ref());
        if let (Some(id), Some((first, code))) = (&app_id, held_for) {
            if id == first {
                if let Some(strikes) = &mut self.strikes {
                    strikes.held_for = None;
                }
            } else {
                let refusal = error_frame(
                    *code,
                    &format!("send {first} again first: app messages are stored in order"),
                    Some(id.clone()),
                );
                return Ok(vec![refusal]);
            }
        }
        let reply = match message {
            ClientMessage::Ping { ts } => Some(ServerMessage::Pong {
                ts,
                server_ts: now_ms(),
            }),
            ClientMessage::JoinRoom { room, id, since } => {
                // An error names the request by its id, else by its type (§5).
                let reference = id.unwrap_or_else(|| "join_room".to_owned());
                let (answer, replay) = self.join_room(room, reference, since).await;
                let mut replies = vec![answer.encode(now_ms())];
                replies.extend(replay.into_iter().map(|(_, f)| f.as_str().to_owned()));
                return Ok(replies);
            }
            ClientMessage::LeaveRoom { room, .. } => {
                let was_in = self
                    .shared
                    .hub
                    .rooms_of(self.id)
                    .iter()
                    .any(|r| **r == *room);
                if let Some(positions) = &mut self.streams {
                    positions.forget(&room);
                }
                if let Some(topic) = self.shared.hub.leave_room(self.id, &room) {
                    if let Err(e) = self.shared.broker.unsubscribe(&topic).await {
                        debug!(error = %e, "unsubscribe failed");
                    }
                }
                if was_in {
                    let conn = self.shared.hub.conn_ref(self.id);
                    let info = self.info();
                    if let Err(e) = self
                        .shared
                        .broker
                        .presence_leave(&info.app, &room, &conn)
                        .await
                    {
                        debug!(error = %e, "presence leave not recorded; retried");
                    }
                    presence_events::announce(&self.shared, Change::Left, &room, info, &conn).await;
                }
                Some(ServerMessage::RoomLeft { room })
            }
            ClientMessage::RoomPresence { room, id } => {
                let reference = id.unwrap_or_else(|| "room_presence".to_owned());
                Some(self.room_presence(room, reference).await)
            }
            ClientMessage::RefreshToken { token } => Some(self.refresh_token(&token.0)),
            ClientMessage::Ack { seq } => {
                let device = self.info().device.as_deref();
                match self
                    .shared
                    .broker
                    .ack_inbox(&self.info().app, &self.info().user, device, seq)
                    .await
                {
                    Ok(AckOutcome::Recorded) => None,
                    Ok(AckOutcome::BeyondNewest { newest }) => {
                        counter!("tether_frames_invalid_total", "reason" => ErrorCode::InvalidAck.as_str())
                            .increment(1);
                        Some(ServerMessage::error(
                            ErrorCode::InvalidAck,
                            format!("seq {seq} is above the newest inbox message ({newest})"),
                            Some("ack".into()),
                        ))
                    }
                    Err(e) => Some(ServerMessage::error(
                        ErrorCode::Unavailable,
                        e.to_string(),
                        Some("ack".into()),
                    )),
                }
            }
            ClientMessage::App(message) => {
                let id = message.id.clone();
                let stored = self
                    .shared
                    .broker
                    .store_inbound(InboundMessage {
                        app: self.info().app.clone(),
                        user: self.info().user.clone(),
                        device: self.info().device.clone(),
                        kind: message.kind,
                        id: message.id,
                        data: message.data,
                        ts: now_ms(),
                    })
                    .await;
                Some(match stored {
                    Ok(outcome) => {
                        let name = match outcome {
                            StoreOutcome::Stored => "tether_inbound_stored_total",
                            StoreOutcome::Duplicate => "tether_inbound_duplicates_total",
                        };
                        counter!(name).increment(1);
                        ServerMessage::Ack { id }
                    }
                    Err(e) => {
                        self.hold_order(&id, ErrorCode::Unavailable);
                        ServerMessage::error(
                            ErrorCode::Unavailable,
                            format!("not stored, keep it and send it again later: {e}"),
                            Some(id),
                        )
                    }
                })
            }
        };
        Ok(reply.map(|r| r.encode(now_ms())).into_iter().collect())
    }

    /// `join_room`: the answer, and for a room with history the messages to replay after it.
    async fn join_room(
        &mut self,
        room: String,
        reference: String,
        since: Option<StreamPosition>,
    ) -> (ServerMessage, Vec<(u64, Utf8Bytes)>) {
        let answer = self.join_live(room.clone(), reference.clone()).await;
        let ServerMessage::RoomJoined { .. } = answer else {
            return (answer, Vec::new());
        };
        let name = StreamName::Room(Arc::from(room.as_str()));
        let Some(limits) = self.shared.config.history_of(&name) else {
            return (answer, Vec::new());
        };
        // Now a member and subscribed: everything published from here on arrives live, and
        // the read below holds everything before.
        let shared = self.shared.clone();
        let app = self.info().app.clone();
        match streams::join(&*shared.broker, &app, &name, since.as_ref(), limits).await {
            Ok(joined) => {
                counter!("tether_stream_replayed_total").increment(joined.frames.len() as u64);
                if since.is_some() {
                    let outcome = if joined.answer.recovered {
                        "recovered"
                    } else {
                        "lost"
                    };
                    counter!("tether_stream_recoveries_total", "outcome" => outcome).increment(1);
                }
                self.positions()
                    .set(Some(&room), &joined.answer.epoch, joined.answer.offset);
                (
                    ServerMessage::RoomJoined {
                        room,
                        stream: Some(joined.answer),
                    },
                    joined.frames,
                )
            }
            Err(e) => {
                if let Some(topic) = self.shared.hub.leave_room(self.id, &room) {
                    if let Err(e) = self.shared.broker.unsubscribe(&topic).await {
                        debug!(error = %e, "unsubscribe failed");
                    }
                }
                (
                    ServerMessage::error(
                        ErrorCode::Unavailable,
                        format!("could not read the room's history: {e}"),
                        Some(reference),
                    ),
                    Vec::new(),
                )
            }
        }
    }

    /// Joins the room live: membership, subscription, presence.
    async fn join_live(&mut self, room: String, reference: String) -> ServerMessage {
        if let Some(patterns) = &self.grant.rooms {
            if !room_allowed(patterns, &room) {
                return ServerMessage::error(
                    ErrorCode::Forbidden,
                    format!("the token does not allow room {room:?}"),
                    Some(reference),
                );
            }
        }
        let max = self.shared.config.max_rooms_per_connection;
        let again = self
            .shared
            .hub
            .rooms_of(self.id)
            .iter()
            .any(|r| **r == *room);
        match self.shared.hub.join_room(self.id, &room, max) {
            Ok(None) if again => self.joined(room, again).await,
            // Not the first member here, but the first one's subscribe may still be on its
            // way: waiting for it (a no-op once done) keeps §4's promise that every
            // message from `room_joined` on arrives.
            Ok(topic) => match self
                .shared
                .broker
                .subscribe(&topic.unwrap_or_else(|| Topic::Room {
                    app: self.info().app.clone(),
                    room: Arc::from(room.as_str()),
                }))
                .await
            {
                Ok(()) => self.joined(room, again).await,
                Err(e) => {
                    self.shared.hub.leave_room(self.id, &room);
                    ServerMessage::error(
                        ErrorCode::Unavailable,
                        format!("could not join: {e}"),
                        Some(reference),
                    )
                }
            },
            Err(crate::hub::JoinRefused::TooManyRooms) => ServerMessage::error(
                ErrorCode::TooManyRooms,
                format!("a connection may be in at most {max} rooms"),
                Some(reference),
            ),
            Err(crate::hub::JoinRefused::NotConnected) => ServerMessage::error(
                ErrorCode::Unavailable,
                "connection is closing",
                Some(reference),
            ),
        }
    }

    /// Records the connection in the room's presence (and tells the members, the first
    /// time) and answers the join. Presence is not worth refusing a join for: a failed
    /// write is retried by the broker.
    async fn joined(&self, room: String, again: bool) -> ServerMessage {
        let conn = self.shared.hub.conn_ref(self.id);
        let info = self.info();
        if let Err(e) = self
            .shared
            .broker
            .presence_enter(&info.app, &room, &conn, info)
            .await
        {
            debug!(error = %e, "presence join not recorded; retried");
        }
        if !again {
            presence_events::announce(&self.shared, Change::Joined, &room, info, &conn).await;
        }
        ServerMessage::RoomJoined { room, stream: None }
    }

    /// `room_presence`: who is in a room this connection is in, on every node.
    async fn room_presence(&self, room: String, reference: String) -> ServerMessage {
        if !self
            .shared
            .hub
            .rooms_of(self.id)
            .iter()
            .any(|r| **r == *room)
        {
            return ServerMessage::error(
                ErrorCode::Forbidden,
                format!("join room {room:?} before asking who is in it"),
                Some(reference),
            );
        }
        match self
            .shared
            .broker
            .room_presence(&self.info().app, &room)
            .await
        {
            Ok(presence) => ServerMessage::RoomPresence(presence),
            Err(e) => ServerMessage::error(
                ErrorCode::Unavailable,
                format!("presence unavailable: {e}"),
                Some(reference),
            ),
        }
    }

    /// `refresh_token`: the connection lives by the new token from now on, when it is
    /// valid and grants what the connection holds (the same user and user type, its app,
    /// every room it is in). A refused token changes nothing: the first token's `exp`
    /// still ends the connection (4001).
    fn refresh_token(&mut self, token: &str) -> ServerMessage {
        let refused = |code, message: String| {
            counter!("tether_token_refreshes_total", "outcome" => "refused").increment(1);
            ServerMessage::error(code, message, Some("refresh_token".into()))
        };
        if self.cell.close_requested().is_some() {
            return refused(
                ErrorCode::TokenExpired,
                "the connection is closing already".into(),
            );
        }
        let claims = match self.shared.verifier.verify(token) {
            Ok(claims) => claims,
            Err(TokenError::Expired) => {
                return refused(ErrorCode::TokenExpired, "the new token expired".into())
            }
            Err(TokenError::Invalid(reason)) => {
                return refused(ErrorCode::InvalidToken, format!("the new token: {reason}"))
            }
        };
        let info = self.info();
        if claims.sub != *info.user {
            return refused(
                ErrorCode::Forbidden,
                "the new token is for another user".into(),
            );
        }
        if claims.user_type() != &*info.user_type {
            return refused(
                ErrorCode::Forbidden,
                format!(
                    "the new token's user type {:?} is not the connection's {:?}",
                    claims.user_type(),
                    &*info.user_type
                ),
            );
        }
        if !claims.apps.iter().any(|app| *app == *info.app) {
            return refused(
                ErrorCode::Forbidden,
                format!("the new token does not grant app {:?}", &*info.app),
            );
        }
        if let Some(patterns) = &claims.rooms {
            let rooms = self.shared.hub.rooms_of(self.id);
            if let Some(room) = rooms.iter().find(|room| !room_allowed(patterns, room)) {
                return refused(
                    ErrorCode::Forbidden,
                    format!("the new token does not allow room {room:?}, which this connection is in; reconnect"),
                );
            }
        }
        let deadline = token_deadline_ms(&claims, self.shared.config.jwt.leeway_s);
        if deadline <= self.cell.expires_at() {
            // Taking it would only shorten the connection (an older or the same token).
            return refused(
                ErrorCode::InvalidToken,
                "the new token expires no later than the current one".into(),
            );
        }
        self.cell.expire_at(deadline);
        self.grant.rooms = claims.rooms.map(Vec::into_boxed_slice);
        counter!("tether_token_refreshes_total", "outcome" => "accepted").increment(1);
        let expires_in = deadline.saturating_sub(now_ms());
        let info = self.info();
        info!(
            conn = %self.shared.hub.conn_ref(self.id), user = %info.user, app = %info.app,
            node = %self.shared.node, expires_in_s = expires_in / 1000,
            "token refreshed"
        );
        ServerMessage::TokenRefreshed(TokenRefreshed { expires_in })
    }

    /// Refuses later app messages until `id`, refused with `code`, comes again.
    fn hold_order(&mut self, id: &str, code: ErrorCode) {
        let strikes = self.strikes.get_or_insert_default();
        if strikes.held_for.is_none() {
            strikes.held_for = Some((id.to_owned(), code));
        }
    }

    /// Counts a frame refused for rate. A client resending its window in order after a
    /// refusal is not abusing; one that keeps sending twice its burst allowance within a
    /// minute is, and is closed with 4008.
    fn rate_refusal(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let strikes = self.strikes.get_or_insert_default();
        let (since, count) = strikes.rate_refusals.get_or_insert((now, 0));
        if now.duration_since(*since) > Duration::from_secs(60) {
            *since = now;
            *count = 0;
        }
        *count += 1;
        let rate = self.shared.config.rate_limit_per_connection.max(1);
        let allowance = (4 * rate).max(20);
        if *count > allowance {
            return Err(End::Close(
                close::POLICY_VIOLATION,
                "too many frames beyond the rate limit",
            ));
        }
        Ok(())
    }

    /// Counts a bad frame; too many in a minute ends the connection with 4008.
    fn violation(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let violations = &mut self.strikes.get_or_insert_default().violations;
        while violations
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            violations.pop_front();
        }
        violations.push_back(now);
        if violations.len() > MAX_VIOLATIONS_PER_MINUTE {
            return Err(End::Close(
                close::POLICY_VIOLATION,
                "too many invalid or excess frames",
            ));
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
