//! Maintenance services: small structs, each with its settings, named defaults and one pass
//! (`run_once`), run on their own periods by [`run_maintenance`]. Each is safe to run in every
//! worker at once (their statements use SKIP LOCKED or are idempotent), so no leader is elected.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_core::{AttemptOutcome, Clock, ErrorKind, ErrorRecord, RunStatus};
use kiln_store::lease::{lease_complete_many, lease_list_expired, AttemptEnd};
use kiln_store::queue::{queue_key_drop_idle, queue_prune_key_wakeups, queue_vacuum_scheduler};
use kiln_store::ready::{ready_expire, ready_promote_delayed};
use kiln_store::run::run_delete_finished_before;
use kiln_store::schedule::{
    schedule_fire_due, schedule_next_due, schedule_tick_delete_before, FiredTick,
};
use kiln_store::wait::wait_expire;
use kiln_store::worker::worker_delete_unseen_before;
use kiln_store::{Pool, Result};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Expired leases handled per rescuer pass.
pub const DEFAULT_RESCUE_BATCH: u32 = 500;
/// Delayed runs promoted, or waiting runs expired, per pass.
pub const DEFAULT_MAINTENANCE_BATCH: u32 = 1_000;
/// Concurrency keys with nothing waiting or running are forgotten after this long idle.
pub const DEFAULT_KEY_IDLE: Duration = Duration::from_secs(24 * 3600);
/// How often idle keys' "last served" rows are dropped.
pub const DEFAULT_KEY_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// How often the cleaner runs.
pub const DEFAULT_CLEANER_INTERVAL: Duration = Duration::from_secs(60);
/// Runs the cleaner deletes per statement.
pub const DEFAULT_CLEANER_BATCH: u32 = 1_000;
/// Dead rows in a key-scheduler table that make the next maintenance pass vacuum it.
pub const DEFAULT_SCHEDULER_VACUUM_DEAD_ROWS: i64 = 10_000;
/// A key-scheduler table vacuumed (by a worker or by autovacuum) within this long is left alone.
pub const DEFAULT_SCHEDULER_VACUUM_INTERVAL: Duration = Duration::from_secs(30);

/// Finds runs whose lease expired (their worker died or stalled), records the lost attempt as
/// `crashed`, and queues the run again if attempts remain, else finishes it as `crashed`.
#[derive(Debug, Clone)]
pub struct Rescuer {
    /// Leases handled per pass.
    pub batch: u32,
}

impl Default for Rescuer {
    fn default() -> Self {
        Self {
            batch: DEFAULT_RESCUE_BATCH,
        }
    }
}

impl Rescuer {
    /// One pass; returns how many runs were rescued. Waiting parents whose worker stopped
    /// extending their wait are rescued the same way.
    pub async fn rescue_expired_leases(&self, pool: &Pool) -> Result<u64> {
        wait_expire(pool, None).await?;
        let expired = lease_list_expired(pool, self.batch, None).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let now = Utc::now();
        let ends: Vec<AttemptEnd> = expired
            .iter()
            .map(|lease| AttemptEnd {
                run_id: lease.run_id,
                attempt: lease.attempt,
                outcome: AttemptOutcome::Crashed,
                retry_at: (lease.counted_attempt < lease.max_attempts).then_some(now),
                final_status: RunStatus::Crashed,
                output: None,
                error: Some(ErrorRecord::new(
                    ErrorKind::Crashed,
                    "the worker running this attempt stopped renewing its lease (it died, \
                     stalled or lost the database)",
                )),
                released: false,
            })
            .collect();
        let rescued = lease_complete_many(pool, &ends, true, None).await?;
        for (run_id, status) in &rescued {
            tracing::warn!(%run_id, %status, "rescued a run whose lease expired");
        }
        Ok(rescued.len() as u64)
    }
}

/// Fires due cron schedules: one run per tick, however many schedulers run (see
/// `kiln_store::schedule::schedule_fire_due`). Reads the time from its clock, so tests drive
/// ticks by moving a [`kiln_core::ManualClock`].
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// Schedules fired per pass.
    pub batch: u32,
    /// Where the time comes from.
    pub clock: Arc<dyn Clock>,
}

impl Scheduler {
    /// One pass: fires every schedule due now (at most `batch`); returns the ticks fired.
    pub async fn fire_due_schedules(&self, pool: &Pool) -> Result<Vec<FiredTick>> {
        let fired = schedule_fire_due(pool, self.clock.now(), self.batch).await?;
        for tick in &fired {
            tracing::info!(schedule_id = %tick.schedule_id, task = %tick.task_id, tick = %tick.tick,
                           run_id = %tick.run_id, caught_up = tick.skipped_missed, "schedule fired");
        }
        Ok(fired)
    }
}

