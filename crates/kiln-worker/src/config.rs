//! The worker's settings and their defaults, in one place.

use std::sync::Arc;
use std::time::Duration;

use kiln_core::{Clock, SystemClock};

/// Runs one worker process executes at once, unless set.
pub const DEFAULT_CONCURRENCY: usize = 10;
/// How long a claimed run's lease lasts without a heartbeat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// How often leases of in-flight runs are extended (a third of the lease).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// How often the fetch loop polls when no notification arrives.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Most runs one claim statement takes.
pub const DEFAULT_CLAIM_BATCH: usize = 500;
/// The largest local buffer of prefetched runs a worker may keep.
pub const MAX_PREFETCH: usize = 10_000;
/// Most attempt outcomes one completion statement records.
pub const DEFAULT_COMPLETION_BATCH: usize = 1_000;
/// How long in-flight runs may finish after SIGTERM before they are handed back.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long a body may keep running after its cancellation token fired before it is dropped.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);
/// How often each maintenance service runs.
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// How long finished runs are kept before the cleaner deletes them: 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Log lines one attempt keeps at most.
pub const DEFAULT_LOG_MAX_LINES: u32 = 1_000;
/// Bytes of log lines one attempt keeps at most: 256 KiB.
pub const DEFAULT_LOG_MAX_BYTES: usize = 256 * 1024;
/// How often buffered log lines are written.
pub const DEFAULT_LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Connections a worker's pool opens at most.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Schedules one scheduler pass fires at most.
pub const DEFAULT_SCHEDULE_BATCH: u32 = 100;
/// First pause before a waiting parent tries again to take a slot in a full queue.
pub const FIRST_RESUME_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between a waiting parent's attempts to take a slot again in a full queue.
pub const MAX_RESUME_BACKOFF: Duration = Duration::from_millis(500);
/// Under a backlog, how long the fetch loop waits for half a batch of slots to free up before
/// claiming fewer runs.
pub const CLAIM_GATHER: Duration = Duration::from_millis(5);
/// Pause after a claim skipped a queue another worker was claiming.
pub const CONTENDED_RETRY: Duration = Duration::from_millis(5);
pub use kiln_client::backoff::MAX_ERROR_BACKOFF;

/// Every tunable of a worker. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Runs this process executes at once.
    pub concurrency: usize,
    /// Lease length.
    pub lease: Duration,
    /// Heartbeat period; keep it well under `lease`.
    pub heartbeat_interval: Duration,
    /// Poll period when idle.
    pub poll_interval: Duration,
    /// Most runs per claim.
    pub claim_batch: usize,
    /// Runs of queues without limits claimed ahead of free slots and kept in a local buffer, so
    /// a slot that frees starts its next run without a round trip (0, the default, keeps none).
    /// Buffered runs are leased: they show as `executing`, their lease is heartbeated, their ttl
    /// no longer applies, their `max_duration` starts with the body, and a stopping worker hands
    /// them back at once. Worth it for many short runs; with long ones, a buffer holds runs
    /// another worker could start.
    pub prefetch: usize,
    /// Most outcomes per completion statement.
    pub completion_batch: usize,
    /// Time given to in-flight runs on shutdown.
    pub shutdown_grace: Duration,
    /// Time a body gets after its token fired.
    pub cancel_grace: Duration,
    /// Period of the frequent maintenance services: scheduler, rescuer, delayed promoter and
    /// expirer.
    pub maintenance_interval: Duration,
    /// Period of the cleaner, which deletes finished runs past their retention.
    pub cleaner_interval: Duration,
    /// Period of the cleanup of idle concurrency keys and long-gone workers.
    pub key_cleanup_interval: Duration,
    /// Run the maintenance services in this process.
    pub run_maintenance: bool,
    /// Finished runs older than this are deleted with their attempts; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Apply pending migrations at start.
    pub migrate: bool,
    /// Pool size when the worker opens its own pool.
    pub max_connections: u32,
    /// The clock the scheduler fires cron ticks by (tests pass a [`kiln_core::ManualClock`]).
    pub clock: Arc<dyn Clock>,
    /// Schedules fired per scheduler pass.
    pub schedule_batch: u32,
    /// Log lines (`ctx.log()`) one attempt keeps at most; past it, one marker line says the rest
    /// was dropped.
    pub log_max_lines: u32,
    /// Bytes of log messages and fields one attempt keeps at most.
    pub log_max_bytes: usize,
    /// How often buffered log lines are written (also when an attempt ends).
    pub log_flush_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            lease: DEFAULT_LEASE,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            poll_interval: DEFAULT_POLL_INTERVAL,
            claim_batch: DEFAULT_CLAIM_BATCH,
            prefetch: 0,
            completion_batch: DEFAULT_COMPLETION_BATCH,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            maintenance_interval: DEFAULT_MAINTENANCE_INTERVAL,
            cleaner_interval: crate::maintenance::DEFAULT_CLEANER_INTERVAL,
            key_cleanup_interval: crate::maintenance::DEFAULT_KEY_CLEANUP_INTERVAL,
            run_maintenance: true,
            retention: Some(DEFAULT_RETENTION),
            migrate: true,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            clock: Arc::new(SystemClock),
            schedule_batch: DEFAULT_SCHEDULE_BATCH,
            log_max_lines: DEFAULT_LOG_MAX_LINES,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            log_flush_interval: DEFAULT_LOG_FLUSH_INTERVAL,
        }
    }
}

impl WorkerConfig {
    /// Checks the settings, naming the first one that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.heartbeat_interval >= self.lease {
            return Err(format!(
                "heartbeat_interval ({:?}) must be shorter than lease ({:?}), or leases expire \
                 between heartbeats",
                self.heartbeat_interval, self.lease
            ));
        }
        if self.claim_batch == 0 || self.completion_batch == 0 {
            return Err("claim_batch and completion_batch must be at least 1".into());
        }
        if self.prefetch > MAX_PREFETCH {
            return Err(format!(
                "prefetch ({}) must be at most {MAX_PREFETCH}: a larger buffer holds runs other                  workers could start",
                self.prefetch
            ));
        }
        for (name, every) in [
            ("maintenance_interval", self.maintenance_interval),
            ("cleaner_interval", self.cleaner_interval),
            ("key_cleanup_interval", self.key_cleanup_interval),
        ] {
            if every < Duration::from_millis(10) {
                return Err(format!(
                    "{name} ({every:?}) must be at least 10 ms; to stop maintenance in this \
                     process, use run_maintenance(false)"
                ));
            }
        }
        Ok(())
    }
}
