//! The error a task body returns, and how it is stored.

use serde::{Deserialize, Serialize};

/// Why an attempt ended in error, as stored with the attempt and the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// An ordinary error: retried per the retry policy.
    Error,
    /// `Error::abort`: the run fails at once, without retry.
    Abort,
    /// The body panicked: retried like an ordinary error.
    Panic,
    /// The payload did not decode into the task's payload type: fails at once.
    Payload,
    /// The body ran past `max_duration`.
    TimedOut,
    /// The run was canceled.
    Canceled,
    /// The worker lost the lease (died, stalled or was partitioned).
    Crashed,
    /// The worker shut down and handed the run back.
    Interrupted,
    /// The run was not started before its ttl ran out.
    Expired,
    /// No registered task on the worker matches the run.
    SystemFailure,
    /// The attempt's output or error could not be stored (for example a string holding
    /// `\u0000`, which Postgres cannot keep): the run fails without retry.
    Unstorable,
}

/// An error as stored in `runs.error` and `attempts.error`: kind, message and cause chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// What kind of failure this was.
    pub kind: ErrorKind,
    /// The error's own message.
    pub message: String,
    /// Messages of the causes, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

impl ErrorRecord {
    /// A record with no cause chain.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            chain: Vec::new(),
        }
    }
}

/// The error a task body returns. Any `std::error::Error` converts into it with `?` and is
/// retried per the task's policy; [`Error::abort`] fails the run at once.
///
/// Like `anyhow::Error`, it deliberately does not implement `std::error::Error` itself, so that
/// the blanket conversion from every error type can exist.
#[derive(Debug, Clone)]
pub struct Error {
    record: ErrorRecord,
}

impl Error {
    /// An ordinary, retryable error with this message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            record: ErrorRecord::new(ErrorKind::Error, message),
        }
    }

    /// An error that fails the run at once, whatever attempts remain (Trigger.dev's
    /// `AbortTaskRunError`).
    pub fn abort(message: impl Into<String>) -> Self {
        Self {
            record: ErrorRecord::new(ErrorKind::Abort, message),
        }
    }

    /// An error of the given kind (used by the worker for timeouts, panics and payloads).
    pub fn with_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            record: ErrorRecord::new(kind, message),
        }
    }

    /// True when this error must not be retried.
    pub fn is_abort(&self) -> bool {
        matches!(self.record.kind, ErrorKind::Abort | ErrorKind::Payload)
    }

    /// The stored form of this error.
    pub fn record(&self) -> &ErrorRecord {
        &self.record
    }

    /// Consumes the error into its stored form.
    pub fn into_record(self) -> ErrorRecord {
        self.record
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.record.message)?;
        for cause in &self.record.chain {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        let mut chain = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        Self {
            record: ErrorRecord {
                kind: ErrorKind::Error,
                message: error.to_string(),
                chain,
            },
        }
    }
}

/// `Result` with Kiln's task [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns any error into one that fails the run at once: `env::var("API_KEY").or_abort()?`.
pub trait ResultExt<T> {
    /// Maps the error into [`Error::abort`].
    fn or_abort(self) -> Result<T>;
}

impl<T, E: std::fmt::Display> ResultExt<T> for std::result::Result<T, E> {
    fn or_abort(self) -> Result<T> {
        self.map_err(|e| Error::abort(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("calendar API refused the request")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn converted_errors_keep_their_cause_chain_and_are_retryable() {
        let inner = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let error: Error = Outer(inner).into();
        assert!(!error.is_abort());
        assert_eq!(error.record().chain, ["connect timed out"]);
        assert_eq!(
            error.to_string(),
            "calendar API refused the request: connect timed out"
        );
    }

    #[test]
    fn or_abort_marks_the_error_final() {
        let result: std::result::Result<(), &str> = Err("no API key");
        let error = result.or_abort().unwrap_err();
        assert!(error.is_abort());
        assert_eq!(error.record().kind, ErrorKind::Abort);
    }
}
