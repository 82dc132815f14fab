//! `kiln.ready`: moving delayed runs to queued, and expiring runs whose ttl ran out.

use chrono::{DateTime, Utc};

use crate::error::db;
use crate::{Pool, Result, FINISHED_NOTIFY};

/// Marks up to `limit` delayed runs whose delay has passed as queued. Returns how many.
pub async fn ready_promote_delayed(
    pool: &Pool,
    limit: u32,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    let done = sqlx::query(
        "WITH due AS (
             UPDATE kiln.ready SET delayed = false
              WHERE run_id IN (SELECT run_id FROM kiln.ready
                                WHERE delayed AND available_at <= coalesce($2, now())
                                ORDER BY available_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING run_id)
         UPDATE kiln.runs r SET status = 'queued', updated_at = coalesce($2, now())
           FROM due WHERE r.id = due.run_id AND r.status = 'delayed'",
    )
    .bind(limit as i64)
    .bind(now)
    .execute(pool)
    .await
    .map_err(db("promoting delayed runs"))?;
    Ok(done.rows_affected())
}

/// Expires up to `limit` waiting runs whose ttl ran out before they started. Returns how many.
pub async fn ready_expire(pool: &Pool, limit: u32, now: Option<DateTime<Utc>>) -> Result<u64> {
    let expired: i64 = sqlx::query_scalar(&format!(
        "WITH gone AS (
             DELETE FROM kiln.ready
              WHERE run_id IN (SELECT run_id FROM kiln.ready
                                WHERE expires_at <= coalesce($2, now())
                                ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING run_id),
         finished AS (
             UPDATE kiln.runs r
                SET status = 'expired', finished_at = coalesce($2, now()),
                    updated_at = coalesce($2, now()), idempotency_key = NULL,
                    error = jsonb_build_object('kind', 'expired',
                                               'message', 'not started before its ttl ran out')
               FROM gone WHERE r.id = gone.run_id AND r.status IN ('queued', 'delayed')
             RETURNING r.id),
         {FINISHED_NOTIFY}
         SELECT count(*) + 0 * (SELECT count(*) FROM finished_notify) FROM finished"
    ))
    .bind(limit as i64)
    .bind(now)
    .fetch_one(pool)
    .await
    .map_err(db("expiring runs"))?;
    Ok(expired as u64)
}
