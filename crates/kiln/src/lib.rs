//! # Kiln
//!
//! Durable background jobs for Rust on PostgreSQL: define typed tasks with [`task!`], trigger them
//! from your app (in your own transaction if you like), and run them in worker processes with
//! global per-queue and per-key concurrency limits, retries with backoff, timeouts and crash
//! recovery. Postgres is the only server.
//!
//! ## Quick start
//!
//! ```no_run
//! use kiln::{task, Client, Context, Result, Worker};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct SyncPayload { pub ws_id: String }
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct SyncOutcome { pub ws_id: String, pub success: bool, pub error: Option<String> }
//!
//! task! {
//!     /// Syncs one workspace's calendar.
//!     pub CalendarSync {
//!         id: "google-calendar-sync",
//!         queue: { concurrency_limit: 1 },
//!         retry: { max_attempts: 5, min_timeout: "2s", max_timeout: "5m" },
//!         max_duration: "10m",
//!         run: async |ctx: Context, payload: SyncPayload| -> Result<SyncOutcome> {
//!             tracing::info!(attempt = ctx.attempt(), "syncing");
//!             Ok(SyncOutcome { ws_id: payload.ws_id, success: true, error: None })
//!         }
//!     }
//! }
//!
//! # async fn demo() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! // In the app: enqueue and return at once. One workspace never runs two syncs at a time.
//! let client = Client::connect("postgres://localhost/app").await?;
//! let run = client
//!     .trigger::<CalendarSync>(SyncPayload { ws_id: "ws_1".into() })
//!     .concurrency_key("ws_1")
//!     .await?;
//!
//! // In a worker process (as many as you like, on as many machines):
//! Worker::builder()
//!     .database_url("postgres://localhost/app")
//!     .register(CalendarSync)
//!     .concurrency(50)
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Concepts
//!
//! - A **task** has an id, a queue (with an optional `concurrency_limit`), a retry policy, an
//!   optional `max_duration` and `ttl`, and a typed async body.
//! - A **run** is one triggered execution; it goes through statuses ([`RunStatus`]) and keeps
//!   every attempt. Delivery is at least once: write bodies to be idempotent (use idempotency keys
//!   on side effects), because a worker that loses its lease may have run part of a body.
//! - A **concurrency key** gives each key value (say a workspace id) its own copy of the queue's
//!   limit. Limits hold across all workers at every instant; claiming is fair across keys.
//!
//! - A **schedule** fires a task on the ticks of a cron pattern in an IANA timezone, exactly
//!   once per tick however many workers run: declare one on the task (`cron: "0 * * * *"`) or
//!   create them at run time with [`Client::schedules`].
//! - A run can trigger **child runs** ([`Context::trigger`], [`Context::batch_trigger`]) and wait
//!   for their typed results ([`Context::trigger_and_wait`],
//!   [`Context::batch_trigger_and_wait`]); while it waits it gives its concurrency slot back.
//!
//! Apps that only trigger runs can depend on `kiln` with `default-features = false`, which leaves
//! out the worker runtime. docs/getting-started.md takes a new app from `cargo new` to a task
//! running under a limit.
//!
//! ## By example
//!
//! **App state and worker settings.** A body reaches the app's pool or client through
//! `ctx.state::<T>()`; a task that declares `state: T` refuses to start on a worker without it.
//! Every setting has a builder method, checked by `build()`:
//!
//! ```no_run
//! use std::time::Duration;
//! use kiln::{task, Context, Result, Worker};
//!
//! #[derive(Clone)]
//! struct App { provider_url: String }
//!
//! task! {
//!     pub Ping {
//!         id: "ping",
//!         state: App,
//!         run: async |ctx: Context, _payload: ()| -> Result<String> {
//!             Ok(ctx.state::<App>().provider_url.clone())
//!         }
//!     }
//! }
//!
//! # async fn demo() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! Worker::builder()
//!     .database_url("postgres://localhost/app")
//!     .state(App { provider_url: "https://calendar.example".into() })
//!     .register(Ping)
//!     .concurrency(20)
//!     .lease(Duration::from_secs(60))
//!     .heartbeat_interval(Duration::from_secs(15))
//!     .shutdown_grace(Duration::from_secs(120))
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! **Limits, and waiting for a typed result.** `concurrency_limit` holds per concurrency key,
//! `total_limit` across all keys of the queue; from outside a run, `trigger_and_wait` returns the
//! typed output, or a [`WaitError`] saying how the run ended:
//!
//! ```no_run
//! use std::time::Duration;
//! use kiln::{task, Client, Context, Result, WaitError};
//!
//! task! {
//!     pub Render {
//!         id: "render",
//!         queue: { name: "renders", concurrency_limit: 2, total_limit: 20 },
//!         run: async |_ctx: Context, page: u32| -> Result<String> { Ok(format!("page {page}")) }
//!     }
//! }
//!
//! # async fn demo(client: Client) -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let run = client.trigger::<Render>(7).concurrency_key("ws_1").await?;
//! println!("queued {}", run.id);
//! match client.trigger_and_wait::<Render>(8, Duration::from_secs(30)).await {
//!     Ok(text) => println!("{text}"),
//!     Err(WaitError::Timeout { run_id, .. }) => println!("{run_id} is still going"),
//!     Err(other) => return Err(other.into()),
//! }
//! # Ok(()) }
//! ```
//!
//! **Schedules and fan-out.** A task with `cron` fires exactly once per tick and receives a
//! [`ScheduleTick`]; a run fans out child runs and waits for their typed results, giving its
//! concurrency slot back while it waits. Schedules can also be created at run time:
//!
//! ```no_run
//! use kiln::{task, BatchItem, Client, Context, CreateSchedule, Result, ScheduleTick};
//!
//! task! {
//!     pub SyncOne {
//!         id: "sync-one",
//!         queue: { concurrency_limit: 1 },
//!         run: async |_ctx: Context, ws_id: String| -> Result<bool> { Ok(!ws_id.is_empty()) }
//!     }
//! }
//!
//! task! {
//!     /// Every hour (Berlin time): one child run per workspace, one at a time per workspace.
//!     pub SyncAll {
//!         id: "sync-all",
//!         cron: { pattern: "0 * * * *", timezone: "Europe/Berlin" },
//!         run: async |ctx: Context, tick: ScheduleTick| -> Result<usize> {
//!             let items = ["ws_1", "ws_2"]
//!                 .map(|ws| BatchItem::new(ws.to_owned()).concurrency_key(ws))
//!                 .to_vec();
//!             let results = ctx.batch_trigger_and_wait::<SyncOne>(items).await?;
//!             tracing::info!(tick = %tick.timestamp, late = tick.caught_up, "synced");
//!             Ok(results.iter().filter(|r| matches!(r, Ok(true))).count())
//!         }
//!     }
//! }
//!
//! # async fn demo(client: Client) -> std::result::Result<(), Box<dyn std::error::Error>> {
//! client
//!     .schedules()
//!     .create(CreateSchedule::new("sync-one", "*/15 9-17 * * MON-FRI").timezone("America/New_York"))
//!     .await?;
//!
//! // The time types come re-exported (kiln::chrono, kiln::chrono_tz, kiln::uuid): no versions
//! // to match by hand.
//! let berlin = kiln::CronSchedule::parse("30 2 * * *", Some("Europe/Berlin"))?;
//! let next: kiln::chrono::DateTime<kiln::chrono::Utc> = berlin.next_after(kiln::chrono::Utc::now()).unwrap();
//! println!("next at {}", next.with_timezone(&kiln::chrono_tz::Europe::Berlin));
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub use kiln_client::{
    ApiKey, BulkAction, BulkProgress, BulkSelection, CancelOutcome, Client, ClientError,
    CreateSchedule, ErrorCode, QueueRow, Queues, RunFilter, RunHandle, RunPage, RunWaiter, Runs,
    Schedules, Scope, TaskRow, Tasks, Trigger, UnregisteredWaiting, UpdateSchedule, WaitError,
    WorkerRow, Workers, BULK_BATCH, DEFAULT_BULK_CAP, MAX_BULK_CAP, MAX_LOG_PAGE,
    STATUS_SCAN_BUDGET, WAIT_POLL_INTERVAL,
};
pub use kiln_core::*;
#[cfg(feature = "worker")]
pub use kiln_worker::{
    log_layer, Cleaner, Rescuer, RunLogLayer, Scheduler, Worker, WorkerBuilder, WorkerConfig,
    WorkerError,
};

/// The worker's settings and defaults.
#[cfg(feature = "worker")]
pub mod worker {
    pub use kiln_worker::*;
}
