//! Reconnect delays: exponential growth with full jitter, as a pure function of the
//! attempt number and a random source ("Exponential Backoff And Jitter", AWS architecture
//! blog). Full jitter spreads a fleet of phones that lost the same gateway over the whole
//! window, so their reconnects do not arrive as one storm.

use rand::Rng;
use std::time::Duration;

/// The backoff policy: `delay(n) = rand(0, min(cap, base * 2^n))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Largest ceiling.
    pub cap: Duration,
}

impl Backoff {
    /// A policy; `cap` below `base` is raised to `base`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
        }
    }

    /// The upper bound of the delay before retry number `attempt` (0-based):
    /// `min(cap, base * 2^attempt)`, without overflow for any attempt.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let base = self.base.as_millis().min(u128::from(u64::MAX)) as u64;
        let cap = self.cap.as_millis().min(u128::from(u64::MAX)) as u64;
        let grown = if attempt >= 64 {
            u64::MAX
        } else {
            base.saturating_mul(1u64 << attempt)
        };
        Duration::from_millis(grown.min(cap))
    }

    /// A delay drawn uniformly from `[0, ceiling(attempt)]` (whole milliseconds).
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rng.random_range(0..=ceiling))
    }

    /// The small jittered delay for "reconnect at once" (a node restarting, docs/protocol.md
    /// §8): drawn from `[0, base]` so a whole node's clients do not return in one instant.
    pub fn immediate(&self, rng: &mut impl Rng) -> Duration {
        self.delay(0, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, SeedableRng};

    #[test]
    fn ceilings_double_until_the_cap() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ceilings: Vec<u64> = (0..9).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn delays_stay_within_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut rng = SmallRng::seed_from_u64(7);
        for attempt in 0..40 {
            assert!(b.delay(attempt, &mut rng) <= b.ceiling(attempt));
        }
        assert!(b.immediate(&mut rng) <= Duration::from_millis(100));
    }
}
