//! The metrics Kiln records through the `metrics` facade (any recorder works; `kiln serve` and
//! `Worker::builder().metrics_listen(..)` export them to Prometheus), and the gauges read from
//! Postgres. Labels are bounded: task, queue, outcome, state; never a key, run or worker id.

pub use kiln_store::stats::Gauges;

use crate::{Client, ClientError};

/// Counter: runs triggered, by `task`.
pub const RUNS_TRIGGERED: &str = "kiln_runs_triggered_total";
/// Counter: attempts that ended, by `task`, `queue` and `outcome` (completed, failed, retried,
/// timed_out, crashed, canceled, interrupted).
pub const ATTEMPTS_FINISHED: &str = "kiln_attempts_finished_total";
/// Counter: claim statements a worker ran.
pub const CLAIMS: &str = "kiln_claims_total";
/// Counter: runs those claims took.
pub const CLAIMED_RUNS: &str = "kiln_claimed_runs_total";
/// Histogram: how long an attempt's body ran, in seconds, by `task`.
pub const RUN_DURATION: &str = "kiln_run_duration_seconds";
/// Histogram: how long after its run was triggered an attempt started, in seconds, by `queue`.
pub const QUEUE_WAIT: &str = "kiln_queue_wait_seconds";
/// Histogram: how long a claim statement took, in seconds.
pub const CLAIM_DURATION: &str = "kiln_claim_duration_seconds";
/// Gauge: runs by `queue` and `state` (queued, delayed, executing, waiting).
pub const RUNS: &str = "kiln_runs";
/// Gauge: age in seconds of the oldest run ready to start, by `queue`.
pub const QUEUE_OLDEST_AGE: &str = "kiln_queue_oldest_age_seconds";
/// Gauge: workers running or draining and heartbeating.
pub const WORKERS_ALIVE: &str = "kiln_workers_alive";
/// Gauge: runs executing or waiting on children, in all.
pub const RUNS_IN_FLIGHT: &str = "kiln_runs_in_flight";
/// Histogram buckets, in seconds, for every Kiln histogram.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Counts `n` runs triggered for `task`.
pub(crate) fn count_triggered(task: &str, n: usize) {
    metrics::counter!(RUNS_TRIGGERED, "task" => task.to_owned()).increment(n as u64);
}

impl Client {
    /// Reads the gauges from Postgres (one statement).
    pub async fn gauges(&self) -> Result<Gauges, ClientError> {
        Ok(kiln_store::stats::stats_gauges(self.pool()).await?)
    }
}
