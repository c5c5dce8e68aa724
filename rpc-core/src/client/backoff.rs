//! When to try reconnecting after a failed attempt.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delays between reconnect attempts: exponential from `initial`, capped at
/// `max`, each with random jitter so that many clients of one restarted
/// server do not all knock at the same instant.
///
/// After `n` failed attempts the next waits a random time between half and
/// all of `min(max, initial * 2^(n-1))`. A successful connect resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure. Default 50 ms.
    pub initial: Duration,
    /// The longest delay. Default 5 s.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// How long to wait after `failures` consecutive failed attempts.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = failures.saturating_sub(1).min(31);
        let ceiling = self.initial.saturating_mul(1 << doublings).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(random_unit())
    }
}

/// A random number in `[0, 1)`, from the standard library's per-process
/// random hash keys: jitter needs unpredictability, not cryptography.
fn random_unit() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_their_jitter_band_and_stop_at_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(0), Duration::ZERO);
        for (failures, ceiling) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (40, 1000)] {
            let ceiling = Duration::from_millis(ceiling);
            for _ in 0..50 {
                let delay = backoff.delay(failures);
                assert!(delay >= ceiling / 2 && delay <= ceiling, "{failures}: {delay:?}");
            }
        }
    }
}
