//! Retry policy and the backoff delay before each retry.
//!
//! The delay is a small pure function over the stored policy rather than a backoff crate: the
//! policy is stored with each run (so a retry follows the policy the run was triggered with), the
//! worker computes one delay per failed attempt, and a pure function is trivially testable. The
//! once-popular `backoff` crate is unmaintained (RUSTSEC-2025-0012), and nothing else is needed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Attempts a run gets by default, counting the first (Trigger.dev's default).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Growth factor of the delay between attempts.
pub const DEFAULT_RETRY_FACTOR: f64 = 2.0;
/// Delay before the first retry, before randomization.
pub const DEFAULT_MIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Upper bound of any delay between attempts.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// How a failed run is retried: exponential backoff, bounded, optionally randomized.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, counting the first. 1 means no retry.
    pub max_attempts: u32,
    /// Each retry waits `factor` times longer than the previous one.
    pub factor: f64,
    /// Delay before the first retry.
    #[serde(rename = "min_timeout_ms", with = "millis")]
    pub min_timeout: Duration,
    /// No delay exceeds this.
    #[serde(rename = "max_timeout_ms", with = "millis")]
    pub max_timeout: Duration,
    /// Multiply each delay by a random factor in [1, 2) so retries of many runs spread out.
    pub randomize: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl RetryPolicy {
    /// Trigger.dev's defaults: 3 attempts, factor 2, 1 s, 60 s, randomized.
    pub const DEFAULT: Self = Self {
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        factor: DEFAULT_RETRY_FACTOR,
        min_timeout: DEFAULT_MIN_TIMEOUT,
        max_timeout: DEFAULT_MAX_TIMEOUT,
        randomize: true,
    };

    /// The delay before the retry that follows failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let jitter = if self.randomize {
            1.0 + fastrand::f64()
        } else {
            1.0
        };
        self.delay_with_jitter(attempt, jitter)
    }

    /// [`RetryPolicy::delay`] with the random factor given, for tests and reproducible plans.
    pub fn delay_with_jitter(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let millis = self.min_timeout.as_millis() as f64 * self.factor.powi(exponent) * jitter;
        let capped = millis.min(self.max_timeout.as_millis() as f64).max(0.0);
        Duration::from_millis(capped.round() as u64)
    }

    /// Checks the policy, naming the first thing wrong with it.
    pub const fn validate(&self) -> Result<(), &'static str> {
        if self.max_attempts < 1 {
            return Err("retry.max_attempts must be at least 1 (1 means no retry)");
        }
        // Also refuses NaN, which compares false with everything.
        if self.factor.is_nan() || self.factor < 1.0 {
            return Err("retry.factor must be at least 1.0");
        }
        if self.min_timeout.as_millis() > self.max_timeout.as_millis() {
            return Err("retry.min_timeout must not exceed retry.max_timeout");
        }
        Ok(())
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_factor_and_stop_at_max_timeout() {
        let policy = RetryPolicy::DEFAULT;
        let delays: Vec<u64> = (1..=8)
            .map(|a| policy.delay_with_jitter(a, 1.0).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
    }

    #[test]
    fn randomized_delays_stay_within_one_to_two_times_and_the_cap() {
        let policy = RetryPolicy::DEFAULT;
        for _ in 0..1_000 {
            let d = policy.delay(2).as_millis();
            assert!(
                (2_000..=4_000).contains(&d),
                "delay {d} ms outside [2 s, 4 s]"
            );
            assert!(policy.delay(20) <= DEFAULT_MAX_TIMEOUT);
        }
    }

    #[test]
    fn policy_round_trips_through_the_stored_json() {
        let json = serde_json::to_value(RetryPolicy::DEFAULT).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"max_attempts": 3, "factor": 2.0, "min_timeout_ms": 1000,
                               "max_timeout_ms": 60000, "randomize": true})
        );
        assert_eq!(
            serde_json::from_value::<RetryPolicy>(json).unwrap(),
            RetryPolicy::DEFAULT
        );
    }
}
