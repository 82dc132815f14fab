//! `kiln.leases`: claiming runs, extending leases, and ending attempts (complete, retry, fail,
//! rescue, release), each as one batched statement.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_core::{AttemptOutcome, ErrorRecord, RetryPolicy, RunStatus};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::db;
use crate::{Pool, Result, FINISHED_NOTIFY};

/// A run a worker claimed: everything the worker needs to execute one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The run id.
    pub run_id: Uuid,
    /// The task id.
    pub task_id: String,
    /// The queue it was claimed from.
    pub queue: String,
    /// Its concurrency key.
    pub concurrency_key: Option<String>,
    /// This attempt's number: the lease's fencing token.
    pub attempt: u32,
    /// This attempt's number counting only attempts that count against `max_attempts`.
    pub counted_attempt: u32,
    /// Attempts the run may use in all.
    pub max_attempts: u32,
    /// The retry policy it was triggered with.
    pub retry: RetryPolicy,
    /// The attempt's time limit.
    pub max_duration: Option<Duration>,
    /// The payload.
    pub payload: serde_json::Value,
    /// The metadata.
    pub metadata: serde_json::Value,
    /// Its parent run.
    pub parent_run_id: Option<Uuid>,
    /// Its root run.
    pub root_run_id: Option<Uuid>,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// When this attempt could first start: the end of its delay, or of its retry backoff.
    pub available_at: DateTime<Utc>,
    /// The W3C trace context of its trigger.
    pub traceparent: Option<String>,
    /// Claimed beyond the slots asked for, from a queue without limits, for the worker's local
    /// buffer (see [`lease_claim_prefetch`]).
    pub prefetched: bool,
}

/// What one claim returned.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// The runs now leased to the worker.
    pub runs: Vec<ClaimedRun>,
    /// True when a queue with work was being claimed by another worker and was skipped.
    pub contended: bool,
}

/// Claims up to `max` runs of `task_ids` for `worker_id`, leased for `lease`, honouring paused
/// queues and every concurrency limit (see `kiln.claim_runs`).
pub async fn lease_claim(
    pool: &Pool,
    worker_id: &str,
    task_ids: &[String],
    max: u32,
    lease: Duration,
    now: Option<DateTime<Utc>>,
) -> Result<Claim> {
    lease_claim_prefetch(pool, worker_id, task_ids, max, 0, lease, now).await
}

/// [`lease_claim`], plus up to `prefetch` runs beyond `max` from queues without any limit, for a
/// worker's local buffer (marked [`ClaimedRun::prefetched`]).
pub async fn lease_claim_prefetch(
    pool: &Pool,
    worker_id: &str,
    task_ids: &[String],
    max: u32,
    prefetch: u32,
    lease: Duration,
    now: Option<DateTime<Utc>>,
) -> Result<Claim> {
    let rows: Vec<PgRow> = sqlx::query(
        "SELECT run_id, task_id, queue, concurrency_key, attempt, counted_attempt, max_attempts,
                retry, max_duration_ms, payload, metadata, parent_run_id, root_run_id, created_at,
                available_at, traceparent, prefetched
           FROM kiln.claim_runs($1, $2, $3, $4, coalesce($5, now()), $6)",
    )
    .bind(worker_id)
    .bind(task_ids)
    .bind(max as i32)
    .bind(lease.as_millis() as i64)
    .bind(now)
    .bind(prefetch as i32)
    .fetch_all(pool)
    .await
    .map_err(db("claiming runs"))?;
    let mut claim = Claim::default();
    for row in rows {
        let Some(run) = claimed_run(&row).map_err(db("reading claimed runs"))? else {
            claim.contended = true;
            continue;
        };
        claim.runs.push(run);
    }
    Ok(claim)
}

