//! Error codes: those carried in `error` frames (docs/protocol.md §4) and those in the JSON
//! body of a refused handshake or API call (§2, §9).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is JSON but not a valid envelope.
    InvalidMessage,
    /// An app message without an `id`.
    MissingId,
    /// The client sent a type only the server may send.
    ReservedType,
    /// A room name that breaks the naming rule.
    InvalidRoom,
    /// The token does not allow this (e.g. joining a room outside its `rooms` claim).
    Forbidden,
    /// The connection is already in `WS_MAX_ROOMS_PER_CONNECTION` rooms.
    TooManyRooms,
    /// An `ack` with a `seq` above the newest inbox message.
    InvalidAck,
    /// The client sends faster than its allowance.
    RateLimited,
    /// The gateway could not store the message; the client keeps it and resends later.
    Unavailable,
    /// `refresh_token` with a token that is malformed, badly signed or lacks claims.
    InvalidToken,
    /// `refresh_token` with a token whose `exp` has passed.
    TokenExpired,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::MissingId => "missing_id",
            ErrorCode::ReservedType => "reserved_type",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::InvalidAck => "invalid_ack",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `code` in the body of a refused handshake or a failed HTTP API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpErrorCode {
    /// 403: the `Origin` header is not on the allow-list.
    OriginForbidden,
    /// 401: the token is missing, malformed, badly signed, of the wrong algorithm, or lacks claims.
    InvalidToken,
    /// 401: the token's `exp` has passed.
    TokenExpired,
    /// 400: a query parameter breaks its rule.
    InvalidParams,
    /// 403: the token does not grant this app.
    AppForbidden,
    /// 429: the user holds `WS_MAX_CONNECTIONS_PER_USER` connections for this app already.
    TooManyConnections,
    /// 429: too many attempts; see `Retry-After`.
    RateLimited,
    /// 503: the node is shutting down.
    ShuttingDown,
    /// 503: a dependency (Redis) is unavailable.
    Unavailable,
    /// 401: the admin API key is missing or wrong.
    Unauthorized,
    /// 400: the API request body or query is malformed.
    InvalidRequest,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, not with this method (see `Allow`).
    MethodNotAllowed,
    /// 413: the request body is larger than the API accepts.
    PayloadTooLarge,
    /// 409: a request with the same `Idempotency-Key` is still being processed.
    IdempotencyInProgress,
    /// 422: the `Idempotency-Key` was used with a different request.
    IdempotencyKeyReused,
    /// 500: the gateway failed.
    Internal,
}

impl HttpErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpErrorCode::OriginForbidden => "origin_forbidden",
            HttpErrorCode::InvalidToken => "invalid_token",
            HttpErrorCode::TokenExpired => "token_expired",
            HttpErrorCode::InvalidParams => "invalid_params",
            HttpErrorCode::AppForbidden => "app_forbidden",
            HttpErrorCode::TooManyConnections => "too_many_connections",
            HttpErrorCode::RateLimited => "rate_limited",
            HttpErrorCode::ShuttingDown => "shutting_down",
            HttpErrorCode::Unavailable => "unavailable",
            HttpErrorCode::Unauthorized => "unauthorized",
            HttpErrorCode::InvalidRequest => "invalid_request",
            HttpErrorCode::NotFound => "not_found",
            HttpErrorCode::MethodNotAllowed => "method_not_allowed",
            HttpErrorCode::PayloadTooLarge => "payload_too_large",
            HttpErrorCode::IdempotencyInProgress => "idempotency_in_progress",
            HttpErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            HttpErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            HttpErrorCode::InvalidParams | HttpErrorCode::InvalidRequest => 400,
            HttpErrorCode::InvalidToken
            | HttpErrorCode::TokenExpired
            | HttpErrorCode::Unauthorized => 401,
            HttpErrorCode::OriginForbidden | HttpErrorCode::AppForbidden => 403,
            HttpErrorCode::NotFound => 404,
            HttpErrorCode::MethodNotAllowed => 405,
            HttpErrorCode::PayloadTooLarge => 413,
            HttpErrorCode::IdempotencyInProgress => 409,
            HttpErrorCode::IdempotencyKeyReused => 422,
            HttpErrorCode::TooManyConnections | HttpErrorCode::RateLimited => 429,
            HttpErrorCode::Internal => 500,
            HttpErrorCode::ShuttingDown | HttpErrorCode::Unavailable => 503,
        }
    }

    /// Whether a client should try the same request again (after a fresh token or a backoff).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            HttpErrorCode::InvalidToken
                | HttpErrorCode::TokenExpired
                | HttpErrorCode::TooManyConnections
                | HttpErrorCode::RateLimited
                | HttpErrorCode::ShuttingDown
                | HttpErrorCode::Unavailable
                | HttpErrorCode::IdempotencyInProgress
                | HttpErrorCode::Internal
        )
    }
}

/// `{"error":{"code":"<code>","message":"<human text>"}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpErrorBody {
    /// The error.
    pub error: HttpErrorDetail,
}

/// The inside of [`HttpErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpErrorDetail {
    /// Machine-readable code.
    pub code: HttpErrorCode,
    /// Text for humans.
    pub message: String,
}

impl HttpErrorBody {
    /// A body with this code and message.
    pub fn new(code: HttpErrorCode, message: impl Into<String>) -> Self {
        HttpErrorBody {
            error: HttpErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_codes_use_their_wire_names() {
        for code in [
            ErrorCode::InvalidMessage,
            ErrorCode::MissingId,
            ErrorCode::ReservedType,
            ErrorCode::InvalidRoom,
            ErrorCode::Forbidden,
            ErrorCode::TooManyRooms,
            ErrorCode::InvalidAck,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn http_bodies_have_the_documented_shape() {
        let body = HttpErrorBody::new(HttpErrorCode::TooManyConnections, "limit");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"code":"too_many_connections","message":"limit"}}"#
        );
        assert_eq!(HttpErrorCode::TooManyConnections.status(), 429);
        assert_eq!(HttpErrorCode::OriginForbidden.status(), 403);
        assert_eq!(HttpErrorCode::TokenExpired.status(), 401);
        assert_eq!(HttpErrorCode::ShuttingDown.status(), 503);
        assert!(!HttpErrorCode::AppForbidden.retryable());
        assert!(HttpErrorCode::TokenExpired.retryable());
        for code in [
            HttpErrorCode::OriginForbidden,
            HttpErrorCode::InvalidToken,
            HttpErrorCode::TokenExpired,
            HttpErrorCode::InvalidParams,
            HttpErrorCode::AppForbidden,
            HttpErrorCode::TooManyConnections,
            HttpErrorCode::RateLimited,
            HttpErrorCode::ShuttingDown,
            HttpErrorCode::Unavailable,
            HttpErrorCode::Unauthorized,
            HttpErrorCode::InvalidRequest,
            HttpErrorCode::NotFound,
            HttpErrorCode::Internal,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
