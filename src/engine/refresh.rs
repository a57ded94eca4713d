//! Keeping a connection past its token's `exp` without reconnecting (PROTOCOL.md §4,
//! `refresh_token`): the gateway says in `connection_established` (and `token_refreshed`)
//! how long the token has left; shortly before that runs out the engine asks the app's
//! token provider (the same single-flight call as for connecting) and sends the new token.
//! A refresh that fails changes nothing on the gateway: the connection ends with 4001 at
//! the old expiry and the usual path (fresh token, reconnect at once) takes over.

use super::connect::TokenOutcome;
use super::Engine;
use crate::error::{ErrorKind, TetherError};
use std::time::Duration;
use tether_protocol::client::{ClientMessage, Token};
use tether_protocol::server::ErrorData;
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

impl Engine {
    /// Plans the refresh of the session's token, which the gateway ends in `left`.
    pub(super) fn plan_refresh(&mut self, left: Duration) {
        let now = Instant::now();
        if let Some(session) = self.session.as_mut() {
            session.token_deadline = Some(now + left);
            session.refresh_at = refresh_delay(left).map(|delay| now + delay);
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
                self.send_frame(
                    ClientMessage::RefreshToken {
                        token: Token(token),
                    }
                    .to_json(),
                );
            }
            TokenOutcome::SignedOut => self.report(TetherError::new(
                ErrorKind::Auth,
                "signed out: the token provider returned no token; the connection ends when \
                 its token runs out",
            )),
            TokenOutcome::Failed(reason) => {
                self.report(TetherError::new(
                    ErrorKind::Auth,
                    format!("token provider failed: {reason}"),
                ));
                // Try again halfway to the deadline, while there is time.
                let deadline = self.session.as_ref().and_then(|s| s.token_deadline);
                if let Some(left) = deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                    if let (Some(session), true) = (self.session.as_mut(), left >= MIN_LEFT) {
                        session.refresh_at = Some(Instant::now() + left / 2);
                    }
                }
            }
        }
    }

    /// `token_refreshed`: the gateway took the new token.
    pub(super) fn on_token_refreshed(&mut self, expires_in_ms: u64) {
        info!(expires_in_s = expires_in_ms / 1000, "token refreshed");
        self.plan_refresh(Duration::from_millis(expires_in_ms));
    }

    /// An `error` answering `refresh_token`: the old token still ends the connection.
    pub(super) fn on_refresh_refused(&mut self, error: &ErrorData) {
        self.report(TetherError::new(
            ErrorKind::Auth,
            format!(
                "the gateway refused the refreshed token ({}): {}; the connection ends when \
                 the current token runs out, then reconnects with a fresh one",
                error.code, error.message
            ),
        ));
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
