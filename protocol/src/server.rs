//! Frames the gateway sends (docs/protocol.md §5): encoding on the gateway side, decoding on
//! the SDK side.

use crate::envelope::{to_raw, Envelope};
use crate::error::ErrorCode;
use crate::stream::StreamJoin;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

/// Data of `connection_established`, the first frame after the upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionEstablished {
    /// This connection's id, unique in the cluster.
    pub connection_id: String,
    /// The node holding the connection.
    pub server_id: String,
    /// The token's `sub`.
    pub user_id: String,
    /// The app connected to.
    pub app: String,
    /// The token's `type`.
    pub user_type: String,
    /// Milliseconds between client pings.
    pub heartbeat_interval: u64,
    /// The seq of the first replayed inbox message, `null` when none follows.
    pub replay_from: Option<u64>,
    /// How many inbox messages follow this frame at once.
    pub replay_count: u32,
    /// Milliseconds until the gateway closes the connection with 4001 unless the client
    /// sends `refresh_token` first (the token's `exp` plus the gateway's leeway). Absent
    /// from gateways older than `refresh_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_in: Option<u64>,
    /// Where the connection stands in the app's broadcast stream, when the gateway keeps
    /// one (`WS_APP_HISTORY_SIZE`); its `replayCount` messages follow the inbox replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_stream: Option<StreamJoin>,
}

/// Data of `token_refreshed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRefreshed {
    /// Milliseconds until the new token runs out, as in `connection_established`.
    pub expires_in: u64,
}

/// Data of `room_presence` (the answer to the client request of that name) and of
/// `GET /v1/presence`: who is in a room, on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomPresence {
    /// The room.
    pub room: String,
    /// Distinct users in the room.
    pub users: u64,
    /// Connections in the room (a user may be in it from several devices).
    pub connections: u64,
    /// The users, ordered by user id; at most [`RoomPresence::MAX_MEMBERS`] of them.
    pub members: Vec<PresenceMember>,
    /// Whether `members` stops short of `users`.
    #[serde(default)]
    pub truncated: bool,
}

impl RoomPresence {
    /// Members listed at most; `users` and `connections` always count everyone.
    pub const MAX_MEMBERS: usize = 1000;
}

/// One user in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceMember {
    /// The user (the token's `sub`).
    pub user_id: String,
    /// The user's type (the token's `type`).
    pub user_type: String,
    /// The user's connections in the room.
    pub connections: u32,
    /// Their ids (each the `connectionId` of that connection's `connection_established`,
    /// as in `presence_joined` / `presence_left`), in order.
    #[serde(default)]
    pub connection_ids: Vec<String>,
}

/// Data of `pong`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pong {
    /// The ping's `ts`, echoed as sent.
    #[serde(default)]
    pub ts: Option<Box<RawValue>>,
    /// The gateway's clock, ms since the epoch.
    pub server_ts: u64,
}

impl PartialEq for Pong {
    fn eq(&self, other: &Self) -> bool {
        self.server_ts == other.server_ts
            && self.ts.as_deref().map(RawValue::get) == other.ts.as_deref().map(RawValue::get)
    }
}

/// Data of an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorData {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Text for humans.
    pub message: String,
    /// The offending message's id, or its type when it has none.
    #[serde(rename = "ref", default)]
    pub reference: Option<String>,
}

/// A frame from the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// First frame after the upgrade.
    ConnectionEstablished(ConnectionEstablished),
    /// Answer to `ping`.
    Pong {
        /// The ping's `ts` as sent.
        ts: Option<String>,
        /// The gateway's clock.
        server_ts: u64,
    },
    /// An app message was stored.
    Ack {
        /// The app message's id.
        id: String,
    },
    /// The connection joined a room.
    RoomJoined {
        /// The room.
        room: String,
        /// Where the connection stands in the room's stream (rooms with history).
        stream: Option<StreamJoin>,
    },
    /// The connection left a room.
    RoomLeft {
        /// The room.
        room: String,
    },
    /// `refresh_token` was accepted: the connection now lives by the new token.
    TokenRefreshed(TokenRefreshed),
    /// Answer to `room_presence`.
    RoomPresence(RoomPresence),
    /// A request failed.
    Error(ErrorData),
    /// A message published by the backend (to the user, a room or the app).
    Published(Envelope),
}

