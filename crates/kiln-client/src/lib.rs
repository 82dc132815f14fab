//! The app-side API: trigger runs (typed, by id, in batches, in the caller's transaction), read and
//! steer runs, pause and limit queues. It does not pull in the worker runtime, so an app that only
//! triggers compiles without it.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), kiln_client::ClientError> {
//! use kiln_client::Client;
//! let client = Client::new(pool);
//! let handle = client
//!     .trigger_by_id("schedule-task", serde_json::json!({"ws_id": "w1"}))
//!     .concurrency_key("w1")
//!     .await?;
//! let run = client.runs().retrieve(handle.id).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod audit;
pub mod backoff;
mod bulk;
mod error;
mod keys;
pub mod metrics;
mod queues;
mod runs;
mod schedules;
mod tasks;
mod trigger;
mod wait;

use kiln_core::{Task, TriggerOptions as Options, MAX_BATCH_SIZE};
use kiln_store::run::{run_insert_many, InsertedRun, RunSpec};
use sqlx::PgConnection;
use uuid::Uuid;

pub use audit::{Audit, AuditEntry, DEFAULT_ACTOR, MAX_AUDIT_PAGE};
pub use bulk::{
    BulkAction, BulkProgress, BulkSelection, BULK_BATCH, DEFAULT_BULK_CAP, MAX_BULK_CAP,
};
pub use error::{ClientError, ErrorCode, WaitError};
pub use keys::{hash_secret, Access, ApiKey, CreatedKey, Keys, Scope, MAX_KEY_NAME, SECRET_PREFIX};
pub use kiln_core::{
    BatchItem, CancelOutcome, Delay, QueueRow, Run, RunFilter, RunPage, RunStatus, Schedule,
    TriggerOptions,
};
pub use kiln_store::run::STATUS_SCAN_BUDGET;
pub use queues::Queues;
pub use runs::{Runs, MAX_LOG_PAGE};
pub use schedules::{CreateSchedule, Schedules, UpdateSchedule};
pub use tasks::{TaskRow, Tasks, UnregisteredWaiting, WorkerRow, Workers};
use trigger::Target;
pub use trigger::Trigger;
pub use wait::{RunWaiter, WAIT_POLL_INTERVAL};

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

/// Triggers runs and reaches runs and queues. Cheap to clone (it holds a pool).
#[derive(Debug, Clone)]
pub struct Client {
    pool: sqlx::PgPool,
    actor: std::sync::Arc<str>,
    schemas: std::sync::Arc<SchemaCache>,
    /// Wakes [`Runs::wait`] calls; started at the first wait, shared by clones.
    waiter: std::sync::Arc<std::sync::OnceLock<RunWaiter>>,
}

/// How long a task's payload schema is reused before it is read again.
pub const SCHEMA_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Recently read payload schemas: `None` for a task registered without one.
type CachedSchema = (
    Option<std::sync::Arc<serde_json::Value>>,
    std::time::Instant,
);

#[derive(Debug, Default)]
struct SchemaCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, CachedSchema>>,
}

