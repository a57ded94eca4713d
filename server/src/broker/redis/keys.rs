//! Redis key and channel names.
//!
//! Every name built from client-supplied text (user ids, device ids, room names, message
//! ids) escapes it, so `:`, `*`, `{`, `}`, spaces or newlines in an id can never change a
//! key's meaning, its Cluster hash slot, or a pattern. Keys that one Lua script touches
//! together share a hash tag, so they live in one slot of a Redis Cluster:
//! `{u:<app>:<user>}` for a user's inbox, cursors, connection registry and channel;
//! `{tether:inbound:<app>}` for the de-duplication keys next to the stream
//! `tether:inbound:<app>` (whose slot is the hash of that same text).

use crate::broker::stream::StreamName;
use crate::hub::Topic;
use std::sync::Arc;

/// Keeps `[A-Za-z0-9._-]`, writes every other byte as `%XX`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Reverses [`escape`].
pub fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The keys of one (app, user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKeys {
    /// Last inbox seq given (a counter that never expires, so seqs never repeat).
    pub seq: String,
    /// The inbox: a list of `<ms>:<frame>` in seq order (see `scripts::INBOX`).
    pub inbox: String,
    /// Device cursors and the watermark: a hash.
    pub cursors: String,
    /// Live connections: a hash, field = connection id, value = `<expires ms>|<device>`.
    pub conns: String,
    /// The user's channel.
    pub channel: String,
}

/// Keys for (app, user).
pub fn user(app: &str, user: &str) -> UserKeys {
    let tag = format!("tether:{{u:{}:{}}}", escape(app), escape(user));
    UserKeys {
        seq: format!("{tag}:seq"),
        inbox: format!("{tag}:inbox"),
        cursors: format!("{tag}:cursors"),
        conns: format!("{tag}:conns"),
        channel: format!("{tag}:ch"),
    }
}

/// The channel of a topic.
pub fn channel(topic: &Topic) -> String {
    match topic {
        Topic::User { app, user: u } => user(app, u).channel,
        Topic::App { app } => format!("tether:{{a:{}}}:ch", escape(app)),
        Topic::Room { app, room } => format!("tether:{{r:{}:{}}}:ch", escape(app), escape(room)),
    }
}

/// The keys of one stream (a room with history, or an app's broadcasts), in the slot of
/// its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeys {
    /// The epoch and the offset counter: a hash (`e`, `o`).
    pub meta: String,
    /// The history: a list of `<offset>:<ms>:<frame>` in offset order.
    pub history: String,
    /// The stream's channel (the room's or the app's).
    pub channel: String,
}

/// The hash tag of a topic's keys (`tether:{...}`), without the trailing part.
fn topic_tag(topic: &Topic) -> String {
    match topic {
        Topic::User { app, user } => format!("tether:{{u:{}:{}}}", escape(app), escape(user)),
        Topic::App { app } => format!("tether:{{a:{}}}", escape(app)),
        Topic::Room { app, room } => format!("tether:{{r:{}:{}}}", escape(app), escape(room)),
    }
}

/// Keys of the stream `name` of `app`.
pub fn stream(app: &str, name: &StreamName) -> StreamKeys {
    let tag = topic_tag(&stream_topic(app, name));
    StreamKeys {
        meta: format!("{tag}:smeta"),
        history: format!("{tag}:shist"),
        channel: format!("{tag}:ch"),
    }
}

/// The topic a stream's messages go out on.
pub fn stream_topic(app: &str, name: &StreamName) -> Topic {
    match name {
        StreamName::Room(room) => Topic::Room {
            app: Arc::from(app),
            room: room.clone(),
        },
        StreamName::App => Topic::App {
            app: Arc::from(app),
        },
    }
}

/// The marker of a keyed send (see `broker::idempotency::Marker`) to `topic`, in the slot
/// of what that send writes.
pub fn marker(topic: &Topic, key: &str) -> String {
    format!("{}:once:{}", topic_tag(topic), escape(key))
}