/// One row of `kiln.claim_runs`: a run, or `None` for the row that says a queue was contended.
fn claimed_run(row: &PgRow) -> std::result::Result<Option<ClaimedRun>, sqlx::Error> {
    let Some(run_id) = row.try_get::<Option<Uuid>, _>("run_id")? else {
        return Ok(None);
    };
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    Ok(Some(ClaimedRun {
        run_id,
        task_id: row.try_get("task_id")?,
        queue: row.try_get("queue")?,
        concurrency_key: row.try_get("concurrency_key")?,
        attempt: row.try_get::<i32, _>("attempt")? as u32,
        counted_attempt: row.try_get::<i32, _>("counted_attempt")? as u32,
        max_attempts: row.try_get::<i32, _>("max_attempts")? as u32,
        retry: row
            .try_get::<Option<serde_json::Value>, _>("retry")?
            .and_then(|r| serde_json::from_value(r).ok())
            .unwrap_or_default(),
        max_duration: row
            .try_get::<Option<i64>, _>("max_duration_ms")?
            .map(|ms| Duration::from_millis(ms as u64)),
        payload: row
            .try_get::<Option<serde_json::Value>, _>("payload")?
            .unwrap_or(serde_json::Value::Null),
        metadata: row
            .try_get::<Option<serde_json::Value>, _>("metadata")?
            .unwrap_or_else(|| serde_json::json!({})),
        parent_run_id: row.try_get("parent_run_id")?,
        root_run_id: row.try_get("root_run_id")?,
        available_at: row
            .try_get::<Option<DateTime<Utc>>, _>("available_at")?
            .unwrap_or(created_at),
        created_at,
        traceparent: row.try_get("traceparent")?,
        prefetched: row
            .try_get::<Option<bool>, _>("prefetched")?
            .unwrap_or(false),
    }))
}

/// Result of a heartbeat for one held lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The run.
    pub run_id: Uuid,
    /// True when the lease was extended; false when another statement held its row at that
    /// moment (a completion or a rescue of it under way): the lease is still held, but not
    /// extended by this beat.
    pub extended: bool,
    /// True when the run was canceled and its body should stop.
    pub canceled: bool,
}

/// Extends the leases `worker_id` holds on `(run, attempt)` pairs to `now + lease`, and the waits
/// of parents that wait on children. Never waits for a row lock: rows locked by another statement
/// are skipped and answered with `extended: false`. Returns the leases still held; a lease
/// missing from the answer was lost (rescued after a stall) or already ended. Also records in
/// the workers registry that the worker is alive.
pub async fn lease_heartbeat(
    pool: &Pool,
    worker_id: &str,
    held: &[(Uuid, u32)],
    lease: Duration,
) -> Result<Vec<HeartbeatAck>> {
    let (ids, attempts): (Vec<Uuid>, Vec<i32>) = held
        .iter()
        .map(|(id, attempt)| (*id, *attempt as i32))
        .unzip();
    // Lock order (docs/architecture.md): leases, then waits, each ORDER BY run_id; SKIP LOCKED,
    // so the heartbeat can never be part of a deadlock.
    let rows: Vec<(Uuid, bool, bool)> = sqlx::query_as(
        "WITH held AS (
             SELECT * FROM unnest($2::uuid[], $3::int[]) AS h(run_id, attempt)
         ),
         -- One index scan with `= ANY(array)` per lock query (see lease_complete_many).
         lease_rows AS MATERIALIZED (
             SELECT l.run_id FROM kiln.leases l
              WHERE l.run_id = ANY($2::uuid[]) AND l.worker_id = $1
              ORDER BY l.run_id
                FOR UPDATE OF l SKIP LOCKED
         ),
         extended AS (
             UPDATE kiln.leases l SET expires_at = now() + $4 * interval '1 millisecond'
               FROM lease_rows k, held h
              WHERE l.run_id = k.run_id AND h.run_id = l.run_id AND h.attempt = l.attempt
             RETURNING l.run_id
         ),
         -- Parents waiting on children hold their lease in kiln.waits.
         wait_rows AS MATERIALIZED (
             SELECT w.run_id FROM kiln.waits w
              WHERE w.run_id = ANY($2::uuid[]) AND w.worker_id = $1
              ORDER BY w.run_id
                FOR UPDATE OF w SKIP LOCKED
         ),
         waiting AS (
             UPDATE kiln.waits w SET expires_at = now() + $4 * interval '1 millisecond'
               FROM wait_rows k, held h
              WHERE w.run_id = k.run_id AND h.run_id = w.run_id AND h.attempt = w.attempt
             RETURNING w.run_id
         ),
         -- What the statement's snapshot holds, locked by others or not.
         present AS (
             SELECT l.run_id FROM held h JOIN kiln.leases l USING (run_id, attempt)
              WHERE l.worker_id = $1
             UNION ALL
             SELECT w.run_id FROM held h JOIN kiln.waits w USING (run_id, attempt)
              WHERE w.worker_id = $1
         ),
         -- The workers registry: this worker is alive and holds this many runs.
         seen AS (
             UPDATE kiln.workers SET last_seen_at = now(), in_flight = cardinality($2::uuid[])
              WHERE id = $1
             RETURNING 1
         )
         SELECT p.run_id,
                p.run_id IN (SELECT run_id FROM extended UNION ALL SELECT run_id FROM waiting),
                r.status = 'canceled'
           FROM present p JOIN kiln.runs r ON r.id = p.run_id
          WHERE (SELECT count(*) FROM seen) >= 0",
    )
    .bind(worker_id)
    .bind(&ids)
    .bind(&attempts)
    .bind(lease.as_millis() as i64)
    .fetch_all(pool)
    .await
    .map_err(db("extending leases"))?;
    Ok(rows
        .into_iter()
        .map(|(run_id, extended, canceled)| HeartbeatAck {
            run_id,
            extended,
            canceled,
        })
        .collect())
}