impl Client {
    /// A client over an existing pool (migrated with `kiln migrate` or [`Client::migrate`]).
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self {
            pool,
            actor: std::sync::Arc::from(DEFAULT_ACTOR),
            schemas: std::sync::Arc::default(),
            waiter: std::sync::Arc::default(),
        }
    }

    /// The same client, recording its operator actions (cancel, replay, pause, ...) in the audit
    /// log as done by `actor` (`key:<name>`, `cli:<user>`).
    pub fn acting_as(&self, actor: impl Into<String>) -> Self {
        Self {
            pool: self.pool.clone(),
            actor: std::sync::Arc::from(actor.into()),
            schemas: std::sync::Arc::clone(&self.schemas),
            waiter: std::sync::Arc::clone(&self.waiter),
        }
    }

    /// The process's waiter for finished runs (one `LISTEN` connection), started on first use.
    /// Its own client has no waiter, so the listening task ends with the last clone of this one.
    pub(crate) fn waiter(&self) -> &RunWaiter {
        self.waiter
            .get_or_init(|| RunWaiter::start(Client::new(self.pool.clone())))
    }

    /// Refuses a payload that does not match the JSON Schema its task registered
    /// (`payload_schema: true`), naming the wrong field. Tasks without a schema, and tasks no
    /// worker registered, are not checked here.
    pub(crate) async fn check_payload_schema(
        &self,
        task_id: &str,
        payload: &serde_json::Value,
    ) -> Result<(), ClientError> {
        let Some(schema) = self.payload_schema(task_id).await? else {
            return Ok(());
        };
        kiln_core::json_schema::validate(
            &schema,
            &schema,
            payload,
            "payload",
            kiln_core::json_schema::Objects::Open,
        )
        .map_err(|message| ClientError::InvalidPayload {
            task_id: task_id.to_owned(),
            message,
        })
    }

    async fn payload_schema(
        &self,
        task_id: &str,
    ) -> Result<Option<std::sync::Arc<serde_json::Value>>, ClientError> {
        if let Some((schema, _)) = self
            .schemas
            .entries
            .lock()
            .expect("schema cache")
            .get(task_id)
            .filter(|(_, at)| at.elapsed() < SCHEMA_CACHE_TTL)
        {
            return Ok(schema.clone());
        }
        let schema = kiln_store::task::task_payload_schema(&self.pool, task_id)
            .await?
            .flatten()
            .map(std::sync::Arc::new);
        self.schemas.entries.lock().expect("schema cache").insert(
            task_id.to_owned(),
            (schema.clone(), std::time::Instant::now()),
        );
        Ok(schema)
    }

    /// Who this client's operator actions are recorded as.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    fn ops(&self) -> audit::Ops<'_> {
        audit::Ops {
            pool: &self.pool,
            actor: &self.actor,
            client: self,
        }
    }

    /// Connects to `database_url` with a small pool. One connection is opened first, within
    /// [`CONNECT_TIMEOUT`], so that a wrong address, a refused connection, bad credentials or a
    /// missing database are reported at once, naming the address.
    pub async fn connect(database_url: &str) -> Result<Self, ClientError> {
        use sqlx::Connection;
        let options = connect_options(database_url)?;
        let address = match options.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => format!("{}:{}", options.get_host(), options.get_port()),
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(&options))
            .await
        {
            Err(_) => {
                return Err(ClientError::connect(
                    &address,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                ))
            }
            Ok(Err(error)) => return Err(ClientError::connect(&address, error)),
            Ok(Ok(probe)) => {
                let _ = probe.close().await;
            }
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(DEFAULT_CLIENT_CONNECTIONS)
            .connect_lazy_with(options);
        Ok(Self::new(pool))
    }

    /// Applies Kiln's pending migrations.
    pub async fn migrate(&self) -> Result<Vec<i32>, ClientError> {
        Ok(kiln_store::migrate(&self.pool).await?)
    }

    /// Succeeds when the database is reachable and has every migration of this build; else a
    /// [`ClientError`] whose code is `unavailable` and whose message says what to do.
    pub async fn check_ready(&self) -> Result<(), ClientError> {
        let pending = kiln_store::migrate::migrations_pending(&self.pool).await?;
        if pending.is_empty() {
            return Ok(());
        }
        Err(ClientError::NotReady(format!(
            "the database lacks Kiln's migrations {pending:?}: run `kiln migrate`"
        )))
    }

    /// The pool this client uses.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Triggers one run of `T`, type-checked against its payload type. Set options on the returned
    /// [`Trigger`], then await it: `client.trigger::<T>(payload).concurrency_key("ws_1").await`.
    pub fn trigger<T: Task>(&self, payload: T::Payload) -> Trigger<'_> {
        Trigger::new(
            Target::Pool(&self.pool),
            T::ID.to_owned(),
            Some(&T::DEFINITION),
            typed_payload::<T>(&payload),
            None,
        )
    }

    /// Triggers one run of `T` and waits until it is final: its typed output, or why there is
    /// none ([`WaitError`]). On [`WaitError::Timeout`] the run goes on; wait for it again with
    /// [`Runs::wait`]. For a run triggered inside a task body, use `ctx.trigger_and_wait`.
    pub async fn trigger_and_wait<T: Task>(
        &self,
        payload: T::Payload,
        timeout: std::time::Duration,
    ) -> Result<T::Output, WaitError> {
        let run = self.trigger::<T>(payload).await?;
        self.runs().wait::<T>(run.id, timeout).await
    }

    /// Triggers one run of `T` inside the caller's transaction: the run exists if and only if the
    /// transaction commits. `client.trigger_tx::<T>(&mut tx, payload).await`.
    pub fn trigger_tx<'c, T: Task>(
        &self,
        tx: &'c mut PgConnection,
        payload: T::Payload,
    ) -> Trigger<'c> {
        Trigger::new(
            Target::Connection(tx),
            T::ID.to_owned(),
            Some(&T::DEFINITION),
            typed_payload::<T>(&payload),
            None,
        )
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
    /// been registered by a worker unless the trigger is marked `.allow_unregistered()`.
    pub fn trigger_by_id(&self, task_id: &str, payload: serde_json::Value) -> Trigger<'_> {
        Trigger::new(
            Target::Pool(&self.pool),
            task_id.to_owned(),
            None,
            Ok(payload),
            Some(self.clone()),
        )
    }

    /// [`Client::trigger_by_id`] inside the caller's transaction.
    pub fn trigger_by_id_tx<'c>(
        &self,
        tx: &'c mut PgConnection,
        task_id: &str,
        payload: serde_json::Value,
    ) -> Trigger<'c> {
        Trigger::new(
            Target::Connection(tx),
            task_id.to_owned(),
            None,
            Ok(payload),
            Some(self.clone()),
        )
    }

    /// Triggers up to 1,000 runs of a task by id in one statement.
    pub async fn batch_trigger_by_id(
        &self,
        task_id: &str,
        items: Vec<BatchItem<serde_json::Value>>,
    ) -> Result<Vec<RunHandle>, ClientError> {
        check_batch_size(task_id, items.len())?;
        let mut specs = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            item.options
                .validate()
                .map_err(|e| ClientError::invalid(task_id, e).in_item(index))?;
            ClientError::check_payload(task_id, &item.payload).map_err(|e| e.in_item(index))?;
            self.check_payload_schema(task_id, &item.payload)
                .await
                .map_err(|e| e.in_item(index))?;
            specs.push(RunSpec {
                payload: item.payload,
                options: item.options,
            });
        }
        let allow = specs.iter().any(|s| s.options.allow_unregistered);
        let runs = run_insert_many(&self.pool, task_id, None, &specs, allow).await?;
        metrics::count_triggered(task_id, runs.iter().filter(|r| !r.is_cached).count());
        Ok(runs.into_iter().map(RunHandle::from).collect())
    }

    /// Reads, lists, cancels and replays runs.
    pub fn runs(&self) -> Runs<'_> {
        Runs::new(self.ops())
    }

    /// Creates, changes, lists and deletes cron schedules.
    pub fn schedules(&self) -> Schedules<'_> {
        Schedules::new(self.ops())
    }

    /// Lists, pauses, resumes and limits queues.
    pub fn queues(&self) -> Queues<'_> {
        Queues::new(self.ops())
    }

    /// Creates, lists and revokes API keys of the HTTP API.
    pub fn keys(&self) -> Keys<'_> {
        Keys::new(self.ops())
    }

    /// Lists the tasks workers have registered.
    pub fn tasks(&self) -> Tasks<'_> {
        Tasks::new(self.ops())
    }

    /// Lists the worker processes (the workers registry).
    pub fn workers(&self) -> Workers<'_> {
        Workers::new(self.ops())
    }

    /// Reads the audit log of operator actions.
    pub fn audit(&self) -> Audit<'_> {
        Audit::new(self.ops())
    }
}

