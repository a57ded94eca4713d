//! Frames a client sends (docs/protocol.md §4): decoding with the protocol's error rules on the
//! gateway side, encoding on the SDK side.

use crate::envelope::{to_raw, Envelope};
use crate::error::ErrorCode;
use crate::names;
use crate::stream::StreamPosition;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

/// Types only the server may send; a client sending one gets `reserved_type`.
pub const RESERVED_TYPES: [&str; 8] = [
    "connection_established",
    "pong",
    "room_joined",
    "room_left",
    "error",
    "token_refreshed",
    "presence_joined",
    "presence_left",
];

/// Types a client sends as requests to the gateway, never as app messages.
pub const CONTROL_TYPES: [&str; 6] = [
    "ping",
    "join_room",
    "leave_room",
    "room_presence",
    "ack",
    "refresh_token",
];

/// Whether a type is reserved for the server.
pub fn is_reserved(kind: &str) -> bool {
    RESERVED_TYPES.contains(&kind)
}

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `ping`, with the client's clock to echo back (any JSON value, kept as text).
    Ping {
        /// `data.ts` as sent (raw JSON text), when present.
        ts: Option<String>,
    },
    /// `join_room`.
    JoinRoom {
        /// A valid room name.
        room: String,
        /// Optional id; an `error` answering this request carries it as `ref`.
        id: Option<String>,
        /// The last position processed in the room's stream, to recover what followed it
        /// (rooms with history; ignored by others).
        since: Option<StreamPosition>,
    },
    /// `leave_room`.
    LeaveRoom {
        /// A valid room name.
        room: String,
        /// Optional id, as for `join_room`.
        id: Option<String>,
    },
    /// `room_presence`: who is in a room the connection is in.
    RoomPresence {
        /// A valid room name.
        room: String,
        /// Optional id, as for `join_room`.
        id: Option<String>,
    },
    /// Cumulative inbox ack.
    Ack {
        /// Every inbox message with this seq or lower is processed.
        seq: u64,
    },
    /// `refresh_token`: a fresh token for the open connection, so it outlives the first
    /// token's `exp` without reconnecting.
    RefreshToken {
        /// The new token.
        token: Token,
    },
    /// An app message for the backend.
    App(AppMessage),
}

impl PartialEq for AppMessage {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.id == other.id
            && self.data.as_deref().map(RawValue::get) == other.data.as_deref().map(RawValue::get)
    }
}

/// A token's text, kept out of `Debug` output (and so out of logs).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

/// An app message: any non-reserved type with an `id`.
#[derive(Debug, Clone)]
pub struct AppMessage {
    /// A valid, non-reserved type.
    pub kind: String,
    /// A valid id, unique per sender.
    pub id: String,
    /// The payload as JSON text.
    pub data: Option<Box<RawValue>>,
}

/// Why a client frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Not JSON at all: the gateway closes with 1007.
    #[error("frame is not JSON")]
    NotJson,
    /// JSON, but not acceptable: the gateway answers with an `error` frame and stays open.
    #[error("{code}: {message}")]
    Rejected {
        /// The `error` frame's code.
        code: ErrorCode,
        /// Text for humans.
        message: String,
        /// The offending message's id, or its type when it has none.
        reference: Option<String>,
    },
}

impl FrameError {
    fn rejected(code: ErrorCode, message: impl Into<String>, reference: Option<String>) -> Self {
        FrameError::Rejected {
            code,
            message: message.into(),
            reference,
        }
    }
}

#[derive(Deserialize)]
struct PingData {
    #[serde(default)]
    ts: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct RoomData {
    room: String,
    #[serde(default)]
    since: Option<StreamPosition>,
}

#[derive(Deserialize)]
struct AckData {
    seq: u64,
}

#[derive(Deserialize)]
struct TokenData {
    token: String,
}

/// Best-effort `ref` for an envelope that did not decode: its id, else its type.
fn salvage_reference(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let pick = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    pick("id")
        .or_else(|| pick("type"))
        .map(|s| s.chars().take(64).collect())
}

fn data_as<T: for<'de> Deserialize<'de>>(
    envelope: &Envelope,
    what: &str,
    reference: &Option<String>,
) -> Result<T, FrameError> {
    let text = envelope.data.as_deref().map_or("null", RawValue::get);
    serde_json::from_str(text).map_err(|_| {
        FrameError::rejected(
            ErrorCode::InvalidMessage,
            format!("{} needs data {what}", envelope.kind),
            reference.clone(),
        )
    })
}

impl ClientMessage {
    /// Decodes one text frame from a client, applying docs/protocol.md §4's rules.
    pub fn parse(text: &str) -> Result<ClientMessage, FrameError> {
        if crate::depth::exceeds(text.as_bytes(), crate::depth::MAX_DEPTH) {
            return Err(FrameError::rejected(
                ErrorCode::InvalidMessage,
                crate::depth::refusal(),
                salvage_reference(text),
            ));
        }
        let envelope: Envelope = match serde_json::from_str(text) {
            Ok(envelope) => envelope,
            Err(e) if e.is_syntax() || e.is_eof() => return Err(FrameError::NotJson),
            Err(e) => {
                return Err(FrameError::rejected(
                    ErrorCode::InvalidMessage,
                    format!("not a valid envelope: {e}"),
                    salvage_reference(text),
                ))
            }
        };
        Self::from_envelope(envelope)
    }

