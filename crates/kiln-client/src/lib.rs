//! The app-side API: trigger runs (typed, by id, in batches, in the caller's transaction), read and
//! steer runs, pause and limit queues. It does not pull in the worker runtime, so an app that only
//! triggers compiles without it.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), kiln_client::ClientError> {
//! use kiln_client::{Client, TriggerOptions};
//! let client = Client::new(pool);
//! let handle = client
//!     .trigger_by_id("schedule-task", serde_json::json!({"ws_id": "w1"}),
//!                    TriggerOptions::new().concurrency_key("w1"))
//!     .await?;
//! let run = client.runs().retrieve(handle.id).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod error;
mod queues;
mod runs;

use kiln_core::{Task, TriggerOptions as Options, MAX_BATCH_SIZE};
use kiln_store::run::{run_insert_many, InsertedRun, RunSpec};
use sqlx::PgConnection;
use uuid::Uuid;

pub use error::ClientError;
pub use kiln_core::{Delay, Run, RunStatus, TriggerOptions};
pub use kiln_store::queue::QueueRow;
pub use kiln_store::run::{CancelOutcome, RunFilter, RunPage};
pub use queues::Queues;
pub use runs::Runs;

/// A handle on a triggered run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RunHandle {
    /// The run's id.
    pub id: Uuid,
    /// True when a live idempotency key returned an existing run instead of a new one.
    pub is_cached: bool,
}

impl From<InsertedRun> for RunHandle {
    fn from(run: InsertedRun) -> Self {
        Self {
            id: run.id,
            is_cached: run.is_cached,
        }
    }
}

/// One item of a batch trigger: a payload and its options.
#[derive(Debug, Clone)]
pub struct BatchItem<P> {
    /// The payload.
    pub payload: P,
    /// Its options.
    pub options: Options,
}

impl<P> BatchItem<P> {
    /// An item with default options.
    pub fn new(payload: P) -> Self {
        Self {
            payload,
            options: Options::default(),
        }
    }

    /// An item with these options.
    pub fn with_options(payload: P, options: Options) -> Self {
        Self { payload, options }
    }
}

/// Triggers runs and reaches runs and queues. Cheap to clone (it holds a pool).
#[derive(Debug, Clone)]
pub struct Client {
    pool: sqlx::PgPool,
}

