//! API errors as HTTP responses with the protocol's error body.

use crate::broker::BrokerError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tether_protocol::{HttpErrorBody, HttpErrorCode};

/// An API call that failed.
#[derive(Debug)]
pub struct ApiError {
    code: HttpErrorCode,
    message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: HttpErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// A 400 for a malformed request.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(HttpErrorCode::InvalidRequest, message)
    }

    /// A read the broker could not serve (the `From` conversion speaks of sends).
    pub fn unreadable(e: BrokerError) -> ApiError {
        match e {
            BrokerError::Unavailable(_) => {
                ApiError::new(HttpErrorCode::Unavailable, format!("{e}; retry later"))
            }
            BrokerError::BadRequest(message) => ApiError::invalid(message),
            BrokerError::KeyReused => ApiError::key_reused(),
        }
    }

    /// 422: the `Idempotency-Key` belongs to another request.
    pub fn key_reused() -> ApiError {
        ApiError::new(
            HttpErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request (path or body); \
             use a new key for a new request",
        )
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        match e {
            BrokerError::Unavailable(_) => ApiError::new(
                HttpErrorCode::Unavailable,
                format!(
                    "{e}; not confirmed (nearly always nothing was sent); retry later, with \
                     an Idempotency-Key a retry never sends twice"
                ),
            ),
            BrokerError::BadRequest(message) => ApiError::invalid(message),
            BrokerError::KeyReused => ApiError::key_reused(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(HttpErrorBody::new(self.code, self.message))).into_response()
    }
}

/// Decodes a JSON body, answering 400 with serde's explanation when it does not fit.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    use tether_protocol::depth;
    if depth::exceeds(body, depth::MAX_DEPTH) {
        return Err(ApiError::invalid(format!(
            "malformed JSON body: {}",
            depth::refusal()
        )));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))
}
