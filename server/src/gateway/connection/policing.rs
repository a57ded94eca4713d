//! Abuse policing: bad frames and frames beyond the rate limit are counted per minute,
//! and a client that keeps at it is closed with 4008; a refused app message holds back
//! the later ones until it comes again, so the backend sees them in order.

use super::*;

/// Bad frames tolerated per minute before the connection is closed with 4008.
const MAX_VIOLATIONS_PER_MINUTE: usize = 10;

/// A connection's record of refusals and bad frames.
#[derive(Default)]
pub(super) struct Strikes {
    /// When each recent bad frame came (the last minute's).
    pub(super) violations: VecDeque<Instant>,
    /// An app message refused with a retryable code, which must come again before any
    /// later one is stored.
    pub(super) held_for: Option<(String, ErrorCode)>,
    /// Frames refused for rate in the current minute.
    pub(super) rate_refusals: Option<(Instant, u32)>,
}

impl Connection {
    /// Refuses later app messages until `id`, refused with `code`, comes again.
    pub(super) fn hold_order(&mut self, id: &str, code: ErrorCode) {
        let strikes = self.strikes.get_or_insert_default();
        if strikes.held_for.is_none() {
            strikes.held_for = Some((id.to_owned(), code));
        }
    }

    /// Counts a frame refused for rate. A client resending its window in order after a
    /// refusal is not abusing; one that keeps sending twice its burst allowance within a
    /// minute is, and is closed with 4008.
    pub(super) fn rate_refusal(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let strikes = self.strikes.get_or_insert_default();
        let (since, count) = strikes.rate_refusals.get_or_insert((now, 0));
        if now.duration_since(*since) > Duration::from_secs(60) {
            *since = now;
            *count = 0;
        }
        *count += 1;
        let rate = self.shared.config.rate_limit_per_connection.max(1);
        let allowance = (4 * rate).max(20);
        if *count > allowance {
            return Err(End::Close(
                close::POLICY_VIOLATION,
                "too many frames beyond the rate limit",
            ));
        }
        Ok(())
    }

    /// Counts a bad frame; too many in a minute ends the connection with 4008.
    pub(super) fn violation(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let violations = &mut self.strikes.get_or_insert_default().violations;
        while violations
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            violations.pop_front();
        }
        violations.push_back(now);
        if violations.len() > MAX_VIOLATIONS_PER_MINUTE {
            return Err(End::Close(
                close::POLICY_VIOLATION,
                "too many invalid or excess frames",
            ));
        }
        Ok(())
    }
}