    /// Applies the rules to an already decoded envelope.
    pub fn from_envelope(envelope: Envelope) -> Result<ClientMessage, FrameError> {
        let reference = envelope.id.clone().or_else(|| {
            Some(envelope.kind.chars().take(64).collect::<String>()).filter(|s| !s.is_empty())
        });
        if let Err(e) = names::validate_type(&envelope.kind) {
            return Err(FrameError::rejected(
                ErrorCode::InvalidMessage,
                e.to_string(),
                reference,
            ));
        }
        match envelope.kind.as_str() {
            "ping" => {
                let ts = match envelope.data.as_deref() {
                    None => None,
                    Some(_) => data_as::<PingData>(&envelope, "{\"ts\": <number>}", &reference)?
                        .ts
                        .map(|raw| raw.get().to_owned()),
                };
                Ok(ClientMessage::Ping { ts })
            }
            "join_room" | "leave_room" | "room_presence" => {
                let RoomData { room, since } =
                    data_as::<RoomData>(&envelope, "{\"room\": \"<name>\"}", &reference)?;
                if let Some(since) = &since {
                    if let Err(e) = StreamPosition::validate_epoch(&since.epoch) {
                        return Err(FrameError::rejected(
                            ErrorCode::InvalidMessage,
                            format!("since: {e}"),
                            reference,
                        ));
                    }
                }
                if let Err(e) = names::validate_room(&room) {
                    return Err(FrameError::rejected(
                        ErrorCode::InvalidRoom,
                        e.to_string(),
                        reference,
                    ));
                }
                let id = envelope.id;
                if let Some(id) = &id {
                    if let Err(e) = names::validate_id(id) {
                        return Err(FrameError::rejected(
                            ErrorCode::InvalidMessage,
                            e.to_string(),
                            Some(envelope.kind),
                        ));
                    }
                }
                Ok(match envelope.kind.as_str() {
                    "join_room" => ClientMessage::JoinRoom { room, id, since },
                    "leave_room" => ClientMessage::LeaveRoom { room, id },
                    _ => ClientMessage::RoomPresence { room, id },
                })
            }
            "ack" => {
                let AckData { seq } =
                    data_as::<AckData>(&envelope, "{\"seq\": <u64>}", &reference)?;
                Ok(ClientMessage::Ack { seq })
            }
            "refresh_token" => {
                let TokenData { token } =
                    data_as::<TokenData>(&envelope, "{\"token\": \"<jwt>\"}", &reference)?;
                Ok(ClientMessage::RefreshToken {
                    token: Token(token),
                })
            }
            kind if is_reserved(kind) => Err(FrameError::rejected(
                ErrorCode::ReservedType,
                format!("type {kind} is reserved for the server"),
                reference,
            )),
            _ => {
                let Some(id) = envelope.id else {
                    return Err(FrameError::rejected(
                        ErrorCode::MissingId,
                        "app messages need an id",
                        reference,
                    ));
                };
                if let Err(e) = names::validate_id(&id) {
                    return Err(FrameError::rejected(
                        ErrorCode::InvalidMessage,
                        e.to_string(),
                        Some(envelope.kind),
                    ));
                }
                Ok(ClientMessage::App(AppMessage {
                    kind: envelope.kind,
                    id,
                    data: envelope.data,
                }))
            }
        }
    }

