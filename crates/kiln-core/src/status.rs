//! Run statuses and attempt outcomes.

use serde::{Deserialize, Serialize};

/// Where a run is in its lifecycle. A run reaches exactly one final status.
/// Ordered in lifecycle order (the order of [`RunStatus::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Triggered with a delay that has not passed yet.
    Delayed,
    /// Waiting for a worker; a retry waits here with a future `available_at`.
    Queued,
    /// A worker holds its lease and runs its body.
    Executing,
    /// A parent waiting on its children; its concurrency slot is released.
    Waiting,
    /// Finished with an output.
    Completed,
    /// Failed with no attempts left, or aborted, or its payload did not decode.
    Failed,
    /// Canceled by a caller.
    Canceled,
    /// Its worker died and it has no attempts left.
    Crashed,
    /// Exceeded its `max_duration`.
    TimedOut,
    /// Not started before its ttl ran out.
    Expired,
    /// Kiln itself could not run it.
    SystemFailure,
}

impl RunStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 11] = [
        Self::Delayed,
        Self::Queued,
        Self::Executing,
        Self::Waiting,
        Self::Completed,
        Self::Failed,
        Self::Canceled,
        Self::Crashed,
        Self::TimedOut,
        Self::Expired,
        Self::SystemFailure,
    ];

    /// The name used in SQL, JSON, the CLI and the HTTP API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Delayed => "delayed",
            Self::Queued => "queued",
            Self::Executing => "executing",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Crashed => "crashed",
            Self::TimedOut => "timed_out",
            Self::Expired => "expired",
            Self::SystemFailure => "system_failure",
        }
    }

    /// True once the run will never change status again.
    pub const fn is_final(self) -> bool {
        !matches!(
            self,
            Self::Delayed | Self::Queued | Self::Executing | Self::Waiting
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of Kiln's run statuses.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown run status {0:?}: expected one of delayed, queued, executing, waiting, completed, failed, canceled, crashed, timed_out, expired, system_failure")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for RunStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// How one attempt ended, as recorded in the attempts table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The body returned an output.
    Completed,
    /// The body returned an error (retried if attempts remain, unless aborted).
    Failed,
    /// The body ran past `max_duration`.
    TimedOut,
    /// The run was canceled while this attempt ran.
    Canceled,
    /// The worker lost its lease (died or stalled); found by the rescuer.
    Crashed,
    /// The worker shut down before the body finished and handed the run back.
    Interrupted,
}

impl AttemptOutcome {
    /// The name stored in `kiln.attempts.status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Canceled => "canceled",
            Self::Crashed => "crashed",
            Self::Interrupted => "interrupted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>().unwrap(), status);
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        let err = "done".parse::<RunStatus>().unwrap_err().to_string();
        assert!(
            err.contains("\"done\"") && err.contains("completed"),
            "{err}"
        );
    }
}
