//! Whether the database answers.

use crate::error::db;
use crate::{Pool, Result};

/// One round trip to the database.
pub async fn health_ping(pool: &Pool) -> Result<()> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map_err(db("reaching the database"))?;
    Ok(())
}
