//! The one JSON object every frame carries (docs/protocol.md §3).
//!
//! `data` is kept as raw JSON text so the gateway can forward what a backend published
//! without decoding and re-encoding it, and the SDK can hand it to the app as a string.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A frame's envelope. Unknown fields are ignored on decode (forward compatibility).
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Message type: 1-64 chars of `[a-z0-9_.:-]`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unique per sender; required on client app messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Inbox sequence, on durable user messages only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The room a room message was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Stream offset, on messages of a room or app stream with history (see
    /// [`crate::stream`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The stream's epoch, with `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Any JSON value, kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// Milliseconds since the Unix epoch, set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
}

impl Envelope {
    /// An envelope with only a type.
    pub fn new(kind: impl Into<String>) -> Self {
        Envelope {
            kind: kind.into(),
            id: None,
            seq: None,
            room: None,
            offset: None,
            epoch: None,
            data: None,
            ts: None,
        }
    }

    /// Encodes the envelope as one JSON text.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings, integers and already-valid raw JSON cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("envelope encodes: {e}"))
    }

    /// The data as JSON text (`null` when absent).
    pub fn data_json(&self) -> &str {
        self.data.as_deref().map_or("null", RawValue::get)
    }
}

impl Clone for Envelope {
    fn clone(&self) -> Self {
        Envelope {
            kind: self.kind.clone(),
            id: self.id.clone(),
            seq: self.seq,
            room: self.room.clone(),
            offset: self.offset,
            epoch: self.epoch.clone(),
            data: self.data.as_ref().map(|d| d.to_owned()),
            ts: self.ts,
        }
    }
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.id == other.id
            && self.seq == other.seq
            && self.room == other.room
            && self.offset == other.offset
            && self.epoch == other.epoch
            && self.data.as_deref().map(RawValue::get) == other.data.as_deref().map(RawValue::get)
            && self.ts == other.ts
    }
}

/// Turns JSON text into a raw value, checking that it is valid JSON.
pub fn raw_json(text: &str) -> Result<Box<RawValue>, serde_json::Error> {
    RawValue::from_string(text.to_owned())
}

/// Encodes any serialisable value as a raw JSON value.
pub fn to_raw<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value)
        .unwrap_or_else(|e| unreachable!("protocol data encodes: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_ignored() {
        let e: Envelope =
            serde_json::from_str(r#"{"type":"x","future":{"a":1},"id":"1","v":2}"#).unwrap();
        assert_eq!(e.kind, "x");
        assert_eq!(e.id.as_deref(), Some("1"));
    }

    #[test]
    fn absent_fields_are_not_written() {
        let mut e = Envelope::new("ping");
        assert_eq!(e.to_json(), r#"{"type":"ping"}"#);
        e.seq = Some(7);
        e.data = Some(raw_json(r#"{"a":[1,2]}"#).unwrap());
        assert_eq!(e.to_json(), r#"{"type":"ping","seq":7,"data":{"a":[1,2]}}"#);
        assert_eq!(e.data_json(), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn raw_json_refuses_invalid_text() {
        assert!(raw_json("{").is_err());
        assert!(raw_json("\"s\"").is_ok());
    }
}
