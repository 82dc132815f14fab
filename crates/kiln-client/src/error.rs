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
    /// The payload does not match the JSON Schema its task registered.
    #[error(
        "cannot trigger task {task_id:?}: the payload does not match the task's schema: {message}"
    )]
    InvalidPayload {
        /// The task id.
        task_id: String,
        /// Which field is wrong, and how.
        message: String,
    },
    /// No run has this id.
    #[error("run {0} does not exist: check the id (`kiln runs list` shows recent runs)")]
    RunNotFound(Uuid),
    /// The run has already started or finished, so it cannot be moved.
    #[error("run {id} {}: only a run that has not started (delayed, or queued with no attempt yet) can be rescheduled", not_waiting(*.status))]
    NotWaiting {
        /// The run.
        id: Uuid,
        /// Its status.
        status: kiln_core::RunStatus,
    },
    /// The run already reached a final status, so there is nothing to cancel.
    #[error("run {id} already finished as {status}; nothing to cancel")]
    AlreadyFinished {
        /// The run.
        id: Uuid,
        /// Its final status.
        status: kiln_core::RunStatus,
    },
    /// A schedule's pattern or timezone does not parse.
    #[error("{0}")]
    InvalidSchedule(#[from] kiln_core::CronError),
    /// No schedule has this id.
    #[error("schedule {0} does not exist: check the id (`kiln schedules list` shows them all)")]
    ScheduleNotFound(Uuid),
    /// A value the caller passed is out of range, malformed or unknown.
    #[error("{0}")]
    Invalid(String),
    /// The thing named (a queue, a key) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The state of what was named does not allow the change.
    #[error("{0}")]
    Conflict(String),
    /// Something the caller passed is larger than its limit (`kiln.limits`).
    #[error("{0}")]
    TooLarge(String),
    /// The database is reachable but not ready for Kiln (not migrated).
    #[error("{0}")]
    NotReady(String),
    /// The database failed or could not be reached.
    #[error(transparent)]
    Store(StoreError),
    /// The database could not be reached.
    #[error("cannot connect to PostgreSQL at {address}: {reason}; check DATABASE_URL and that the server is running")]
    Connect {
        /// `host:port` (or the socket directory) connected to.
        address: String,
        /// What went wrong: refused, no answer in time, authentication, unknown database.
        reason: String,
    },
}

/// How a run that cannot be rescheduled is described: a queued one has run an attempt and waits
/// for its retry.
fn not_waiting(status: kiln_core::RunStatus) -> String {
    match status {
        kiln_core::RunStatus::Queued => "is waiting for its retry (an attempt already ran)".into(),
        other => format!("is {other}"),
    }
}

/// What kind of failure a [`ClientError`] is, stable across versions. The CLI maps it to an exit
/// code and the HTTP API to a status and the `code` of its JSON error, each in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request itself is malformed (not JSON, a field of the wrong type, bad usage).
    InvalidRequest,
    /// A value is out of range, of an unknown unit, or refused by a rule (a trigger option, a
    /// limit, a cron pattern).
    InvalidOption,
    /// The payload does not match its task's JSON Schema.
    InvalidPayload,
    /// The request body or a payload is larger than allowed.
    PayloadTooLarge,
    /// No run, task, queue, schedule or key has this id or name.
    NotFound,
    /// The thing exists but its state does not allow this (reschedule a run that started).
    Conflict,
    /// No credentials, or unknown or revoked ones.
    Unauthorized,
    /// The credentials do not cover this action.
    Forbidden,
    /// A wait ended before what it waited for happened.
    Timeout,
    /// The database could not be reached; try again.
    Unavailable,
    /// Something failed on Kiln's side.
    Internal,
}

impl ErrorCode {
    /// The code's name as it appears in JSON errors (`not_found`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidOption => "invalid_option",
            Self::InvalidPayload => "invalid_payload",
            Self::PayloadTooLarge => "payload_too_large",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ClientError {
    /// What kind of failure this is.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnregisteredTask { .. }
            | Self::RunNotFound(_)
            | Self::ScheduleNotFound(_)
            | Self::NotFound(_) => ErrorCode::NotFound,
            Self::InvalidTrigger { .. } | Self::InvalidSchedule(_) | Self::Invalid(_) => {
                ErrorCode::InvalidOption
            }
            Self::NotWaiting { .. } | Self::AlreadyFinished { .. } | Self::Conflict(_) => {
                ErrorCode::Conflict
            }
            Self::TooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::InvalidPayload { .. } => ErrorCode::InvalidPayload,
            Self::Connect { .. } | Self::NotReady(_) => ErrorCode::Unavailable,
            Self::Store(error) if error.is_connection() => ErrorCode::Unavailable,
            Self::Store(_) => ErrorCode::Internal,
        }
    }

    pub(crate) fn invalid(task_id: &str, message: impl Into<String>) -> Self {
        Self::InvalidTrigger {
            task_id: task_id.to_owned(),
            message: message.into(),
        }
    }

    /// Checks that a payload holds no string Postgres cannot store (`\u0000`), naming its path.
    /// Its size, like every other limit, is checked by the database's one validator.
    pub(crate) fn check_payload(task_id: &str, payload: &serde_json::Value) -> Result<(), Self> {
        kiln_core::check_json("payload", payload, usize::MAX)
            .map_err(|e| Self::invalid(task_id, e.to_string()))
    }

    /// The same error, saying which item of a batch (0-based) it is about.
    pub(crate) fn in_item(self, index: usize) -> Self {
        match self {
            Self::InvalidTrigger { task_id, message } => Self::InvalidTrigger {
                task_id,
                message: format!("batch item {index}: {message}"),
            },
            Self::InvalidPayload { task_id, message } => Self::InvalidPayload {
                task_id,
                message: format!("batch item {index}: {message}"),
            },
            other => other,
        }
    }

    pub(crate) fn connect(address: &str, reason: impl std::fmt::Display) -> Self {
        Self::Connect {
            address: address.to_owned(),
            reason: reason.to_string(),
        }
    }
}

impl From<StoreError> for ClientError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnregisteredTask { task_id } => Self::UnregisteredTask { task_id },
            StoreError::Invalid(message) => Self::Invalid(message),
            StoreError::NotFound(message) => Self::NotFound(message),
            StoreError::Conflict(message) => Self::Conflict(message),
            StoreError::TooLarge(message) => Self::TooLarge(message),
            other => Self::Store(other),
        }
    }
}

/// Why waiting for a run's typed result gave none.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The run ended without completing.
    #[error("run {run_id} ended {status}: {}", .error.as_ref().map_or("no error recorded", |e| e.message.as_str()))]
    Failed {
        /// The run.
        run_id: uuid::Uuid,
        /// Its final status (failed, canceled, crashed, timed_out, expired, system_failure).
        status: kiln_core::RunStatus,
        /// The error it ended with.
        error: Option<kiln_core::ErrorRecord>,
    },
    /// The run was not final within the timeout. It goes on: wait again, or read it later.
    #[error("run {run_id} was not final within {} s; it goes on: wait again or read it later", .waited.as_secs_f64())]
    Timeout {
        /// The run.
        run_id: uuid::Uuid,
        /// How long was waited.
        waited: std::time::Duration,
    },
    /// The run completed, but its output does not decode into the task's output type (the task
    /// changed since the run was triggered, or the id is another task's run).
    #[error("run {run_id} completed, but its output does not decode into {expected}: {message}")]
    Output {
        /// The run.
        run_id: uuid::Uuid,
        /// The type expected.
        expected: &'static str,
        /// Why it does not decode.
        message: String,
    },
    /// Reading or triggering the run failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}
