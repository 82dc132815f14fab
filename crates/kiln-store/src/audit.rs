//! `kiln.audit_log`: who changed what, when.

use chrono::{DateTime, Utc};

use crate::error::db;
use crate::{Pool, Result};

/// One recorded operator action.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    /// Its id (increasing).
    pub id: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it: `key:<name>` for an API key, `cli:<user>` for the CLI, `client` for an app.
    pub actor: String,
    /// What was done, e.g. `run.cancel`, `queue.pause`, `key.revoke`.
    pub action: String,
    /// What it was done to: a run or schedule id, a queue or key name.
    pub target: String,
    /// Details of the change (a new limit, a new time).
    pub detail: serde_json::Value,
}

/// Records an action.
pub async fn audit_insert(
    pool: &Pool,
    actor: &str,
    action: &str,
    target: &str,
    detail: &serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO kiln.audit_log (actor, action, target, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(detail)
    .execute(pool)
    .await
    .map_err(db("recording an audit entry"))?;
    Ok(())
}

/// The latest `limit` entries, newest first, older than `before` when given.
pub async fn audit_list(pool: &Pool, limit: u32, before: Option<i64>) -> Result<Vec<AuditEntry>> {
    let rows: Vec<(
        i64,
        DateTime<Utc>,
        String,
        String,
        String,
        serde_json::Value,
    )> = sqlx::query_as(
        "SELECT id, at, actor, action, target, detail FROM kiln.audit_log
              WHERE $2::bigint IS NULL OR id < $2
              ORDER BY id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .bind(before)
    .fetch_all(pool)
    .await
    .map_err(db("reading the audit log"))?;
    Ok(rows
        .into_iter()
        .map(|(id, at, actor, action, target, detail)| AuditEntry {
            id,
            at,
            actor,
            action,
            target,
            detail,
        })
        .collect())
}
