//! What a task body knows about the run it executes.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The run a body executes, as the worker claimed it.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The run's id.
    pub run_id: Uuid,
    /// The task id.
    pub task_id: String,
    /// The queue it was claimed from.
    pub queue: String,
    /// Its concurrency key, if any.
    pub concurrency_key: Option<String>,
    /// This attempt's number, starting at 1.
    pub attempt: u32,
    /// Attempts the run may use in all.
    pub max_attempts: u32,
    /// The run's metadata as triggered.
    pub metadata: serde_json::Value,
    /// The run that triggered this one, if any.
    pub parent_run_id: Option<Uuid>,
    /// The first run of the tree this one belongs to, if it has a parent.
    pub root_run_id: Option<Uuid>,
}

/// Handed to every task body: the run's identity and its cancellation signal.
#[derive(Debug, Clone)]
pub struct Context {
    info: Arc<RunInfo>,
    cancel: CancellationToken,
}

impl Context {
    /// A context for one attempt. The worker builds these; tests of task bodies may too.
    pub fn new(info: RunInfo, cancel: CancellationToken) -> Self {
        Self {
            info: Arc::new(info),
            cancel,
        }
    }

    /// The run's id.
    pub fn run_id(&self) -> Uuid {
        self.info.run_id
    }

    /// The task id.
    pub fn task_id(&self) -> &str {
        &self.info.task_id
    }

    /// The queue the run was claimed from.
    pub fn queue(&self) -> &str {
        &self.info.queue
    }

    /// The run's concurrency key, if any.
    pub fn concurrency_key(&self) -> Option<&str> {
        self.info.concurrency_key.as_deref()
    }

    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }

    /// True when an earlier attempt of this run failed or crashed.
    pub fn is_retry(&self) -> bool {
        self.info.attempt > 1
    }

    /// The run's metadata as triggered.
    pub fn metadata(&self) -> &serde_json::Value {
        &self.info.metadata
    }

    /// Everything the worker knows about the run.
    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    /// Fires when the run is canceled, times out, or the worker must stop it.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// True once the run should stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the run should stop; `select!` on it around long waits.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}
