//! `kiln.tasks`: the tasks workers have registered, and their queues' declared limits.

use kiln_core::TaskDefinition;
use sqlx::Row;

use crate::error::db;
use crate::{Pool, Result};

/// Records a task definition (and its queue's declared limits) as a worker starts.
/// The operator's `limit_override` and `paused` flags are left as they are.
pub async fn task_register(
    pool: &Pool,
    definition: &TaskDefinition,
    payload_schema: Option<&serde_json::Value>,
) -> Result<()> {
    let retry = serde_json::to_value(definition.retry).expect("a retry policy serializes");
    let mut tx = pool.begin().await.map_err(db("registering a task"))?;
    sqlx::query(
        "INSERT INTO kiln.tasks AS t (id, queue, description, max_attempts, retry, max_duration_ms,
                                     ttl_ms, priority_s, payload_schema)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO UPDATE SET
             queue = excluded.queue, description = excluded.description,
             max_attempts = excluded.max_attempts, retry = excluded.retry,
             max_duration_ms = excluded.max_duration_ms, ttl_ms = excluded.ttl_ms,
             priority_s = excluded.priority_s, payload_schema = excluded.payload_schema,
             last_seen_at = now()",
    )
    .bind(definition.id)
    .bind(definition.queue_name())
    .bind(definition.description_text())
    .bind(definition.retry.max_attempts as i32)
    .bind(retry)
    .bind(definition.max_duration.map(|d| d.as_millis() as i64))
    .bind(definition.ttl.map(|d| d.as_millis() as i64))
    .bind(definition.priority.as_secs() as i32)
    .bind(payload_schema)
    .execute(&mut *tx)
    .await
    .map_err(db("registering a task"))?;
    sqlx::query(
        "INSERT INTO kiln.queues (name, concurrency_limit, total_limit) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET
             concurrency_limit = excluded.concurrency_limit, total_limit = excluded.total_limit,
             updated_at = now()
         WHERE kiln.queues.concurrency_limit IS DISTINCT FROM excluded.concurrency_limit
            OR kiln.queues.total_limit IS DISTINCT FROM excluded.total_limit",
    )
    .bind(definition.queue_name())
    .bind(definition.queue.concurrency_limit.map(|l| l as i32))
    .bind(definition.queue.total_limit.map(|l| l as i32))
    .execute(&mut *tx)
    .await
    .map_err(db("registering a task's queue"))?;
    tx.commit().await.map_err(db("registering a task"))
}

/// A registered task as listed for operators, with its definition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskRow {
    /// Task id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its description (the `task!` doc comment).
    pub description: Option<String>,
    /// Attempts in all.
    pub max_attempts: i32,
    /// Its retry policy, as stored.
    pub retry: serde_json::Value,
    /// Its attempt time limit in milliseconds.
    pub max_duration_ms: Option<i64>,
    /// Its ttl in milliseconds.
    pub ttl_ms: Option<i64>,
    /// Its default priority in seconds of head start.
    pub priority_s: i32,
    /// Its queue's concurrency limit (per key), the operator's override winning.
    pub concurrency_limit: Option<i32>,
    /// Its queue's limit across keys.
    pub total_limit: Option<i32>,
    /// The JSON Schema its payload is checked against (`payload_schema: true`).
    pub payload_schema: Option<serde_json::Value>,
    /// Its declarative cron pattern, if it has one.
    pub cron: Option<String>,
    /// That schedule's timezone.
    pub timezone: Option<String>,
    /// When a worker last registered it.
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    /// Whether a running worker (seen within its last heartbeats) registers it now; runs of a
    /// task no worker serves wait until one starts.
    pub served: bool,
    /// Its runs waiting to start now (queued and due, retries included).
    pub waiting: i64,
}

/// Runs waiting for a task id no worker ever registered (triggered with `allow_unregistered`):
/// nothing will run them until a worker registering the task starts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnregisteredWaiting {
    /// The task id.
    pub task_id: String,
    /// Runs waiting.
    pub waiting: i64,
    /// When the oldest of them became due.
    pub oldest_available_at: chrono::DateTime<chrono::Utc>,
}

