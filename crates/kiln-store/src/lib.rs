//! Every SQL statement Kiln runs, one module per table, named table-first (`run_insert_many`,
//! `lease_complete_many`), and the embedded migrations that create schema `kiln`.
//!
//! Nothing outside this crate writes SQL. The hot path lives in two server-side functions created
//! by the migrations (`kiln.trigger_runs`, `kiln.claim_runs`) and in the batched statements of
//! [`lease`]; see `docs/architecture.md` for why the tables are shaped the way they are.

#![forbid(unsafe_code)]

pub mod api_key;
pub mod audit;
pub mod bench;
mod error;
pub mod lease;
pub mod migrate;
pub mod queue;
pub mod ready;
pub mod run;
pub mod run_log;
pub mod schedule;
pub mod stats;
pub mod task;
pub mod wait;
pub mod worker;

pub use error::StoreError;
pub use migrate::migrate;

/// Channel on which the ids of runs that reached a final status are announced, comma-separated,
/// at most [`FINISHED_IDS_PER_NOTIFY`] per notification.
pub const RUNS_FINISHED_CHANNEL: &str = "kiln_runs_finished";
/// Run ids per notification on [`RUNS_FINISHED_CHANNEL`] (37 bytes each, under the 8,000-byte
/// payload limit).
pub const FINISHED_IDS_PER_NOTIFY: usize = 200;

/// A CTE that announces the ids in CTE `finished(id)` on [`RUNS_FINISHED_CHANNEL`]; the
/// statement must read `finished_notify` (e.g. `(SELECT count(*) FROM finished_notify) >= 0`)
/// for it to run.
pub(crate) const FINISHED_NOTIFY: &str = "finished_notify AS (
    SELECT pg_notify('kiln_runs_finished', string_agg(c.id::text, ',' ORDER BY c.id))
      FROM (SELECT f.id, (row_number() OVER (ORDER BY f.id) - 1) / 200 AS chunk
              FROM finished f) c
     GROUP BY c.chunk)";

/// The Postgres connection pool every store function takes.
pub type Pool = sqlx::PgPool;

/// Result of a store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
