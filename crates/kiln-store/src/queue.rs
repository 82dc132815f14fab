//! `kiln.queues` and `kiln.queue_keys`: limits, pausing, live counts and key bookkeeping.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_core::{KeyLoad, QueueRow};

use crate::error::db;
use crate::{Pool, Result, StoreError};

const QUEUE_COLUMNS: &str =
    "q.name, q.concurrency_limit, q.limit_override, q.total_limit, q.paused,
    (SELECT count(*) FROM kiln.leases l WHERE l.queue = q.name) AS running,
    (SELECT count(*) FROM kiln.ready r WHERE r.queue = q.name) AS queued,
    (SELECT count(*) FROM kiln.waits w WHERE w.queue = q.name) AS waiting,
    (SELECT min(r.available_at) FROM kiln.ready r
      WHERE r.queue = q.name AND r.available_at <= now()) AS oldest_available_at";

type QueueTuple = (
    String,
    Option<i32>,
    Option<i32>,
    Option<i32>,
    bool,
    i64,
    i64,
    i64,
    Option<DateTime<Utc>>,
);

fn queue_row(t: QueueTuple) -> QueueRow {
    QueueRow {
        name: t.0,
        concurrency_limit: t.1,
        limit_override: t.2,
        total_limit: t.3,
        paused: t.4,
        running: t.5,
        queued: t.6,
        waiting: t.7,
        oldest_available_at: t.8,
    }
}

/// Lists every queue with its live counts.
pub async fn queue_list(pool: &Pool) -> Result<Vec<QueueRow>> {
    let rows: Vec<QueueTuple> = sqlx::query_as(&format!(
        "SELECT {QUEUE_COLUMNS} FROM kiln.queues q ORDER BY q.name"
    ))
    .fetch_all(pool)
    .await
    .map_err(db("listing queues"))?;
    Ok(rows.into_iter().map(queue_row).collect())
}

/// One queue with its live counts.
pub async fn queue_get(pool: &Pool, name: &str) -> Result<Option<QueueRow>> {
    let row: Option<QueueTuple> = sqlx::query_as(&format!(
        "SELECT {QUEUE_COLUMNS} FROM kiln.queues q WHERE q.name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(db("reading a queue"))?;
    Ok(row.map(queue_row))
}

fn unknown_queue(name: &str) -> StoreError {
    StoreError::NotFound(format!(
        "queue {name:?} does not exist: `kiln queues list` shows the queues workers registered"
    ))
}

/// Creates a queue an operator names, with an optional concurrency limit (an override: no task
/// declares it). Triggers may then name it with the `queue` option; a trigger can never create
/// a queue. Refused when the queue exists.
pub async fn queue_create(pool: &Pool, name: &str, limit: Option<i32>) -> Result<()> {
    kiln_core::validate_task_id(name)
        .map_err(|e| StoreError::Invalid(format!("queue name {name:?}: {e}")))?;
    if let Some(l) = limit.filter(|l| *l < 1) {
        return Err(StoreError::Invalid(format!(
            "a queue limit must be at least 1, got {l}; leave it out for no limit"
        )));
    }
    let created = sqlx::query(
        "INSERT INTO kiln.queues (name, limit_override) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .bind(limit)
    .execute(pool)
    .await
    .map_err(db("creating a queue"))?;
    if created.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!(
            "queue {name:?} already exists: change its limit with `kiln queues limit {name} N`"
        )));
    }
    Ok(())
}

/// Pauses or resumes a queue. A paused queue keeps its runs; no new run starts until resumed.
pub async fn queue_set_paused(pool: &Pool, name: &str, paused: bool) -> Result<()> {
    let done =
        sqlx::query("UPDATE kiln.queues SET paused = $2, updated_at = now() WHERE name = $1")
            .bind(name)
            .bind(paused)
            .execute(pool)
            .await
            .map_err(db("pausing or resuming a queue"))?;
    if done.rows_affected() == 0 {
        return Err(unknown_queue(name));
    }
    if !paused {
        sqlx::query("SELECT pg_notify('kiln_ready', $1)")
            .bind(name)
            .execute(pool)
            .await
            .map_err(db("waking workers for a resumed queue"))?;
    }
    Ok(())
}