/// A gateway frame the SDK could not understand.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ServerFrameError {
    /// Not a JSON envelope.
    #[error("gateway frame is not a JSON envelope: {0}")]
    NotEnvelope(String),
    /// A known type with data of the wrong shape.
    #[error("gateway frame {kind} has malformed data: {reason}")]
    BadData {
        /// The frame type.
        kind: String,
        /// What was wrong.
        reason: String,
    },
}

fn data<T: for<'de> Deserialize<'de>>(envelope: &Envelope) -> Result<T, ServerFrameError> {
    serde_json::from_str(envelope.data_json()).map_err(|e| ServerFrameError::BadData {
        kind: envelope.kind.clone(),
        reason: e.to_string(),
    })
}

#[derive(Serialize, Deserialize)]
struct IdData {
    id: String,
}

#[derive(Serialize, Deserialize)]
struct RoomData {
    room: String,
}

/// Data of `room_joined`: the room, and for a room with history its stream position.
#[derive(Serialize, Deserialize)]
struct RoomJoinedData {
    room: String,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    stream: Option<StreamJoin>,
}

impl ServerMessage {
    /// Decodes one text frame from the gateway.
    pub fn parse(text: &str) -> Result<ServerMessage, ServerFrameError> {
        let envelope: Envelope =
            serde_json::from_str(text).map_err(|e| ServerFrameError::NotEnvelope(e.to_string()))?;
        Ok(match envelope.kind.as_str() {
            "connection_established" => ServerMessage::ConnectionEstablished(data(&envelope)?),
            "pong" => {
                let pong: Pong = data(&envelope)?;
                ServerMessage::Pong {
                    ts: pong.ts.map(|t| t.get().to_owned()),
                    server_ts: pong.server_ts,
                }
            }
            "ack" => ServerMessage::Ack {
                id: data::<IdData>(&envelope)?.id,
            },
            "room_joined" => {
                let joined: RoomJoinedData = data(&envelope)?;
                ServerMessage::RoomJoined {
                    room: joined.room,
                    stream: joined.stream,
                }
            }
            "room_left" => ServerMessage::RoomLeft {
                room: data::<RoomData>(&envelope)?.room,
            },
            // The answer has neither id nor seq; a backend message of that type (sent
            // through a gateway from before the type was reserved) has an id.
            "token_refreshed" if envelope.id.is_none() && envelope.seq.is_none() => {
                ServerMessage::TokenRefreshed(data(&envelope)?)
            }
            // As above: a backend message of this type carries an id.
            "room_presence" if envelope.id.is_none() && envelope.seq.is_none() => {
                ServerMessage::RoomPresence(data(&envelope)?)
            }
            "error" => ServerMessage::Error(data(&envelope)?),
            _ => ServerMessage::Published(envelope),
        })
    }

