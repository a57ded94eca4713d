//! Messages from the backend: validation and encoding, once, for every way a backend
//! publishes (the HTTP API and the Rust [`Publisher`](crate::publisher::Publisher)).

use crate::clock::now_ms;
use crate::ids::new_message_id;
use tether_protocol::api::OutgoingMessage;
use tether_protocol::client::is_reserved;
use tether_protocol::{names, Envelope};
use thiserror::Error;

/// A backend request that breaks a rule; the text says which.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A checked message, encoded once.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The message id (the backend's, or a new UUIDv7).
    pub id: String,
    /// The envelope JSON (without `seq`: the inbox assigns it).
    pub body: String,
}

/// Checks a message and encodes its envelope with an id and `ts` (and `room` for room messages).
pub fn encode(message: OutgoingMessage, room: Option<&str>) -> Result<Encoded, Invalid> {
    names::validate_type(&message.kind).map_err(|e| Invalid(format!("message.{e}")))?;
    if is_reserved(&message.kind) {
        return Err(Invalid(format!(
            "message.type {} is reserved for the gateway",
            message.kind
        )));
    }
    let id = match message.id {
        Some(id) => {
            names::validate_id(&id).map_err(|e| Invalid(format!("message.{e}")))?;
            id
        }
        None => new_message_id(),
    };
    let mut envelope = Envelope::new(message.kind);
    envelope.id = Some(id.clone());
    envelope.room = room.map(str::to_owned);
    envelope.data = message.data;
    envelope.ts = Some(now_ms());
    Ok(Encoded {
        id,
        body: envelope.to_json(),
    })
}

/// Checks an app name.
pub fn check_app(app: &str) -> Result<(), Invalid> {
    names::validate_app(app).map_err(|e| Invalid(e.to_string()))
}

/// Checks a user id (named `userId` in the API).
pub fn check_user(user: &str) -> Result<(), Invalid> {
    names::validate_user_id(user).map_err(|e| Invalid(e.to_string().replacen("sub", "userId", 1)))
}

/// Checks a room name.
pub fn check_room(room: &str) -> Result<(), Invalid> {
    names::validate_room(room).map_err(|e| Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_protocol::envelope::raw_json;

    fn message(kind: &str, id: Option<&str>) -> OutgoingMessage {
        OutgoingMessage {
            kind: kind.into(),
            id: id.map(str::to_owned),
            data: Some(raw_json(r#"{"orderId":1}"#).unwrap()),
        }
    }

    #[test]
    fn a_message_gets_an_id_and_ts_and_keeps_its_data() {
        let encoded = encode(message("order_update", None), Some("orders")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&encoded.body).unwrap();
        assert_eq!(value["type"], "order_update");
        assert_eq!(value["id"], encoded.id.as_str());
        assert_eq!(value["room"], "orders");
        assert_eq!(value["data"]["orderId"], 1);
        assert!(value["ts"].is_u64());
        assert!(
            encoded.body.starts_with("{\"type\":"),
            "the inbox splices seq in front"
        );
    }

    #[test]
    fn bad_messages_say_what_is_wrong() {
        assert!(encode(message("Bad", None), None)
            .unwrap_err()
            .0
            .starts_with("message.type"));
        assert!(encode(message("pong", None), None)
            .unwrap_err()
            .0
            .contains("reserved"));
        assert!(encode(message("ok", Some("has space")), None)
            .unwrap_err()
            .0
            .starts_with("message.id"));
        assert_eq!(
            encode(message("ok", Some("mine-1")), None).unwrap().id,
            "mine-1"
        );
        assert!(check_user("").unwrap_err().0.starts_with("userId"));
        assert!(check_app("a b").is_err());
        assert!(check_room("r*").is_err());
    }
}