/// Sets (or with `None`, clears) the operator's limit override of a queue.
pub async fn queue_set_limit_override(pool: &Pool, name: &str, limit: Option<i32>) -> Result<()> {
    if let Some(l) = limit {
        if l < 1 {
            return Err(StoreError::Invalid(format!(
                "a queue limit must be at least 1, got {l}; to stop new runs, pause the queue"
            )));
        }
    }
    let done = sqlx::query(
        "UPDATE kiln.queues SET limit_override = $2, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(limit)
    .execute(pool)
    .await
    .map_err(db("setting a queue limit"))?;
    if done.rows_affected() == 0 {
        return Err(unknown_queue(name));
    }
    Ok(())
}

/// Drops the rows of keys not served since `idle_before` that have nothing waiting or running
/// (neither waiting nor parked in the key scheduler, and no parent waiting on its children).
/// Rows a claim holds are skipped. Returns how
/// many were dropped.
pub async fn queue_key_drop_idle(pool: &Pool, idle_before: DateTime<Utc>) -> Result<u64> {
    let dropped = sqlx::query(
        "DELETE FROM kiln.queue_keys k
          WHERE (k.queue, k.concurrency_key) IN (
                SELECT i.queue, i.concurrency_key FROM kiln.queue_keys i
                 WHERE coalesce(i.last_served_at, i.created_at) < $1
                   AND NOT i.waiting AND i.next_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM kiln.ready r
                                    WHERE r.queue = i.queue AND r.concurrency_key = i.concurrency_key)
                   AND NOT EXISTS (SELECT 1 FROM kiln.leases l
                                    WHERE l.queue = i.queue AND l.concurrency_key = i.concurrency_key)
                   -- A parent waiting on its children resumes under this key's row lock.
                   AND NOT EXISTS (SELECT 1 FROM kiln.waits w
                                    WHERE w.queue = i.queue AND w.concurrency_key = i.concurrency_key)
                   FOR UPDATE SKIP LOCKED)",
    )
    .bind(idle_before)
    .execute(pool)
    .await
    .map_err(db("dropping idle queue keys"))?
    .rows_affected();
    Ok(dropped)
}

/// Drops the key wakeups of queues without a per-key limit, which no claim reads (see
/// `kiln.prune_key_wakeups`). Returns how many were dropped.
pub async fn queue_prune_key_wakeups(pool: &Pool) -> Result<u64> {
    let dropped: i32 = sqlx::query_scalar("SELECT kiln.prune_key_wakeups()")
        .fetch_one(pool)
        .await
        .map_err(db("dropping unread key wakeups"))?;
    Ok(dropped as u64)
}

/// The key scheduler's tables, which every keyed claim reads from the low end of an index:
/// consumed wakeups, and key rows moved to the back of the line, leave dead entries there until a
/// vacuum removes them.
const SCHEDULER_TABLES: [&str; 2] = ["key_wakeups", "queue_keys"];

