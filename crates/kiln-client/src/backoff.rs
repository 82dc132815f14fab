//! One way to wait after a failed database call, for every loop that retries one (the worker's
//! claim, completion, notification and resume loops, the client's run waiter): exponential
//! backoff with jitter (from `backon`), capped at [`MAX_ERROR_BACKOFF`], reset by the caller
//! after a success.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// Longest pause between retries of a failing database call.
pub const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// The first pause after a failure, unless a loop asks for another.
pub const FIRST_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The backoff policy every retrying loop uses: doubling from `first`, up to `max`, jittered,
/// never giving up (the worker keeps trying while it lives).
fn backoff_policy(first: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// The pauses of one retrying loop: [`Backoff::wait`] after each failure, [`Backoff::reset`]
/// after a success.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
}

impl Backoff {
    /// A loop whose first pause is `first`, growing up to [`MAX_ERROR_BACKOFF`].
    pub fn new(first: Duration) -> Self {
        Self::capped(first, MAX_ERROR_BACKOFF)
    }

    /// A loop whose pauses grow from `first` up to `max`.
    pub fn capped(first: Duration, max: Duration) -> Self {
        let builder = backoff_policy(first, max);
        Self {
            delays: builder.build(),
            builder,
        }
    }

    /// The next pause (longer after each failure since the last reset).
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(MAX_ERROR_BACKOFF)
    }

    /// Starts again from the first pause.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// Sleeps for the next pause; false when `stop` fired first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_restart_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        let pauses: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(pauses.iter().all(|p| *p <= MAX_ERROR_BACKOFF * 2));
        // With jitter, a pause lies between the nominal delay and twice it.
        assert!(pauses[0] >= Duration::from_millis(100) && pauses[0] <= Duration::from_millis(200));
        assert!(pauses[11] >= MAX_ERROR_BACKOFF);
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(200));
    }
}