/// Marks delayed runs whose delay has passed as `queued` (claims do not wait for this; it keeps
/// the status people see true).
#[derive(Debug, Clone)]
pub struct DelayedPromoter {
    /// Runs promoted per pass.
    pub batch: u32,
}

impl Default for DelayedPromoter {
    fn default() -> Self {
        Self {
            batch: DEFAULT_MAINTENANCE_BATCH,
        }
    }
}

impl DelayedPromoter {
    /// One pass; returns how many runs were promoted.
    pub async fn promote_due_runs(&self, pool: &Pool) -> Result<u64> {
        ready_promote_delayed(pool, self.batch, None).await
    }

    /// Drops the key wakeups that no claim reads (those of queues without a per-key limit);
    /// returns how many.
    pub async fn prune_key_wakeups(&self, pool: &Pool) -> Result<u64> {
        queue_prune_key_wakeups(pool).await
    }
}

/// Keeps the key scheduler's tables (`kiln.key_wakeups`, `kiln.queue_keys`) free of dead rows.
/// Every keyed claim reads them from the low end of an index, where consumed wakeups and keys
/// moved to the back of the line leave dead entries; a claim pays for each until a vacuum removes
/// it, and autovacuum comes at most once a minute. Vacuums only tables the worker's role owns.
#[derive(Debug, Clone)]
pub struct SchedulerVacuum {
    /// A table with at least this many dead rows is vacuumed.
    pub dead_rows: i64,
    /// ... unless a vacuum of it finished within this long: when an old snapshot keeps its dead
    /// rows from being removed, vacuuming it again at once would remove nothing either.
    pub min_interval: Duration,
}

impl Default for SchedulerVacuum {
    fn default() -> Self {
        Self {
            dead_rows: DEFAULT_SCHEDULER_VACUUM_DEAD_ROWS,
            min_interval: DEFAULT_SCHEDULER_VACUUM_INTERVAL,
        }
    }
}

impl SchedulerVacuum {
    /// One pass; returns the tables vacuumed.
    pub async fn vacuum_scheduler_tables(&self, pool: &Pool) -> Result<Vec<String>> {
        queue_vacuum_scheduler(pool, self.dead_rows, self.min_interval).await
    }
}

/// Finishes waiting runs whose ttl ran out before they started as `expired`.
#[derive(Debug, Clone)]
pub struct Expirer {
    /// Runs expired per pass.
    pub batch: u32,
}

impl Default for Expirer {
    fn default() -> Self {
        Self {
            batch: DEFAULT_MAINTENANCE_BATCH,
        }
    }
}

impl Expirer {
    /// One pass; returns how many runs expired.
    pub async fn expire_runs(&self, pool: &Pool) -> Result<u64> {
        ready_expire(pool, self.batch, None).await
    }
}

/// Forgets when idle concurrency keys were last served, and workers gone for as long.
#[derive(Debug, Clone)]
pub struct KeyCleanup {
    /// Keys with nothing waiting or running, not served for this long, are forgotten.
    pub idle: Duration,
}

impl Default for KeyCleanup {
    fn default() -> Self {
        Self {
            idle: DEFAULT_KEY_IDLE,
        }
    }
}

impl KeyCleanup {
    /// One pass; returns how many keys were forgotten.
    pub async fn drop_idle_keys(&self, pool: &Pool) -> Result<u64> {
        let idle_before =
            Utc::now() - chrono::Duration::from_std(self.idle).unwrap_or(chrono::Duration::MAX);
        queue_key_drop_idle(pool, idle_before).await
    }

    /// One pass; returns how many workers not seen for the idle time were forgotten.
    pub async fn forget_gone_workers(&self, pool: &Pool) -> Result<u64> {
        let unseen_before =
            Utc::now() - chrono::Duration::from_std(self.idle).unwrap_or(chrono::Duration::MAX);
        worker_delete_unseen_before(pool, unseen_before).await
    }
}

/// Deletes finished runs older than the retention, in bounded batches, so history does not grow
/// without end.
#[derive(Debug, Clone)]
pub struct Cleaner {
    /// Finished runs older than this are deleted.
    pub retention: Duration,
    /// Runs deleted per statement.
    pub batch: u32,
}

impl Cleaner {
    /// Deletes batches until one comes back short; returns how many runs were deleted.
    pub async fn delete_old_runs(&self, pool: &Pool) -> Result<u64> {
        let cutoff = Utc::now()
            - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let mut total = 0;
        loop {
            let deleted = run_delete_finished_before(pool, cutoff, self.batch).await?;
            total += deleted;
            if deleted < u64::from(self.batch) {
                schedule_tick_delete_before(pool, cutoff).await?;
                return Ok(total);
            }
        }
    }
}