/// Vacuums each key-scheduler table with at least `min_dead` dead rows that no vacuum (manual or
/// autovacuum) finished within `min_interval`, when the connected role may (it owns the table or
/// is a superuser; otherwise autovacuum is left to it). Skips a table another session is
/// vacuuming. Returns the tables vacuumed.
///
/// Claims scan `kiln.key_wakeups` from its oldest entry: after a fan-out of 500,000 runs over
/// 100,000 keys, a claim of 200 runs read 3,000 index pages of consumed wakeups and took 16.5 ms
/// instead of 9.6 ms once they were vacuumed. Autovacuum visits a table at most once a minute.
/// The interval keeps the pass from vacuuming again and again when an old snapshot (a long
/// transaction elsewhere) keeps the dead rows from being removed.
pub async fn queue_vacuum_scheduler(
    pool: &Pool,
    min_dead: i64,
    min_interval: Duration,
) -> Result<Vec<String>> {
    // A century stands for "never again"; longer would not fit an interval.
    let min_interval_ms = min_interval
        .min(Duration::from_secs(100 * 365 * 86_400))
        .as_millis() as i64;
    // A vacuum in progress holds its table's SHARE UPDATE EXCLUSIVE lock, which pg_locks shows
    // to every role (pg_stat_progress_vacuum hides the table from a role that did not start it).
    let due: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.relname::text, s.vacuum_count + s.autovacuum_count
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
          WHERE s.schemaname = 'kiln' AND s.relname = ANY($1) AND s.n_dead_tup >= $2
            AND coalesce(greatest(s.last_vacuum, s.last_autovacuum), '-infinity')
                < now() - $3 * interval '1 millisecond'
            AND NOT EXISTS (SELECT 1 FROM pg_locks l
                             WHERE l.relation = s.relid AND l.mode = 'ShareUpdateExclusiveLock')
            AND (pg_has_role(c.relowner, 'USAGE')
                 OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user))
          ORDER BY s.relname",
    )
    .bind(&SCHEDULER_TABLES[..])
    .bind(min_dead)
    .bind(min_interval_ms)
    .fetch_all(pool)
    .await
    .map_err(db("reading the key scheduler's dead rows"))?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    for (table, _) in &due {
        // VACUUM runs outside any transaction, so each statement goes alone. The name comes from
        // the fixed list above, never from input. No session setting is changed around it (a
        // pooler in transaction mode would keep it on another connection): when another session
        // started vacuuming the table since the check above, Postgres skips it with a warning,
        // and the table's vacuum count, read below, says so.
        let statement = format!("VACUUM (SKIP_LOCKED) kiln.{table}");
        sqlx::query(&statement)
            .execute(pool)
            .await
            .map_err(db("vacuuming the key scheduler's tables"))?;
    }
    let after: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, vacuum_count + autovacuum_count FROM pg_stat_user_tables
          WHERE schemaname = 'kiln' AND relname = ANY($1)",
    )
    .bind(&SCHEDULER_TABLES[..])
    .fetch_all(pool)
    .await
    .map_err(db("vacuuming the key scheduler's tables"))?;
    let vacuumed = due
        .into_iter()
        .filter(|(table, before)| after.iter().any(|(t, n)| t == table && n > before))
        .map(|(table, _)| format!("kiln.{table}"))
        .collect();
    Ok(vacuumed)
}

/// The `limit` concurrency keys of `queue` with the most runs executing or ready to start,
/// busiest first. Reads the leases and the ready rows of that queue only (index scans).
pub async fn queue_busiest_keys(pool: &Pool, queue: &str, limit: u32) -> Result<Vec<KeyLoad>> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "WITH executing AS (
             SELECT concurrency_key, count(*) AS n FROM kiln.leases
              WHERE queue = $1 AND concurrency_key <> '' GROUP BY 1),
         queued AS (
             SELECT concurrency_key, count(*) AS n FROM kiln.ready
              WHERE queue = $1 AND concurrency_key <> '' AND NOT delayed GROUP BY 1)
         SELECT concurrency_key, coalesce(e.n, 0), coalesce(q.n, 0)
           FROM executing e FULL JOIN queued q USING (concurrency_key)
          ORDER BY coalesce(e.n, 0) + coalesce(q.n, 0) DESC, concurrency_key
          LIMIT $2",
    )
    .bind(queue)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("reading a queue's busiest keys"))?;
    Ok(rows
        .into_iter()
        .map(|(concurrency_key, executing, queued)| KeyLoad {
            concurrency_key,
            executing,
            queued,
        })
        .collect())
}
