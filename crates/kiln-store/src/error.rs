//! The store's error: what failed, in words a caller can act on.

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A trigger named a task id no worker has ever registered.
    #[error("task {task_id:?} is not registered: no worker has ever registered a task with this id; check the id for a typo, start a worker that registers it, or trigger with allow_unregistered")]
    UnregisteredTask {
        /// The task id that was triggered.
        task_id: String,
    },
    /// The caller passed something the database refused as invalid.
    #[error("{0}")]
    Invalid(String),
    /// The thing named (a queue, a key) does not exist; the message says which and where to look.
    #[error("{0}")]
    NotFound(String),
    /// A payload, metadata, key or tag is larger than its limit (`kiln.limits`).
    #[error("{0}")]
    TooLarge(String),
    /// The thing named exists, but its state does not allow the change.
    #[error("{0}")]
    Conflict(String),
    /// A migration could not be applied, or the applied ones differ from this build's.
    #[error("{0}")]
    Migration(String),
    /// The database refused or could not run a statement.
    #[error("{action} failed: {source}")]
    Database {
        /// What Kiln was doing, e.g. "claiming runs".
        action: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// True when the database could not be reached (as opposed to refusing a statement).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Self::Database {
                source: sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Tls(_),
                ..
            }
        )
    }
}

impl StoreError {
    /// True when trying the same call again later may succeed: the database could not be
    /// reached, was shutting down or starting, ran out of resources, or asked the transaction to
    /// be retried (serialization failure, deadlock victim). False when it refused the statement
    /// for what it contained.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database {
                source: sqlx::Error::Database(e),
                ..
            } => e.code().is_some_and(|code| {
                // 08: connection exception, 40: transaction rollback, 53: insufficient
                // resources, 57: operator intervention, 58: system error.
                ["08", "40", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }),
            Self::Database { .. } => true,
            _ => false,
        }
    }

    /// What the database said, without the statement or its parameters: the message of a
    /// database error (and its detail), else this error's own text.
    pub fn database_message(&self) -> String {
        if let Self::Database {
            source: sqlx::Error::Database(e),
            ..
        } = self
        {
            let detail = e
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.detail())
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            return format!("{}{detail}", e.message());
        }
        self.to_string()
    }
}

/// Maps a driver error raised while doing `action`, recognizing Kiln's own SQLSTATEs: KL400
/// invalid, KL404 task not registered, KL409 conflict, KL410 a named queue or run does not exist,
/// KL413 over a limit (migrations/0010_one_validator.sql).
pub(crate) fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| {
        if let sqlx::Error::Database(e) = &source {
            match e.code().as_deref() {
                Some("KL404") => {
                    let message = e.message();
                    let task_id = message.split('"').nth(1).unwrap_or(message).to_owned();
                    return StoreError::UnregisteredTask { task_id };
                }
                Some(code @ ("KL400" | "KL409" | "KL410" | "KL413")) => {
                    let hint = e
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .and_then(|pg| pg.hint())
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default();
                    let message = format!("{}{hint}", e.message());
                    return match code {
                        "KL409" => StoreError::Conflict(message),
                        "KL410" => StoreError::NotFound(message),
                        "KL413" => StoreError::TooLarge(message),
                        _ => StoreError::Invalid(message),
                    };
                }
                _ => {}
            }
        }
        StoreError::Database { action, source }
    }
}
