//! Runs and attempts as callers read them back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ErrorRecord, RunStatus};

/// One run, with its attempts when retrieved on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Time-ordered id (UUID v7).
    pub id: Uuid,
    /// The task id.
    pub task_id: String,
    /// The queue it runs in.
    pub queue: String,
    /// Its concurrency key, if any.
    pub concurrency_key: Option<String>,
    /// Where it is in its lifecycle.
    pub status: RunStatus,
    /// The payload it was triggered with.
    pub payload: serde_json::Value,
    /// The output of the successful attempt.
    pub output: Option<serde_json::Value>,
    /// The error of the latest failed attempt.
    pub error: Option<ErrorRecord>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Of those, attempts handed back unfinished (a worker shutting down, or stalling before the
    /// body started): they do not count against `max_attempts`, and do not make it a retry.
    #[serde(default)]
    pub released_attempts: u32,
    /// Attempts it may use in all.
    pub max_attempts: u32,
    /// Head start in seconds.
    pub priority_s: i32,
    /// Tags.
    pub tags: Vec<String>,
    /// Metadata.
    pub metadata: serde_json::Value,
    /// Its idempotency key while the key is live.
    pub idempotency_key: Option<String>,
    /// The run that triggered it.
    pub parent_run_id: Option<Uuid>,
    /// The root of its run tree.
    pub root_run_id: Option<Uuid>,
    /// The run it replays.
    pub replay_of: Option<Uuid>,
    /// The W3C trace context of its trigger.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// When it may start (after a delay or a retry's backoff).
    pub available_at: DateTime<Utc>,
    /// When it expires if not started.
    pub expires_at: Option<DateTime<Utc>>,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its attempts, oldest first (filled by `retrieve`, empty in lists).
    #[serde(default)]
    pub attempt_list: Vec<Attempt>,
}

impl Run {
    /// True when the run waits for a retry after a failed attempt (not after an attempt that
    /// was only handed back).
    pub fn is_retrying(&self) -> bool {
        self.status == RunStatus::Queued && self.attempts > self.released_attempts
    }

    /// The status as people read it: "retrying" for a queued retry.
    pub fn display_status(&self) -> &'static str {
        if self.is_retrying() {
            "retrying"
        } else {
            self.status.as_str()
        }
    }
}

/// One attempt of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// The worker that ran it.
    pub worker_id: String,
    /// How it ended: completed, failed, timed_out, canceled, crashed, interrupted; or executing.
    pub status: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its error, if it failed.
    pub error: Option<ErrorRecord>,
}
