//! One task per connection: it owns the socket, answers the client's frames, writes the
//! frames queued for it by the hub, and enforces the timeouts and limits of PROTOCOL.md
//! §4, §7 and §8. When it ends, the connection's resources are released.

use super::admission::Admitted;
use crate::auth::Claims;
use crate::broker::{AckOutcome, InboundMessage, Replay, StoreOutcome};
use crate::clock::now_ms;
use crate::hub::{ConnId, ConnInfo, Outgoing, Registration};
use crate::metrics::HotMetrics;
use crate::state::Shared;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use metrics::counter;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tether_protocol::client::{ClientMessage, FrameError};
use tether_protocol::names::room_allowed;
use tether_protocol::server::{ConnectionEstablished, ServerMessage};
use tether_protocol::{close, ErrorCode};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, info_span, Instrument};

/// Bad frames tolerated per minute before the connection is closed with 4008.
const MAX_VIOLATIONS_PER_MINUTE: usize = 10;
/// Queued frames written before one flush.
const MAX_BATCH: usize = 64;
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Everything a connection task starts with.
pub struct Session {
    /// Gateway state.
    pub shared: Arc<Shared>,
    /// The verified token.
    pub claims: Claims,
    /// Who the connection is.
    pub info: ConnInfo,
    /// Client address.
    pub remote: SocketAddr,
    /// Held resources.
    pub admitted: Admitted,
    /// The hub entry: frames queued for this connection and its close signal.
    pub registration: Registration,
    /// Inbox messages to send right after `connection_established`.
    pub replay: Replay,
}

/// Why the task ended.
enum End {
    /// Close the socket with this code.
    Close(u16, &'static str),
    /// The client closed or vanished.
    Gone,
    /// Drop the socket without a close frame.
    Killed,
}

/// Serves one connection until it ends.
pub async fn run(socket: WebSocket, session: Session) {
    let conn = session.shared.hub.conn_ref(session.admitted.id);
    let span = info_span!(
        "conn",
        conn = %conn,
        user = %session.info.user,
        app = %session.info.app,
        node = %session.shared.node,
    );
    async move {
        let Session {
            shared,
            claims,
            info,
            remote,
            admitted,
            registration,
            replay,
        } = session;
        let opened = Instant::now();
        counter!("tether_connections_opened_total").increment(1);
        info!(
            device = info.device.as_deref().unwrap_or("-"),
            user_type = %info.user_type,
            %remote,
            replay = replay.frames.len(),
            "connection opened"
        );
        let mut task = Connection::new(shared.clone(), claims, info, admitted.id, socket);
        let end = task.serve(registration, replay).await;
        // Resources go back before the closing handshake, so a client that reconnects
        // at once finds its slot free. A killed node (a simulated crash) gives nothing
        // back: its registry entries expire as a dead node's would.
        match end {
            End::Killed => admitted.abandon(),
            _ => admitted.release().await,
        }
        let code = match end {
            End::Close(code, reason) => {
                task.close(code, reason).await;
                code
            }
            End::Gone | End::Killed => close::ABNORMAL,
        };
        counter!("tether_connections_closed_total", "code" => code.to_string()).increment(1);
        info!(
            code,
            reason = close::describe(code),
            duration_ms = opened.elapsed().as_millis() as u64,
            frames_in = task.frames_in,
            frames_out = task.frames_out,
            "connection closed"
        );
    }
    .instrument(span)
    .await;
}

struct Connection {
    shared: Arc<Shared>,
    claims: Claims,
    info: ConnInfo,
    id: ConnId,
    conn_id: String,
    socket: WebSocket,
    limiter: Option<DefaultDirectRateLimiter>,
    violations: VecDeque<Instant>,
    metrics: HotMetrics,
    frames_in: u64,
    frames_out: u64,
}

impl Connection {
    fn new(
        shared: Arc<Shared>,
        claims: Claims,
        info: ConnInfo,
        id: ConnId,
        socket: WebSocket,
    ) -> Connection {
        let limiter = NonZeroU32::new(shared.config.rate_limit_per_connection).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        Connection {
            conn_id: shared.hub.conn_ref(id).to_string(),
            shared,
            claims,
            info,
            id,
            socket,
            limiter,
            violations: VecDeque::new(),
            metrics: HotMetrics::new(),
            frames_in: 0,
            frames_out: 0,
        }
    }

