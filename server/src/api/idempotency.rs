//! `Idempotency-Key` on `POST /v1/send/*`: a backend that retries a send after a timeout
//! or a dropped connection must not deliver "order 123 was delivered" twice. The first
//! request with a key claims it in the broker (so every gateway of the cluster sees it),
//! sends, and stores its answer; a retry with the same key and the same request gets that
//! answer again (`Idempotent-Replayed: true`) and sends nothing. Records live
//! `API_IDEMPOTENCY_TTL` seconds; the key is scoped by app.
//!
//! - The same key while the first request still runs: 409 `idempotency_in_progress`
//!   with `Retry-After: 1` (a request that has run 30 s is taken to be dead, and the next
//!   retry runs in its place).
//! - The same key with a different request (path or body): 422 `idempotency_key_reused`.
//! - A request that fails (nothing sent: 503) frees its key, so the retry runs.
//!
//! The request's fingerprint is the SHA-256 of its path and its body as canonical JSON
//! (object keys sorted, no whitespace), so a retry whose JSON differs only in layout or
//! key order is the same request.

use super::error::ApiError;
use crate::broker::idempotency::{verdict, Verdict};
use crate::state::Shared;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics::counter;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::future::Future;
use tether_protocol::HttpErrorCode;
use tracing::{debug, warn};

/// The request header.
pub const KEY_HEADER: &str = "idempotency-key";
/// The answer header on a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted (a UUID is 36; Stripe allows 255).
pub const MAX_KEY_LEN: usize = 255;

/// A request that carries an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    key: String,
    fingerprint: String,
}

impl Keyed {
    /// The key from `headers`, with the fingerprint of the request (`path`, `body`).
    /// `None` without the header; 400 for a key that is empty, longer than
    /// [`MAX_KEY_LEN`], or holds anything but visible ASCII.
    pub fn from_request(
        headers: &HeaderMap,
        path: &str,
        body: &[u8],
    ) -> Result<Option<Keyed>, ApiError> {
        let Some(value) = headers.get(KEY_HEADER) else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
            .filter(|k| k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                ))
            })?;
        Ok(Some(Keyed {
            key: key.to_owned(),
            fingerprint: fingerprint(path, body)?,
        }))
    }
}

/// SHA-256 (hex) of `path`, a newline and `body` as canonical JSON.
pub fn fingerprint(path: &str, body: &[u8]) -> Result<String, ApiError> {
    // serde_json's maps are ordered by key (no `preserve_order`): writing the parsed
    // value back out is canonical.
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))?;
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(value.to_string().as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in hasher.finalize() {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

/// Runs `send` once per key: directly without one; with one, claimed first and its answer
/// stored, or the stored answer replayed.
pub async fn once<T, F, Fut>(
    shared: &Shared,
    app: &str,
    keyed: Option<Keyed>,
    send: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let Some(Keyed { key, fingerprint }) = keyed else {
        return send()
            .await
            .map(|answer| axum::Json(answer).into_response());
    };
    let broker = &shared.broker;
    let ttl_ms = shared.config.idempotency_ttl_s.saturating_mul(1000);
    if let Some(stored) = broker
        .claim_idempotency(app, &key, &fingerprint, ttl_ms)
        .await?
    {
        return match verdict(&stored, &fingerprint) {
            Verdict::Replay(answer) => {
                counted("replayed");
                debug!(%app, "idempotent request replayed");
                let mut response = json(answer);
                response
                    .headers_mut()
                    .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
                Ok(response)
            }
            Verdict::InProgress => {
                counted("in_progress");
                let error = ApiError::new(
                    HttpErrorCode::IdempotencyInProgress,
                    "a request with this Idempotency-Key is still being processed; retry shortly",
                );
                let mut response = error.into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                Ok(response)
            }
            Verdict::Reused => {
                counted("reused");
                Err(ApiError::new(
                    HttpErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was used with a different request (path or body); \
                     use a new key for a new request",
                ))
            }
            Verdict::Corrupt => Err(ApiError::new(
                HttpErrorCode::Internal,
                "the record under this Idempotency-Key is unreadable; nothing was sent",
            )),
        };
    }
    counted("first");
    match send().await {
        Ok(answer) => {
            let answer = serde_json::to_string(&answer)
                .map_err(|e| ApiError::new(HttpErrorCode::Internal, e.to_string()))?;
            if let Err(e) = broker
                .complete_idempotency(app, &key, &fingerprint, &answer)
                .await
            {
                // Sent: the caller must hear so. A retry now finds the claim pending (409)
                // until it counts as abandoned, then sends again.
                warn!(%app, error = %e, "sent, but the idempotency record could not be completed");
                counted("not_recorded");
            }
            Ok(json(answer))
        }
        Err(e) => {
            if let Err(release) = broker.release_idempotency(app, &key, &fingerprint).await {
                warn!(%app, error = %release, "a failed idempotent request could not free its key");
            }
            Err(e)
        }
    }
}

fn json(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn counted(outcome: &'static str) {
    counter!("tether_api_idempotency_total", "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_ignores_layout_and_key_order_but_not_content_or_path() {
        let a = fingerprint(
            "/v1/send/user",
            br#"{"app":"shop","userId":"u","message":{"type":"n","data":{"x":1,"y":2}}}"#,
        )
        .unwrap();
        let b = fingerprint(
            "/v1/send/user",
            b"{ \"userId\": \"u\",\n \"message\": {\"data\": {\"y\": 2, \"x\": 1}, \"type\": \"n\"}, \"app\": \"shop\" }",
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let other_body = fingerprint(
            "/v1/send/user",
            br#"{"app":"shop","userId":"u","message":{"type":"n","data":{"x":1,"y":3}}}"#,
        )
        .unwrap();
        let other_path = fingerprint(
            "/v1/send/room",
            br#"{"app":"shop","userId":"u","message":{"type":"n","data":{"x":1,"y":2}}}"#,
        )
        .unwrap();
        assert_ne!(a, other_body);
        assert_ne!(a, other_path);
    }

    #[test]
    fn keys_must_be_short_visible_ascii() {
        let with = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(KEY_HEADER, HeaderValue::from_bytes(value).unwrap());
            Keyed::from_request(&headers, "/v1/send/app", b"{}")
        };
        assert!(with(b"order-123-delivered").unwrap().is_some());
        assert!(with("k".repeat(MAX_KEY_LEN).as_bytes()).unwrap().is_some());
        for bad in [
            &b""[..],
            b"has space",
            "k".repeat(MAX_KEY_LEN + 1).as_bytes(),
            b"caf\xc3\xa9",
        ] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Keyed::from_request(&HeaderMap::new(), "/", b"{}").unwrap(),
            None
        );
    }
}
