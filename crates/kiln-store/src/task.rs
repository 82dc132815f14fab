//! `kiln.tasks`: the tasks workers have registered, and their queues' declared limits.

use kiln_core::TaskDefinition;
use sqlx::Row;

use crate::error::db;
use crate::{Pool, Result};

/// Records a task definition (and its queue's declared limits) as a worker starts.
/// The operator's `limit_override` and `paused` flags are left as they are.
pub async fn task_register(pool: &Pool, definition: &TaskDefinition) -> Result<()> {
    let retry = serde_json::to_value(definition.retry).expect("a retry policy serializes");
    let mut tx = pool.begin().await.map_err(db("registering a task"))?;
    sqlx::query(
        "INSERT INTO kiln.tasks AS t (id, queue, description, max_attempts, retry, max_duration_ms,
                                     ttl_ms, priority_s)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET
             queue = excluded.queue, description = excluded.description,
             max_attempts = excluded.max_attempts, retry = excluded.retry,
             max_duration_ms = excluded.max_duration_ms, ttl_ms = excluded.ttl_ms,
             priority_s = excluded.priority_s, last_seen_at = now()",
    )
    .bind(definition.id)
    .bind(definition.queue_name())
    .bind(definition.description_text())
    .bind(definition.retry.max_attempts as i32)
    .bind(retry)
    .bind(definition.max_duration.map(|d| d.as_millis() as i64))
    .bind(definition.ttl.map(|d| d.as_millis() as i64))
    .bind(definition.priority.as_secs() as i32)
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

/// A registered task as listed for operators.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskRow {
    /// Task id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its description.
    pub description: Option<String>,
    /// Attempts in all.
    pub max_attempts: i32,
    /// When a worker last registered it.
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
}

/// Lists registered tasks by id.
pub async fn task_list(pool: &Pool) -> Result<Vec<TaskRow>> {
    let rows = sqlx::query(
        "SELECT id, queue, description, max_attempts, last_seen_at FROM kiln.tasks ORDER BY id",
    )
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
                last_seen_at: row.try_get("last_seen_at")?,
            })
        })
        .collect::<std::result::Result<_, sqlx::Error>>()
        .map_err(db("listing tasks"))
}

/// True when a worker has registered this task id.
pub async fn task_is_registered(pool: &Pool, task_id: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM kiln.tasks WHERE id = $1)")
        .bind(task_id)
        .fetch_one(pool)
        .await
        .map_err(db("reading registered tasks"))
}
