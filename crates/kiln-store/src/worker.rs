//! `kiln.workers`: the registry of worker processes.

use chrono::{DateTime, Utc};

use crate::error::db;
use crate::{Pool, Result};

/// A worker is shown dead when it was not seen for this many heartbeat intervals.
pub const WORKER_MISSED_HEARTBEATS: i64 = 3;

/// What a worker says about itself when it starts.
#[derive(Debug, Clone)]
pub struct WorkerSpec<'a> {
    /// Its id (as in leases and attempts).
    pub id: &'a str,
    /// The machine.
    pub hostname: &'a str,
    /// Its process id.
    pub pid: u32,
    /// Kiln's version.
    pub version: &'a str,
    /// The tasks it registered.
    pub tasks: &'a [String],
    /// Runs it executes at once.
    pub concurrency: u32,
    /// Its heartbeat period in milliseconds.
    pub heartbeat_ms: u64,
}

/// A registered worker.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerRow {
    /// Its id.
    pub id: String,
    /// The machine.
    pub hostname: String,
    /// Its process id.
    pub pid: i32,
    /// Kiln's version.
    pub version: String,
    /// The tasks it registered.
    pub tasks: Vec<String>,
    /// Runs it executes at once.
    pub concurrency: i32,
    /// `running`, `draining` (stopping: no new claims) or `stopped`; `dead` when it stopped
    /// heartbeating without saying so (killed, frozen, partitioned).
    pub state: String,
    /// Runs it held at its last heartbeat.
    pub in_flight: i32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When its heartbeat last reached the database.
    pub last_seen_at: DateTime<Utc>,
}

/// Records a worker that starts (a restarted worker with the same id starts afresh).
pub async fn worker_register(pool: &Pool, spec: &WorkerSpec<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO kiln.workers AS w (id, hostname, pid, version, tasks, concurrency,
                                       heartbeat_ms, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'running')
         ON CONFLICT (id) DO UPDATE SET
             hostname = excluded.hostname, pid = excluded.pid, version = excluded.version,
             tasks = excluded.tasks, concurrency = excluded.concurrency,
             heartbeat_ms = excluded.heartbeat_ms, state = 'running', in_flight = 0,
             started_at = now(), last_seen_at = now()",
    )
    .bind(spec.id)
    .bind(spec.hostname)
    .bind(spec.pid as i32)
    .bind(spec.version)
    .bind(spec.tasks)
    .bind(spec.concurrency as i32)
    .bind(spec.heartbeat_ms as i64)
    .execute(pool)
    .await
    .map_err(db("registering the worker"))?;
    Ok(())
}

/// Records that the worker is alive and holds `in_flight` runs.
pub async fn worker_seen(pool: &Pool, id: &str, in_flight: u32) -> Result<()> {
    sqlx::query("UPDATE kiln.workers SET last_seen_at = now(), in_flight = $2 WHERE id = $1")
        .bind(id)
        .bind(in_flight as i32)
        .execute(pool)
        .await
        .map_err(db("recording the worker's heartbeat"))?;
    Ok(())
}

/// Records that the worker drains (`draining`) or stopped (`stopped`).
pub async fn worker_set_state(pool: &Pool, id: &str, state: &str) -> Result<()> {
    sqlx::query(
        "UPDATE kiln.workers SET state = $2, last_seen_at = now(),
                in_flight = CASE WHEN $2 = 'stopped' THEN 0 ELSE in_flight END
          WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .execute(pool)
    .await
    .map_err(db("recording the worker's state"))?;
    Ok(())
}

/// Workers, newest first: the live and draining ones, and with `all` the stopped and dead ones
/// too. A worker not seen for [`WORKER_MISSED_HEARTBEATS`] heartbeats is `dead`.
pub async fn worker_list(pool: &Pool, all: bool) -> Result<Vec<WorkerRow>> {
    type Row = (
        String,
        String,
        i32,
        String,
        Vec<String>,
        i32,
        String,
        i32,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, hostname, pid, version, tasks, concurrency,
                CASE WHEN state <> 'stopped'
                          AND last_seen_at < now() - $1 * heartbeat_ms * interval '1 millisecond'
                     THEN 'dead' ELSE state END AS state,
                in_flight, started_at, last_seen_at
           FROM kiln.workers
          ORDER BY started_at DESC, id",
    )
    .bind(WORKER_MISSED_HEARTBEATS)
    .fetch_all(pool)
    .await
    .map_err(db("listing workers"))?;
    Ok(rows
        .into_iter()
        .map(|r| WorkerRow {
            id: r.0,
            hostname: r.1,
            pid: r.2,
            version: r.3,
            tasks: r.4,
            concurrency: r.5,
            state: r.6,
            in_flight: r.7,
            started_at: r.8,
            last_seen_at: r.9,
        })
        .filter(|w| all || w.state == "running" || w.state == "draining")
        .collect())
}

/// Forgets workers not seen since `cutoff` (stopped or dead); returns how many.
pub async fn worker_delete_unseen_before(pool: &Pool, cutoff: DateTime<Utc>) -> Result<u64> {
    let done = sqlx::query("DELETE FROM kiln.workers WHERE last_seen_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await
        .map_err(db("forgetting old workers"))?;
    Ok(done.rows_affected())
}

/// Readies a connection for the hot path: in a transaction it rolls back, one run is triggered
/// (`kiln.trigger_runs`) and claimed (`kiln.claim_runs`), of a task and queue named after the
/// connection's server process, so that warm-ups on other connections never wait for it. A
/// connection plans the statements of those functions on its first call and caches the plans
/// (and the server its catalog entries) for its lifetime: a first trigger on a new connection
/// took 8-10 ms and a first claim about 4 ms, against 0.8 and 0.6 ms after. This readies the
/// trigger without idempotency keys and the claim of a queue without limits; the statements of
/// keyed claims and keyed batches are still planned on their first call. Nothing is kept but
/// dead rows and sequence values: the run, its ready row, its queue row and its lease are rolled
/// back, and the notification of a rolled-back insert is never delivered.
pub async fn worker_warm_connection(conn: &mut sqlx::PgConnection) -> Result<()> {
    let mut tx = sqlx::Connection::begin(conn)
        .await
        .map_err(db("readying a connection"))?;
    sqlx::query(
        "SELECT count(*) FROM kiln.trigger_runs('kiln:warm-up:' || pg_backend_pid(),
                                                ARRAY['{}'::jsonb], NULL, true)",
    )
    .execute(&mut *tx)
    .await
    .map_err(db("readying a connection (trigger)"))?;
    sqlx::query(
        "SELECT count(*) FROM kiln.claim_runs('kiln:warm-up', ARRAY['kiln:warm-up:' || pg_backend_pid()],
                                              1, 1000)",
    )
    .execute(&mut *tx)
    .await
    .map_err(db("readying a connection (claim)"))?;
    tx.rollback().await.map_err(db("readying a connection"))
}
