//! The reconnect schedule: full jitter `rand(0, min(cap, base * 2^n))`, as properties.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

use proptest::prelude::*;
use rand::{rngs::SmallRng, SeedableRng};
use std::time::Duration;
use tether::engine::backoff::Backoff;

proptest! {
    #[test]
    fn delay_is_between_zero_and_the_ceiling(
        base in 1u64..10_000, extra in 0u64..600_000, attempt in 0u32..200, seed in any::<u64>()
    ) {
        let b = Backoff::new(Duration::from_millis(base), Duration::from_millis(base + extra));
        let mut rng = SmallRng::seed_from_u64(seed);
        let delay = b.delay(attempt, &mut rng);
        prop_assert!(delay <= b.ceiling(attempt));
    }

    #[test]
    fn ceiling_never_passes_the_cap(base in 1u64..100_000, cap in 1u64..1_000_000, attempt in any::<u32>()) {
        let b = Backoff::new(Duration::from_millis(base), Duration::from_millis(cap));
        prop_assert!(b.ceiling(attempt) <= Duration::from_millis(cap.max(base)));
    }

    #[test]
    fn ceiling_doubles_until_it_reaches_the_cap(base in 1u64..10_000, cap_factor in 1u64..1000, attempt in 0u32..40) {
        let cap = base * cap_factor;
        let b = Backoff::new(Duration::from_millis(base), Duration::from_millis(cap));
        let now = b.ceiling(attempt).as_millis() as u64;
        let next = b.ceiling(attempt + 1).as_millis() as u64;
        prop_assert!(next >= now);
        prop_assert_eq!(next, (now * 2).min(cap));
        prop_assert_eq!(b.ceiling(0).as_millis() as u64, base);
    }

    #[test]
    fn jitter_uses_the_whole_window(seed in any::<u64>()) {
        // Full jitter: over many draws some land in the lower and some in the upper half.
        let b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(60));
        let mut rng = SmallRng::seed_from_u64(seed);
        let draws: Vec<Duration> = (0..200).map(|_| b.delay(3, &mut rng)).collect();
        prop_assert!(draws.iter().any(|d| *d < Duration::from_secs(4)));
        prop_assert!(draws.iter().any(|d| *d >= Duration::from_secs(4)));
    }
}
