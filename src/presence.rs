//! Who is in a room, as `TetherClient::room_presence` returns it: uniffi records
//! converted from the protocol's `room_presence` answer (docs/protocol.md §4).

use tether_protocol::server;

/// Who is in a room, on every gateway node.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RoomPresence {
    /// The room.
    pub room: String,
    /// Distinct users in the room.
    pub users: u64,
    /// Their connections in the room (a user may be in it from several devices).
    pub connections: u64,
    /// The users, ordered by user id; at most 1,000 of them (see `truncated`).
    pub members: Vec<PresenceMember>,
    /// Whether `members` stops short of `users`.
    pub truncated: bool,
}

/// One user in a room.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PresenceMember {
    /// The user (the token's `sub`).
    pub user_id: String,
    /// The user's type (the token's `type`).
    pub user_type: String,
    /// The user's connections in the room.
    pub connections: u32,
    /// Their ids, as in the `presence_joined` / `presence_left` events' `connectionId`:
    /// keep a room's members keyed by them to apply those events to this answer.
    pub connection_ids: Vec<String>,
}

impl From<server::PresenceMember> for PresenceMember {
    fn from(m: server::PresenceMember) -> Self {
        PresenceMember {
            user_id: m.user_id,
            user_type: m.user_type,
            connections: m.connections,
            connection_ids: m.connection_ids,
        }
    }
}

impl From<server::RoomPresence> for RoomPresence {
    fn from(p: server::RoomPresence) -> Self {
        RoomPresence {
            room: p.room,
            users: p.users,
            connections: p.connections,
            members: p.members.into_iter().map(Into::into).collect(),
            truncated: p.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_answer_converts_field_by_field() {
        let answer = server::RoomPresence {
            room: "lobby".into(),
            users: 2,
            connections: 3,
            members: vec![server::PresenceMember {
                user_id: "u1".into(),
                user_type: "driver".into(),
                connections: 2,
                connection_ids: vec!["n-1".into(), "n-2".into()],
            }],
            truncated: true,
        };
        let presence = RoomPresence::from(answer);
        assert_eq!(presence.room, "lobby");
        assert_eq!((presence.users, presence.connections), (2, 3));
        assert!(presence.truncated);
        assert_eq!(
            presence.members,
            [PresenceMember {
                user_id: "u1".into(),
                user_type: "driver".into(),
                connections: 2,
                connection_ids: vec!["n-1".into(), "n-2".into()],
            }]
        );
    }
}
