//! Getting a socket: the single-flight token fetch (the app's async provider, cancelled
//! after a time limit), the connection attempt, abandoning either when the state machine says so, and
//! sorting a failed attempt into what the machine should do next (docs/protocol.md §2).

use super::state::{ConnectFailure, Event};
use super::{Engine, Session};
use crate::callbacks::app_reason;
use crate::streams::StreamKey;
use crate::transport::{connect_url, ConnectError, ConnectRequest, Connection, SocketCommand};
use futures_util::FutureExt;
use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tether_protocol::close;
use tokio::time::Instant;
use tracing::{debug, info};

pub(super) enum TokenOutcome {
    Token(String),
    SignedOut,
    Failed(String),
}

pub(super) enum Internal {
    /// The provider answered, threw, or ran out of time.
    Token(TokenOutcome),
    Connected {
        generation: u64,
        /// The address it went to (index into url + fallbacks).
        host: usize,
        result: Result<Connection, ConnectError>,
    },
}

/// How long the token provider may take; then its call is cancelled.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Sorts a failed attempt by what to do next (docs/protocol.md §2's table).
pub fn classify(error: &ConnectError) -> ConnectFailure {
    match error {
        ConnectError::Refused {
            status: 401,
            message,
            ..
        } => ConnectFailure::Unauthorized(format!("gateway refused the token: {message}")),
        ConnectError::Refused {
            status: 400 | 403,
            message,
            code,
            ..
        } => ConnectFailure::Fatal(format!(
            "gateway refused the connection ({}): {message}",
            code.map_or("no code".to_string(), |c| format!("{c:?}"))
        )),
        ConnectError::Refused { retry_after, .. } => ConnectFailure::Retryable {
            reason: error.to_string(),
            retry_after: *retry_after,
        },
        ConnectError::Timeout(_) | ConnectError::Network(_) | ConnectError::Request(_) => {
            ConnectFailure::Retryable {
                reason: error.to_string(),
                retry_after: None,
            }
        }
    }
}

impl Engine {
    /// Asks for a token to connect with.
    pub(super) fn fetch_token(&mut self) {
        self.token_wanted = true;
        self.request_token();
    }

    /// Calls the provider unless a call is in flight already.
    pub(super) fn request_token(&mut self) {
        if self.token_in_flight {
            // Single flight: the answer to the call in progress serves this request too.
            return;
        }
        self.token_in_flight = true;
        let tokens = self.tokens.clone();
        let internal = self.internal_tx.clone();
        let task = tokio::spawn(async move {
            // Dropping the call on time-out cancels it on the app's side (uniffi frees the
            // foreign future: the coroutine, the task or the AbortSignal learn of it).
            let call = AssertUnwindSafe(tokens.fetch_token()).catch_unwind();
            let outcome = match tokio::time::timeout(TOKEN_TIMEOUT, call).await {
                Err(_) => {
                    TokenOutcome::Failed(format!("no answer within {}s", TOKEN_TIMEOUT.as_secs()))
                }
                Ok(Err(_)) => TokenOutcome::Failed("the token provider panicked".into()),
                Ok(Ok(Err(error))) => TokenOutcome::Failed(app_reason(&error.to_string())),
                Ok(Ok(Ok(None))) => TokenOutcome::SignedOut,
                Ok(Ok(Ok(Some(token)))) if token.trim().is_empty() => TokenOutcome::SignedOut,
                Ok(Ok(Ok(Some(token)))) => TokenOutcome::Token(token),
            };
            let _ = internal.send(Internal::Token(outcome));
        });
        self.token_task = Some(task.abort_handle());
    }

    pub(super) fn open_socket(&mut self) {
        let Some(token) = self.token.take() else {
            self.apply(Event::TokenFailed("no token at hand".into()));
            return;
        };
        self.token_digest = Some(super::refresh::digest(&token));
        self.connect_generation += 1;
        let generation = self.connect_generation;
        let host = self.hosts.for_attempt(Instant::now());
        let base = match host {
            0 => &self.settings.url,
            n => &self.settings.fallback_urls[n - 1],
        };
        self.app_since_sent = self.streams.since(&StreamKey::App).cloned();
        let request = ConnectRequest {
            url: connect_url(
                base,
                &self.settings,
                self.inbox.on_connect(),
                self.app_since_sent.as_ref(),
            ),
            token,
        };
        info!(url = %request.url, "connecting");
        let attempt = self.connector.connect(request);
        let internal = self.internal_tx.clone();
        let task = tokio::spawn(async move {
            let result = attempt.await;
            let _ = internal.send(Internal::Connected {
                generation,
                host,
                result,
            });
        });
        self.connect_task = Some(task.abort_handle());
    }

    pub(super) fn close_socket(&mut self, code: close::CloseCode) {
        // Abandon whatever is in progress; late answers are recognised and dropped.
        self.token_wanted = false;
        self.token = None;
        self.connect_generation += 1;
        if let Some(task) = self.connect_task.take() {
            task.abort();
        }
        if let Some(session) = self.session.take() {
            let _ = session.connection.outgoing.send(SocketCommand::Close(code));
        }
        self.session_ended();
    }

    pub(super) fn on_internal(&mut self, internal: Internal) {
        match internal {
            Internal::Token(outcome) => {
                self.token_in_flight = false;
                self.token_task = None;
                let refresh = std::mem::take(&mut self.refresh_wanted);
                if !std::mem::take(&mut self.token_wanted) {
                    if refresh {
                        self.on_refresh_token(outcome);
                    }
                    return;
                }
                match outcome {
                    TokenOutcome::Token(token) => {
                        self.token = Some(token);
                        self.apply(Event::TokenReady);
                    }
                    TokenOutcome::SignedOut => self.apply(Event::SignedOut),
                    TokenOutcome::Failed(reason) => self.apply(Event::TokenFailed(reason)),
                }
            }
            Internal::Connected {
                generation,
                host,
                result,
            } => {
                if generation != self.connect_generation {
                    // An abandoned attempt; dropping its connection closes it.
                    return;
                }
                self.connect_task = None;
                match result {
                    Ok(connection) => {
                        debug!("socket open, waiting for connection_established");
                        self.session = Some(Session {
                            connection,
                            established: false,
                            host,
                            establish_by: Instant::now() + self.settings.connect_timeout,
                            heartbeat: None,
                            in_flight: BTreeSet::new(),
                            written: BTreeSet::new(),
                            send_cursor: None,
                            resend_at: None,
                            token_deadline: None,
                            refresh_at: None,
                            refresh_sent: None,
                        });
                    }
                    Err(e) => {
                        if self.hosts.failed(host, &e, Instant::now()) {
                            info!(error = %e, "the next attempt tries another gateway address");
                        }
                        let failure = classify(&e);
                        self.apply(Event::ConnectFailed(failure));
                    }
                }
            }
        }
    }
}
