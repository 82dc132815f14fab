//! Maintenance services. Each is safe to run in every worker at once (their statements use
//! SKIP LOCKED or are idempotent), so no leader election is needed.

use std::time::Duration;

use chrono::Utc;
use kiln_core::{AttemptOutcome, ErrorKind, ErrorRecord, RunStatus};
use kiln_store::lease::{lease_complete_many, lease_list_expired, AttemptEnd};
use kiln_store::queue::queue_key_drop_idle;
use kiln_store::ready::{ready_expire, ready_promote_delayed};
use kiln_store::run::run_delete_finished_before;
use kiln_store::{Pool, Result};
use tokio_util::sync::CancellationToken;

/// Expired leases handled per rescuer pass.
pub const DEFAULT_RESCUE_BATCH: u32 = 500;
/// Delayed runs promoted, or waiting runs expired, per pass.
pub const DEFAULT_MAINTENANCE_BATCH: u32 = 1_000;
/// Concurrency keys with nothing waiting or running are dropped after this long idle.
pub const DEFAULT_KEY_IDLE: Duration = Duration::from_secs(24 * 3600);
/// How often idle keys' "last served" bookkeeping is dropped.
pub const DEFAULT_KEY_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// How often the cleaner runs.
pub const DEFAULT_CLEANER_INTERVAL: Duration = Duration::from_secs(60);
/// Runs the cleaner deletes per statement.
pub const DEFAULT_CLEANER_BATCH: u32 = 1_000;

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
                return Ok(total);
            }
        }
    }
}

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
    /// One pass; returns how many runs were rescued.
    pub async fn rescue_expired_leases(&self, pool: &Pool) -> Result<usize> {
        let expired = lease_list_expired(pool, self.batch, None).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let now = Utc::now();
        let ends: Vec<AttemptEnd> = expired
            .iter()
            .map(|lease| {
                let retry = lease.counted_attempt < lease.max_attempts;
                AttemptEnd {
                    run_id: lease.run_id,
                    attempt: lease.attempt,
                    outcome: AttemptOutcome::Crashed,
                    retry_at: retry.then_some(now),
                    final_status: RunStatus::Crashed,
                    output: None,
                    error: Some(ErrorRecord::new(
                        ErrorKind::Crashed,
                        "the worker running this attempt stopped renewing its lease (it died, \
                         stalled or lost the database)",
                    )),
                    released: false,
                }
            })
            .collect();
        let rescued = lease_complete_many(pool, &ends, true, None).await?;
        for (run_id, status) in &rescued {
            tracing::warn!(%run_id, %status, "rescued a run whose lease expired");
        }
        Ok(rescued.len())
    }
}

/// Runs every maintenance service every `interval` until `cancel` fires.
pub(crate) async fn run_maintenance(
    pool: Pool,
    interval: Duration,
    retention: Option<Duration>,
    cancel: CancellationToken,
) {
    let rescuer = Rescuer::default();
    let cleaner = retention.map(|retention| Cleaner {
        retention,
        batch: DEFAULT_CLEANER_BATCH,
    });
    let mut last_key_cleanup: Option<tokio::time::Instant> = None;
    let mut last_clean: Option<tokio::time::Instant> = None;
    loop {
        // Spread the passes of many workers apart.
        let jitter = interval.mul_f64(fastrand::f64() * 0.5);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval + jitter) => {}
        }
        if let Err(error) = rescuer.rescue_expired_leases(&pool).await {
            tracing::warn!(%error, "rescuer pass failed");
        }
        if let Err(error) = ready_promote_delayed(&pool, DEFAULT_MAINTENANCE_BATCH, None).await {
            tracing::warn!(%error, "promoting delayed runs failed");
        }
        match ready_expire(&pool, DEFAULT_MAINTENANCE_BATCH, None).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                runs = n,
                "expired runs whose ttl ran out before they started"
            ),
            Err(error) => tracing::warn!(%error, "expiring runs failed"),
        }
        if last_key_cleanup.is_none_or(|at| at.elapsed() >= DEFAULT_KEY_CLEANUP_INTERVAL) {
            last_key_cleanup = Some(tokio::time::Instant::now());
            let idle_before =
                Utc::now() - chrono::Duration::from_std(DEFAULT_KEY_IDLE).unwrap_or_default();
            if let Err(error) = queue_key_drop_idle(&pool, idle_before).await {
                tracing::warn!(%error, "dropping idle queue keys failed");
            }
        }
        if let Some(cleaner) = &cleaner {
            if last_clean.is_none_or(|at| at.elapsed() >= DEFAULT_CLEANER_INTERVAL) {
                last_clean = Some(tokio::time::Instant::now());
                match cleaner.delete_old_runs(&pool).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(runs = n, "deleted finished runs past their retention"),
                    Err(error) => tracing::warn!(%error, "deleting old runs failed"),
                }
            }
        }
    }
}
