//! Close codes the gateway sends and what a client should do after each (docs/protocol.md §8).

/// A WebSocket close code.
pub type CloseCode = u16;

/// 1000: normal closure, the client asked for it.
pub const NORMAL: CloseCode = 1000;
/// 1001: the node is going away.
pub const GOING_AWAY: CloseCode = 1001;
/// 1003: a binary frame was received.
pub const UNSUPPORTED_DATA: CloseCode = 1003;
/// 1006: no close frame at all (never sent on the wire; what a client sees when the socket dies).
pub const ABNORMAL: CloseCode = 1006;
/// 1007: a frame that is not UTF-8 or not JSON.
pub const INVALID_PAYLOAD: CloseCode = 1007;
/// 1009: a frame above the size limit.
pub const MESSAGE_TOO_BIG: CloseCode = 1009;
/// 1011: the gateway hit an internal error.
pub const INTERNAL_ERROR: CloseCode = 1011;
/// 1012: graceful shutdown of the node.
pub const SERVICE_RESTART: CloseCode = 1012;
/// 4000: nothing arrived from the client within the connection timeout.
pub const HEARTBEAT_TIMEOUT: CloseCode = 4000;
/// 4001: the token expired while connected.
pub const TOKEN_EXPIRED: CloseCode = 4001;
/// 4008: policy violation (rate limit, repeated bad frames, a client that does not read).
pub const POLICY_VIOLATION: CloseCode = 4008;
/// 4403: kicked by the backend.
pub const KICKED: CloseCode = 4403;
/// 4409: replaced by a newer connection of the same device.
pub const REPLACED: CloseCode = 4409;

/// What a client should do after the connection closed with a given code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectAdvice {
    /// Stay disconnected (the user asked, the backend kicked, or another connection replaced this one).
    Stay,
    /// Reconnect at once, with a little jitter (the node is restarting).
    Immediately,
    /// Reconnect with exponential backoff.
    Backoff,
    /// Ask the app for a fresh token, then reconnect.
    RefreshToken,
}

impl ReconnectAdvice {
    /// The advice for a close code; unknown codes mean "reconnect with backoff".
    pub fn for_code(code: CloseCode) -> Self {
        match code {
            NORMAL | KICKED | REPLACED => ReconnectAdvice::Stay,
            GOING_AWAY | SERVICE_RESTART => ReconnectAdvice::Immediately,
            TOKEN_EXPIRED => ReconnectAdvice::RefreshToken,
            _ => ReconnectAdvice::Backoff,
        }
    }
}

/// A short human label for a close code, for logs and error messages.
pub fn describe(code: CloseCode) -> &'static str {
    match code {
        NORMAL => "normal closure",
        GOING_AWAY => "node going away",
        UNSUPPORTED_DATA => "binary frames are not accepted",
        ABNORMAL => "connection lost without a close frame",
        INVALID_PAYLOAD => "frame is not UTF-8 JSON",
        MESSAGE_TOO_BIG => "frame too large",
        INTERNAL_ERROR => "gateway internal error",
        SERVICE_RESTART => "node restarting",
        HEARTBEAT_TIMEOUT => "heartbeat timeout",
        TOKEN_EXPIRED => "token expired",
        POLICY_VIOLATION => "policy violation",
        KICKED => "kicked by the backend",
        REPLACED => "replaced by a newer connection of this device",
        _ => "closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_follows_the_close_code_table() {
        assert_eq!(ReconnectAdvice::for_code(1000), ReconnectAdvice::Stay);
        assert_eq!(ReconnectAdvice::for_code(4403), ReconnectAdvice::Stay);
        assert_eq!(ReconnectAdvice::for_code(4409), ReconnectAdvice::Stay);
        assert_eq!(
            ReconnectAdvice::for_code(1001),
            ReconnectAdvice::Immediately
        );
        assert_eq!(
            ReconnectAdvice::for_code(1012),
            ReconnectAdvice::Immediately
        );
        assert_eq!(
            ReconnectAdvice::for_code(4001),
            ReconnectAdvice::RefreshToken
        );
        for code in [1003, 1006, 1007, 1009, 1011, 4000, 4008, 4999, 3000] {
            assert_eq!(
                ReconnectAdvice::for_code(code),
                ReconnectAdvice::Backoff,
                "{code}"
            );
        }
    }

    #[test]
    fn every_named_code_has_a_label() {
        for code in [
            1000, 1001, 1003, 1006, 1007, 1009, 1011, 1012, 4000, 4001, 4008, 4403, 4409,
        ] {
            assert_ne!(describe(code), "closed", "{code}");
        }
        assert_eq!(describe(4321), "closed");
    }
}
