//! How one outbound message is kept while it waits to be sent: latest-wins replacement
//! and a time to live, for messages whose value is only the newest one (a location, a
//! "typing" flag, a draft) or that are worthless late.

use crate::error::Error;

/// Longest replace key, in bytes.
pub const MAX_REPLACE_KEY_BYTES: usize = 256;

/// Options of [`crate::TetherClient::send_message_with`]; the defaults keep a message like
/// `send_message` does.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct SendOptions {
    /// Latest wins: queued messages with the same key that are not on their way (written
    /// to the open connection and waiting for the gateway's ack) are dropped when this
    /// one is stored, and reported through `on_replaced`. 1 to 256 bytes. A message on
    /// its way is not called back. One written to an earlier connection that ended before
    /// its ack counts as waiting, though it may have reached the gateway.
    #[uniffi(default = None)]
    pub replace_key: Option<String>,
    /// Dropped (and reported through `on_expired`) instead of sent once this many
    /// milliseconds passed since it was queued, like `max_message_age_s`, which still
    /// applies when it is shorter. A message on its way waits for its ack instead. At
    /// least 1.
    #[uniffi(default = None)]
    pub ttl_ms: Option<u64>,
}

impl SendOptions {
    /// Refuses a key that is empty or too long, and a zero time to live.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(key) = &self.replace_key {
            if key.is_empty() || key.len() > MAX_REPLACE_KEY_BYTES {
                return Err(Error::Message(format!(
                    "replace_key must be 1 to {MAX_REPLACE_KEY_BYTES} bytes, got {}",
                    key.len()
                )));
            }
        }
        if self.ttl_ms == Some(0) {
            return Err(Error::Message("ttl_ms must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_refused_with_what_is_wrong() {
        assert!(SendOptions::default().validate().is_ok());
        let key = |k: &str| SendOptions {
            replace_key: Some(k.to_owned()),
            ttl_ms: None,
        };
        assert!(key("location").validate().is_ok());
        let empty = key("").validate().unwrap_err().to_string();
        assert!(empty.contains("replace_key"), "{empty}");
        assert!(key(&"k".repeat(256)).validate().is_ok());
        assert!(key(&"k".repeat(257)).validate().is_err());
        let zero = SendOptions {
            replace_key: None,
            ttl_ms: Some(0),
        };
        assert!(zero.validate().unwrap_err().to_string().contains("ttl_ms"));
    }
}
