//! Room presence: who is in a room, whichever node holds their connections. Each broker
//! collects the room's connections (id, user and user type of each); [`summarise`] turns
//! them into the answer every caller sees, so the embedded and the Redis broker agree.

use std::collections::BTreeMap;
use tether_protocol::server::{PresenceMember, RoomPresence};

/// One connection in a room: its id (`connectionId`), its user and the user's type.
pub type Present<S> = (String, S, S);

/// Counts users and connections and lists the users by id, at most
/// [`RoomPresence::MAX_MEMBERS`] of them. A user seen with several types (tokens of
/// different types for one `sub`) is listed with the type of its first connection in
/// user-type order, so the answer does not depend on the order connections came in.
pub fn summarise<S: AsRef<str>>(
    room: &str,
    connections: impl IntoIterator<Item = Present<S>>,
) -> RoomPresence {
    let mut users: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut total = 0u64;
    for (id, user, user_type) in connections {
        total += 1;
        let (kind, ids) = users
            .entry(user.as_ref().to_owned())
            .or_insert_with(|| (user_type.as_ref().to_owned(), Vec::new()));
        ids.push(id);
        if user_type.as_ref() < kind.as_str() {
            user_type.as_ref().clone_into(kind);
        }
    }
    let listed = users.len().min(RoomPresence::MAX_MEMBERS);
    RoomPresence {
        room: room.to_owned(),
        users: users.len() as u64,
        connections: total,
        truncated: users.len() > listed,
        members: users
            .into_iter()
            .take(listed)
            .map(|(user_id, (user_type, mut connection_ids))| {
                connection_ids.sort_unstable();
                PresenceMember {
                    user_id,
                    user_type,
                    connections: connection_ids.len() as u32,
                    connection_ids,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_counted_once_and_listed_in_order() {
        let presence = summarise(
            "lobby",
            [
                ("n-4".to_owned(), "u2", "driver"),
                ("n-1".to_owned(), "u1", "customer"),
                ("n-2".to_owned(), "u2", "driver"),
                ("n-3".to_owned(), "u3", "customer"),
            ],
        );
        assert_eq!(presence.room, "lobby");
        assert_eq!((presence.users, presence.connections), (3, 4));
        assert!(!presence.truncated);
        let listed: Vec<(&str, &str, u32)> = presence
            .members
            .iter()
            .map(|m| (m.user_id.as_str(), m.user_type.as_str(), m.connections))
            .collect();
        assert_eq!(
            listed,
            [
                ("u1", "customer", 1),
                ("u2", "driver", 2),
                ("u3", "customer", 1)
            ]
        );
    }

    #[test]
    fn one_type_per_user_whatever_the_order() {
        let a = summarise(
            "r",
            [
                ("a".to_owned(), "u1", "staff"),
                ("b".to_owned(), "u1", "customer"),
            ],
        );
        let b = summarise(
            "r",
            [
                ("b".to_owned(), "u1", "customer"),
                ("a".to_owned(), "u1", "staff"),
            ],
        );
        assert_eq!(a, b);
        assert_eq!(a.members[0].user_type, "customer");
    }

    #[test]
    fn long_lists_are_cut_but_counted_in_full() {
        let many: Vec<(String, String, String)> = (0..RoomPresence::MAX_MEMBERS + 5)
            .map(|i| (format!("n-{i}"), format!("u{i:05}"), "customer".to_owned()))
            .collect();
        let presence = summarise("big", many);
        assert_eq!(presence.users, RoomPresence::MAX_MEMBERS as u64 + 5);
        assert_eq!(presence.members.len(), RoomPresence::MAX_MEMBERS);
        assert!(presence.truncated);
        assert_eq!(presence.members[0].user_id, "u00000");
    }

    #[test]
    fn an_empty_room_has_nobody() {
        let presence = summarise::<&str>("empty", []);
        assert_eq!((presence.users, presence.connections), (0, 0));
        assert!(presence.members.is_empty() && !presence.truncated);
    }
}
