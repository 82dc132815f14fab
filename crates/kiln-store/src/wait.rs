//! `kiln.waits`: parents waiting on child runs, with their concurrency slot given back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_core::{ChildOutcome, RunStatus};
use uuid::Uuid;

use crate::error::db;
use crate::{Pool, Result};

/// What an attempt to resume a waiting parent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The parent holds a lease (and a slot) again and is `executing`.
    Resumed,
    /// The queue has no free slot now: try again when one frees up.
    Full,
    /// The wait is gone: the parent was rescued after its worker stalled.
    Lost,
}

/// Moves the lease of `(run_id, attempt)` held by `worker_id` to `kiln.waits`: the run is
/// `waiting` and its slot is free. False when the lease is no longer held.
pub async fn wait_begin(pool: &Pool, run_id: Uuid, attempt: u32, worker_id: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT kiln.wait_begin($1, $2, $3)")
        .bind(run_id)
        .bind(attempt as i32)
        .bind(worker_id)
        .fetch_one(pool)
        .await
        .map_err(db("releasing a waiting run's slot"))
}

/// Takes a slot again for a waiting parent, within its queue's limits (or regardless of them with
/// `force`, to record a canceled or interrupted attempt).
pub async fn wait_resume(
    pool: &Pool,
    run_id: Uuid,
    attempt: u32,
    lease: Duration,
    force: bool,
) -> Result<Resume> {
    let answer: String = sqlx::query_scalar("SELECT kiln.wait_resume($1, $2, $3, $4)")
        .bind(run_id)
        .bind(attempt as i32)
        .bind(lease.as_millis() as i64)
        .bind(force)
        .fetch_one(pool)
        .await
        .map_err(db("resuming a waiting run"))?;
    Ok(match answer.as_str() {
        "resumed" => Resume::Resumed,
        "full" => Resume::Full,
        _ => Resume::Lost,
    })
}

/// Turns waits whose holder stopped extending them into expired leases, for the rescuer.
pub async fn wait_expire(pool: &Pool, now: Option<DateTime<Utc>>) -> Result<u64> {
    let moved: i32 = sqlx::query_scalar("SELECT kiln.wait_expire(coalesce($1, now()))")
        .bind(now)
        .fetch_one(pool)
        .await
        .map_err(db("expiring abandoned waits"))?;
    Ok(moved as u64)
}

/// The runs among `run_ids` that reached a final status, with their output or error.
pub async fn wait_finished_children(pool: &Pool, run_ids: &[Uuid]) -> Result<Vec<ChildOutcome>> {
    let rows: Vec<(
        Uuid,
        String,
        Option<serde_json::Value>,
        Option<serde_json::Value>,
    )> = sqlx::query_as(
        "SELECT id, status::text, output, error FROM kiln.runs
              WHERE id = ANY($1)
                AND status IN ('completed', 'failed', 'canceled', 'crashed', 'timed_out',
                               'expired', 'system_failure')",
    )
    .bind(run_ids)
    .fetch_all(pool)
    .await
    .map_err(db("reading child runs"))?;
    Ok(rows
        .into_iter()
        .map(|(run_id, status, output, error)| ChildOutcome {
            run_id,
            status: status.parse().unwrap_or(RunStatus::SystemFailure),
            output,
            error: error.and_then(|e| serde_json::from_value(e).ok()),
        })
        .collect())
}
