//! Messages from the backend: validation and encoding, once, for every way a backend
//! publishes (the HTTP API and the Rust [`Publisher`](crate::publisher::Publisher)).

use crate::broker::idempotency::Marked;
use crate::broker::{BrokerError, UserDelivery};
use crate::clock::now_ms;
use crate::ids::new_message_id;
use tether_protocol::api::{OutgoingMessage, SentToUsers, UserSent, MAX_USERS_PER_SEND};
use tether_protocol::client::is_reserved;
use tether_protocol::error::HttpErrorDetail;
use tether_protocol::HttpErrorCode;
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

/// Checks the users of one `/v1/send/users`: 1 to [`MAX_USERS_PER_SEND`], each valid,
/// none twice; the error names the entry.
pub fn check_users(users: &[String]) -> Result<(), Invalid> {
    if users.is_empty() || users.len() > MAX_USERS_PER_SEND {
        return Err(Invalid(format!(
            "userIds holds {} users; 1 to {MAX_USERS_PER_SEND} per request",
            users.len()
        )));
    }
    let mut seen = std::collections::HashMap::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        check_user(user).map_err(|e| Invalid(format!("userIds[{i}]: {}", e.0)))?;
        if let Some(first) = seen.insert(user.as_str(), i) {
            return Err(Invalid(format!("userIds[{i}] repeats userIds[{first}]")));
        }
    }
    Ok(())
}

/// The answer to one message sent to `users` (in order) with these `results`: each
/// user's seq and live count, or its error. When no inbox was reached, the first error:
/// nothing was stored for anyone, and the request fails as a whole.
/// With markers: the answer was found (nothing sent) only when every user's was.
pub fn sent_to_users(
    id: String,
    users: Vec<String>,
    results: Vec<Result<Marked<UserDelivery>, BrokerError>>,
) -> Result<Marked<SentToUsers>, BrokerError> {
    if results
        .iter()
        .any(|r| matches!(r, Err(BrokerError::KeyReused)))
    {
        return Err(BrokerError::KeyReused);
    }
    let all_found = results.iter().all(|r| matches!(r, Ok(Marked::Found(_))));
    let results: Vec<Result<UserDelivery, BrokerError>> = results
        .into_iter()
        .map(|r| r.map(Marked::into_inner))
        .collect();
    let sent = results.iter().filter(|r| r.is_ok()).count() as u64;
    if sent == 0 {
        if let Some(Err(first)) = results.into_iter().next() {
            return Err(first);
        }
        return Err(BrokerError::BadRequest("no users".into()));
    }
    let users: Vec<UserSent> = users
        .into_iter()
        .zip(results)
        .map(|(user_id, result)| match result {
            Ok(delivery) => UserSent {
                user_id,
                seq: Some(delivery.seq),
                delivered: Some(delivery.delivered),
                error: None,
            },
            Err(e) => UserSent {
                user_id,
                seq: None,
                delivered: None,
                error: Some(HttpErrorDetail {
                    code: match e {
                        BrokerError::Unavailable(_) => HttpErrorCode::Unavailable,
                        BrokerError::BadRequest(_) => HttpErrorCode::InvalidRequest,
                        BrokerError::KeyReused => HttpErrorCode::IdempotencyKeyReused,
                    },
                    message: format!("{e}; nothing was stored for this user"),
                }),
            },
        })
        .collect();
    let answer = SentToUsers {
        id,
        sent,
        failed: users.len() as u64 - sent,
        users,
    };
    Ok(if all_found {
        Marked::Found(answer)
    } else {
        Marked::New(answer)
    })
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
