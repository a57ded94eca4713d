//! Idempotency records of the backend API (`Idempotency-Key` on `POST /v1/send/*`): what
//! the broker keeps under one (app, key), and what a new request with that key must do.
//! The record logic is pure; the embedded broker keeps the encoded text in memory and
//! Redis (a gateway's connection, or a `Publisher`'s: `impl Store for Conn`) in a key,
//! written by Lua scripts (`scripts::IDEMPOTENCY_CLAIM`, ...) that read the same format;
//! see [`Store`]. [`once`] is the whole flow, shared by the HTTP API and the
//! `Publisher`.
//!
//! - `p:<ms>:<claim>:<fingerprint>`: a request with this fingerprint started at `<ms>`
//!   (the broker's clock) and has not answered yet; `<claim>` is a random token of that
//!   one attempt, so only it may record its answer or free the key. One older than
//!   [`ABANDONED_AFTER_MS`] is taken to be dead (its gateway crashed or lost Redis
//!   mid-request) and may be claimed again, by a new attempt with a new token.
//! - `d:<fingerprint>:<answer>`: the request succeeded; `<answer>` is its JSON body.
//!
//! Tokens are 16 and fingerprints 64 hex digits, so neither holds the `:` that ends it.

use super::BrokerError;
use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use tracing::warn;

/// A keyed send's marker: the broker writes it in the same atomic step as the send it
/// marks (the inbox append, the stream append, the publish), under the send's key in the
/// slot of what it sends to, and a send that finds it sends nothing and answers what the
/// first one did. So a retry after any crash, any 503 and any takeover of an abandoned
/// claim stores nothing twice. It lives as long as the claim records do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The request's `Idempotency-Key`.
    pub key: String,
    /// Its fingerprint ([`fingerprint`]): a marker of another request is
    /// [`BrokerError::KeyReused`].
    pub fingerprint: String,
    /// How long the marker is kept, ms.
    pub ttl_ms: u64,
}

/// The answer of a send that carried a [`Marker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marked<T> {
    /// Sent now.
    New(T),
    /// Sent before under the same key: what the first send answered; nothing was sent.
    Found(T),
}

impl<T> Marked<T> {
    /// The answer either way.
    pub fn into_inner(self) -> T {
        match self {
            Marked::New(t) | Marked::Found(t) => t,
        }
    }

    /// Whether an earlier send's marker answered.
    pub fn found(&self) -> bool {
        matches!(self, Marked::Found(_))
    }

    /// Maps the answer, keeping whether it was found.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Marked<U> {
        match self {
            Marked::New(t) => Marked::New(f(t)),
            Marked::Found(t) => Marked::Found(f(t)),
        }
    }
}

/// The message id of a keyed send whose request names none: derived from the app, the key
/// and the request, so every retry (on any node) carries the same id, and a client that
/// drops messages by id drops nothing of a retry either. Formatted as a UUID (version 8).
pub fn derived_id(app: &str, key: &str, fingerprint: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [app, key, fingerprint] {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize()[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Longest key accepted (a UUID is 36; Stripe allows 255).
pub const MAX_KEY_LEN: usize = 255;

/// Shortest record lifetime (`API_IDEMPOTENCY_TTL`), s: well above
/// [`ABANDONED_AFTER_MS`], so a pending record never expires while its attempt may still
/// be running (a retry would then send a second time).
pub const MIN_TTL_S: u64 = 60;

/// Longest record lifetime, s (7 days, the inbox's).
pub const MAX_TTL_S: u64 = 604_800;

/// Where the records live: the broker (every gateway of the cluster sees them), or the
/// Redis a `Publisher` writes to.
#[async_trait]
pub trait Store: Send + Sync {
    /// Claims `key` of `app` for one attempt (`claim`, a fresh token) at a request with
    /// `fingerprint`: stores a pending [`Record`] kept `ttl_ms`, unless the key holds a
    /// record that is not [abandoned](Record::abandoned).
    async fn claim_idempotency(
        &self,
        app: &str,
        key: &str,
        claim: &str,
        fingerprint: &str,
        ttl_ms: u64,
    ) -> Result<Claim, BrokerError>;
    /// The attempt that stored `pending` succeeded: replaces it with `done`, keeping the
    /// key's expiry. False (nothing written) when the key no longer holds `pending`: it
    /// expired, or another attempt took an abandoned claim over.
    async fn complete_idempotency(
        &self,
        app: &str,
        key: &str,
        pending: &str,
        done: &str,
    ) -> Result<bool, BrokerError>;
    /// The attempt that stored `pending` failed: frees the key for a retry, only while it
    /// still holds `pending`.
    async fn release_idempotency(
        &self,
        app: &str,
        key: &str,
        pending: &str,
    ) -> Result<(), BrokerError>;
}

/// What [`Store::claim_idempotency`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this attempt's: the pending record as stored.
    Claimed(String),
    /// The key holds this (a record of an earlier or running attempt).
    Found(String),
}

/// Checks a key: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))
    }
}

