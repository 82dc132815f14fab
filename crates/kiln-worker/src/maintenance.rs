//! Maintenance services. Each is safe to run in every worker at once (their statements use
//! SKIP LOCKED or are idempotent), so no leader election is needed.

use std::time::Duration;

use chrono::Utc;
use kiln_core::{AttemptOutcome, ErrorKind, ErrorRecord, RunStatus};
use kiln_store::lease::{lease_complete_many, lease_list_expired, AttemptEnd};
use kiln_store::queue::queue_key_repair;
use kiln_store::ready::{ready_expire, ready_promote_delayed};
use kiln_store::{Pool, Result};
use tokio_util::sync::CancellationToken;

/// Expired leases handled per rescuer pass.
pub const DEFAULT_RESCUE_BATCH: u32 = 500;
/// Delayed runs promoted, or waiting runs expired, per pass.
pub const DEFAULT_MAINTENANCE_BATCH: u32 = 1_000;
/// Concurrency keys with nothing waiting or running are dropped after this long idle.
pub const DEFAULT_KEY_IDLE: Duration = Duration::from_secs(24 * 3600);
/// How often the key repair runs (it scans `kiln.ready`).
pub const DEFAULT_KEY_REPAIR_INTERVAL: Duration = Duration::from_secs(60);

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
pub(crate) async fn run_maintenance(pool: Pool, interval: Duration, cancel: CancellationToken) {
    let rescuer = Rescuer::default();
    let mut last_key_repair: Option<tokio::time::Instant> = None;
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
        if last_key_repair.is_none_or(|at| at.elapsed() >= DEFAULT_KEY_REPAIR_INTERVAL) {
            last_key_repair = Some(tokio::time::Instant::now());
            let idle_before =
                Utc::now() - chrono::Duration::from_std(DEFAULT_KEY_IDLE).unwrap_or_default();
            if let Err(error) = queue_key_repair(&pool, idle_before).await {
                tracing::warn!(%error, "queue key repair failed");
            }
        }
    }
}