/// How one attempt ended, to be recorded by [`lease_complete_many`].
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    /// The run.
    pub run_id: Uuid,
    /// The attempt number of the lease being ended (stale ones are ignored).
    pub attempt: u32,
    /// How the attempt ended.
    pub outcome: AttemptOutcome,
    /// What happens to the run: `Some(at)` queues it again, available at `at`; `None` finishes it.
    pub retry_at: Option<DateTime<Utc>>,
    /// The run's final status when it finishes.
    pub final_status: RunStatus,
    /// The output of a completed attempt.
    pub output: Option<serde_json::Value>,
    /// The error of a failed attempt.
    pub error: Option<ErrorRecord>,
    /// True when the worker hands the run back unfinished (shutdown): the attempt does not count
    /// against `max_attempts`.
    pub released: bool,
}

/// Ends attempts in one statement: deletes each lease (only if it still carries the same attempt
/// number, so a stale worker's outcome is fenced off), writes the attempt row, updates the run
/// (final status, or queued again for a retry) and re-queues retries. A run canceled meanwhile
/// stays canceled. Claimers of the queues whose slots were freed are notified when runs wait
/// there. With `only_expired`, leases that were extended since they were read are left
/// alone (the rescuer's guard). Parents of runs that finished are notified on `kiln_run_finished`.
/// Returns the runs whose leases were ended, with their new status.
pub async fn lease_complete_many(
    pool: &Pool,
    ends: &[AttemptEnd],
    only_expired: bool,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<(Uuid, RunStatus)>> {
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    let mut run_ids = Vec::with_capacity(ends.len());
    let mut attempts = Vec::with_capacity(ends.len());
    let mut outcomes = Vec::with_capacity(ends.len());
    let mut finals = Vec::with_capacity(ends.len());
    let mut outputs = Vec::with_capacity(ends.len());
    let mut errors = Vec::with_capacity(ends.len());
    let mut retry_ats = Vec::with_capacity(ends.len());
    let mut released = Vec::with_capacity(ends.len());
    for end in ends {
        run_ids.push(end.run_id);
        attempts.push(end.attempt as i32);
        outcomes.push(end.outcome.as_str());
        finals.push(end.final_status.as_str());
        outputs.push(end.output.clone());
        errors.push(
            end.error
                .as_ref()
                .map(|e| serde_json::to_value(e).expect("errors serialize")),
        );
        retry_ats.push(end.retry_at);
        released.push(end.released);
    }
    let rows: Vec<(Uuid, String)> = sqlx::query_as(&format!(
        "WITH ended AS (
             SELECT e.* FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::jsonb[],
                                    $6::jsonb[], $7::timestamptz[], $8::bool[])
                 AS e(run_id, attempt, outcome, final_status, output, error, retry_at, released),
                 (SELECT coalesce((SELECT max_output_bytes FROM kiln.limits), 4194304) AS max) lim
              -- An outcome over the limit is refused (KL413) before anything is written.
              WHERE (pg_column_size(e.output) IS NULL OR pg_column_size(e.output) <= lim.max
                     OR kiln.refuse_outcome('output', pg_column_size(e.output), lim.max))
                AND (pg_column_size(e.error) IS NULL OR pg_column_size(e.error) <= lim.max
                     OR kiln.refuse_outcome('error', pg_column_size(e.error), lim.max))
         ),
         now AS (SELECT coalesce($10, now()) AS at),
         -- Lock order (docs/architecture.md): leases, then runs, each ORDER BY its key. A lease
         -- extended while the rescuer waited for its lock is re-checked and left alone.
         -- Each lock query is one index scan of a primary key with `= ANY(array)`: joined to
         -- `ended` or `fenced` (whose row counts the planner cannot estimate), it would probe
         -- the index once per row with the whole array each time. A lease of another attempt
         -- of the same run is locked too, briefly; the fence below leaves it alone.
         lease_rows AS MATERIALIZED (
             SELECT l.run_id FROM kiln.leases l
              WHERE l.run_id = ANY($1::uuid[])
                AND (NOT $9 OR l.expires_at < (SELECT at FROM now))
              ORDER BY l.run_id
                FOR UPDATE OF l
         ),
         fenced AS (
             -- The leases were locked, in run_id order, by lease_rows, which this InitPlan runs
             -- before the first row is deleted. Joining lease_rows instead compared every lease
             -- with every locked row: 1,000 x 1,000 for a full batch, 70-170 ms a statement.
             DELETE FROM kiln.leases l USING ended e
              WHERE l.run_id = e.run_id AND l.attempt = e.attempt
                AND (NOT $9 OR l.expires_at < (SELECT at FROM now))
                AND (SELECT count(*) FROM lease_rows) >= 0
             -- Carry the outcome along, so nothing below joins back to `ended` (whose row
             -- count the planner cannot estimate).
             RETURNING l.run_id, l.attempt, l.worker_id, l.started_at, l.task_id, l.queue,
                       l.concurrency_key, e.outcome, e.final_status, e.output, e.error,
                       e.retry_at, e.released
         ),
         -- A slot freed in a queue with a per-key limit: the key goes back in its scheduler's
         -- line (a claim that found it full took it out). `-infinity`: look at it now.
         freed AS (
             INSERT INTO kiln.key_wakeups (queue, concurrency_key, available_at)
             SELECT DISTINCT f.queue, f.concurrency_key, '-infinity'::timestamptz FROM fenced f
              WHERE EXISTS (SELECT 1 FROM kiln.queues qu
                             WHERE qu.name = f.queue
                               AND coalesce(qu.limit_override, qu.concurrency_limit) IS NOT NULL)
         ),
         recorded AS (
             INSERT INTO kiln.attempts (run_id, number, worker_id, status, started_at, finished_at, error)
             SELECT f.run_id, f.attempt, f.worker_id, f.outcome, f.started_at, (SELECT at FROM now), f.error
               FROM fenced f
         ),
         run_rows AS MATERIALIZED (
             SELECT r.id FROM kiln.runs r
              WHERE r.id = ANY(ARRAY(SELECT f.run_id FROM fenced f))
              ORDER BY r.id
                FOR UPDATE OF r
         ),
         updated AS (
             UPDATE kiln.runs r SET
                 status = CASE WHEN r.status = 'canceled' THEN r.status
                               WHEN f.retry_at IS NOT NULL THEN 'queued'::kiln.run_status
                               ELSE f.final_status::kiln.run_status END,
                 output = CASE WHEN r.status <> 'canceled' AND f.retry_at IS NULL THEN f.output
                               ELSE r.output END,
                 error = CASE WHEN r.status = 'canceled' THEN r.error ELSE f.error END,
                 released_attempts = r.released_attempts + f.released::int,
                 -- A run taken back from a dead, stalled or stopping worker keeps its place in
                 -- the queue (it was the oldest); a retry after a failure waits its backoff.
                 available_at = CASE WHEN f.retry_at IS NOT NULL
                                          AND f.outcome IN ('crashed', 'interrupted')
                                     THEN least(r.available_at, f.retry_at)
                                     ELSE coalesce(f.retry_at, r.available_at) END,
                 finished_at = CASE WHEN r.status = 'canceled' THEN r.finished_at
                                    WHEN f.retry_at IS NULL THEN (SELECT at FROM now) END,
                 idempotency_key = CASE WHEN r.status <> 'canceled' AND f.retry_at IS NULL
                                             AND f.final_status <> 'completed' THEN NULL
                                        ELSE r.idempotency_key END,
                 updated_at = (SELECT at FROM now)
               FROM fenced f
              -- The runs were locked, in id order, by run_rows, which this InitPlan runs first.
              WHERE r.id = f.run_id AND (SELECT count(*) FROM run_rows) >= 0
             RETURNING r.id, r.status, r.priority_s, r.available_at, f.task_id, f.queue,
                       f.concurrency_key, r.parent_run_id
         ),
         -- Parents waiting on these runs re-check their children.
         parents AS (
             SELECT pg_notify('kiln_run_finished', p.parent_run_id::text)
               FROM (SELECT DISTINCT u.parent_run_id FROM updated u
                      WHERE u.parent_run_id IS NOT NULL AND u.status <> 'queued') p
         ),
         requeued AS (
             INSERT INTO kiln.ready (run_id, task_id, queue, concurrency_key, available_at, order_at)
             SELECT u.id, u.task_id, u.queue, u.concurrency_key, u.available_at,
                    u.available_at - make_interval(secs => u.priority_s)
               FROM updated u WHERE u.status = 'queued'
         ),
         -- A freed slot lets a waiting run of the same queue start: wake the claimers.
         woken AS (
             SELECT pg_notify('kiln_ready', q.queue)
               FROM (SELECT DISTINCT f.queue FROM fenced f) q
              WHERE EXISTS (SELECT 1 FROM kiln.ready r WHERE r.queue = q.queue)
         ),
         finished AS (SELECT u.id FROM updated u WHERE u.status <> 'queued'),
         {FINISHED_NOTIFY}
         SELECT u.id, u.status::text FROM updated u
          WHERE (SELECT count(*) FROM woken) >= 0 AND (SELECT count(*) FROM parents) >= 0
            AND (SELECT count(*) FROM finished_notify) >= 0"
    ))
    .bind(&run_ids)
    .bind(&attempts)
    .bind(&outcomes)
    .bind(&finals)
    .bind(&outputs)
    .bind(&errors)
    .bind(&retry_ats)
    .bind(&released)
    .bind(only_expired)
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(db("recording finished attempts"))?;
    Ok(rows
        .into_iter()
        .map(|(id, status)| (id, status.parse().unwrap_or(RunStatus::SystemFailure)))
        .collect())
}