/// SHA-256 (hex) of the operation's `path`, a newline, and `request` as canonical JSON
/// ([`canonical`]). The typed request, not the bytes that carried it: a retry whose JSON
/// differs in layout, key order or an absent-versus-null optional field is the same
/// request, and a `Publisher` and the HTTP API agree on it.
pub fn fingerprint<T: Serialize>(path: &str, request: &T) -> String {
    let mut text = String::new();
    if let Ok(value) = serde_json::to_value(request) {
        canonical(&value, &mut text);
    }
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in hasher.finalize() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Writes `value` with object keys sorted at every depth, numbers as numbers and no
/// whitespace, whatever serde_json features a binary was built with (a `Publisher` in a
/// backend may have `preserve_order` or `arbitrary_precision` on through some other
/// crate). Integers beyond 64 bits and decimals compare as their f64 value.
pub fn canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        // As a number, not as the text it came in: with serde_json's
        // `arbitrary_precision` on somewhere, `1.50` would stay `1.50`.
        Value::Number(number) => {
            if let Some(n) = number.as_u64() {
                let _ = write!(out, "{n}");
            } else if let Some(n) = number.as_i64() {
                let _ = write!(out, "{n}");
            } else {
                let float = number.as_f64().and_then(serde_json::Number::from_f64);
                out.push_str(&float.map_or_else(|| number.to_string(), |f| f.to_string()));
            }
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What one keyed request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// It claimed the key and sent; its answer is recorded (or, if recording failed, it
    /// was logged and counted as `not_recorded`).
    Sent(T),
    /// The same request succeeded before: its answer (JSON). Nothing was sent.
    Replayed(String),
    /// The same request is running now. Nothing was sent.
    InProgress,
    /// The key belongs to a different request. Nothing was sent.
    Reused,
    /// The key holds something that is not a record. Nothing was sent.
    Corrupt,
}

/// Runs `send` at most once per (app, key): claims the key, sends, records the answer;
/// or reports what the key holds. `send` gets the [`Marker`] to write with what it sends,
/// so a send that an earlier attempt already made (its gateway crashed before recording
/// the answer, or answered 503 although the message was stored) finds the marker and
/// sends nothing: that answer is replayed. A failed `send` frees the key, so a retry runs
/// (and finds the marker if the failed one stored after all). Counts
/// `tether_api_idempotency_total{outcome}`.
pub async fn once<S, T, E, F, Fut>(
    store: &S,
    app: &str,
    key: &str,
    fingerprint: &str,
    ttl_ms: u64,
    send: F,
) -> Result<Outcome<T>, E>
where
    S: Store + ?Sized,
    T: Serialize,
    E: From<BrokerError>,
    F: FnOnce(Option<Marker>) -> Fut,
    Fut: Future<Output = Result<Marked<T>, E>>,
{
    let claim = format!("{:016x}", rand::random::<u64>());
    let pending = match store
        .claim_idempotency(app, key, &claim, fingerprint, ttl_ms)
        .await?
    {
        Claim::Claimed(pending) => pending,
        Claim::Found(stored) => {
            let outcome = verdict(&stored, fingerprint);
            counted(match outcome {
                Outcome::Replayed(_) => "replayed",
                Outcome::InProgress => "in_progress",
                Outcome::Reused => "reused",
                _ => "corrupt",
            });
            return Ok(outcome);
        }
    };
    counted("first");
    let marker = Marker {
        key: key.to_owned(),
        fingerprint: fingerprint.to_owned(),
        ttl_ms,
    };
    match send(Some(marker)).await {
        Ok(marked) => {
            let found = marked.found();
            if found {
                counted("marker");
            }
            let answer = marked.into_inner();
            let recorded = match serde_json::to_string(&answer) {
                Ok(text) => {
                    let done = Record::Done {
                        fingerprint: fingerprint.to_owned(),
                        answer: text,
                    };
                    match store
                        .complete_idempotency(app, key, &pending, &done.encode())
                        .await
                    {
                        Ok(true) => Ok(()),
                        Ok(false) => Err("the claim expired or was taken over".to_owned()),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = recorded {
                // Sent: the caller must hear so. A retry now finds the claim pending
                // (in progress) until it counts as abandoned, then sends again.
                warn!(%app, error = %e, "sent, but the idempotency record could not be completed");
                counted("not_recorded");
            }
            if found {
                if let Ok(text) = serde_json::to_string(&answer) {
                    return Ok(Outcome::Replayed(text));
                }
            }
            Ok(Outcome::Sent(answer))
        }
        Err(e) => {
            if let Err(release) = store.release_idempotency(app, key, &pending).await {
                warn!(%app, error = %release, "a failed idempotent request could not free its key");
            }
            Err(e)
        }
    }
}

fn counted(outcome: &'static str) {
    metrics::counter!("tether_api_idempotency_total", "outcome" => outcome).increment(1);
}

/// How long a claimed request may run before another with the same key may take over.
/// Far above any send (milliseconds), below any sensible client retry schedule's patience.
pub const ABANDONED_AFTER_MS: u64 = 30_000;

/// What is stored under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A request with `fingerprint` is running since `at_ms`.
    Pending {
        /// When it was claimed (ms, the broker's clock).
        at_ms: u64,
        /// The attempt's token.
        claim: String,
        /// Its request's fingerprint.
        fingerprint: String,
    },
    /// A request with `fingerprint` succeeded.
    Done {
        /// Its request's fingerprint.
        fingerprint: String,
        /// The JSON body it answered.
        answer: String,
    },
}

impl Record {
    /// The stored text.
    pub fn encode(&self) -> String {
        match self {
            Record::Pending {
                at_ms,
                claim,
                fingerprint,
            } => format!("p:{at_ms}:{claim}:{fingerprint}"),
            Record::Done {
                fingerprint,
                answer,
            } => format!("d:{fingerprint}:{answer}"),
        }
    }

    /// Reads stored text; `None` when it is not a record (then the key is treated as
    /// free to claim by nobody: see [`Outcome::Corrupt`]).
    pub fn decode(text: &str) -> Option<Record> {
        if let Some(rest) = text.strip_prefix("p:") {
            let (at, rest) = rest.split_once(':')?;
            let (claim, fingerprint) = rest.split_once(':')?;
            return Some(Record::Pending {
                at_ms: at.parse().ok()?,
                claim: claim.to_owned(),
                fingerprint: fingerprint.to_owned(),
            });
        }
        let rest = text.strip_prefix("d:")?;
        let (fingerprint, answer) = rest.split_once(':')?;
        Some(Record::Done {
            fingerprint: fingerprint.to_owned(),
            answer: answer.to_owned(),
        })
    }

    /// Whether a claim at `now_ms` may replace this record: only a pending request that
    /// has run for [`ABANDONED_AFTER_MS`].
    pub fn abandoned(&self, now_ms: u64) -> bool {
        matches!(self, Record::Pending { at_ms, .. }
            if now_ms.saturating_sub(*at_ms) >= ABANDONED_AFTER_MS)
    }
}

/// What a request with `fingerprint` that found `stored` under its key comes to (never
/// [`Outcome::Sent`]: it sends nothing).
pub fn verdict<T>(stored: &str, fingerprint: &str) -> Outcome<T> {
    match Record::decode(stored) {
        None => Outcome::Corrupt,
        Some(Record::Done {
            fingerprint: f,
            answer,
        }) if f == fingerprint => Outcome::Replayed(answer),
        Some(Record::Pending { fingerprint: f, .. }) if f == fingerprint => Outcome::InProgress,
        Some(_) => Outcome::Reused,
    }
}

/// The records in one process's memory (the embedded broker), with their expiry.
#[derive(Debug, Default)]
pub struct Records {
    by_key: HashMap<(String, String), (String, u64)>,
    /// Expired records are dropped when the map has doubled since the last sweep, so the
    /// sweep costs O(1) per claim on average.
    swept_at_len: usize,
}

impl Records {
    /// [`Store::claim_idempotency`] at `now_ms`.
    pub fn claim(
        &mut self,
        app: &str,
        key: &str,
        claim: &str,
        fingerprint: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Claim {
        self.sweep(now_ms);
        let slot = (app.to_owned(), key.to_owned());
        if let Some((stored, expires_ms)) = self.by_key.get(&slot) {
            let alive = *expires_ms > now_ms;
            let abandoned = Record::decode(stored).is_some_and(|r| r.abandoned(now_ms));
            if alive && !abandoned {
                return Claim::Found(stored.clone());
            }
        }
        let pending = Record::Pending {
            at_ms: now_ms,
            claim: claim.to_owned(),
            fingerprint: fingerprint.to_owned(),
        }
        .encode();
        self.by_key
            .insert(slot, (pending.clone(), now_ms.saturating_add(ttl_ms)));
        Claim::Claimed(pending)
    }

    /// [`Store::complete_idempotency`] at `now_ms`.
    pub fn complete(
        &mut self,
        app: &str,
        key: &str,
        pending: &str,
        done: &str,
        now_ms: u64,
    ) -> bool {
        let slot = (app.to_owned(), key.to_owned());
        match self.by_key.get_mut(&slot) {
            Some((stored, expires_ms)) if *expires_ms > now_ms && stored == pending => {
                *stored = done.to_owned();
                true
            }
            _ => false,
        }
    }

    /// [`Store::release_idempotency`].
    pub fn release(&mut self, app: &str, key: &str, pending: &str) {
        let slot = (app.to_owned(), key.to_owned());
        if self
            .by_key
            .get(&slot)
            .is_some_and(|(stored, _)| stored == pending)
        {
            self.by_key.remove(&slot);
        }
    }

    /// Records held (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn sweep(&mut self, now_ms: u64) {
        if self.by_key.len() < 2 * self.swept_at_len.max(512) {
            return;
        }
        self.by_key
            .retain(|_, (_, expires_ms)| *expires_ms > now_ms);
        self.swept_at_len = self.by_key.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_pins_the_fingerprint() {
        let value: serde_json::Value = serde_json::from_str(
            r#"{"b":[{"z":1,"a":"x\"y"}],"a":null,"c":{"y":true,"x":1.50,"w":-3,"v":2e3}}"#,
        )
        .unwrap();
        let mut text = String::new();
        canonical(&value, &mut text);
        assert_eq!(
            text,
            r#"{"a":null,"b":[{"a":"x\"y","z":1}],"c":{"v":2000.0,"w":-3,"x":1.5,"y":true}}"#
        );
        // Pinned: a change to the canonical form would orphan every stored record.
        let request = serde_json::json!({"userId": "u", "app": "shop", "message": {"type": "n"}});
        assert_eq!(
            fingerprint("/v1/send/user", &request),
            "dc53bd2b873a2a925df0056caa779694b35438bc089654fad1ffaa4a60271e99"
        );
    }

    #[test]
    fn the_fingerprint_is_the_typed_request_not_its_layout() {
        use tether_protocol::api::SendToUser;
        let parse = |text: &str| serde_json::from_str::<SendToUser>(text).unwrap();
        let a =
            parse(r#"{"app":"shop","userId":"u","message":{"type":"n","data":{"x":1,"y":[2,3]}}}"#);
        let b = parse(
            "{ \"userId\": \"u\",\n \"message\": {\"data\": {\"y\": [2, 3], \"x\": 1}, \"type\": \"n\"}, \"app\": \"shop\" }",
        );
        let path = "/v1/send/user";
        assert_eq!(fingerprint(path, &a), fingerprint(path, &b));
        assert_eq!(fingerprint(path, &a).len(), 64);
        let null_data = parse(r#"{"app":"shop","userId":"u","message":{"type":"n","data":null}}"#);
        let no_data = parse(r#"{"app":"shop","userId":"u","message":{"type":"n"}}"#);
        assert_eq!(fingerprint(path, &null_data), fingerprint(path, &no_data));
        let other =
            parse(r#"{"app":"shop","userId":"u","message":{"type":"n","data":{"x":1,"y":[3,2]}}}"#);
        assert_ne!(fingerprint(path, &a), fingerprint(path, &other));
        assert_ne!(fingerprint(path, &a), fingerprint("/v1/send/room", &a));
    }

    fn claimed(claim: Claim) -> String {
        match claim {
            Claim::Claimed(pending) => pending,
            Claim::Found(stored) => panic!("expected a claim, found {stored}"),
        }
    }

    fn found(claim: Claim) -> String {
        match claim {
            Claim::Found(stored) => stored,
            Claim::Claimed(pending) => panic!("expected a record, claimed {pending}"),
        }
    }

    #[test]
    fn in_memory_a_key_is_claimed_once_completed_released_and_expires() {
        let mut records = Records::default();
        let other = "f".repeat(64);
        let done = |answer: &str| {
            Record::Done {
                fingerprint: FP.into(),
                answer: answer.into(),
            }
            .encode()
        };
        let first = claimed(records.claim("shop", "k", "c1", FP, 60_000, 1_000));
        assert_eq!(
            Record::decode(&first),
            Some(Record::Pending {
                at_ms: 1_000,
                claim: "c1".into(),
                fingerprint: FP.into()
            })
        );
        let running = found(records.claim("shop", "k", "c2", FP, 60_000, 1_001));
        assert_eq!(verdict::<()>(&running, FP), Outcome::InProgress);
        // Another app's key of the same name is its own.
        claimed(records.claim("blog", "k", "c3", FP, 60_000, 1_001));
        // Only the attempt that claimed may record or free the key.
        let someone_else = first.replace(":c1:", ":c9:");
        records.release("shop", "k", &someone_else);
        assert!(!records.complete("shop", "k", &someone_else, &done("x"), 1_002));
        found(records.claim("shop", "k", "c4", FP, 60_000, 1_002));
        assert!(records.complete("shop", "k", &first, &done(r#"{"id":"m"}"#), 1_003));
        let stored = found(records.claim("shop", "k", "c5", &other, 60_000, 1_004));
        assert_eq!(
            verdict::<()>(&stored, FP),
            Outcome::Replayed(r#"{"id":"m"}"#.into())
        );
        assert_eq!(verdict::<()>(&stored, &other), Outcome::Reused);
        // A completed record is not released; it expires with its key.
        records.release("shop", "k", &first);
        found(records.claim("shop", "k", "c6", FP, 60_000, 60_999));
        let again = claimed(records.claim("shop", "k", "c7", FP, 60_000, 61_000));
        // Released by its own attempt: free for the retry at once.
        records.release("shop", "k", &again);
        claimed(records.claim("shop", "k", "c8", FP, 60_000, 61_001));
    }

    #[test]
    fn in_memory_an_abandoned_claim_is_taken_over_and_the_first_attempt_loses_it() {
        let mut records = Records::default();
        let first = claimed(records.claim("shop", "k", "c1", FP, 600_000, 0));
        found(records.claim("shop", "k", "c2", FP, 600_000, ABANDONED_AFTER_MS - 1));
        let second = claimed(records.claim("shop", "k", "c3", FP, 600_000, ABANDONED_AFTER_MS));
        // The first attempt comes back late: it may neither record over the second's
        // claim nor free it.
        let late = Record::Done {
            fingerprint: FP.into(),
            answer: "{}".into(),
        }
        .encode();
        assert!(!records.complete("shop", "k", &first, &late, ABANDONED_AFTER_MS + 1));
        records.release("shop", "k", &first);
        assert_eq!(
            found(records.claim("shop", "k", "c4", FP, 600_000, ABANDONED_AFTER_MS + 2)),
            second
        );
    }

    #[test]
    fn in_memory_expired_records_are_swept() {
        let mut records = Records::default();
        for n in 0..2_000 {
            records.claim("shop", &n.to_string(), "c", FP, 10, n);
        }
        assert!(records.len() < 1_100, "{}", records.len());
    }

    const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn records_survive_their_text() {
        for record in [
            Record::Pending {
                at_ms: 1_764_000_000_000,
                claim: "00ff00ff00ff00ff".into(),
                fingerprint: FP.into(),
            },
            Record::Done {
                fingerprint: FP.into(),
                answer: r#"{"id":"a:b","seq":3}"#.into(),
            },
        ] {
            assert_eq!(Record::decode(&record.encode()), Some(record));
        }
        for junk in [
            "",
            "x",
            "p:",
            "p:abc:c:f",
            "p:1:nocolon",
            "d:nocolon",
            "q:1:f",
        ] {
            assert_eq!(Record::decode(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_retry_replays_waits_or_is_refused() {
        let done = Record::Done {
            fingerprint: FP.into(),
            answer: "{}".into(),
        }
        .encode();
        let pending = Record::Pending {
            at_ms: 5,
            claim: "c".into(),
            fingerprint: FP.into(),
        }
        .encode();
        let other = "f".repeat(64);
        assert_eq!(verdict::<()>(&done, FP), Outcome::Replayed("{}".into()));
        assert_eq!(verdict::<()>(&done, &other), Outcome::Reused);
        assert_eq!(verdict::<()>(&pending, FP), Outcome::InProgress);
        assert_eq!(verdict::<()>(&pending, &other), Outcome::Reused);
        assert_eq!(verdict::<()>("1", FP), Outcome::Corrupt);
    }

    #[test]
    fn only_a_pending_request_that_ran_too_long_is_abandoned() {
        let pending = Record::Pending {
            at_ms: 1_000,
            claim: "c".into(),
            fingerprint: FP.into(),
        };
        assert!(!pending.abandoned(1_000 + ABANDONED_AFTER_MS - 1));
        assert!(pending.abandoned(1_000 + ABANDONED_AFTER_MS));
        let done = Record::Done {
            fingerprint: FP.into(),
            answer: "{}".into(),
        };
        assert!(!done.abandoned(u64::MAX));
    }
}