/// Task ids with runs waiting that no worker ever registered, by id.
pub async fn task_unregistered_waiting(pool: &Pool) -> Result<Vec<UnregisteredWaiting>> {
    let rows: Vec<(String, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT r.task_id, count(*), min(r.available_at) FROM kiln.ready r
          WHERE NOT EXISTS (SELECT 1 FROM kiln.tasks t WHERE t.id = r.task_id)
          GROUP BY r.task_id ORDER BY r.task_id",
    )
    .fetch_all(pool)
    .await
    .map_err(db("listing runs of unregistered tasks"))?;
    Ok(rows
        .into_iter()
        .map(
            |(task_id, waiting, oldest_available_at)| UnregisteredWaiting {
                task_id,
                waiting,
                oldest_available_at,
            },
        )
        .collect())
}

/// Lists registered tasks by id, with their queue's limits and their declarative schedule.
pub async fn task_list(pool: &Pool) -> Result<Vec<TaskRow>> {
    task_query(pool, None).await
}

/// One registered task, if a worker registered it.
pub async fn task_get(pool: &Pool, task_id: &str) -> Result<Option<TaskRow>> {
    Ok(task_query(pool, Some(task_id)).await?.pop())
}

async fn task_query(pool: &Pool, task_id: Option<&str>) -> Result<Vec<TaskRow>> {
    let rows = sqlx::query(
        "SELECT t.id, t.queue, t.description, t.max_attempts, t.retry, t.max_duration_ms,
                t.ttl_ms, t.priority_s, t.payload_schema, coalesce(q.limit_override, q.concurrency_limit) AS concurrency_limit,
                q.total_limit, s.cron, s.timezone, t.last_seen_at,
                EXISTS (SELECT 1 FROM kiln.workers w
                         WHERE t.id = ANY(w.tasks) AND w.state = 'running'
                           AND w.last_seen_at >= now() - $2 * w.heartbeat_ms * interval '1 millisecond') AS served,
                coalesce(due.waiting, 0) AS waiting
           FROM kiln.tasks t
           LEFT JOIN kiln.queues q ON q.name = t.queue
           LEFT JOIN kiln.schedules s ON s.task_id = t.id AND s.declarative AND s.active
           LEFT JOIN (SELECT r.task_id, count(*) AS waiting FROM kiln.ready r
                       WHERE r.available_at <= now() AND ($1::text IS NULL OR r.task_id = $1)
                       GROUP BY r.task_id) due ON due.task_id = t.id
          WHERE $1::text IS NULL OR t.id = $1
          ORDER BY t.id",
    )
    .bind(task_id)
    .bind(crate::worker::WORKER_MISSED_HEARTBEATS)
    .fetch_all(pool)
    .await
    .map_err(db("listing tasks"))?;
    rows.iter()
        .map(|row| {
            Ok(TaskRow {
                id: row.try_get("id")?,
                queue: row.try_get("queue")?,
                description: row.try_get("description")?,
                max_attempts: row.try_get("max_attempts")?,
                retry: row.try_get("retry")?,
                max_duration_ms: row.try_get("max_duration_ms")?,
                ttl_ms: row.try_get("ttl_ms")?,
                priority_s: row.try_get("priority_s")?,
                payload_schema: row.try_get("payload_schema")?,
                concurrency_limit: row.try_get("concurrency_limit")?,
                total_limit: row.try_get("total_limit")?,
                cron: row.try_get("cron")?,
                timezone: row.try_get("timezone")?,
                last_seen_at: row.try_get("last_seen_at")?,
                served: row.try_get("served")?,
                waiting: row.try_get("waiting")?,
            })
        })
        .collect::<std::result::Result<_, sqlx::Error>>()
        .map_err(db("listing tasks"))
}

/// Whether a worker registered `task_id` (`None` when not), and its payload schema if it has one.
pub async fn task_payload_schema(
    pool: &Pool,
    task_id: &str,
) -> Result<Option<Option<serde_json::Value>>> {
    let row: Option<(Option<serde_json::Value>,)> =
        sqlx::query_as("SELECT payload_schema FROM kiln.tasks WHERE id = $1")
            .bind(task_id)
            .fetch_optional(pool)
            .await
            .map_err(db("reading a task's payload schema"))?;
    Ok(row.map(|(schema,)| schema))
}

/// True when a worker has registered this task id.
pub async fn task_is_registered(pool: &Pool, task_id: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM kiln.tasks WHERE id = $1)")
        .bind(task_id)
        .fetch_one(pool)
        .await
        .map_err(db("reading registered tasks"))
}