    /// Encodes the frame; control frames get `ts` (published messages keep their own).
    pub fn encode(&self, ts: u64) -> String {
        let control = |kind: &str, data: Box<RawValue>| {
            let mut e = Envelope::new(kind);
            e.data = Some(data);
            e.ts = Some(ts);
            e.to_json()
        };
        match self {
            ServerMessage::ConnectionEstablished(c) => control("connection_established", to_raw(c)),
            ServerMessage::Pong {
                ts: echoed,
                server_ts,
            } => {
                let echoed = echoed
                    .as_deref()
                    .and_then(|t| RawValue::from_string(t.to_owned()).ok());
                control(
                    "pong",
                    to_raw(&Pong {
                        ts: echoed,
                        server_ts: *server_ts,
                    }),
                )
            }
            ServerMessage::Ack { id } => control("ack", to_raw(&IdData { id: id.clone() })),
            ServerMessage::RoomJoined { room, stream } => control(
                "room_joined",
                to_raw(&RoomJoinedData {
                    room: room.clone(),
                    stream: stream.clone(),
                }),
            ),
            ServerMessage::RoomLeft { room } => {
                control("room_left", to_raw(&RoomData { room: room.clone() }))
            }
            ServerMessage::TokenRefreshed(t) => control("token_refreshed", to_raw(t)),
            ServerMessage::RoomPresence(p) => control("room_presence", to_raw(p)),
            ServerMessage::Error(e) => control("error", to_raw(e)),
            ServerMessage::Published(envelope) => envelope.to_json(),
        }
    }

    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<String>) -> Self {
        ServerMessage::Error(ErrorData {
            code,
            message: message.into(),
            reference,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::raw_json;
    use proptest::prelude::*;

    #[test]
    fn room_joined_carries_a_stream_position_only_for_rooms_with_history() {
        let plain = ServerMessage::RoomJoined {
            room: "r".into(),
            stream: None,
        };
        assert_eq!(
            plain.encode(1),
            r#"{"type":"room_joined","data":{"room":"r"},"ts":1}"#
        );
        assert_eq!(ServerMessage::parse(&plain.encode(1)), Ok(plain));
        let streamed = ServerMessage::RoomJoined {
            room: "r".into(),
            stream: Some(StreamJoin {
                offset: 12,
                epoch: "e1".into(),
                recovered: true,
                replay_count: 3,
            }),
        };
        assert_eq!(
            streamed.encode(1),
            r#"{"type":"room_joined","data":{"room":"r","offset":12,"epoch":"e1","recovered":true,"replayCount":3},"ts":1}"#
        );
        assert_eq!(ServerMessage::parse(&streamed.encode(1)), Ok(streamed));
    }

    #[test]
    fn connection_established_uses_camel_case() {
        let frame = ServerMessage::ConnectionEstablished(ConnectionEstablished {
            connection_id: "c1".into(),
            server_id: "s1".into(),
            user_id: "u1".into(),
            app: "a".into(),
            user_type: "customer".into(),
            heartbeat_interval: 30000,
            replay_from: None,
            replay_count: 0,
            token_expires_in: Some(3_600_000),
            app_stream: None,
        })
        .encode(5);
        assert_eq!(
            frame,
            r#"{"type":"connection_established","data":{"connectionId":"c1","serverId":"s1","userId":"u1","app":"a","userType":"customer","heartbeatInterval":30000,"replayFrom":null,"replayCount":0,"tokenExpiresIn":3600000},"ts":5}"#
        );
        // A gateway older than refresh_token sends no tokenExpiresIn.
        let old = r#"{"type":"connection_established","data":{"connectionId":"c1","serverId":"s1","userId":"u1","app":"a","userType":"customer","heartbeatInterval":30000,"replayFrom":null,"replayCount":0}}"#;
        match ServerMessage::parse(old) {
            Ok(ServerMessage::ConnectionEstablished(c)) => assert_eq!(c.token_expires_in, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_refreshed_carries_the_new_lifetime() {
        let frame = ServerMessage::TokenRefreshed(TokenRefreshed { expires_in: 60_000 }).encode(9);
        assert_eq!(
            frame,
            r#"{"type":"token_refreshed","data":{"expiresIn":60000},"ts":9}"#
        );
        assert_eq!(
            ServerMessage::parse(&frame),
            Ok(ServerMessage::TokenRefreshed(TokenRefreshed {
                expires_in: 60_000
            }))
        );
        // A published message that happens to use the type stays a published message.
        let published = r#"{"type":"token_refreshed","id":"m1","data":{"expiresIn":1},"ts":9}"#;
        assert!(matches!(
            ServerMessage::parse(published),
            Ok(ServerMessage::Published(_))
        ));
    }

    #[test]
    fn room_presence_lists_members_in_camel_case() {
        let presence = RoomPresence {
            room: "lobby".into(),
            users: 2,
            connections: 3,
            members: vec![
                PresenceMember {
                    user_id: "u1".into(),
                    user_type: "customer".into(),
                    connections: 2,
                    connection_ids: vec!["n-1".into(), "n-2".into()],
                },
                PresenceMember {
                    user_id: "u2".into(),
                    user_type: "driver".into(),
                    connections: 1,
                    connection_ids: vec!["n-3".into()],
                },
            ],
            truncated: false,
        };
        let frame = ServerMessage::RoomPresence(presence.clone()).encode(5);
        assert_eq!(
            frame,
            r#"{"type":"room_presence","data":{"room":"lobby","users":2,"connections":3,"members":[{"userId":"u1","userType":"customer","connections":2,"connectionIds":["n-1","n-2"]},{"userId":"u2","userType":"driver","connections":1,"connectionIds":["n-3"]}],"truncated":false},"ts":5}"#
        );
        assert_eq!(
            ServerMessage::parse(&frame),
            Ok(ServerMessage::RoomPresence(presence))
        );
        // A backend message of that type has an id: it stays a published message.
        let published = r#"{"type":"room_presence","id":"m1","room":"lobby","data":{},"ts":9}"#;
        assert!(matches!(
            ServerMessage::parse(published),
            Ok(ServerMessage::Published(_))
        ));
    }

    #[test]
    fn error_frames_carry_code_message_and_ref() {
        let frame =
            ServerMessage::error(ErrorCode::MissingId, "need id", Some("chat".into())).encode(1);
        assert_eq!(
            frame,
            r#"{"type":"error","data":{"code":"missing_id","message":"need id","ref":"chat"},"ts":1}"#
        );
    }

    #[test]
    fn pong_echoes_the_ping_ts_verbatim() {
        let frame = ServerMessage::Pong {
            ts: Some("1.5e3".into()),
            server_ts: 9,
        }
        .encode(9);
        assert!(frame.contains(r#""ts":1.5e3"#), "{frame}");
        assert_eq!(
            ServerMessage::parse(&frame).unwrap(),
            ServerMessage::Pong {
                ts: Some("1.5e3".into()),
                server_ts: 9
            }
        );
    }

    #[test]
    fn unknown_types_are_published_messages() {
        match ServerMessage::parse(
            r#"{"type":"order_update","id":"x","seq":3,"data":{"a":1},"ts":7,"new":true}"#,
        ) {
            Ok(ServerMessage::Published(e)) => {
                assert_eq!(e.seq, Some(3));
                assert_eq!(e.data_json(), r#"{"a":1}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_control_frames_are_reported() {
        assert!(matches!(
            ServerMessage::parse(r#"{"type":"ack","data":{}}"#),
            Err(ServerFrameError::BadData { .. })
        ));
        assert!(matches!(
            ServerMessage::parse("nope"),
            Err(ServerFrameError::NotEnvelope(_))
        ));
    }

    fn arb_server_message() -> impl Strategy<Value = ServerMessage> {
        let name = "[A-Za-z0-9._:-]{1,40}";
        prop_oneof![
            (
                name,
                name,
                name,
                name,
                name,
                any::<u32>(),
                proptest::option::of(any::<u64>()),
                any::<u32>(),
                proptest::option::of(any::<u64>()),
            )
                .prop_map(|(c, s, u, a, t, h, f, n, e)| {
                    ServerMessage::ConnectionEstablished(ConnectionEstablished {
                        connection_id: c,
                        server_id: s,
                        user_id: u,
                        app: a,
                        user_type: t,
                        heartbeat_interval: h as u64,
                        replay_from: f,
                        replay_count: n,
                        token_expires_in: e,
                        app_stream: None,
                    })
                }),
            (proptest::option::of(any::<i32>()), any::<u64>()).prop_map(|(ts, server_ts)| {
                ServerMessage::Pong {
                    ts: ts.map(|t| t.to_string()),
                    server_ts,
                }
            }),
            "[!-~]{1,64}".prop_map(|id| ServerMessage::Ack { id }),
            name.prop_map(|room| ServerMessage::RoomJoined { room, stream: None }),
            name.prop_map(|room| ServerMessage::RoomLeft { room }),
            (".{0,30}", proptest::option::of(name)).prop_map(|(m, r)| ServerMessage::error(
                ErrorCode::InvalidAck,
                m,
                r
            )),
            (
                "[a-z_]{1,20}",
                name,
                proptest::option::of(any::<u64>()),
                proptest::option::of(name),
                any::<u64>()
            )
                .prop_filter("not a control type", |(k, ..)| {
                    !matches!(
                        k.as_str(),
                        "connection_established"
                            | "pong"
                            | "ack"
                            | "room_joined"
                            | "room_left"
                            | "error"
                    )
                })
                .prop_map(|(kind, id, seq, room, ts)| {
                    let mut e = Envelope::new(kind);
                    e.id = Some(id);
                    e.seq = seq;
                    e.room = room;
                    e.ts = Some(ts);
                    e.data = Some(raw_json(r#"{"k":[1,"two",null]}"#).unwrap());
                    ServerMessage::Published(e)
                }),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(message in arb_server_message()) {
            let text = message.encode(1);
            prop_assert_eq!(ServerMessage::parse(&text).unwrap(), message);
        }
    }
}