/// One service on its own period.
struct Every {
    period: Duration,
    last: Option<Instant>,
}

impl Every {
    fn new(period: Duration) -> Self {
        Self { period, last: None }
    }

    /// True (and restarts the period) when the service is due.
    fn due(&mut self) -> bool {
        let due = self.last.is_none_or(|at| at.elapsed() >= self.period);
        if due {
            self.last = Some(Instant::now());
        }
        due
    }
}

fn report(what: &str, result: Result<u64>) {
    match result {
        Ok(0) => {}
        Ok(n) => tracing::info!(runs = n, "{what}"),
        Err(error) => tracing::warn!(%error, "maintenance failed: {what}"),
    }
}

/// Shortest sleep after a pass that left a schedule due (another scheduler holds it, or the batch
/// was full): its fire, or the next pass, follows at once.
const DUE_RECHECK: Duration = Duration::from_millis(5);

/// Fires due schedules at their tick's boundary, until `cancel` fires. After each pass it sleeps
/// until the next active schedule is due, at most the maintenance interval (so a missed
/// notification, or a clock that a test moves by hand, costs at most that), and wakes early when
/// `changed` is notified (`kiln_schedules`: a schedule was created, changed or fired).
pub(crate) async fn run_scheduler(
    pool: Pool,
    config: crate::WorkerConfig,
    changed: Arc<Notify>,
    cancel: CancellationToken,
) {
    let interval = config.maintenance_interval;
    let scheduler = Scheduler {
        batch: config.schedule_batch,
        clock: Arc::clone(&config.clock),
    };
    loop {
        report(
            "fired due schedules",
            scheduler
                .fire_due_schedules(&pool)
                .await
                .map(|fired| fired.len() as u64),
        );
        let wait = match schedule_next_due(&pool).await {
            Ok(Some(due)) => (due - scheduler.clock.now())
                .to_std()
                .unwrap_or_default()
                .clamp(DUE_RECHECK, interval),
            Ok(None) => interval,
            Err(error) => {
                tracing::warn!(%error, "maintenance failed: reading when the next schedule is due");
                interval
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs the rescuer, delayed promoter and expirer every maintenance interval, and the key cleanup
/// and the cleaner (when a retention is set) at their own intervals (a minute by default), until
/// `cancel` fires. The scheduler runs in its own loop ([`run_scheduler`]).
pub(crate) async fn run_maintenance(
    pool: Pool,
    config: crate::WorkerConfig,
    cancel: CancellationToken,
) {
    let interval = config.maintenance_interval;
    let retention = config.retention;
    let rescuer = Rescuer::default();
    let promoter = DelayedPromoter::default();
    let expirer = Expirer::default();
    let keys = KeyCleanup::default();
    let vacuum = SchedulerVacuum::default();
    let cleaner = retention.map(|retention| Cleaner {
        retention,
        batch: DEFAULT_CLEANER_BATCH,
    });
    let mut keys_every = Every::new(config.key_cleanup_interval);
    let mut cleaner_every = Every::new(config.cleaner_interval);
    loop {
        // Spread the passes of many workers apart.
        let jitter = interval.mul_f64(fastrand::f64() * 0.5);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval + jitter) => {}
        }
        report(
            "rescued runs whose lease expired",
            rescuer.rescue_expired_leases(&pool).await,
        );
        report(
            "delayed runs became queued",
            promoter.promote_due_runs(&pool).await,
        );
        // Routine bookkeeping (one wakeup per trigger statement): logged only when it fails.
        if let Err(error) = promoter.prune_key_wakeups(&pool).await {
            tracing::warn!(%error, "maintenance failed: dropping unread key wakeups");
        }
        report(
            "expired runs whose ttl ran out before they started",
            expirer.expire_runs(&pool).await,
        );
        match vacuum.vacuum_scheduler_tables(&pool).await {
            Ok(tables) if !tables.is_empty() => {
                tracing::debug!(?tables, "vacuumed the key scheduler's tables");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "maintenance failed: vacuuming the key scheduler's tables");
            }
        }
        if keys_every.due() {
            report(
                "forgot idle concurrency keys",
                keys.drop_idle_keys(&pool).await,
            );
            report(
                "forgot workers not seen for a day",
                keys.forget_gone_workers(&pool).await,
            );
        }
        if let Some(cleaner) = &cleaner {
            if cleaner_every.due() {
                report(
                    "deleted finished runs past their retention",
                    cleaner.delete_old_runs(&pool).await,
                );
            }
        }
    }
}
