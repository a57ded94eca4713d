//! Keeping a connection past its token's `exp` without reconnecting (docs/protocol.md §4,
//! `refresh_token`): the gateway says in `connection_established` (and `token_refreshed`)
//! how long the token has left; shortly before that runs out the engine asks the app's
//! token provider (the same single-flight call as for connecting) and sends the new token.
//! A refresh that does not happen changes nothing on the gateway: the connection ends
//! with 4001 at the old expiry and the usual path (fresh token, reconnect at once) takes
//! over.

use super::connect::TokenOutcome;
use super::state::Event;
use super::Engine;
use crate::error::{ErrorKind, TetherError};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;
use tether_protocol::client::{ClientMessage, Token};
use tether_protocol::server::ErrorData;
use tether_protocol::ErrorCode;
use tokio::time::Instant;
use tracing::{debug, info};

/// The most a refresh is brought forward from the deadline.
const MAX_MARGIN: Duration = Duration::from_secs(60);
/// Below this much time left no refresh is tried: the deadline's 4001 comes first.
const MIN_LEFT: Duration = Duration::from_secs(2);

/// When to refresh a token with `left` until the gateway's deadline: a fifth of the time
/// left before it, at most a minute before; `None` when too little is left to try.
pub fn refresh_delay(left: Duration) -> Option<Duration> {
    if left < MIN_LEFT {
        return None;
    }
    Some(left - (left / 5).min(MAX_MARGIN))
}

/// A digest of a token, to recognise it without keeping its text.
pub(super) fn digest(token: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

impl Engine {
    /// Plans the refresh of the session's token, which the gateway ends in `left`.
    pub(super) fn plan_refresh(&mut self, left: Duration) {
        let now = Instant::now();
        if let Some(session) = self.session.as_mut() {
            session.token_deadline = Some(now + left);
            session.refresh_at = refresh_delay(left).map(|delay| now + delay);
        }
    }

    /// Plans another try halfway to the deadline, while at least [`MIN_LEFT`] is left
    /// (so a provider that keeps failing is asked a handful of times at most).
    fn refresh_later(&mut self) {
        let now = Instant::now();
        if let Some(session) = self.session.as_mut() {
            let left = session
                .token_deadline
                .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
            session.refresh_at = (left >= MIN_LEFT).then(|| now + left / 2);
        }
    }

    /// The planned moment came: ask the provider (one call for a connect and a refresh).
    pub(super) fn start_refresh(&mut self) {
        if let Some(session) = self.session.as_mut() {
            session.refresh_at = None;
        }
        debug!("refreshing the token before it runs out");
        self.refresh_wanted = true;
        self.request_token();
    }

    /// The provider answered a refresh.
    pub(super) fn on_refresh_token(&mut self, outcome: TokenOutcome) {
        if !self.established() {
            return;
        }
        match outcome {
            TokenOutcome::Token(token) => {
                let sent = digest(&token);
                if Some(sent) == self.token_digest {
                    // A provider that caches its token: ask again later, when it may
                    // have a fresh one; meanwhile the current token holds.
                    debug!("the token provider gave the current token back; asking later");
                    self.refresh_later();
                    return;
                }
                if let Some(session) = self.session.as_mut() {
                    session.refresh_sent = Some(sent);
                }
                self.send_frame(
                    ClientMessage::RefreshToken {
                        token: Token(token),
                    }
                    .to_json(),
                );
            }
            // The user signed out: the session ends now.
            TokenOutcome::SignedOut => self.apply(Event::SignedOut),
            TokenOutcome::Failed(reason) => {
                self.report(TetherError::new(
                    ErrorKind::Auth,
                    format!("token provider failed: {reason}"),
                ));
                self.refresh_later();
            }
        }
    }

    /// `token_refreshed`: the gateway took the new token (ignored unless one was sent).
    pub(super) fn on_token_refreshed(&mut self, expires_in_ms: u64) {
        let Some(sent) = self.session.as_mut().and_then(|s| s.refresh_sent.take()) else {
            debug!("token_refreshed without a refresh_token out; ignored");
            return;
        };
        self.token_digest = Some(sent);
        info!(expires_in_s = expires_in_ms / 1000, "token refreshed");
        self.plan_refresh(Duration::from_millis(expires_in_ms));
    }

    /// An `error` answering `refresh_token`: the current token still ends the connection
    /// unless a later try (after a refusal for load) gets through.
    pub(super) fn on_refresh_refused(&mut self, error: &ErrorData) {
        if let Some(session) = self.session.as_mut() {
            session.refresh_sent = None;
        }
        self.report(TetherError::new(
            ErrorKind::Auth,
            format!(
                "the gateway refused the refreshed token ({}): {}; unless a later refresh \
                 gets through, the connection ends when the current token runs out and \
                 reconnects with a fresh one",
                error.code, error.message
            ),
        ));
        if matches!(error.code, ErrorCode::RateLimited | ErrorCode::Unavailable) {
            self.refresh_later();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_comes_a_fifth_early_and_at_most_a_minute_early() {
        let s = Duration::from_secs;
        assert_eq!(refresh_delay(s(3600)), Some(s(3540)));
        assert_eq!(refresh_delay(s(300)), Some(s(240)));
        assert_eq!(refresh_delay(s(10)), Some(s(8)));
        assert_eq!(refresh_delay(Duration::from_millis(1999)), None);
    }
}
