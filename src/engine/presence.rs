//! `room_presence` requests (docs/protocol.md §4): who is in a room the connection has
//! joined. Calls for the same room share one request (single-flight): the answer carries
//! no id, so it is matched by its room; an `error` answering it is matched by its `ref`,
//! the request's id. Pending calls fail when the answer does not come within
//! [`PRESENCE_TIMEOUT`] or when the session ends before it does.

use super::Engine;
use crate::error::Error;
use std::collections::HashMap;
use std::time::Duration;
use tether_protocol::client::ClientMessage;
use tether_protocol::server::{ErrorData, RoomPresence};
use tether_protocol::ErrorCode;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

/// How long the gateway has to answer a `room_presence` request.
pub const PRESENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the answer to one call goes.
pub type Reply = oneshot::Sender<Result<RoomPresence, Error>>;

/// One request out, with every call waiting for it.
#[derive(Debug)]
struct Pending {
    id: String,
    deadline: Instant,
    waiters: Vec<Reply>,
}

/// The `room_presence` requests out, by room.
#[derive(Debug, Default)]
pub struct Presence {
    pending: HashMap<String, Pending>,
    next_id: u64,
}

impl Presence {
    /// Adds a call; the request to send when none is out for that room yet.
    pub fn ask(&mut self, room: String, reply: Reply, now: Instant) -> Option<ClientMessage> {
        if let Some(pending) = self.pending.get_mut(&room) {
            pending.waiters.push(reply);
            return None;
        }
        self.next_id += 1;
        let id = format!("presence-{}", self.next_id);
        self.pending.insert(
            room.clone(),
            Pending {
                id: id.clone(),
                deadline: now + PRESENCE_TIMEOUT,
                waiters: vec![reply],
            },
        );
        Some(ClientMessage::RoomPresence { room, id: Some(id) })
    }

    /// The gateway answered; false when nobody asked about that room.
    pub fn answered(&mut self, presence: RoomPresence) -> bool {
        let Some(pending) = self.pending.remove(&presence.room) else {
            return false;
        };
        for waiter in pending.waiters {
            // A caller that gave up (dropped its future) is simply not told.
            let _ = waiter.send(Ok(presence.clone()));
        }
        true
    }

    /// An `error` arrived; true when it answered one of our requests (whose calls fail).
    pub fn refused(&mut self, error: &ErrorData) -> bool {
        let Some(reference) = error.reference.as_deref() else {
            return false;
        };
        let Some(room) = self
            .pending
            .iter()
            .find(|(_, p)| p.id == reference)
            .map(|(room, _)| room.clone())
        else {
            return false;
        };
        let Some(pending) = self.pending.remove(&room) else {
            return false;
        };
        for waiter in pending.waiters {
            let _ = waiter.send(Err(refusal(&room, error)));
        }
        true
    }

    /// Fails every call whose request is past its deadline.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(room, _)| room.clone())
            .collect();
        for room in late {
            if let Some(pending) = self.pending.remove(&room) {
                debug!(%room, "room presence not answered in time");
                for waiter in pending.waiters {
                    let _ = waiter.send(Err(Error::Network(format!(
                        "the gateway did not answer room_presence for room {room} within {} s",
                        PRESENCE_TIMEOUT.as_secs()
                    ))));
                }
            }
        }
    }

    /// Fails every pending call (the session ended or the client is shutting down).
    pub fn fail_all(&mut self, error: impl Fn(&str) -> Error) {
        for (room, pending) in self.pending.drain() {
            for waiter in pending.waiters {
                let _ = waiter.send(Err(error(&room)));
            }
        }
    }

    /// The earliest deadline of a request out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

/// The error a call gets when the gateway refused its request.
fn refusal(room: &str, error: &ErrorData) -> Error {
    let text = format!("gateway error {}: {}", error.code, error.message);
    match error.code {
        ErrorCode::Forbidden => Error::Auth(format!(
            "room presence of {room} refused: join the room first (only members see who is \
             in it) ({text})"
        )),
        ErrorCode::InvalidRoom | ErrorCode::InvalidMessage => {
            Error::Message(format!("room presence of {room} refused: {text}"))
        }
        _ => Error::Protocol(format!("room presence of {room} refused: {text}")),
    }
}

impl Engine {
    /// `room_presence()`: sends the request, or joins the one out for that room.
    pub(super) fn ask_presence(&mut self, room: String, reply: Reply) {
        if !self.established() {
            let _ = reply.send(Err(Error::Network(
                "not connected: room presence needs an open connection (call connect() and \
                 wait for Connected)"
                    .into(),
            )));
            return;
        }
        if let Some(request) = self.presence.ask(room, reply, Instant::now()) {
            debug!("asking for room presence");
            self.send_frame(request.to_json());
        }
    }

    /// A `room_presence` frame arrived.
    pub(super) fn on_room_presence(&mut self, presence: RoomPresence) {
        let room = presence.room.clone();
        if self.presence.answered(presence) {
            debug!(%room, "room presence answered");
        } else {
            debug!(%room, "room presence not asked for");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(room: &str) -> RoomPresence {
        RoomPresence {
            room: room.into(),
            users: 0,
            connections: 0,
            members: vec![],
            truncated: false,
        }
    }

    fn id_of(message: &ClientMessage) -> String {
        match message {
            ClientMessage::RoomPresence { id: Some(id), .. } => id.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn calls_for_one_room_share_a_request_and_its_answer() {
        let now = Instant::now();
        let mut presence = Presence::default();
        let (a, mut a_rx) = oneshot::channel();
        let (b, mut b_rx) = oneshot::channel();
        assert!(presence.ask("lobby".into(), a, now).is_some());
        assert!(presence.ask("lobby".into(), b, now).is_none());
        assert!(!presence.answered(answer("other")));
        assert!(presence.answered(answer("lobby")));
        assert!(a_rx.try_recv().unwrap().is_ok());
        assert!(b_rx.try_recv().unwrap().is_ok());
        assert!(!presence.answered(answer("lobby")), "already answered");
    }

    #[test]
    fn errors_are_matched_by_the_request_id() {
        let now = Instant::now();
        let mut presence = Presence::default();
        let (a, mut a_rx) = oneshot::channel();
        let request = presence.ask("lobby".into(), a, now).unwrap();
        let error = |reference: &str| ErrorData {
            code: ErrorCode::Forbidden,
            message: "not in the room".into(),
            reference: Some(reference.into()),
        };
        assert!(!presence.refused(&error("join-1")));
        assert!(presence.refused(&error(&id_of(&request))));
        let e = a_rx.try_recv().unwrap().unwrap_err();
        assert!(e.to_string().contains("join the room first"), "{e}");
        assert_eq!(presence.next_deadline(), None);
    }

    #[test]
    fn late_requests_expire() {
        let now = Instant::now();
        let mut presence = Presence::default();
        let (a, mut a_rx) = oneshot::channel();
        presence.ask("lobby".into(), a, now);
        assert_eq!(presence.next_deadline(), Some(now + PRESENCE_TIMEOUT));
        presence.expire(now + Duration::from_secs(9));
        assert!(a_rx.try_recv().is_err(), "not yet");
        presence.expire(now + PRESENCE_TIMEOUT);
        assert!(matches!(a_rx.try_recv().unwrap(), Err(Error::Network(_))));
    }
}
