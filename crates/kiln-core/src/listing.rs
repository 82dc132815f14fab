//! What listing runs and queues returns, and how a listing is filtered: plain data shared by the
//! store (which fills it), the operations layer and every caller (CLI, HTTP API, dashboard).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Run, RunStatus};

/// Filters of a run listing; every field is optional and they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of these tasks.
    pub task_ids: Vec<String>,
    /// Only runs in these statuses.
    pub statuses: Vec<RunStatus>,
    /// Also runs queued for a retry (`queued` with an attempt behind them); alone, only those.
    pub retrying: bool,
    /// Only runs in this queue.
    pub queue: Option<String>,
    /// Only runs carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only runs with this concurrency key.
    pub concurrency_key: Option<String>,
    /// Only runs triggered at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only runs triggered before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Only children of this run.
    pub parent_run_id: Option<Uuid>,
    /// Only runs triggered from outside a run (no parent): the roots of fan-outs.
    pub root_only: bool,
    /// Only the run holding this idempotency key.
    pub idempotency_key: Option<String>,
    /// Continue after this run id (the previous page's `next_cursor`): older runs.
    pub cursor: Option<Uuid>,
    /// Go back before this run id (a page's `previous_cursor`): the newer runs just above it.
    /// Ignored when `cursor` is set.
    pub before: Option<Uuid>,
    /// Page size: 1 to [`MAX_PAGE_SIZE`]; [`DEFAULT_PAGE_SIZE`] when `None`.
    pub limit: Option<u32>,
    /// Leave each run's payload and output out (JSON null and `None`): for listings that show
    /// neither, so that a page never loads large payloads.
    pub summary_only: bool,
}

/// Reads status names of a filter (`failed`, `queued`, ... and `retrying`, meaning queued for a
/// retry): the statuses, and whether `retrying` was among them. Names may be comma-separated.
pub fn parse_status_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(Vec<RunStatus>, bool), String> {
    let mut statuses = Vec::new();
    let mut retrying = false;
    for name in names
        .into_iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if name == "retrying" {
            retrying = true;
        } else {
            statuses.push(name.parse().map_err(|_| {
                format!(
                    "status {name:?} is not a run status: use {} or retrying",
                    RunStatus::ALL.map(|s| s.as_str()).join(", ")
                )
            })?);
        }
    }
    Ok((statuses, retrying))
}

/// Runs per page when no limit is given.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Most runs one page may hold.
pub const MAX_PAGE_SIZE: u32 = 500;

/// One page of runs, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunPage {
    /// The runs, newest first (attempt lists left empty).
    pub runs: Vec<Run>,
    /// Pass as `cursor` for the next (older) page; `None` on the last page.
    pub next_cursor: Option<Uuid>,
    /// Pass as `before` for the previous (newer) page; `None` on the first page.
    pub previous_cursor: Option<Uuid>,
    /// True when a status-filtered page stopped at its scan budget: it may hold fewer runs than
    /// asked (even none), and older (or newer) runs were not searched yet; the cursors go on.
    pub scan_limited: bool,
}

/// A run's children counted by status, newest first, up to a bound: a fan-out of 100,000
/// children is not read whole to draw its parent's page.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChildCounts {
    /// Children per status, in lifecycle order, among the children counted.
    pub by_status: Vec<(crate::RunStatus, u64)>,
    /// How many children were counted (the sum of `by_status`).
    pub counted: u64,
    /// True when the run has more children than were counted: the counts are of the newest
    /// `counted` children only.
    pub more: bool,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The run was waiting or executing and is now canceled (an executing run's worker is told).
    Canceled {
        /// Its status before the cancel.
        was: RunStatus,
    },
    /// The run had already finished with this status; nothing changed.
    AlreadyFinished(RunStatus),
    /// No run has this id.
    NotFound,
}

/// A queue with its limits and live counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueRow {
    /// Queue name.
    pub name: String,
    /// Limit declared in code (per key when runs carry concurrency keys).
    pub concurrency_limit: Option<i32>,
    /// Operator's override of the limit, which wins over the declared one.
    pub limit_override: Option<i32>,
    /// Limit across all keys.
    pub total_limit: Option<i32>,
    /// Paused queues are not claimed from.
    pub paused: bool,
    /// Runs executing now.
    pub running: i64,
    /// Runs waiting, including delayed runs and retries.
    pub queued: i64,
    /// Parents waiting on their children (holding no slot).
    pub waiting: i64,
    /// When the run that has waited longest to start became available (`None`: nothing is
    /// ready now).
    pub oldest_available_at: Option<DateTime<Utc>>,
}

impl QueueRow {
    /// The limit the claim applies: the override, else the declared limit.
    pub fn effective_limit(&self) -> Option<i32> {
        self.limit_override.or(self.concurrency_limit)
    }
}

/// How loaded one concurrency key of a queue is: its runs executing and ready to start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyLoad {
    /// The key.
    pub concurrency_key: String,
    /// Its runs executing now.
    pub executing: i64,
    /// Its runs ready to start (queued, not delayed).
    pub queued: i64,
}
