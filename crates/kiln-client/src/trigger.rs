//! One trigger being prepared: `client.trigger::<T>(payload)` returns it; set options on it, then
//! `.await` it.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_core::{TaskDefinition, TriggerOptions};
use kiln_store::run::{run_insert_many, RunSpec};
use sqlx::{PgConnection, PgPool};

use crate::{ClientError, RunHandle};

/// Where the run is inserted: on the client's pool, or in the caller's transaction.
pub(crate) enum Target<'a> {
    Pool(&'a PgPool),
    Connection(&'a mut PgConnection),
}

/// A trigger of one run. Nothing is written until it is awaited:
///
/// ```no_run
/// # async fn demo(client: kiln_client::Client) -> Result<(), kiln_client::ClientError> {
/// # use std::time::Duration;
/// let run = client
///     .trigger_by_id("schedule-task", serde_json::json!({"ws_id": "ws_1"}))
///     .concurrency_key("ws_1")
///     .delay(Duration::from_secs(30))
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a trigger does nothing until it is awaited"]
pub struct Trigger<'a> {
    target: Target<'a>,
    task_id: String,
    definition: Option<&'static TaskDefinition>,
    payload: Result<serde_json::Value, String>,
    options: TriggerOptions,
}

impl std::fmt::Debug for Trigger<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trigger")
            .field("task_id", &self.task_id)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Setters that forward to [`TriggerOptions`]'s, so options chain on the trigger itself.
macro_rules! forward_options {
    ($($(#[$doc:meta])* $name:ident($arg:ident: $ty:ty);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $arg: $ty) -> Self {
                self.options = self.options.$name($arg);
                self
            }
        )*
    };
}

impl<'a> Trigger<'a> {
    pub(crate) fn new(
        target: Target<'a>,
        task_id: String,
        definition: Option<&'static TaskDefinition>,
        payload: Result<serde_json::Value, String>,
    ) -> Self {
        Self {
            target,
            task_id,
            definition,
            payload,
            options: TriggerOptions::default(),
        }
    }

    /// Replaces every option at once.
    pub fn options(mut self, options: TriggerOptions) -> Self {
        self.options = options;
        self
    }

    forward_options! {
        /// Gives the run its own copy of the queue's limit for this key (e.g. a workspace id).
        concurrency_key(key: impl Into<String>);
        /// A second trigger with this live key returns the existing run.
        idempotency_key(key: impl Into<String>);
        /// How long the idempotency key dedupes (30 days by default).
        idempotency_key_ttl(ttl: Duration);
        /// Starts the run no earlier than this long from now.
        delay(delay: Duration);
        /// Starts the run no earlier than this instant.
        delay_until(at: DateTime<Utc>);
        /// Expires the run if it has not started this long after it became available.
        ttl(ttl: Duration);
        /// Head start in the queue order (whole seconds).
        priority(head_start: Duration);
        /// Adds a tag (at most 10).
        tag(tag: impl Into<String>);
        /// Free-form JSON kept with the run.
        metadata(metadata: serde_json::Value);
        /// Attempts in all, overriding the task's retry policy.
        max_attempts(attempts: u32);
        /// Maximum duration of one attempt, overriding the task's.
        max_duration(limit: Duration);
        /// Runs in this queue instead of the task's.
        queue(queue: impl Into<String>);
    }

    /// Triggers even if no worker has ever registered the task id.
    pub fn allow_unregistered(mut self) -> Self {
        self.options = self.options.allow_unregistered();
        self
    }

    async fn send(self) -> Result<RunHandle, ClientError> {
        let task_id = self.task_id;
        self.options
            .validate()
            .map_err(|e| ClientError::invalid(&task_id, e))?;
        let payload = self
            .payload
            .map_err(|e| ClientError::invalid(&task_id, e))?;
        let allow = self.options.allow_unregistered;
        let specs = [RunSpec {
            payload,
            options: self.options,
        }];
        let mut runs = match self.target {
            Target::Pool(pool) => {
                run_insert_many(pool, &task_id, self.definition, &specs, allow).await?
            }
            Target::Connection(conn) => {
                run_insert_many(conn, &task_id, self.definition, &specs, allow).await?
            }
        };
        Ok(runs.remove(0).into())
    }
}

impl<'a> IntoFuture for Trigger<'a> {
    type Output = Result<RunHandle, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
