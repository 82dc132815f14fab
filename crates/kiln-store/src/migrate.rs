//! Embedded migrations, applied in order under an advisory lock so that many workers starting at
//! once migrate exactly once.

use sqlx::Connection;

use crate::error::db;
use crate::{Pool, Result, StoreError};

/// One migration: version, name and SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in ascending order.
    pub version: i32,
    /// File name without the version.
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

/// Every migration this build knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core",
        sql: include_str!("../../../migrations/0001_core.sql"),
    },
    Migration {
        version: 2,
        name: "trigger_and_claim",
        sql: include_str!("../../../migrations/0002_trigger_and_claim.sql"),
    },
    Migration {
        version: 3,
        name: "schedules_and_waits",
        sql: include_str!("../../../migrations/0003_schedules_and_waits.sql"),
    },
    Migration {
        version: 4,
        name: "lock_order",
        sql: include_str!("../../../migrations/0004_lock_order.sql"),
    },
    Migration {
        version: 5,
        name: "api_keys_and_audit",
        sql: include_str!("../../../migrations/0005_api_keys_and_audit.sql"),
    },
    Migration {
        version: 6,
        name: "payload_schemas",
        sql: include_str!("../../../migrations/0006_payload_schemas.sql"),
    },
    Migration {
        version: 7,
        name: "run_logs",
        sql: include_str!("../../../migrations/0007_run_logs.sql"),
    },
    Migration {
        version: 8,
        name: "workers",
        sql: include_str!("../../../migrations/0008_workers.sql"),
    },
    Migration {
        version: 9,
        name: "run_log_chunks",
        sql: include_str!("../../../migrations/0009_run_log_chunks.sql"),
    },
    Migration {
        version: 10,
        name: "one_validator",
        sql: include_str!("../../../migrations/0010_one_validator.sql"),
    },
    Migration {
        version: 11,
        name: "sql_surface",
        sql: include_str!("../../../migrations/0011_sql_surface.sql"),
    },
    Migration {
        version: 12,
        name: "key_scheduler",
        sql: include_str!("../../../migrations/0012_key_scheduler.sql"),
    },
    Migration {
        version: 13,
        name: "trace_context",
        sql: include_str!("../../../migrations/0013_trace_context.sql"),
    },
    Migration {
        version: 14,
        name: "schedule_wakeups",
        sql: include_str!("../../../migrations/0014_schedule_wakeups.sql"),
    },
    Migration {
        version: 15,
        name: "children_index",
        sql: include_str!("../../../migrations/0015_children_index.sql"),
    },
    Migration {
        version: 16,
        name: "run_log_lines_text",
        sql: include_str!("../../../migrations/0016_run_log_lines_text.sql"),
    },
    Migration {
        version: 17,
        name: "claim_lock_order",
        sql: include_str!("../../../migrations/0017_claim_lock_order.sql"),
    },
    Migration {
        version: 18,
        name: "scheduler_upkeep",
        sql: include_str!("../../../migrations/0018_scheduler_upkeep.sql"),
    },
    Migration {
        version: 19,
        name: "generic_plans",
        sql: include_str!("../../../migrations/0019_generic_plans.sql"),
    },
    Migration {
        version: 20,
        name: "shared_keyed_queues",
        sql: include_str!("../../../migrations/0020_shared_keyed_queues.sql"),
    },
    Migration {
        version: 21,
        name: "run_failures",
        sql: include_str!("../../../migrations/0021_run_failures.sql"),
    },
    Migration {
        version: 22,
        name: "keyed_batches",
        sql: include_str!("../../../migrations/0022_keyed_batches.sql"),
    },
    Migration {
        version: 23,
        name: "shared_queue_probe",
        sql: include_str!("../../../migrations/0023_shared_queue_probe.sql"),
    },
];

/// The migration that closed Kiln's functions to PUBLIC (and created the `kiln_app` role).
const SQL_SURFACE_VERSION: i32 = 11;

/// Advisory lock key that serializes migrations ("kiln" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6b69_6c6e;

/// FNV-1a, to notice a migration edited after it was applied.
fn checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Applies every pending migration. Returns the versions applied now.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>> {
    let mut conn = pool.acquire().await.map_err(db("connecting to migrate"))?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(db("taking the migration lock"))?;
    let result = apply_pending(&mut conn).await;
    let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    let applied = result?;
    unlock.map_err(db("releasing the migration lock"))?;
    Ok(applied)
}

async fn apply_pending(conn: &mut sqlx::PgConnection) -> Result<Vec<i32>> {
    // A database already set up gets no DDL (and so no "already exists" notices at every start).
    let (set_up,): (bool,) =
        sqlx::query_as("SELECT to_regclass('kiln.schema_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .map_err(db("reading applied migrations"))?;
    if !set_up {
        sqlx::raw_sql(
            "CREATE SCHEMA IF NOT EXISTS kiln;
         CREATE TABLE IF NOT EXISTS kiln.schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .execute(&mut *conn)
        .await
        .map_err(db("creating kiln.schema_migrations"))?;
    }
    let applied: Vec<(i32, String)> =
        sqlx::query_as("SELECT version, checksum FROM kiln.schema_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .map_err(db("reading applied migrations"))?;
    for (version, sum) in &applied {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            Some(m) if checksum(m.sql) != *sum => {
                return Err(StoreError::Migration(format!(
                    "migration {version} ({}) was changed after it was applied to this database; \
                     restore the original file and add a new migration instead",
                    m.name
                )))
            }
            Some(_) => {}
            None => {
                return Err(StoreError::Migration(format!(
                    "this database has migration {version}, which this build of Kiln does not \
                     know: it was migrated by a newer Kiln; upgrade this binary"
                )))
            }
        }
    }
    let mut newly = Vec::new();
    for m in MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
    {
        let mut tx = conn.begin().await.map_err(db("starting a migration"))?;
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(|e| {
            StoreError::Migration(format!("migration {} ({}) failed: {e}", m.version, m.name))
        })?;
        sqlx::query(
            "INSERT INTO kiln.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(checksum(m.sql))
        .execute(&mut *tx)
        .await
        .map_err(db("recording a migration"))?;
        if m.version >= SQL_SURFACE_VERSION {
            // No function of Kiln's is callable by every role; kiln_app gets its own grants
            // (docs/sql.md). Repeated after each migration, so that new functions are closed too.
            sqlx::query("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA kiln FROM PUBLIC")
                .execute(&mut *tx)
                .await
                .map_err(db("closing Kiln's functions to PUBLIC"))?;
        }
        tx.commit().await.map_err(db("committing a migration"))?;
        newly.push(m.version);
    }
    Ok(newly)
}

/// The versions of this build's migrations that the database has not applied (all of them when
/// Kiln's schema does not exist yet).
pub async fn migrations_pending(pool: &Pool) -> Result<Vec<i32>> {
    let applied: Vec<i32> = sqlx::query_scalar(
        "SELECT coalesce(array_agg(version), '{}') FROM kiln.schema_migrations
          WHERE to_regclass('kiln.schema_migrations') IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .or_else(|e| match &e {
        // 42P01: undefined table (the schema was never created).
        sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => Ok(Vec::new()),
        _ => Err(e),
    })
    .map_err(db("reading applied migrations"))?;
    Ok(MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}