/// Statements slower than this are logged, at debug level and only by their summary, unless
/// [`SLOW_STATEMENT_ENV`] says otherwise.
pub const SLOW_STATEMENT_THRESHOLD: std::time::Duration = std::time::Duration::from_secs(1);

/// The environment variable that sets the slow-statement threshold of Kiln's own pools, in
/// milliseconds (for example `KILN_SLOW_STATEMENT_MS=200`).
pub const SLOW_STATEMENT_ENV: &str = "KILN_SLOW_STATEMENT_MS";

/// The slow-statement threshold: [`SLOW_STATEMENT_ENV`] when set, else
/// [`SLOW_STATEMENT_THRESHOLD`].
fn slow_statement_threshold() -> Result<std::time::Duration, ClientError> {
    slow_statement_threshold_from(std::env::var(SLOW_STATEMENT_ENV).ok())
}

fn slow_statement_threshold_from(
    value: Option<String>,
) -> Result<std::time::Duration, ClientError> {
    match value {
        None => Ok(SLOW_STATEMENT_THRESHOLD),
        Some(value) => value
            .trim()
            .parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|_| {
                ClientError::Invalid(format!(
                    "{SLOW_STATEMENT_ENV} must be a whole number of milliseconds, such as 200; got {value:?}"
                ))
            }),
    }
}

