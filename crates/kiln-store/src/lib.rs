//! Every SQL statement Kiln runs, one module per table, named table-first (`run_insert_many`,
//! `lease_complete_many`), and the embedded migrations that create schema `kiln`.
//!
//! Nothing outside this crate writes SQL. The hot path lives in two server-side functions created
//! by the migrations (`kiln.trigger_runs`, `kiln.claim_runs`) and in the batched statements of
//! [`lease`]; see `docs/architecture.md` for why the tables are shaped the way they are.

#![forbid(unsafe_code)]

mod error;
pub mod lease;
pub mod migrate;
pub mod queue;
pub mod ready;
pub mod run;
pub mod schedule;
pub mod task;
pub mod wait;

pub use error::StoreError;
pub use migrate::migrate;

/// The Postgres connection pool every store function takes.
pub type Pool = sqlx::PgPool;

/// Result of a store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
