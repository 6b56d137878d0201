//! Retry policy: capped exponential backoff with jitter. Pure; it knows
//! nothing about PD or leaders (leader discovery lives in `discovery`).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How often and how patiently a failed call is retried.
///
/// Only errors for which a new leader may help (unavailable, timeout) are
/// retried; the client re-discovers the leader between attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff after the first failure.
    pub initial_backoff: Duration,
    /// Upper bound of any single backoff.
    pub max_backoff: Duration,
    /// Fraction of each backoff that is randomised (0.0 = none, 1.0 = "full jitter").
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff ceiling after failed attempt number `attempt` (0-based):
    /// `initial * 2^attempt`, capped at `max_backoff`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The backoff for `attempt` given a random `unit` in `[0, 1)`: the
    /// ceiling minus up to `jitter` of it.
    pub fn backoff_with(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
        ceiling.mul_f64(1.0 - jitter)
    }

    /// The backoff for `attempt` with fresh randomness.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_with(attempt, random_unit())
    }
}

/// A random number in `[0, 1)` from the standard library's per-instance
/// random hasher keys; good enough for jitter, not for anything else.
fn random_unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_and_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            jitter: 0.5,
        };
        let ceilings: Vec<u64> = (0..6).map(|a| p.ceiling(a).as_millis() as u64).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.ceiling(1000), Duration::from_millis(1000));
        assert_eq!(p.backoff_with(2, 0.0), Duration::from_millis(400));
        assert_eq!(p.backoff_with(2, 1.0), Duration::from_millis(200));
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let p = RetryPolicy::default();
        let samples: Vec<Duration> = (0..64).map(|_| p.backoff(3)).collect();
        let ceiling = p.ceiling(3);
        assert!(
            samples
                .iter()
                .all(|d| *d <= ceiling && *d >= ceiling.mul_f64(0.5))
        );
        let first = samples[0];
        assert!(samples.iter().any(|d| *d != first), "no jitter at all");
    }
}