/// The options Kiln's own pools connect with: `database_url`, with statement logging kept
/// quiet (every statement at trace, slow ones at debug, never a warning with the SQL text
/// printed into the user's output; "slow" is set by [`SLOW_STATEMENT_ENV`]), and JIT
/// compilation off.
pub fn connect_options(
    database_url: &str,
) -> Result<sqlx::postgres::PgConnectOptions, ClientError> {
    use sqlx::ConnectOptions;
    let options: sqlx::postgres::PgConnectOptions = database_url.parse().map_err(|e| {
        ClientError::Invalid(format!(
            "the database URL does not parse ({e}): write it as postgres://user:password@host:5432/database"
        ))
    })?;
    // JIT compilation pays off for long analytic queries, never for Kiln's short ones, and its
    // cost estimate misfires on small tables without statistics: the queues listing on a
    // 1,000,000-run history took 234 ms with it, 34 ms without (BENCHMARKS.md, dashboard).
    Ok(options
        .options([("jit", "off")])
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Debug, slow_statement_threshold()?))
}

/// How long [`Client::connect`] waits for the database to answer.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    metrics::count_triggered(T::ID, runs.iter().filter(|r| !r.is_cached).count());
    Ok(runs.into_iter().map(RunHandle::from).collect())
}

fn typed_payload<T: Task>(payload: &T::Payload) -> Result<serde_json::Value, String> {
    serde_json::to_value(payload)
        .map_err(|e| format!("the payload does not serialize to JSON: {e}"))
}

fn typed_spec<T: Task>(payload: &T::Payload, options: Options) -> Result<RunSpec, ClientError> {
    options
        .validate()
        .map_err(|e| ClientError::invalid(T::ID, e))?;
    let payload = typed_payload::<T>(payload).map_err(|e| ClientError::invalid(T::ID, e))?;
    ClientError::check_payload(T::ID, &payload)?;
    Ok(RunSpec { payload, options })
}

fn typed_batch<T: Task>(items: Vec<BatchItem<T::Payload>>) -> Result<Vec<RunSpec>, ClientError> {
    check_batch_size(T::ID, items.len())?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            typed_spec::<T>(&item.payload, item.options).map_err(|e| e.in_item(index))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slow_statement_threshold_comes_from_the_environment_or_is_named_when_bad() {
        assert_eq!(
            slow_statement_threshold_from(None).unwrap(),
            SLOW_STATEMENT_THRESHOLD
        );
        assert_eq!(
            slow_statement_threshold_from(Some(" 200 ".into())).unwrap(),
            std::time::Duration::from_millis(200)
        );
        let error = slow_statement_threshold_from(Some("fast".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("KILN_SLOW_STATEMENT_MS"), "{error}");
        assert!(error.contains("\"fast\""), "{error}");
    }
}