/// A lease that expired: its holder stopped heartbeating.
#[derive(Debug, Clone, Copy)]
pub struct ExpiredLease {
    /// The run.
    pub run_id: Uuid,
    /// The attempt the lease was for.
    pub attempt: u32,
    /// That attempt's number among attempts that count against `max_attempts`.
    pub counted_attempt: u32,
    /// Attempts the run may use in all.
    pub max_attempts: u32,
}

/// Reads up to `limit` leases that expired before `now`, oldest first.
pub async fn lease_list_expired(
    pool: &Pool,
    limit: u32,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<ExpiredLease>> {
    let rows: Vec<(Uuid, i32, i32, i32)> = sqlx::query_as(
        "SELECT l.run_id, l.attempt, l.attempt - r.released_attempts, r.max_attempts
           FROM kiln.leases l JOIN kiln.runs r ON r.id = l.run_id
          WHERE l.expires_at < coalesce($2, now())
          ORDER BY l.expires_at
          LIMIT $1",
    )
    .bind(limit as i64)
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(db("finding expired leases"))?;
    Ok(rows
        .into_iter()
        .map(|(run_id, attempt, counted, max)| ExpiredLease {
            run_id,
            attempt: attempt as u32,
            counted_attempt: counted as u32,
            max_attempts: max as u32,
        })
        .collect())
}
