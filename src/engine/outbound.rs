//! The outbound side: checking and queueing app messages, sending the queue in order
//! within the send window, expiry, and what to do when the gateway refuses a message.

use super::dispatch::HostEvent;
use super::{wall_ms, Engine, Reply};
use crate::error::{Error, ErrorKind, TetherError};
use crate::queue::{Keeping, NewMessage, RemovalFailed};
use crate::send_options::SendOptions;
use std::collections::BTreeSet;
use std::time::Duration;
use tether_protocol::client::{is_reserved, AppMessage, ClientMessage, CONTROL_TYPES};
use tether_protocol::envelope::raw_json;
use tether_protocol::error::ErrorCode;
use tether_protocol::names;
use tether_protocol::server::ErrorData;
use tokio::time::Instant;
use tracing::{debug, info};

/// Most app messages sent and not yet acked: enough to fill a mobile link, few enough that
/// a reconnect does not burst the whole queue into a gateway's rate limiter.
pub const SEND_WINDOW: usize = 32;

/// Pause before resending after the gateway could not store a message (`unavailable`).
pub const RESEND_PAUSE: Duration = Duration::from_secs(1);

/// How often queued messages are checked for expiry while any are queued (they are
/// also checked before each send).
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(60);

/// The soonest a sweep runs again: a message with a short time to live is reported at
/// most this late.
const MIN_SWEEP: Duration = Duration::from_secs(1);

/// Whether a queued message may still be expired, replaced or cancelled: it is not
/// written to the open socket (`written`) waiting for its ack.
fn waiting(written: Option<&BTreeSet<u64>>) -> impl Fn(u64) -> bool + '_ {
    move |seq| written.is_none_or(|w| !w.contains(&seq))
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

impl Engine {
    /// Checks and stores one app message; its id once it is on disk. Queued messages with
    /// its replace key that are not on their way yet are dropped and reported replaced.
    pub(super) fn enqueue(
        &mut self,
        kind: String,
        data_json: String,
        options: SendOptions,
    ) -> Result<String, Error> {
        let id = self.check_message(&kind, &data_json)?;
        let now_ms = wall_ms();
        let keeping = Keeping {
            replace_key: options.replace_key,
            expires_ms: options.ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
        };
        let written = self.session.as_ref().map(|s| &s.written);
        let pushed =
            self.outbox
                .push_keeping(id, kind, data_json, now_ms, keeping, waiting(written))?;
        if let Some(failed) = pushed.failed {
            self.report(TetherError::new(
                ErrorKind::Storage,
                format!(
                    "message {} is queued; replacing an older one with its replace key: {failed}",
                    pushed.message.id
                ),
            ));
        }
        for id in pushed.replaced {
            debug!(%id, by = %pushed.message.id, "replaced before it was sent");
            self.snapshot.replaced += 1;
            self.tell(HostEvent::Replaced {
                id,
                by: pushed.message.id.clone(),
            });
        }
        self.schedule_sweep();
        debug!(id = %pushed.message.id, seq = pushed.message.seq, "queued");
        Ok(pushed.message.id)
    }

