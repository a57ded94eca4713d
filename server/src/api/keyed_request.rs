//! `Idempotency-Key` on `POST /v1/send/*`: a backend that retries a send after a timeout
//! or a dropped connection must not deliver "order 123 was delivered" twice. The flow is
//! [`crate::broker::idempotency::once`]; this module reads the header and turns each
//! outcome into an HTTP answer:
//!
//! - first time: the send's answer;
//! - the same request again (path and typed body, see
//!   [`crate::broker::idempotency::fingerprint`]): the first answer, with
//!   `Idempotent-Replayed: true`, nothing sent;
//! - the same key while the first runs: 409 `idempotency_in_progress`, `Retry-After: 1`;
//! - the same key with a different request: 422 `idempotency_key_reused`.
//!
//! Records live `API_IDEMPOTENCY_TTL` seconds in the broker, scoped by app.

use super::error::ApiError;
use crate::broker::idempotency::{self, check_key, Marked, Marker, Outcome};
use crate::state::Shared;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use tether_protocol::HttpErrorCode;

/// The request header.
pub const KEY_HEADER: &str = "idempotency-key";
/// The answer header on a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A request that carries an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    key: String,
    fingerprint: String,
}

impl Keyed {
    /// The id of the message of a keyed request that names none: the same for every
    /// retry ([`idempotency::derived_id`]).
    pub fn message_id(&self, app: &str) -> String {
        idempotency::derived_id(app, &self.key, &self.fingerprint)
    }

    /// The key from `headers`, with the fingerprint of the request (`path`, the typed
    /// `request`). `None` without the header; 400 for a key that is empty, longer than
    /// [`idempotency::MAX_KEY_LEN`], or holds anything but visible ASCII.
    pub fn from_request<T: Serialize>(
        headers: &HeaderMap,
        path: &str,
        request: &T,
    ) -> Result<Option<Keyed>, ApiError> {
        let Some(value) = headers.get(KEY_HEADER) else {
            return Ok(None);
        };
        let key = value.to_str().unwrap_or("\u{0}");
        check_key(key).map_err(ApiError::invalid)?;
        Ok(Some(Keyed {
            key: key.to_owned(),
            fingerprint: idempotency::fingerprint(path, request),
        }))
    }
}

/// Runs `send` once per key: directly without one; with one, through the broker's
/// records, answering as the module says. The keyed flow runs on a task of its own: a
/// backend that gives up waiting (its HTTP client times out, the connection drops, hyper
/// drops this handler) must not stop it halfway, with the key left claimed and the
/// message perhaps stored; it finishes and records its answer for the retry.
pub async fn once<T, F, Fut>(
    shared: Arc<Shared>,
    app: String,
    keyed: Option<Keyed>,
    send: F,
) -> Result<Response, ApiError>
where
    T: Serialize + Send + 'static,
    F: FnOnce(Option<Marker>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Marked<T>, ApiError>> + Send + 'static,
{
    let Some(Keyed { key, fingerprint }) = keyed else {
        return send(None)
            .await
            .map(|answer| axum::Json(answer.into_inner()).into_response());
    };
    let ttl_ms = shared.config.idempotency_ttl_s.saturating_mul(1000);
    let tracker = shared.sends.clone();
    let task = tracker.spawn(async move {
        let records = shared.broker.idempotency();
        idempotency::once(records, &app, &key, &fingerprint, ttl_ms, send).await
    });
    let outcome = task.await.map_err(|e| {
        tracing::error!(error = %e, "an idempotent send's task failed");
        ApiError::new(
            HttpErrorCode::Internal,
            "the send failed inside the gateway; its Idempotency-Key stays claimed until \
             a retry takes it over (30 s)",
        )
    })??;
    match outcome {
        Outcome::Sent(answer) => Ok(axum::Json(answer).into_response()),
        Outcome::Replayed(answer) => {
            let mut response = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                answer,
            )
                .into_response();
            response
                .headers_mut()
                .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            Ok(response)
        }
        Outcome::InProgress => {
            let mut response = ApiError::new(
                HttpErrorCode::IdempotencyInProgress,
                "a request with this Idempotency-Key is still being processed; retry shortly",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(response)
        }
        Outcome::Reused => Err(ApiError::key_reused()),
        Outcome::Corrupt => Err(ApiError::new(
            HttpErrorCode::Internal,
            "the record under this Idempotency-Key is unreadable; nothing was sent",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_short_visible_ascii() {
        let with = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(KEY_HEADER, HeaderValue::from_bytes(value).unwrap());
            Keyed::from_request(&headers, "/v1/send/app", &serde_json::json!({}))
        };
        assert!(with(b"order-123-delivered").unwrap().is_some());
        let longest = "k".repeat(idempotency::MAX_KEY_LEN);
        assert!(with(longest.as_bytes()).unwrap().is_some());
        let too_long = "k".repeat(idempotency::MAX_KEY_LEN + 1);
        for bad in [&b""[..], b"has space", too_long.as_bytes(), b"caf\xc3\xa9"] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
        let none = Keyed::from_request(&HeaderMap::new(), "/", &serde_json::json!({}));
        assert_eq!(none.unwrap(), None);
    }
}
