//! Kiln's worker runtime.
//!
//! A worker claims runs of the tasks it registered (a batch sized to its free slots, in one
//! statement that enforces every queue's global limits), executes each body on tokio with its
//! [`Context`](kiln_core::Context), extends leases with heartbeats, records outcomes in batches,
//! and runs the maintenance services (scheduler, rescuer, delayed promoter, expirer, idle key cleanup, cleaner). It wakes on
//! LISTEN/NOTIFY and polls as a fallback. SIGTERM drains; `kill -9` loses nothing: the lease
//! expires and another worker's rescuer queues the run again.
//!
//! ```no_run
//! # kiln_core::task! { pub Noop { id: "noop", run: async |_c: kiln_core::Context, _p: ()| -> kiln_core::Result<()> { Ok(()) } } }
//! # async fn demo() -> Result<(), kiln_worker::WorkerError> {
//! kiln_worker::Worker::builder()
//!     .database_url("postgres://localhost/app")
//!     .register(Noop)
//!     .concurrency(100)
//!     .run()
//!     .await
//! # }
//! ```

#![forbid(unsafe_code)]

mod children;
mod completer;
mod config;
mod execute;
mod fence;
mod inflight;
mod log_layer;
mod logs;
mod maintenance;
mod registry;
mod worker;

pub use config::*;
pub use fence::SELF_FENCE_DIVISOR;
pub use log_layer::{log_layer, RunLogLayer};
pub use maintenance::{
    Cleaner, DelayedPromoter, Expirer, KeyCleanup, Rescuer, Scheduler, SchedulerVacuum,
    DEFAULT_CLEANER_BATCH, DEFAULT_CLEANER_INTERVAL, DEFAULT_KEY_CLEANUP_INTERVAL,
    DEFAULT_KEY_IDLE, DEFAULT_MAINTENANCE_BATCH, DEFAULT_RESCUE_BATCH,
    DEFAULT_SCHEDULER_VACUUM_DEAD_ROWS, DEFAULT_SCHEDULER_VACUUM_INTERVAL,
};
pub use worker::{Worker, WorkerBuilder};

/// Why a worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker was configured in a way that cannot work.
    #[error("worker misconfigured: {0}")]
    Config(String),
    /// The database could not be reached.
    #[error(
        "cannot connect to PostgreSQL: {0}; check DATABASE_URL and that the server is running"
    )]
    Connect(#[source] sqlx::Error),
    /// A store call failed while starting.
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
}