    /// The checks every app message passes before it is stored (type, JSON, encoded
    /// size); the id it gets.
    fn check_message(&self, kind: &str, data_json: &str) -> Result<String, Error> {
        validate_app_type(kind)?;
        // The gateway refuses deeper nesting; refused here, the app hears it at once.
        if tether_protocol::depth::exceeds(
            data_json.as_bytes(),
            tether_protocol::depth::MAX_DEPTH - 1,
        ) {
            return Err(Error::Message(format!(
                "data_json: {}",
                tether_protocol::depth::refusal()
            )));
        }
        let data = raw_json(data_json)
            .map_err(|e| Error::Message(format!("data_json is not valid JSON: {e}")))?;
        let id = uuid::Uuid::now_v7().to_string();
        let frame = ClientMessage::App(AppMessage {
            kind: kind.to_owned(),
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
        Ok(id)
    }

    /// Checks a `send_message` that replaces nothing and puts it with the others that
    /// came at the same moment ([`Engine::store_staged`] writes them with one sync), or
    /// answers at once when a check fails.
    pub(super) fn stage(
        &self,
        kind: String,
        data_json: String,
        ttl_ms: Option<u64>,
        reply: Reply,
        staged: &mut Vec<(NewMessage, Reply)>,
    ) {
        match self.check_message(&kind, &data_json) {
            Ok(id) => staged.push((
                NewMessage {
                    id,
                    kind,
                    data_json,
                    ttl_ms,
                },
                reply,
            )),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Stores the staged sends in one write, then answers each: its id once it is on
    /// disk (after the snapshot counts it), or why not; then sends what the window allows.
    pub(super) fn store_staged(&mut self, staged: &mut Vec<(NewMessage, Reply)>) {
        if staged.is_empty() {
            return;
        }
        let (batch, replies): (Vec<NewMessage>, Vec<Reply>) = staged.drain(..).unzip();
        let answers = self.outbox.push_all(batch, wall_ms());
        let mut stored = 0;
        for message in answers.iter().flatten() {
            debug!(id = %message.id, seq = message.seq, "queued");
            stored += 1;
        }
        if stored > 0 {
            self.schedule_sweep();
        }
        // Publish first: once send_message returns, stats() counts the message.
        self.publish();
        for (answer, reply) in answers.into_iter().zip(replies) {
            let _ = reply.send(answer.map(|message| message.id));
        }
        if stored > 0 {
            self.pump();
        }
    }

    /// `cancel_message`: removes a queued message that is not on its way yet.
    pub(super) fn cancel(&mut self, id: &str) -> Result<bool, Error> {
        let written = self.session.as_ref().map(|s| &s.written);
        let removed = match self.outbox.cancel(id, waiting(written)) {
            Ok(removed) => removed,
            Err(RemovalFailed::NotRemoved(e)) => return Err(e.into()),
            Err(failed @ RemovalFailed::NotFlushed(_)) => {
                // Cancelled as far as this process goes: say so, and warn.
                self.report(TetherError::new(
                    ErrorKind::Storage,
                    format!("message {id} is cancelled; {failed}"),
                ));
                true
            }
        };
        if removed {
            debug!(%id, "cancelled before it was sent");
        }
        Ok(removed)
    }

    /// Wakes for the next expiry: when the first queued message's age limit or time to
    /// live runs out, but at least a second and at most [`EXPIRY_SWEEP`] from now (sends
    /// check expiry themselves; this only reports messages that expire while waiting).
    pub(super) fn schedule_sweep(&mut self) {
        let written = self.session.as_ref().map(|s| &s.written);
        let next = self.outbox.next_deadline_ms(waiting(written));
        self.sweep_at = next.map(|deadline| {
            let wait = Duration::from_millis(deadline.saturating_sub(wall_ms()).saturating_add(1));
            Instant::now() + wait.clamp(MIN_SWEEP, EXPIRY_SWEEP)
        });
    }

    /// Sends queued messages in order while the window has room.
    pub(super) fn pump(&mut self) {
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
            // Written to this socket already (a resend after a retryable error): the
            // gateway may have it, so it goes again rather than expiring.
            if !session.written.contains(&seq) && self.outbox.is_expired(seq, now_ms) {
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
                session.written.insert(seq);
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

    pub(super) fn expire_old(&mut self) {
        // Offline for days, a message still expires on time (and is reported then).
        // Messages written to the open socket wait for their ack instead.
        let written = self.session.as_ref().map(|s| &s.written);
        let (ids, failed) = self.outbox.expire(wall_ms(), waiting(written));
        for id in ids {
            info!(%id, "message expired before delivery");
            self.snapshot.expired += 1;
            self.tell(HostEvent::Expired(id));
        }
        self.schedule_sweep();
        if let Some(e) = failed {
            // Not again every second while the disk fails: once per regular sweep.
            self.sweep_at = Some(Instant::now() + EXPIRY_SWEEP);
            self.report(Error::from(e).into());
        }
    }

    pub(super) fn on_error_frame(&mut self, error: ErrorData) {
        if error.reference.as_deref() == Some("refresh_token") {
            self.on_refresh_refused(&error);
            return;
        }
        if self.presence.refused(&error) {
            // The call that asked fails with the gateway's reason; nothing to report.
            debug!(code = %error.code, "room presence refused");
            return;
        }
        let queued = error
            .reference
            .as_deref()
            .and_then(|r| self.outbox.seq_of(r).map(|seq| (r.to_owned(), seq)));
        let text = format!("gateway error {}: {}", error.code, error.message);
        let refused_room = error
            .reference
            .as_deref()
            .and_then(|r| self.rooms.refused(r, error.code));
        if let Some(refusal) = refused_room {
            if !refusal.kept {
                self.streams
                    .forget(&crate::streams::StreamKey::Room(refusal.room.clone()));
                self.write_positions(None);
            }
            let what = if refusal.kept {
                "will retry after the next reconnect"
            } else {
                "not joined again"
            };
            let kind = if error.code == ErrorCode::Forbidden {
                ErrorKind::Auth
            } else {
                ErrorKind::InvalidMessage
            };
            self.report(TetherError::new(
                kind,
                format!("room {} refused ({what}): {text}", refusal.room),
            ));
            return;
        }
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
                    session.written.remove(&seq);
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
}