impl Client {
    /// A client over an existing pool (migrated with `kiln migrate` or [`Client::migrate`]).
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self { pool }
    }

    /// Connects to `database_url` with a small pool.
    pub async fn connect(database_url: &str) -> Result<Self, ClientError> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(DEFAULT_CLIENT_CONNECTIONS)
            .connect(database_url)
            .await
            .map_err(ClientError::connect)?;
        Ok(Self { pool })
    }

    /// Applies Kiln's pending migrations.
    pub async fn migrate(&self) -> Result<Vec<i32>, ClientError> {
        Ok(kiln_store::migrate(&self.pool).await?)
    }

    /// The pool this client uses.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Triggers one run of `T`, type-checked against its payload type.
    pub async fn trigger<T: Task>(
        &self,
        payload: T::Payload,
        options: Options,
    ) -> Result<RunHandle, ClientError> {
        let spec = typed_spec::<T>(&payload, options)?;
        Ok(insert_typed::<T>(&self.pool, vec![spec]).await?.remove(0))
    }

    /// Triggers one run of `T` inside the caller's transaction: the run exists if and only if the
    /// transaction commits.
    pub async fn trigger_tx<T: Task>(
        &self,
        tx: &mut PgConnection,
        payload: T::Payload,
        options: Options,
    ) -> Result<RunHandle, ClientError> {
        let spec = typed_spec::<T>(&payload, options)?;
        Ok(insert_typed::<T>(tx, vec![spec]).await?.remove(0))
    }

    /// Triggers up to 1,000 runs of `T` in one statement. Handles come back in item order.
    pub async fn batch_trigger<T: Task>(
        &self,
        items: Vec<BatchItem<T::Payload>>,
    ) -> Result<Vec<RunHandle>, ClientError> {
        insert_typed::<T>(&self.pool, typed_batch::<T>(items)?).await
    }

    /// [`Client::batch_trigger`] inside the caller's transaction.
    pub async fn batch_trigger_tx<T: Task>(
        &self,
        tx: &mut PgConnection,
        items: Vec<BatchItem<T::Payload>>,
    ) -> Result<Vec<RunHandle>, ClientError> {
        insert_typed::<T>(tx, typed_batch::<T>(items)?).await
    }

    /// Triggers one run of a task by id with a JSON payload (untyped callers). The task must have
    /// been registered by a worker unless `options.allow_unregistered` is set.
    pub async fn trigger_by_id(
        &self,
        task_id: &str,
        payload: serde_json::Value,
        options: Options,
    ) -> Result<RunHandle, ClientError> {
        options
            .validate()
            .map_err(|e| ClientError::invalid(task_id, e))?;
        let allow = options.allow_unregistered;
        let spec = RunSpec { payload, options };
        let mut runs = run_insert_many(&self.pool, task_id, None, &[spec], allow).await?;
        Ok(runs.remove(0).into())
    }

    /// Triggers up to 1,000 runs of a task by id in one statement.
    pub async fn batch_trigger_by_id(
        &self,
        task_id: &str,
        items: Vec<BatchItem<serde_json::Value>>,
    ) -> Result<Vec<RunHandle>, ClientError> {
        check_batch_size(task_id, items.len())?;
        let mut specs = Vec::with_capacity(items.len());
        for item in items {
            item.options
                .validate()
                .map_err(|e| ClientError::invalid(task_id, e))?;
            specs.push(RunSpec {
                payload: item.payload,
                options: item.options,
            });
        }
        let allow = specs.iter().any(|s| s.options.allow_unregistered);
        let runs = run_insert_many(&self.pool, task_id, None, &specs, allow).await?;
        Ok(runs.into_iter().map(RunHandle::from).collect())
    }

    /// Reads, lists, cancels and replays runs.
    pub fn runs(&self) -> Runs<'_> {
        Runs::new(&self.pool)
    }

    /// Lists, pauses, resumes and limits queues.
    pub fn queues(&self) -> Queues<'_> {
        Queues::new(&self.pool)
    }
}

/// Connections a client opens by default with [`Client::connect`].
pub const DEFAULT_CLIENT_CONNECTIONS: u32 = 5;

fn check_batch_size(task_id: &str, len: usize) -> Result<(), ClientError> {
    if len > MAX_BATCH_SIZE {
        return Err(ClientError::invalid(
            task_id,
            format!("a batch holds at most {MAX_BATCH_SIZE} runs, got {len}: split it into several batches"),
        ));
    }
    Ok(())
}

/// Inserts runs of `T` with its compiled definition, on a pool or in a transaction.
async fn insert_typed<'e, T: Task>(
    executor: impl sqlx::PgExecutor<'e>,
    specs: Vec<RunSpec>,
) -> Result<Vec<RunHandle>, ClientError> {
    let allow = specs.iter().any(|s| s.options.allow_unregistered);
    let runs = run_insert_many(executor, T::ID, Some(&T::DEFINITION), &specs, allow).await?;
    Ok(runs.into_iter().map(RunHandle::from).collect())
}

fn typed_spec<T: Task>(payload: &T::Payload, options: Options) -> Result<RunSpec, ClientError> {
    options
        .validate()
        .map_err(|e| ClientError::invalid(T::ID, e))?;
    let payload = serde_json::to_value(payload).map_err(|e| {
        ClientError::invalid(
            T::ID,
            format!("the payload does not serialize to JSON: {e}"),
        )
    })?;
    Ok(RunSpec { payload, options })
}

fn typed_batch<T: Task>(items: Vec<BatchItem<T::Payload>>) -> Result<Vec<RunSpec>, ClientError> {
    check_batch_size(T::ID, items.len())?;
    items
        .into_iter()
        .map(|item| typed_spec::<T>(&item.payload, item.options))
        .collect()
}
