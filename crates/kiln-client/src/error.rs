//! The client's error.

use kiln_store::StoreError;
use uuid::Uuid;

/// Why a client call failed; every message names what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The task id was never registered by a worker (and the caller did not opt in).
    #[error("task {task_id:?} is not registered: no worker has ever registered a task with this id; check the id for a typo, start a worker that registers it, or pass TriggerOptions::allow_unregistered")]
    UnregisteredTask {
        /// The task id.
        task_id: String,
    },
    /// Options or payload were refused.
    #[error("cannot trigger task {task_id:?}: {message}")]
    InvalidTrigger {
        /// The task id.
        task_id: String,
        /// What is wrong.
        message: String,
    },
    /// No run has this id.
    #[error("run {0} does not exist: check the id (`kiln runs list` shows recent runs)")]
    RunNotFound(Uuid),
    /// The run has already started or finished, so it cannot be moved.
    #[error("run {id} is {status}: only a run that has not started (delayed or queued) can be rescheduled")]
    NotWaiting {
        /// The run.
        id: Uuid,
        /// Its status.
        status: kiln_core::RunStatus,
    },
    /// A schedule's pattern or timezone does not parse.
    #[error("{0}")]
    InvalidSchedule(#[from] kiln_core::CronError),
    /// No schedule has this id.
    #[error("schedule {0} does not exist: check the id (`kiln schedules list` shows them all)")]
    ScheduleNotFound(Uuid),
    /// The store refused the request or could not be reached.
    #[error(transparent)]
    Store(StoreError),
    /// The database could not be reached.
    #[error(
        "cannot connect to PostgreSQL: {0}; check DATABASE_URL and that the server is running"
    )]
    Connect(#[source] sqlx::Error),
}

impl ClientError {
    pub(crate) fn invalid(task_id: &str, message: impl Into<String>) -> Self {
        Self::InvalidTrigger {
            task_id: task_id.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn connect(error: sqlx::Error) -> Self {
        Self::Connect(error)
    }
}

impl From<StoreError> for ClientError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnregisteredTask { task_id } => Self::UnregisteredTask { task_id },
            other => Self::Store(other),
        }
    }
}
