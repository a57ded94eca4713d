//! The rooms a client wants to be in, re-joined after every reconnect. Each `join_room`
//! carries an id, so an `error` answering it (whose `ref` is that id) names the room: a
//! room the gateway refuses for good (forbidden, invalid, too many) is dropped instead of
//! being re-joined, and refused again, on every reconnect. A join of a room with history
//! carries the position the app processed last (`since`), so the gateway replays what
//! the app missed.

use std::collections::{BTreeSet, HashMap};
use tether_protocol::client::ClientMessage;
use tether_protocol::stream::StreamPosition;
use tether_protocol::ErrorCode;

/// What became of a refused join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The room.
    pub room: String,
    /// Whether the client still tries it after the next reconnect (the refusal was passing).
    pub kept: bool,
}

/// A join sent and not answered yet.
#[derive(Debug)]
struct Pending {
    /// Requests are numbered in the order they were sent.
    number: u64,
    room: String,
    /// The position it asked to recover from.
    since: Option<StreamPosition>,
}

/// Wanted rooms and joins awaiting an answer.
#[derive(Debug, Default)]
pub struct Rooms {
    wanted: BTreeSet<String>,
    /// Join request id -> the request, until `room_joined` or an `error` answers it.
    pending: HashMap<String, Pending>,
    next_id: u64,
}

impl Rooms {
    /// Adds a room; the join request to send now (when connected), if it is new.
    pub fn join(&mut self, room: String, since: Option<StreamPosition>) -> Option<ClientMessage> {
        self.wanted
            .insert(room.clone())
            .then(|| self.request(room, since))
    }

    /// Removes a room; the leave request to send, if it was wanted.
    pub fn leave(&mut self, room: &str) -> Option<ClientMessage> {
        self.pending.retain(|_, p| p.room != room);
        self.wanted.remove(room).then(|| ClientMessage::LeaveRoom {
            room: room.to_owned(),
            id: None,
        })
    }

    /// Join requests for every wanted room (a new session), each with its position.
    pub fn rejoin_all(
        &mut self,
        since: impl Fn(&str) -> Option<StreamPosition>,
    ) -> Vec<ClientMessage> {
        self.pending.clear();
        let rooms: Vec<String> = self.wanted.iter().cloned().collect();
        rooms
            .into_iter()
            .map(|room| {
                let position = since(&room);
                self.request(room, position)
            })
            .collect()
    }

    fn request(&mut self, room: String, since: Option<StreamPosition>) -> ClientMessage {
        self.next_id += 1;
        let id = format!("join-{}", self.next_id);
        self.pending.insert(
            id.clone(),
            Pending {
                number: self.next_id,
                room: room.clone(),
                since: since.clone(),
            },
        );
        ClientMessage::JoinRoom {
            room,
            id: Some(id),
            since,
        }
    }

    /// `room_joined` arrived: it answers the oldest join of that room still pending
    /// (the gateway answers in order). The position that join asked to recover from, or
    /// `None` when no join of the room was pending.
    pub fn joined(&mut self, room: &str) -> Option<Option<StreamPosition>> {
        let id = self
            .pending
            .iter()
            .filter(|(_, p)| p.room == room)
            .min_by_key(|(_, p)| p.number)
            .map(|(id, _)| id.clone())?;
        self.pending.remove(&id).map(|p| p.since)
    }

    /// An `error` arrived; `Some` when it answers one of our joins.
    pub fn refused(&mut self, reference: &str, code: ErrorCode) -> Option<Refusal> {
        let room = self.pending.remove(reference)?.room;
        let kept = !matches!(
            code,
            ErrorCode::Forbidden
                | ErrorCode::InvalidRoom
                | ErrorCode::TooManyRooms
                | ErrorCode::InvalidMessage
        );
        if !kept {
            self.wanted.remove(&room);
        }
        Some(Refusal { room, kept })
    }

    /// Whether the app wants to be in `room`.
    pub fn wants(&self, room: &str) -> bool {
        self.wanted.contains(room)
    }

    /// Rooms wanted.
    pub fn wanted(&self) -> impl Iterator<Item = &String> {
        self.wanted.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejoin_carries_the_room_s_position() {
        let mut rooms = Rooms::default();
        let at = StreamPosition {
            offset: 9,
            epoch: "e1".into(),
        };
        let first = rooms.join("news".into(), Some(at.clone())).unwrap();
        assert!(matches!(first, ClientMessage::JoinRoom { since: Some(ref s), .. } if *s == at));
        rooms.join("lobby".into(), None).unwrap();
        let later = StreamPosition {
            offset: 12,
            epoch: "e1".into(),
        };
        let again = rooms.rejoin_all(|room| (room == "news").then(|| later.clone()));
        let sent: Vec<(String, Option<StreamPosition>)> = again
            .into_iter()
            .map(|m| match m {
                ClientMessage::JoinRoom { room, since, .. } => (room, since),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sent,
            [("lobby".to_owned(), None), ("news".to_owned(), Some(later))]
        );
    }

    fn id_of(message: &ClientMessage) -> String {
        match message {
            ClientMessage::JoinRoom { id: Some(id), .. } => id.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answer_tells_what_its_join_asked() {
        let mut rooms = Rooms::default();
        let at = StreamPosition {
            offset: 3,
            epoch: "e1".into(),
        };
        rooms.join("news".into(), None).unwrap();
        rooms.leave("news").unwrap();
        rooms.join("news".into(), Some(at.clone())).unwrap();
        let again = rooms.rejoin_all(|_| Some(at.clone()));
        assert_eq!(again.len(), 1);
        assert_eq!(rooms.joined("news"), Some(Some(at)));
    }

    #[test]
    fn a_room_refused_for_good_is_not_rejoined() {
        let mut rooms = Rooms::default();
        let join = rooms.join("admin".into(), None).unwrap();
        rooms.join("lobby".into(), None).unwrap();
        assert!(rooms.join("lobby".into(), None).is_none(), "already wanted");
        let refusal = rooms.refused(&id_of(&join), ErrorCode::Forbidden).unwrap();
        assert_eq!(
            refusal,
            Refusal {
                room: "admin".into(),
                kept: false
            }
        );
        let again: Vec<String> = rooms
            .rejoin_all(|_| None)
            .iter()
            .map(|m| match m {
                ClientMessage::JoinRoom { room, .. } => room.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(again, ["lobby"]);
    }

    #[test]
    fn a_passing_refusal_keeps_the_room() {
        let mut rooms = Rooms::default();
        let join = rooms.join("lobby".into(), None).unwrap();
        let refusal = rooms
            .refused(&id_of(&join), ErrorCode::Unavailable)
            .unwrap();
        assert!(refusal.kept);
        assert_eq!(rooms.wanted().count(), 1);
    }

    #[test]
    fn answers_are_matched_by_id_only() {
        let mut rooms = Rooms::default();
        let join = rooms.join("lobby".into(), None).unwrap();
        assert!(rooms.refused("join_room", ErrorCode::Forbidden).is_none());
        assert!(rooms.refused("m-1", ErrorCode::Forbidden).is_none());
        assert_eq!(rooms.joined("lobby"), Some(None));
        assert_eq!(rooms.joined("lobby"), None, "nothing pending any more");
        assert!(
            rooms.refused(&id_of(&join), ErrorCode::Forbidden).is_none(),
            "already answered"
        );
        assert!(rooms.leave("lobby").is_some());
        assert!(rooms.leave("lobby").is_none());
    }
}
