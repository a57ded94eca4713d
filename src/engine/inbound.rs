//! The inbound side: frames from the gateway (session start, pongs, acks, errors,
//! published messages), the inbox and stream rules applied to published messages, and
//! moving the durable cursor and stream positions once the listener has processed them.

use super::dispatch::{HostEvent, Processed};
use super::heartbeat::Heartbeat;
use super::state::Event;
use super::{wall_ms, Engine, PROBE_DEADLINE};
use crate::callbacks::InboundMessage;
use crate::error::{Error, ErrorKind, TetherError};
use crate::inbox::Verdict as InboxVerdict;
use crate::queue::PositionWrite;
use crate::streams::{Joined, StreamKey, Verdict as StreamVerdict};
use crate::transport::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tether_protocol::client::ClientMessage;
use tether_protocol::server::ServerMessage;
use tether_protocol::stream::{StreamJoin, StreamPosition};
use tether_protocol::{close, Envelope};
use tokio::time::Instant;
use tracing::{debug, info, warn};

impl Engine {
    pub(super) fn on_processed(&mut self, done: Processed) {
        // Coalesce: one durable write and one ack for everything processed so far.
        let mut batch = done.batch;
        let mut highest = done.seq;
        let mut streams = done.streams;
        self.unprocessed = self.unprocessed.saturating_sub(done.messages);
        while let Ok(more) = self.processed.try_recv() {
            self.unprocessed = self.unprocessed.saturating_sub(more.messages);
            batch = batch.max(more.batch);
            highest = highest.max(more.seq);
            streams.extend(more.streams);
        }
        for (key, position) in streams {
            self.streams.on_processed(&key, position);
        }
        let cursor = highest.and_then(|seq| self.inbox.on_processed(seq));
        if !self.write_positions(cursor) {
            return;
        }
        self.durable.send_replace(batch);
        if let Some(cursor) = cursor {
            if self.established() {
                self.send_frame(ClientMessage::Ack { seq: cursor }.to_json());
            }
        }
    }

    /// Writes the inbox cursor (when given) and every stream position changed since the
    /// last write, in one durable step. False when the disk failed (reported; the stream
    /// positions are tried again with the next write).
    pub(super) fn write_positions(&mut self, inbox_cursor: Option<u64>) -> bool {
        let changed = self.streams.take_writes();
        let write = PositionWrite {
            inbox_cursor,
            streams: changed
                .iter()
                .map(|(key, position)| (key.room().map(str::to_owned), position.clone()))
                .collect(),
        };
        match self.outbox.write_positions(&write) {
            Ok(()) => true,
            Err(e) => {
                self.streams.keep_writes(changed);
                self.report(Error::from(e).into());
                false
            }
        }
    }

    /// The gateway said where the connection stands in a stream (`room_joined`,
    /// `appStream`); `None`: it keeps no history of it.
    fn on_stream_joined(
        &mut self,
        key: StreamKey,
        join: Option<&StreamJoin>,
        asked: Option<StreamPosition>,
    ) {
        match self.streams.on_joined(&key, join, asked.as_ref()) {
            Joined::Recovered => {
                debug!(
                    room = key.room(),
                    replay = join.map_or(0, |j| j.replay_count),
                    "stream recovered"
                );
            }
            Joined::Started => {
                self.write_positions(None);
            }
            Joined::Reset => {
                self.write_positions(None);
                self.stream_reset(&key, "the gateway no longer holds what followed");
            }
        }
    }

    fn stream_reset(&mut self, key: &StreamKey, why: &str) {
        info!(
            room = key.room(),
            "stream reset: {why}; the app must refetch"
        );
        self.snapshot.stream_resets += 1;
        self.tell(HostEvent::StreamReset(key.room().map(str::to_owned)));
    }

    pub(super) fn on_incoming(&mut self, incoming: Incoming) {
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
                if let Some(ms) = established.token_expires_in {
                    self.plan_refresh(Duration::from_millis(ms));
                }
                // Before the replay of the app stream that follows this frame.
                let asked = self.app_since_sent.take();
                self.on_stream_joined(StreamKey::App, established.app_stream.as_ref(), asked);
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
                        session.written.remove(&seq);
                    }
                    self.snapshot.acked += 1;
                    self.tell(HostEvent::Ack(id));
                    self.pump();
                }
                // A repeated ack (a resend the gateway had stored already).
                Ok(None) => debug!(%id, "ack for a message no longer queued"),
                Err(e) => self.report(Error::from(e).into()),
            },
            ServerMessage::RoomJoined { room, stream } => {
                debug!(%room, "room joined");
                // No join pending (the answer to one sent before a leave): it asked
                // for nothing.
                let asked = self.rooms.joined(&room).flatten();
                if self.rooms.wants(&room) {
                    self.on_stream_joined(StreamKey::Room(room), stream.as_ref(), asked);
                }
            }
            ServerMessage::RoomLeft { room } => debug!(%room, "room left"),
            ServerMessage::TokenRefreshed(refreshed) => {
                self.on_token_refreshed(refreshed.expires_in);
            }
            ServerMessage::RoomPresence(presence) => self.on_room_presence(presence),
            ServerMessage::Error(error) => self.on_error_frame(error),
            ServerMessage::Published(envelope) => self.on_published(envelope),
        }
    }

    fn on_published(&mut self, mut envelope: Envelope) {
        if let (Some(offset), Some(epoch)) = (envelope.offset, envelope.epoch.take()) {
            let key = StreamKey::of(envelope.room.as_deref());
            match self.streams.on_message(&key, offset, &epoch) {
                StreamVerdict::Duplicate => {
                    debug!(room = key.room(), offset, "stream duplicate dropped");
                    self.snapshot.duplicates_dropped += 1;
                    return;
                }
                StreamVerdict::Reset => {
                    self.write_positions(None);
                    self.stream_reset(&key, "messages before this one were missed");
                }
                StreamVerdict::Deliver => {}
            }
            self.deliver(envelope, Some((key, StreamPosition { offset, epoch })));
            return;
        }
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
                self.deliver(envelope, None);
            }
            InboxVerdict::Deliver => self.deliver(envelope, None),
        }
    }

    fn deliver(&mut self, envelope: Envelope, stream: Option<(StreamKey, StreamPosition)>) {
        debug!(kind = %envelope.kind, seq = ?envelope.seq, "message");
        let message = InboundMessage {
            data_json: envelope.data_json().to_owned(),
            r#type: envelope.kind,
            id: envelope.id.unwrap_or_default(),
            seq: envelope.seq,
            room: envelope.room,
            offset: envelope.offset,
            ts: envelope.ts.unwrap_or(0),
        };
        self.snapshot.received += 1;
        self.unprocessed += 1;
        self.snapshot.last_message = Some(Arc::new(message.clone()));
        self.tell(HostEvent::Message { message, stream });
    }
}
