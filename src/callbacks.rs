//! The host's side of the API, as uniffi foreign traits (Kotlin interfaces, Swift
//! protocols): the event listener, the token provider and the log sink, plus the records
//! they receive. Rust code implements them directly (the tests do).

use crate::engine::state::ConnectionStatus;
use crate::error::TetherError;
use std::sync::Arc;

/// A message from the backend.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InboundMessage {
    /// Message type.
    pub r#type: String,
    /// Message id (server-assigned).
    pub id: String,
    /// Inbox sequence, for messages sent to the user (durable).
    pub seq: Option<u64>,
    /// The room, for room messages.
    pub room: Option<String>,
    /// Position in its stream, for messages of a room with history or of the app's
    /// broadcast stream: strictly increasing within the stream, each delivered once.
    pub offset: Option<u64>,
    /// Payload as JSON text (`null` when absent).
    pub data_json: String,
    /// When the gateway stamped it (ms since the epoch; 0 when missing).
    pub ts: u64,
}

/// What happens on the connection. Called from one SDK thread at a time, in order; keep
/// each call short and hand work to the app's own threads.
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    /// The connection status changed.
    fn on_status(&self, status: ConnectionStatus);
    /// A message arrived. When this returns, the SDK counts it as processed: it will not
    /// deliver it again. Only a crash in the moment before the SDK has written that down
    /// (one flush) can deliver it again after a restart, and never more than the last 64
    /// messages.
    fn on_message(&self, message: InboundMessage);
    /// The gateway stored message `id` from `send_message`.
    fn on_ack(&self, id: String);
    /// Something failed; the SDK already does what it can (retries, backs off).
    fn on_error(&self, error: Arc<TetherError>);
    /// Message `id` from `send_message` was older than `max_message_age_s` (or its
    /// `ttl_ms`) before it could be delivered, and was dropped: it will not be sent
    /// (again; one written to an earlier connection that ended before its ack may have
    /// reached the gateway all the same).
    fn on_expired(&self, id: String);
    /// Message `id` was still waiting to be sent when message `by` with the same
    /// `replace_key` was stored (latest wins), and was dropped: it will not be sent (again;
    /// one written to an earlier connection that ended before its ack may have reached
    /// the gateway all the same).
    fn on_replaced(&self, id: String, by: String);
    /// The stream of `room` (`None`: the app's broadcast stream) lost messages the app
    /// will never receive: the gateway's history no longer holds what came after the
    /// last message the app processed (it was away too long, or the history was lost).
    /// Refetch that room's state from the backend; delivery goes on with the messages
    /// that follow.
    fn on_stream_reset(&self, room: Option<String>);
}

/// Gives the SDK a token. Called before each connection attempt, after the gateway
/// refuses one (HTTP 401, close 4001), and shortly before the connection's token runs
/// out (it then goes to the gateway on the open connection). Never called twice at once,
/// unless a call ran past 30 s, was cancelled and went on regardless. It is async on every
/// platform (a Kotlin `suspend fun`, a Swift `async` method, a JavaScript `Promise`), so
/// it may refresh the token over the network with the app's own async token API. A call
/// still running after 30 s is cancelled (the coroutine, the task, or the `AbortSignal`
/// JavaScript receives) and counts as a failure; the next attempt calls again.
#[uniffi::export(with_foreign)]
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync {
    /// A valid token, or `None` when the user is signed out: the client then stops in
    /// `Failed` and does not retry until `connect()` is called again. An error (in
    /// Kotlin, Swift or JavaScript: any exception the provider throws) means "no token
    /// for now": the SDK reports it (`on_error`, kind `Auth`, with its message) and
    /// retries with backoff. Rust implementations must not block the thread: await.
    async fn fetch_token(&self) -> Result<Option<String>, TokenError>;
}

/// Why a token provider has no token for now (a network failure, the token service
/// down). Any other exception a Kotlin, Swift or JavaScript provider throws arrives as
/// `Failed` with the exception's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TokenError {
    /// Fetching failed; `reason` says why (it reaches the app's error events).
    #[error("{reason}")]
    Failed {
        /// What went wrong.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for TokenError {
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> TokenError {
        TokenError::Failed {
            reason: error.reason,
        }
    }
}

/// Longest part of an app callback's error text the SDK keeps (reports and logs).
const REASON_CHARS: usize = 200;

/// The first line of an app callback's error text (a token provider's error, a listener's
/// exception), at most [`REASON_CHARS`] characters: what the app's exception says, without
/// a stack trace, a cause chain or whatever a long error description drags along (an HTTP
/// client's URL and response body).
pub(crate) fn app_reason(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(REASON_CHARS) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, uniffi::Enum)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal operation.
    Info,
    /// Something unusual.
    Warn,
    /// Something failed.
    Error,
}

/// Receives the SDK's log lines (for Logcat, os_log, the app's logger). Tokens and message
/// bodies never appear at `Info` or above.
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    /// One line.
    fn log(&self, level: LogLevel, target: String, message: String);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_reason_keeps_its_first_line_and_at_most_200_characters() {
        assert_eq!(app_reason("service down"), "service down");
        assert_eq!(
            app_reason("java.io.IOException: timeout\n\tat okhttp3.Call.execute(Call.kt:1)"),
            "java.io.IOException: timeout"
        );
        let long = "é".repeat(300);
        let kept = app_reason(&long);
        assert_eq!(kept.chars().count(), REASON_CHARS + 3);
        assert!(kept.ends_with("..."));
        assert_eq!(app_reason(""), "");
    }
}
