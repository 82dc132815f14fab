//! What Postgres itself counts about Kiln's database.

use crate::error::db;
use crate::{Pool, Result};

/// Deadlocks Postgres has detected in the pool's database since its statistics were last reset,
/// after every idle connection of `pool` flushed its pending statistics (each backend flushes
/// them lazily; `pg_stat_force_next_flush()` makes it flush when the statement ends). Counts of
/// other pools' connections appear once those flush (at the latest when they close).
pub async fn stats_deadlocks(pool: &Pool) -> Result<i64> {
    let mut held = Vec::new();
    while let Some(mut conn) = pool.try_acquire() {
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut *conn)
            .await
            .map_err(db("flushing statistics"))?;
        held.push(conn);
    }
    let Some(conn) = held.first_mut() else {
        let mut conn = pool.acquire().await.map_err(db("reading statistics"))?;
        return read_deadlocks(&mut conn).await;
    };
    read_deadlocks(conn).await
}

async fn read_deadlocks(conn: &mut sqlx::PgConnection) -> Result<i64> {
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(conn)
        .await
        .map_err(db("reading the deadlock count"))
}

/// What the gauges of `/metrics` show, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// Runs per queue and state (`queued`, `delayed`, `executing`, `waiting`).
    pub runs: Vec<(String, String, i64)>,
    /// Per queue, how long the oldest run ready to start has waited, in seconds.
    pub oldest_queued_seconds: Vec<(String, f64)>,
    /// Workers running or draining and seen within three heartbeats.
    pub workers_alive: i64,
}

/// Reads the gauges: runs by queue and state, the oldest queued age per queue, alive workers.
pub async fn stats_gauges(pool: &Pool) -> Result<Gauges> {
    let rows: Vec<(String, String, String, f64)> = sqlx::query_as(
        "SELECT 'runs', queue, CASE WHEN available_at > now() THEN 'delayed' ELSE 'queued' END,
                count(*)::float8
           FROM kiln.ready GROUP BY 2, 3
         UNION ALL
         SELECT 'runs', queue, 'executing', count(*)::float8 FROM kiln.leases GROUP BY 2
         UNION ALL
         SELECT 'runs', queue, 'waiting', count(*)::float8 FROM kiln.waits GROUP BY 2
         UNION ALL
         SELECT 'oldest', queue, '', extract(epoch FROM now() - min(available_at))::float8
           FROM kiln.ready WHERE available_at <= now() GROUP BY 2
         UNION ALL
         SELECT 'workers', '', '', count(*)::float8 FROM kiln.workers
          WHERE state IN ('running', 'draining')
            AND last_seen_at >= now() - $1 * heartbeat_ms * interval '1 millisecond'",
    )
    .bind(crate::worker::WORKER_MISSED_HEARTBEATS)
    .fetch_all(pool)
    .await
    .map_err(db("reading gauges"))?;
    let mut gauges = Gauges::default();
    for (kind, queue, state, value) in rows {
        match kind.as_str() {
            "runs" => gauges.runs.push((queue, state, value as i64)),
            "oldest" => gauges.oldest_queued_seconds.push((queue, value)),
            _ => gauges.workers_alive = value as i64,
        }
    }
    gauges.runs.sort();
    gauges.oldest_queued_seconds.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(gauges)
}