    async fn serve(&mut self, registration: Registration, replay: Replay) -> End {
        let Registration {
            mut rx,
            close: close_signal,
            mut resync,
            ..
        } = registration;
        let shared = self.shared.clone();

        // connection_established, then the replay, before any live frame.
        let replay_from = replay.frames.first().map(|(seq, _)| *seq);
        // The highest inbox seq this connection has been sent (or had no need of): a live
        // frame at or below it is a duplicate of the replay or of a resync.
        let mut sent_upto = replay
            .frames
            .last()
            .map_or(replay.after, |(seq, _)| *seq)
            .max(replay.after);
        resync.mark_unchanged();
        let established = ServerMessage::ConnectionEstablished(ConnectionEstablished {
            connection_id: self.conn_id.clone(),
            server_id: shared.node.to_string(),
            user_id: self.info.user.to_string(),
            app: self.info.app.to_string(),
            user_type: self.info.user_type.to_string(),
            heartbeat_interval: shared.config.heartbeat_interval_ms,
            replay_from,
            replay_count: replay.frames.len() as u32,
        });
        let mut first = vec![Utf8Bytes::from(established.encode(now_ms()))];
        first.extend(replay.frames.into_iter().map(|(_, frame)| frame));
        counter!("tether_inbox_replayed_total").increment(first.len() as u64 - 1);
        if let Err(end) = self.write(first, &close_signal).await {
            return end;
        }

        let timeout = Duration::from_millis(shared.config.connection_timeout_ms);
        let mut last_seen = Instant::now();
        let idle = sleep_until(last_seen + timeout);
        tokio::pin!(idle);
        let leeway_ms = shared.config.jwt.leeway_s * 1000;
        let expires_in = (self.claims.exp * 1000 + leeway_ms).saturating_sub(now_ms());
        let token_expiry = sleep_until(Instant::now() + Duration::from_millis(expires_in));
        tokio::pin!(token_expiry);

        loop {
            tokio::select! {
                biased;
                _ = shared.kill.cancelled() => return End::Killed,
                (code, reason) = close_signal.requested() => return End::Close(code, reason),
                _ = shared.shutdown.cancelled() => return End::Close(close::SERVICE_RESTART, "server restarting"),
                frame = self.socket.next() => {
                    last_seen = Instant::now();
                    match frame {
                        None => return End::Gone,
                        Some(Err(e)) => return read_error(e),
                        Some(Ok(Message::Text(text))) => {
                            self.frames_in += 1;
                            self.metrics.frames_in.increment(1);
                            let replies = match self.handle_text(text.as_str()).await {
                                Ok(replies) => replies,
                                Err(end) => return end,
                            };
                            if !replies.is_empty() {
                                if let Err(end) = self.write(replies, &close_signal).await {
                                    return end;
                                }
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            return End::Close(close::UNSUPPORTED_DATA, "binary frames are not accepted");
                        }
                        // Pings are answered by the WebSocket layer; any frame counts as life.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        // The WebSocket layer answers the close; the next read ends the stream.
                        Some(Ok(Message::Close(_))) => {}
                    }
                }
                first = rx.recv() => {
                    let Some(first) = first else { return End::Gone };
                    let mut batch = Vec::with_capacity(8);
                    push_unless_sent(&mut batch, first, &mut sent_upto);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(next) => push_unless_sent(&mut batch, next, &mut sent_upto),
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    }
                    if !batch.is_empty() {
                        if let Err(end) = self.write(batch, &close_signal).await {
                            return end;
                        }
                    }
                }
                Ok(()) = resync.changed() => {
                    // Live messages may have been missed (the broker's subscription was
                    // down): send what the inbox holds after what this connection got.
                    match shared.broker.read_inbox(&self.info.app, &self.info.user, sent_upto).await {
                        Ok(frames) if !frames.is_empty() => {
                            sent_upto = frames.last().map_or(sent_upto, |(seq, _)| *seq);
                            let frames = frames.into_iter().map(|(_, frame)| frame).collect();
                            if let Err(end) = self.write(frames, &close_signal).await {
                                return end;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => debug!(error = %e, "resync failed; the client catches up when it reconnects"),
                    }
                }
                () = &mut idle => {
                    if last_seen.elapsed() >= timeout {
                        return End::Close(close::HEARTBEAT_TIMEOUT, "nothing received within the connection timeout");
                    }
                    idle.as_mut().reset(last_seen + timeout);
                }
                () = &mut token_expiry => {
                    return End::Close(close::TOKEN_EXPIRED, "token expired");
                }
            }
        }
    }

    /// Writes frames and flushes once; gives up when the connection is told to close or
    /// killed while the client is not reading.
    async fn write(
        &mut self,
        frames: Vec<Utf8Bytes>,
        close_signal: &crate::hub::CloseSignal,
    ) -> Result<(), End> {
        let count = frames.len() as u64;
        let shared = self.shared.clone();
        let socket = &mut self.socket;
        let send_all = async move {
            for frame in frames {
                socket.feed(Message::Text(frame)).await?;
            }
            socket.flush().await
        };
        tokio::select! {
            result = send_all => match result {
                Ok(()) => {
                    self.frames_out += count;
                    self.metrics.frames_out.increment(count);
                    Ok(())
                }
                Err(e) => {
                    debug!(error = %e, "write failed");
                    Err(End::Gone)
                }
            },
            (code, reason) = close_signal.requested() => Err(End::Close(code, reason)),
            _ = shared.kill.cancelled() => Err(End::Killed),
        }
    }

    /// Sends a close frame and waits briefly for the client's answer, so the client reads
    /// the code before the socket goes away.
    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        let socket = &mut self.socket;
        let _ = tokio::time::timeout(CLOSE_GRACE, async move {
            if socket.send(frame).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
    }

    /// Answers one text frame; `Err` ends the connection.
    async fn handle_text(&mut self, text: &str) -> Result<Vec<Utf8Bytes>, End> {
        let connection_over = self.limiter.as_ref().is_some_and(|l| l.check().is_err());
        let user_over = !connection_over
            && self.shared.user_limiter.as_ref().is_some_and(|l| {
                l.check_key(&(self.info.app.clone(), self.info.user.clone()))
                    .is_err()
            });
        if connection_over || user_over {
            self.violation()?;
            let message = if connection_over {
                "slow down: too many frames on this connection"
            } else {
                "slow down: too many frames from this user"
            };
            return Ok(vec![error_frame(ErrorCode::RateLimited, message, None)]);
        }
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
        let reply = match message {
            ClientMessage::Ping { ts } => Some(ServerMessage::Pong {
                ts,
                server_ts: now_ms(),
            }),
            ClientMessage::JoinRoom { room, id } => {
                // An error names the request by its id, else by its type (PROTOCOL.md §5).
                let reference = id.unwrap_or_else(|| "join_room".to_owned());
                Some(self.join_room(room, reference).await)
            }
            ClientMessage::LeaveRoom { room, .. } => {
                if let Some(topic) = self.shared.hub.leave_room(self.id, &room) {
                    if let Err(e) = self.shared.broker.unsubscribe(&topic).await {
                        debug!(error = %e, "unsubscribe failed");
                    }
                }
                Some(ServerMessage::RoomLeft { room })
            }
            ClientMessage::Ack { seq } => {
                let device = self.info.device.as_deref();
                match self
                    .shared
                    .broker
                    .ack_inbox(&self.info.app, &self.info.user, device, seq)
                    .await
                {
                    Ok(AckOutcome::Recorded) => None,
                    Ok(AckOutcome::BeyondNewest { newest }) => Some(ServerMessage::error(
                        ErrorCode::InvalidAck,
                        format!("seq {seq} is above the newest inbox message ({newest})"),
                        Some("ack".into()),
                    )),
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
                        app: self.info.app.clone(),
                        user: self.info.user.clone(),
                        device: self.info.device.clone(),
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
                    Err(e) => ServerMessage::error(
                        ErrorCode::Unavailable,
                        format!("not stored, keep it and send it again later: {e}"),
                        Some(id),
                    ),
                })
            }
        };
        Ok(reply
            .map(|r| Utf8Bytes::from(r.encode(now_ms())))
            .into_iter()
            .collect())
    }

    async fn join_room(&mut self, room: String, reference: String) -> ServerMessage {
        if let Some(patterns) = &self.claims.rooms {
            if !room_allowed(patterns, &room) {
                return ServerMessage::error(
                    ErrorCode::Forbidden,
                    format!("the token does not allow room {room:?}"),
                    Some(reference),
                );
            }
        }
        let max = self.shared.config.max_rooms_per_connection;
        match self.shared.hub.join_room(self.id, &room, max) {
            Ok(None) => ServerMessage::RoomJoined { room },
            Ok(Some(topic)) => match self.shared.broker.subscribe(&topic).await {
                Ok(()) => ServerMessage::RoomJoined { room },
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

    /// Counts a bad frame; too many in a minute ends the connection with 4008.
    fn violation(&mut self) -> Result<(), End> {
        let now = Instant::now();
        while self
            .violations
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            self.violations.pop_front();
        }
        self.violations.push_back(now);
        if self.violations.len() > MAX_VIOLATIONS_PER_MINUTE {
            return Err(End::Close(
                close::POLICY_VIOLATION,
                "too many invalid or excess frames",
            ));
        }
        Ok(())
    }
}

fn push_unless_sent(batch: &mut Vec<Utf8Bytes>, frame: Outgoing, sent_upto: &mut u64) {
    // A user message can be both in the replay (or a resync) and queued live: it arrived
    // while the inbox was being read. It was sent already.
    if let Some(seq) = frame.seq {
        if seq <= *sent_upto {
            return;
        }
        *sent_upto = seq;
    }
    batch.push(frame.text);
}

fn error_frame(code: ErrorCode, message: &str, reference: Option<String>) -> Utf8Bytes {
    Utf8Bytes::from(ServerMessage::error(code, message, reference).encode(now_ms()))
}

fn read_error(e: axum::Error) -> End {
    match e.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) => match *e {
            tungstenite::Error::Capacity(_) => {
                counter!("tether_frames_oversize_total").increment(1);
                End::Close(close::MESSAGE_TOO_BIG, "frame too large")
            }
            tungstenite::Error::Utf8(_) => End::Close(close::INVALID_PAYLOAD, "frame is not UTF-8"),
            tungstenite::Error::Protocol(_) => End::Close(1002, "WebSocket protocol error"),
            _ => End::Gone,
        },
        Err(_) => End::Gone,
    }
}
