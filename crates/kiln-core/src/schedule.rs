//! Schedules as stored and the payload their runs receive.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How many upcoming ticks a scheduled run's payload and a schedule's listing show.
pub const UPCOMING_TICKS: usize = 5;

/// The payload of a run fired by a schedule. Declare a scheduled task's payload as this type:
/// `run: async |ctx: Context, tick: ScheduleTick| -> Result<..> { .. }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleTick {
    /// The nominal tick this run is for (not when it actually started).
    pub timestamp: DateTime<Utc>,
    /// The tick the schedule fired before this one, if any.
    pub last_timestamp: Option<DateTime<Utc>>,
    /// The IANA timezone the pattern is evaluated in.
    pub timezone: String,
    /// The schedule that fired.
    pub schedule_id: Uuid,
    /// The schedule's external id (e.g. a workspace id), if it has one.
    pub external_id: Option<String>,
    /// The next five ticks after this one.
    pub upcoming: Vec<DateTime<Utc>>,
    /// True when this is a late catch-up: the scheduler was down past one or more ticks, and
    /// this run stands for the latest of them (the earlier ones were skipped).
    #[serde(default)]
    pub caught_up: bool,
}

/// A schedule: a task fired on the ticks of a cron pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The schedule's id.
    pub id: Uuid,
    /// The task each tick triggers.
    pub task_id: String,
    /// The five-field cron pattern.
    pub cron: String,
    /// The IANA timezone the pattern is evaluated in.
    pub timezone: String,
    /// The caller's id for what the schedule is for (e.g. a workspace id).
    pub external_id: Option<String>,
    /// The key that makes a second create with the same key an update.
    pub dedup_key: Option<String>,
    /// Declared on the task in code (kept in sync by workers at start).
    pub declarative: bool,
    /// Fires only while active.
    pub active: bool,
    /// The next tick to fire, when active.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last tick fired.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The run the last tick triggered.
    pub last_run_id: Option<Uuid>,
    /// The next five ticks, when active.
    pub upcoming: Vec<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}