    /// Encodes the message as the client sends it.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Room<'a> {
            room: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            since: Option<&'a StreamPosition>,
        }
        #[derive(Serialize)]
        struct Seq {
            seq: u64,
        }
        #[derive(Serialize)]
        struct TokenText<'a> {
            token: &'a str,
        }
        let mut envelope;
        match self {
            ClientMessage::Ping { ts } => {
                envelope = Envelope::new("ping");
                // A ts that is not valid JSON text is left out rather than sent broken.
                envelope.data = ts
                    .as_deref()
                    .and_then(|ts| crate::envelope::raw_json(&format!("{{\"ts\":{ts}}}")).ok());
            }
            ClientMessage::JoinRoom { room, id, since } => {
                envelope = Envelope::new("join_room");
                envelope.id = id.clone();
                envelope.data = Some(to_raw(&Room {
                    room,
                    since: since.as_ref(),
                }));
            }
            ClientMessage::LeaveRoom { room, id } => {
                envelope = Envelope::new("leave_room");
                envelope.id = id.clone();
                envelope.data = Some(to_raw(&Room { room, since: None }));
            }
            ClientMessage::RoomPresence { room, id } => {
                envelope = Envelope::new("room_presence");
                envelope.id = id.clone();
                envelope.data = Some(to_raw(&Room { room, since: None }));
            }
            ClientMessage::Ack { seq } => {
                envelope = Envelope::new("ack");
                envelope.data = Some(to_raw(&Seq { seq: *seq }));
            }
            ClientMessage::RefreshToken { token } => {
                envelope = Envelope::new("refresh_token");
                envelope.data = Some(to_raw(&TokenText { token: &token.0 }));
            }
            ClientMessage::App(m) => {
                envelope = Envelope::new(m.kind.clone());
                envelope.id = Some(m.id.clone());
                envelope.data = m.data.clone();
            }
        }
        envelope.to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::raw_json;
    use proptest::prelude::*;

    fn rejected_code(text: &str) -> ErrorCode {
        match ClientMessage::parse(text) {
            Err(FrameError::Rejected { code, .. }) => code,
            other => panic!("expected a rejection for {text}, got {other:?}"),
        }
    }

    #[test]
    fn text_that_is_not_json_is_not_json() {
        assert_eq!(ClientMessage::parse("hello"), Err(FrameError::NotJson));
        assert_eq!(ClientMessage::parse("{\"type\":"), Err(FrameError::NotJson));
        assert_eq!(ClientMessage::parse(""), Err(FrameError::NotJson));
    }

    #[test]
    fn json_that_is_not_an_envelope_is_invalid_message() {
        assert_eq!(rejected_code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(rejected_code("42"), ErrorCode::InvalidMessage);
        assert_eq!(rejected_code("{}"), ErrorCode::InvalidMessage);
        assert_eq!(
            rejected_code(r#"{"type":"Bad Type","id":"1"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            rejected_code(r#"{"type":"x","id":5}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            rejected_code(r#"{"type":"x","id":"1","seq":"7"}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn rejections_name_the_offending_message() {
        match ClientMessage::parse(r#"{"type":"x","id":"m1","seq":"bad"}"#) {
            Err(FrameError::Rejected { reference, .. }) => {
                assert_eq!(reference.as_deref(), Some("m1"))
            }
            other => panic!("{other:?}"),
        }
        match ClientMessage::parse(r#"{"type":"chat"}"#) {
            Err(FrameError::Rejected {
                code, reference, ..
            }) => {
                assert_eq!(code, ErrorCode::MissingId);
                assert_eq!(reference.as_deref(), Some("chat"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_messages_decode() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping { ts: None })
        );
        match ClientMessage::parse(r#"{"type":"ping","data":{"ts":123}}"#) {
            Ok(ClientMessage::Ping { ts: Some(ts) }) => assert_eq!(ts, "123"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ClientMessage::parse(r#"{"type":"join_room","data":{"room":"orders:1"}}"#),
            Ok(ClientMessage::JoinRoom {
                room: "orders:1".into(),
                id: None,
                since: None
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"join_room","id":"j1","data":{"room":"r"}}"#),
            Ok(ClientMessage::JoinRoom {
                room: "r".into(),
                id: Some("j1".into()),
                since: None
            })
        );
        assert_eq!(
            ClientMessage::parse(
                r#"{"type":"join_room","data":{"room":"r","since":{"offset":7,"epoch":"e1"}}}"#
            ),
            Ok(ClientMessage::JoinRoom {
                room: "r".into(),
                id: None,
                since: Some(StreamPosition {
                    offset: 7,
                    epoch: "e1".into()
                })
            })
        );
        assert!(matches!(
            ClientMessage::parse(
                r#"{"type":"join_room","data":{"room":"r","since":{"offset":7,"epoch":"a b"}}}"#
            ),
            Err(FrameError::Rejected {
                code: ErrorCode::InvalidMessage,
                ..
            })
        ));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"leave_room","data":{"room":"orders:1"}}"#),
            Ok(ClientMessage::LeaveRoom {
                room: "orders:1".into(),
                id: None
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ack","data":{"seq":42}}"#),
            Ok(ClientMessage::Ack { seq: 42 })
        );
        let presence = ClientMessage::RoomPresence {
            room: "lobby".into(),
            id: Some("p1".into()),
        };
        assert_eq!(
            presence.to_json(),
            r#"{"type":"room_presence","id":"p1","data":{"room":"lobby"}}"#
        );
        assert_eq!(ClientMessage::parse(&presence.to_json()), Ok(presence));
        let refresh = ClientMessage::RefreshToken {
            token: Token("a.b.c".into()),
        };
        assert_eq!(
            refresh.to_json(),
            r#"{"type":"refresh_token","data":{"token":"a.b.c"}}"#
        );
        assert_eq!(ClientMessage::parse(&refresh.to_json()), Ok(refresh));
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let refresh = ClientMessage::RefreshToken {
            token: Token("secret.jwt.text".into()),
        };
        let shown = format!("{refresh:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("15 bytes"), "{shown}");
    }

    #[test]
    fn control_types_are_never_app_messages() {
        for kind in CONTROL_TYPES {
            let text = format!(r#"{{"type":"{kind}","id":"1","data":{{}}}}"#);
            assert!(
                !matches!(ClientMessage::parse(&text), Ok(ClientMessage::App(_))),
                "{kind}"
            );
        }
    }

    #[test]
    fn control_messages_with_bad_data_are_refused() {
        assert_eq!(
            rejected_code(r#"{"type":"join_room"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            rejected_code(r#"{"type":"join_room","data":{"room":"a b"}}"#),
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            rejected_code(r#"{"type":"join_room","data":{"room":""}}"#),
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            rejected_code(r#"{"type":"room_presence","data":{}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            rejected_code(r#"{"type":"room_presence","data":{"room":"a*"}}"#),
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            rejected_code(r#"{"type":"ack","data":{"seq":-1}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            rejected_code(r#"{"type":"ack"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            rejected_code(r#"{"type":"ping","data":5}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            rejected_code(r#"{"type":"refresh_token"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            rejected_code(r#"{"type":"refresh_token","data":{"token":7}}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn reserved_types_are_refused() {
        for kind in RESERVED_TYPES {
            let text = format!(r#"{{"type":"{kind}","id":"1"}}"#);
            assert_eq!(rejected_code(&text), ErrorCode::ReservedType, "{kind}");
        }
    }

    #[test]
    fn app_messages_need_a_valid_id() {
        assert_eq!(
            rejected_code(r#"{"type":"chat","data":{}}"#),
            ErrorCode::MissingId
        );
        assert_eq!(
            rejected_code(r#"{"type":"chat","id":""}"#),
            ErrorCode::InvalidMessage
        );
        let long = format!(r#"{{"type":"chat","id":"{}"}}"#, "i".repeat(65));
        assert_eq!(rejected_code(&long), ErrorCode::InvalidMessage);
        match ClientMessage::parse(r#"{"type":"chat","id":"m-1","data":{"text":"hi"},"extra":1}"#) {
            Ok(ClientMessage::App(m)) => {
                assert_eq!(m.kind, "chat");
                assert_eq!(m.id, "m-1");
                assert_eq!(m.data.unwrap().get(), r#"{"text":"hi"}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    fn arb_data() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            any::<i64>().prop_map(|n| Some(n.to_string())),
            "[a-zA-Z0-9 ]{0,20}".prop_map(|s| Some(serde_json::to_string(&s).unwrap())),
            ("[a-z]{1,8}", any::<bool>())
                .prop_map(|(k, b)| Some(format!("{{\"{k}\":{b},\"n\":[1,2,null]}}"))),
        ]
    }

    fn arb_message() -> impl Strategy<Value = ClientMessage> {
        prop_oneof![
            proptest::option::of(any::<u32>()).prop_map(|ts| ClientMessage::Ping {
                ts: ts.map(|t| t.to_string())
            }),
            (
                "[A-Za-z0-9._:-]{1,128}",
                proptest::option::of("[!-~]{1,64}")
            )
                .prop_map(|(room, id)| ClientMessage::JoinRoom {
                    room,
                    id,
                    since: None
                }),
            (
                "[A-Za-z0-9._:-]{1,128}",
                proptest::option::of("[!-~]{1,64}")
            )
                .prop_map(|(room, id)| ClientMessage::LeaveRoom { room, id }),
            (
                "[A-Za-z0-9._:-]{1,128}",
                proptest::option::of("[!-~]{1,64}")
            )
                .prop_map(|(room, id)| ClientMessage::RoomPresence { room, id }),
            any::<u64>().prop_map(|seq| ClientMessage::Ack { seq }),
            "[!-~]{1,200}".prop_map(|token| ClientMessage::RefreshToken {
                token: Token(token)
            }),
            ("[a-z0-9_.:-]{1,64}", "[!-~]{1,64}", arb_data())
                .prop_filter("not a control type", |(k, _, _)| {
                    !is_reserved(k) && !CONTROL_TYPES.contains(&k.as_str())
                })
                .prop_map(|(kind, id, data)| ClientMessage::App(AppMessage {
                    kind,
                    id,
                    data: data.map(|d| raw_json(&d).unwrap()),
                })),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(message in arb_message()) {
            let text = message.to_json();
            prop_assert_eq!(ClientMessage::parse(&text), Ok(message));
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = ClientMessage::parse(&text);
        }
    }
}
