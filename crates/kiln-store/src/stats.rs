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
