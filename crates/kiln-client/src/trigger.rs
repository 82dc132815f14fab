//! One trigger being prepared: `client.trigger::<T>(payload)` returns it; set options on it, then
//! `.await` it.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use kiln_core::{TaskDefinition, TriggerOptions};
use kiln_store::run::{run_insert_many, RunSpec};
use sqlx::{PgConnection, PgPool};

use crate::{ClientError, RunHandle};

/// Where the run is inserted: on the client's pool, or in the caller's transaction.
pub(crate) enum Target<'a> {
    Pool(&'a PgPool),
    Connection(&'a mut PgConnection),
}

/// What checks an untyped payload against its task's registered JSON Schema.
pub(crate) type SchemaCheck = Option<crate::Client>;

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
    schema_check: SchemaCheck,
}

impl std::fmt::Debug for Trigger<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trigger")
            .field("task_id", &self.task_id)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<'a> Trigger<'a> {
    pub(crate) fn new(
        target: Target<'a>,
        task_id: String,
        definition: Option<&'static TaskDefinition>,
        payload: Result<serde_json::Value, String>,
        schema_check: SchemaCheck,
    ) -> Self {
        Self {
            target,
            task_id,
            definition,
            payload,
            options: TriggerOptions::default(),
            schema_check,
        }
    }

    /// Replaces every option at once.
    pub fn options(mut self, options: TriggerOptions) -> Self {
        self.options = options;
        self
    }

    kiln_core::__kiln_forward_trigger_options!();

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
        ClientError::check_payload(&task_id, &payload)?;
        if let Some(client) = &self.schema_check {
            client.check_payload_schema(&task_id, &payload).await?;
        }
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
        let handle: RunHandle = runs.remove(0).into();
        if !handle.is_cached {
            crate::metrics::count_triggered(&task_id, 1);
        }
        Ok(handle)
    }
}

impl<'a> IntoFuture for Trigger<'a> {
    type Output = Result<RunHandle, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
