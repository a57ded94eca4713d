//! Which gateway address the next connection attempt uses. The primary `url` first;
//! after an attempt fails in a way another address of the same cluster could fix (no
//! network path to it, a timeout, an upgrade that never completes, any refusal but those
//! about the client: a 5xx such as `unavailable`/`shutting_down`, a 404 or 421 from a
//! misrouted balancer), the next fallback, round robin. A refusal about the client itself
//! (400, 401, 403, 429) would be the same anywhere, and a request the client could not
//! even build goes nowhere: both stay. Once [`BACK_TO_PRIMARY`] has passed since the
//! client left the primary, the next attempt tries the primary again (a working session
//! is never dropped for it), and so does the first attempt after the network comes back
//! or the app returns to the foreground ([`Hosts::start_over`]): a failure seen while the
//! phone was offline says nothing about the primary, and a monotonic clock does not run
//! while the phone sleeps. Pure: the engine passes the clock in.

use crate::transport::ConnectError;
use std::time::Duration;
use tokio::time::Instant;

/// How long the client stays on fallbacks before trying the primary again (Ably's
/// `fallbackRetryTimeout` is the same 10 minutes).
pub const BACK_TO_PRIMARY: Duration = Duration::from_secs(600);

/// The address in use among `count` (index 0 is the primary).
#[derive(Debug, Clone)]
pub struct Hosts {
    count: usize,
    current: usize,
    left_primary_at: Option<Instant>,
}

impl Hosts {
    /// `count` addresses: the primary and the fallbacks.
    pub fn new(count: usize) -> Self {
        Hosts {
            count: count.max(1),
            current: 0,
            left_primary_at: None,
        }
    }

    /// The address the attempt starting at `now` uses.
    pub fn for_attempt(&mut self, now: Instant) -> usize {
        if self
            .left_primary_at
            .is_some_and(|left| now.saturating_duration_since(left) >= BACK_TO_PRIMARY)
        {
            self.current = 0;
            self.left_primary_at = None;
        }
        self.current
    }

    /// The network came back or the app returned to the foreground: the next attempt
    /// tries the primary.
    pub fn start_over(&mut self) {
        self.current = 0;
        self.left_primary_at = None;
    }

    /// The attempt at address `host` failed with `error` at `now`: moves on when another
    /// address could answer differently. Whether it moved. A failure of an attempt that
    /// went to another address than the current one (it started before a
    /// [`Hosts::start_over`]) is old news and moves nothing.
    pub fn failed(&mut self, host: usize, error: &ConnectError, now: Instant) -> bool {
        if self.count < 2 || host != self.current || !another_address_could_help(error) {
            return false;
        }
        if self.current == 0 {
            self.left_primary_at = Some(now);
        }
        self.current = (self.current + 1) % self.count;
        if self.current == 0 {
            self.left_primary_at = None;
        }
        true
    }
}

fn another_address_could_help(error: &ConnectError) -> bool {
    match error {
        ConnectError::Network(_) | ConnectError::Timeout(_) => true,
        ConnectError::Refused { status, .. } => !matches!(status, 400 | 401 | 403 | 429),
        ConnectError::Request(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attempt at the address in use failed.
    fn fail(hosts: &mut Hosts, error: &ConnectError, now: Instant) -> bool {
        let at = hosts.for_attempt(now);
        hosts.failed(at, error, now)
    }

    #[test]
    fn a_failure_of_an_attempt_from_before_a_start_over_moves_nothing() {
        let t0 = Instant::now();
        let mut hosts = Hosts::new(3);
        fail(&mut hosts, &ConnectError::Network("x".into()), t0);
        // An attempt goes to the fallback; meanwhile the network comes back.
        let attempt = hosts.for_attempt(t0);
        assert_eq!(attempt, 1);
        hosts.start_over();
        assert!(!hosts.failed(attempt, &ConnectError::Network("x".into()), t0));
        assert_eq!(hosts.for_attempt(t0), 0, "the primary is tried next");
    }

    fn refused(status: u16) -> ConnectError {
        ConnectError::Refused {
            status,
            code: None,
            message: "no".into(),
            retry_after: None,
        }
    }

    #[test]
    fn failures_another_address_could_fix_move_round_robin() {
        let t0 = Instant::now();
        let mut hosts = Hosts::new(3);
        assert_eq!(hosts.for_attempt(t0), 0);
        assert!(fail(
            &mut hosts,
            &ConnectError::Network("refused".into()),
            t0
        ));
        assert_eq!(hosts.for_attempt(t0), 1);
        assert!(fail(&mut hosts, &refused(503), t0));
        assert_eq!(hosts.for_attempt(t0), 2);
        assert!(fail(
            &mut hosts,
            &ConnectError::Timeout(Duration::from_secs(10)),
            t0
        ));
        assert_eq!(hosts.for_attempt(t0), 0, "round robin");
        for status in [404, 421, 302, 502] {
            assert!(fail(&mut hosts, &refused(status), t0), "{status}");
        }
    }

    #[test]
    fn a_request_the_client_could_not_build_stays() {
        let mut hosts = Hosts::new(2);
        let bad = ConnectError::Request("token holds invalid characters".into());
        assert!(!fail(&mut hosts, &bad, Instant::now()));
        assert_eq!(hosts.for_attempt(Instant::now()), 0);
    }

    #[test]
    fn starting_over_goes_back_to_the_primary_at_once() {
        let t0 = Instant::now();
        let mut hosts = Hosts::new(3);
        fail(&mut hosts, &ConnectError::Network("offline".into()), t0);
        assert_eq!(hosts.for_attempt(t0), 1);
        hosts.start_over();
        assert_eq!(hosts.for_attempt(t0), 0);
        // Leaving it again starts a new ten minutes from then.
        let t1 = t0 + Duration::from_secs(60);
        fail(&mut hosts, &ConnectError::Network("x".into()), t1);
        assert_eq!(
            hosts.for_attempt(t1 + BACK_TO_PRIMARY - Duration::from_secs(1)),
            1
        );
    }

    #[test]
    fn refusals_about_the_client_stay() {
        let t0 = Instant::now();
        let mut hosts = Hosts::new(2);
        for status in [400, 401, 403, 429] {
            assert!(!fail(&mut hosts, &refused(status), t0), "{status}");
            assert_eq!(hosts.for_attempt(t0), 0);
        }
    }

    #[test]
    fn one_address_never_moves() {
        let mut hosts = Hosts::new(1);
        assert!(!fail(
            &mut hosts,
            &ConnectError::Network("x".into()),
            Instant::now()
        ));
        assert_eq!(hosts.for_attempt(Instant::now()), 0);
    }

    #[test]
    fn the_primary_is_tried_again_ten_minutes_after_leaving_it() {
        let t0 = Instant::now();
        let mut hosts = Hosts::new(2);
        fail(&mut hosts, &ConnectError::Network("x".into()), t0);
        assert_eq!(
            hosts.for_attempt(t0 + BACK_TO_PRIMARY - Duration::from_secs(1)),
            1
        );
        assert_eq!(hosts.for_attempt(t0 + BACK_TO_PRIMARY), 0);
        // Leaving it again starts a new ten minutes.
        let t1 = t0 + BACK_TO_PRIMARY;
        fail(&mut hosts, &ConnectError::Network("x".into()), t1);
        assert_eq!(hosts.for_attempt(t1 + Duration::from_secs(300)), 1);
    }
}
