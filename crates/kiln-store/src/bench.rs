//! A synthetic run history for `kiln bench dashboard`: runs of the flagship tasks in a mix of
//! statuses, tags, keys and parents, written straight into the tables in large statements.

use crate::error::db;
use crate::{Pool, Result};

/// The tasks the history's runs belong to.
pub const BENCH_HISTORY_TASKS: [&str; 4] = [
    "bench-schedule-task",
    "bench-unified-schedule",
    "bench-google-calendar-sync",
    "bench-google-calendar-full-sync",
];

/// The full sync every calendar sync of the history is a child of.
pub const BENCH_HISTORY_PARENT: uuid::Uuid =
    uuid::Uuid::from_u128(0x00000000_0000_7000_8000_000000000001);

/// Rows written per statement.
const FILL_CHUNK: u64 = 100_000;

/// Adds `runs` runs: 4 tasks, about 80 % completed, 8 % failed, 4 % canceled, 1 % crashed,
/// 1 % timed out, 2 % queued (with their ready rows), 2 % delayed, 2 % expired; 30 % tagged
/// `sync`, 2 % tagged `nightly`; calendar syncs keyed by one of 10,000 workspaces, each a child
/// of one full sync ([`BENCH_HISTORY_PARENT`]). Every run is decodable as a real one.
pub async fn bench_fill_history(pool: &Pool, runs: u64) -> Result<()> {
    sqlx::query(
        "INSERT INTO kiln.runs (id, task_id, queue, status, payload, output, attempts, max_attempts,
                                retry, created_at, available_at, started_at, finished_at, updated_at)
         VALUES ($1, $2, $2, 'completed', '{}', '[]', 1, 1,
                 '{\"factor\": 2.0, \"max_attempts\": 1, \"max_timeout_ms\": 60000,
                   \"min_timeout_ms\": 1000, \"randomize\": true}', now() - interval '31 days',
                 now() - interval '31 days', now() - interval '31 days', now() - interval '30 days',
                 now() - interval '30 days')
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(BENCH_HISTORY_PARENT)
    .bind(BENCH_HISTORY_TASKS[3])
    .execute(pool)
    .await
    .map_err(db("filling the history"))?;
    let mut done = 0;
    while done < runs {
        let n = (runs - done).min(FILL_CHUNK);
        fill_chunk(pool, done, n).await?;
        done += n;
    }
    sqlx::query("ANALYZE kiln.runs")
        .execute(pool)
        .await
        .map_err(db("analyzing the history"))?;
    sqlx::query("ANALYZE kiln.ready")
        .execute(pool)
        .await
        .map_err(db("analyzing the history"))?;
    Ok(())
}

async fn fill_chunk(pool: &Pool, offset: u64, n: u64) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db("filling the history"))?;
    sqlx::query(
        "WITH g AS (
             SELECT i, kiln.uuid_v7() AS id,
                    ($3::text[])[1 + (i % 4)] AS task_id,
                    CASE WHEN i % 100 < 80 THEN 'completed' WHEN i % 100 < 88 THEN 'failed'
                         WHEN i % 100 < 92 THEN 'canceled' WHEN i % 100 < 93 THEN 'crashed'
                         WHEN i % 100 < 94 THEN 'timed_out' WHEN i % 100 < 96 THEN 'queued'
                         WHEN i % 100 < 98 THEN 'delayed' ELSE 'expired' END AS status,
                    now() - (i % 2592000) * interval '1 second' AS created_at
               FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS i),
         ins AS (
         INSERT INTO kiln.runs (id, task_id, queue, concurrency_key, status, payload, output, error,
                                attempts, max_attempts, retry, tags, parent_run_id, root_run_id,
                                created_at, available_at, started_at, finished_at, updated_at)
         SELECT g.id, g.task_id, g.task_id,
                CASE WHEN g.task_id = 'bench-google-calendar-sync' THEN 'ws_' || (g.i % 10000) END,
                g.status::kiln.run_status,
                jsonb_build_object('ws_id', 'ws_' || (g.i % 10000)),
                CASE WHEN g.status = 'completed' THEN jsonb_build_object(
                    'ws_id', 'ws_' || (g.i % 10000), 'success', true, 'error', null) END,
                CASE WHEN g.status IN ('failed', 'crashed', 'timed_out') THEN jsonb_build_object(
                    'kind', 'error', 'message', 'google answered 401 for ws_' || (g.i % 10000),
                    'chain', '[]'::jsonb) END,
                CASE WHEN g.status IN ('queued', 'delayed', 'expired') THEN 0 ELSE 1 END, 3,
                '{\"factor\": 2.0, \"max_attempts\": 3, \"max_timeout_ms\": 60000,
                  \"min_timeout_ms\": 1000, \"randomize\": true}'::jsonb,
                CASE WHEN g.i % 10 < 3 THEN ARRAY['sync'] WHEN g.i % 50 = 3 THEN ARRAY['nightly']
                     ELSE '{}'::text[] END,
                CASE WHEN g.task_id = 'bench-google-calendar-sync' AND g.i % 2 = 0
                     THEN $4 END,
                CASE WHEN g.task_id = 'bench-google-calendar-sync' AND g.i % 2 = 0
                     THEN $4 END,
                g.created_at,
                CASE WHEN g.status = 'delayed' THEN now() + interval '1 day' ELSE g.created_at END,
                CASE WHEN g.status IN ('queued', 'delayed', 'expired') THEN NULL
                     ELSE g.created_at + interval '1 second' END,
                CASE WHEN g.status IN ('queued', 'delayed') THEN NULL
                     ELSE g.created_at + interval '2 seconds' END,
                g.created_at
           FROM g
         RETURNING id, task_id, queue, concurrency_key, status, available_at)
         INSERT INTO kiln.ready (run_id, task_id, queue, concurrency_key, available_at, order_at, delayed)
         SELECT id, task_id, queue, coalesce(concurrency_key, ''), available_at, available_at,
                status = 'delayed'
           FROM ins WHERE status IN ('queued', 'delayed')",
    )
    .bind(offset as i64)
    .bind(n as i64)
    .bind(BENCH_HISTORY_TASKS.map(str::to_owned).to_vec())
    .bind(BENCH_HISTORY_PARENT)
    .execute(&mut *tx)
    .await
    .map_err(db("filling the history"))?;
    sqlx::query(
        "INSERT INTO kiln.queues (name, paused) SELECT unnest($1::text[]), true
         ON CONFLICT (name) DO UPDATE SET paused = true",
    )
    .bind(BENCH_HISTORY_TASKS.map(str::to_owned).to_vec())
    .execute(&mut *tx)
    .await
    .map_err(db("filling the history"))?;
    tx.commit().await.map_err(db("filling the history"))?;
    Ok(())
}