/// One node's part of a room's presence: a hash of `<connection ref>` -> `[user, user
/// type]` (JSON), one field per connection of that node in the room. Every node's part
/// shares the room channel's hash tag, so one read (or script) reaches all of them.
pub fn room_presence(app: &str, room: &str, node: &str) -> String {
    format!(
        "tether:{{r:{}:{}}}:presence:{}",
        escape(app),
        escape(room),
        escape(node)
    )
}

/// The control channel of one node (connection replacements).
pub fn node_channel(node: &str) -> String {
    format!("tether:{{n:{}}}:ch", escape(node))
}

/// The inbound stream of an app, named as the protocol says.
pub fn inbound_stream(app: &str) -> String {
    format!("tether:inbound:{}", escape(app))
}

/// The de-duplication key of one client message, in the slot of its app's stream.
pub fn inbound_seen(app: &str, user: &str, id: &str) -> String {
    format!(
        "{{{}}}:seen:{}:{}",
        inbound_stream(app),
        escape(user),
        escape(id)
    )
}

/// The idempotency record of one backend request key (see `broker::idempotency`); each
/// key in a slot of its own.
pub fn idempotency(app: &str, key: &str) -> String {
    format!("tether:{{i:{}:{}}}:idem", escape(app), escape(key))
}

/// Live nodes: a sorted set, member = node id, score = expiry ms.
pub const NODES: &str = "tether:{nodes}:live";

/// One node's connection count, refreshed with its heartbeat.
pub fn node_connections(node: &str) -> String {
    format!("tether:{{nodes}}:conns:{}", escape(node))
}

/// One time bucket of the cluster's inbox message count.
pub fn queued_bucket(bucket: u64) -> String {
    format!("tether:{{stats}}:queued:{bucket}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn escaping_removes_every_special_character() {
        for nasty in ["a:b", "a*b", "{x}", "new\nline", "sp ace", "ü", "%41"] {
            let escaped = escape(nasty);
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b)),
                "{nasty:?} -> {escaped}"
            );
            assert_eq!(unescape(&escaped).as_deref(), Some(nasty));
        }
        assert_eq!(escape("plain-id_1.2"), "plain-id_1.2");
    }

    #[test]
    fn user_keys_share_one_hash_tag() {
        let keys = user("shop", "evil}:{x");
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        let expected = "{u:shop:evil%7D%3A%7Bx}";
        for key in [
            &keys.seq,
            &keys.inbox,
            &keys.cursors,
            &keys.conns,
            &keys.channel,
        ] {
            assert_eq!(tag(key), expected, "{key}");
        }
    }

    #[test]
    fn every_nodes_part_of_a_room_shares_the_rooms_hash_tag() {
        let room = Topic::Room {
            app: Arc::from("shop"),
            room: Arc::from("a}b"),
        };
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        let a = room_presence("shop", "a}b", "node-1");
        let b = room_presence("shop", "a}b", "node:2");
        assert_ne!(a, b);
        assert_eq!(tag(&a), tag(&channel(&room)));
        assert_eq!(tag(&b), tag(&channel(&room)));
        assert!(b.ends_with(":presence:node%3A2"), "{b}");
    }

    #[test]
    fn ids_cannot_collide_through_separators() {
        assert_ne!(inbound_seen("a", "u:1", "x"), inbound_seen("a", "u", "1:x"));
        assert_ne!(
            channel(&Topic::Room {
                app: Arc::from("a"),
                room: Arc::from("b:c")
            }),
            channel(&Topic::User {
                app: Arc::from("a"),
                user: Arc::from("b:c")
            })
        );
    }

    #[test]
    fn inbound_dedup_keys_hash_like_the_stream() {
        let stream = inbound_stream("shop");
        assert_eq!(stream, "tether:inbound:shop");
        assert!(inbound_seen("shop", "u", "m").starts_with("{tether:inbound:shop}:"));
    }
}
