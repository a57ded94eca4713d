//! Streams (docs/protocol.md §6): rooms with history, and an app's broadcasts when the
//! gateway keeps them. Every message of a stream carries an `offset`, strictly increasing
//! per stream, and the stream's `epoch`, which changes whenever its history cannot be
//! trusted (the stream was created anew, its store lost data). A client that keeps the
//! last (offset, epoch) it processed can ask for what it missed.

use serde::{Deserialize, Serialize};

/// Longest epoch accepted from a client.
pub const MAX_EPOCH_LEN: usize = 32;

/// A position in a stream: the last message processed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The last offset processed (0: none yet).
    pub offset: u64,
    /// The epoch that offset belongs to.
    pub epoch: String,
}

impl StreamPosition {
    /// Checks an epoch as a client sent it: 1 to [`MAX_EPOCH_LEN`] of `[A-Za-z0-9]`.
    pub fn validate_epoch(epoch: &str) -> Result<(), String> {
        if !epoch.is_empty()
            && epoch.len() <= MAX_EPOCH_LEN
            && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            Ok(())
        } else {
            Err(format!(
                "epoch must be 1 to {MAX_EPOCH_LEN} letters or digits"
            ))
        }
    }
}

/// Where a connection stands in a stream once it joined (the stream part of
/// `room_joined`, and `appStream` of `connection_established`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamJoin {
    /// The offset the connection holds after the replay: the last replayed message's, or
    /// the stream's newest when nothing is replayed. Live messages follow with higher ones.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: String,
    /// True when the client asked to recover (`since`) and every message after its
    /// position follows (`replayCount` of them, possibly none). False otherwise: when it
    /// asked, the position is lost (another epoch, or older than the history) and nothing
    /// is replayed; the app must refetch its state.
    pub recovered: bool,
    /// Messages of the stream that follow at once, in offset order.
    pub replay_count: u32,
}

/// Inserts `offset` and `epoch` into an encoded envelope that lacks them (the gateway
/// never decodes a published body; a Lua script does the same with strings).
pub fn frame_with_position(offset: u64, epoch: &str, body: &str) -> String {
    let rest = body.strip_prefix('{').unwrap_or(body);
    format!("{{\"offset\":{offset},\"epoch\":\"{epoch}\",{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_goes_in_front_of_the_body() {
        let frame = frame_with_position(7, "ab12", r#"{"type":"t","room":"r"}"#);
        assert_eq!(
            frame,
            r#"{"offset":7,"epoch":"ab12","type":"t","room":"r"}"#
        );
        let parsed: crate::Envelope = serde_json::from_str(&frame).unwrap();
        assert_eq!(parsed.offset, Some(7));
        assert_eq!(parsed.epoch.as_deref(), Some("ab12"));
    }

    #[test]
    fn epochs_are_short_and_plain() {
        assert!(StreamPosition::validate_epoch("a1B2").is_ok());
        assert!(StreamPosition::validate_epoch("").is_err());
        assert!(StreamPosition::validate_epoch("a:b").is_err());
        assert!(StreamPosition::validate_epoch(&"a".repeat(33)).is_err());
    }
}
