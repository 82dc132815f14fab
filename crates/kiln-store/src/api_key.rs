//! `kiln.api_keys`: keys of the HTTP API, stored as SHA-256 hashes with a display prefix.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::db;
use crate::{Pool, Result, StoreError};

/// A stored key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// Its id.
    pub id: Uuid,
    /// The name it was created with.
    pub name: String,
    /// The first characters of the secret, to recognise it by.
    pub prefix: String,
    /// `trigger`, `read` or `admin`.
    pub scope: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used (updated coarsely).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

type KeyTuple = (
    Uuid,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

const KEY_COLUMNS: &str = "id, name, prefix, scope, created_at, last_used_at, revoked_at";

fn key_row(t: KeyTuple) -> ApiKeyRow {
    ApiKeyRow {
        id: t.0,
        name: t.1,
        prefix: t.2,
        scope: t.3,
        created_at: t.4,
        last_used_at: t.5,
        revoked_at: t.6,
    }
}

/// Stores a new key. A live key with the same name is a conflict.
pub async fn api_key_insert(
    pool: &Pool,
    name: &str,
    prefix: &str,
    secret_hash: &[u8],
    scope: &str,
) -> Result<ApiKeyRow> {
    let row: KeyTuple = sqlx::query_as(&format!(
        "INSERT INTO kiln.api_keys (name, prefix, secret_hash, scope) VALUES ($1, $2, $3, $4)
         RETURNING {KEY_COLUMNS}"
    ))
    .bind(name)
    .bind(prefix)
    .bind(secret_hash)
    .bind(scope)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(format!(
            "a live API key is already named {name:?}: pick another name, or revoke that key first"
        )),
        _ => db("creating an API key")(e),
    })?;
    Ok(key_row(row))
}

/// Every key, live and revoked, oldest first.
pub async fn api_key_list(pool: &Pool) -> Result<Vec<ApiKeyRow>> {
    let rows: Vec<KeyTuple> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM kiln.api_keys ORDER BY id"
    ))
    .fetch_all(pool)
    .await
    .map_err(db("listing API keys"))?;
    Ok(rows.into_iter().map(key_row).collect())
}

/// The live key with this secret hash, if any.
pub async fn api_key_find_live(pool: &Pool, secret_hash: &[u8]) -> Result<Option<ApiKeyRow>> {
    let row: Option<KeyTuple> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM kiln.api_keys WHERE secret_hash = $1 AND revoked_at IS NULL"
    ))
    .bind(secret_hash)
    .fetch_optional(pool)
    .await
    .map_err(db("looking up an API key"))?;
    Ok(row.map(key_row))
}

/// Revokes the live key named `name`; `None` when no live key has that name.
pub async fn api_key_revoke(pool: &Pool, name: &str) -> Result<Option<ApiKeyRow>> {
    let row: Option<KeyTuple> = sqlx::query_as(&format!(
        "UPDATE kiln.api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL
         RETURNING {KEY_COLUMNS}"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(db("revoking an API key"))?;
    Ok(row.map(key_row))
}

/// Records that the keys `ids` were used now.
pub async fn api_key_touch(pool: &Pool, ids: &[Uuid]) -> Result<()> {
    sqlx::query(
        "UPDATE kiln.api_keys SET last_used_at = now()
          WHERE id IN (SELECT unnest($1::uuid[]) ORDER BY 1)",
    )
    .bind(ids)
    .execute(pool)
    .await
    .map_err(db("recording API key use"))?;
    Ok(())
}
