//! Bulk actions: cancel or replay many runs at once, chosen by id or by a runs filter. They run
//! in bounded batches (one statement per batch), stop at a cap, report progress as they go,
//! and are recorded in the audit log as one entry each.

use std::collections::BTreeMap;

use kiln_core::{Run, RunFilter, MAX_PAGE_SIZE};
use kiln_store::run::{run_cancel_many, run_insert_many, run_list, run_list_by_ids, RunSpec};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::Ops;
use crate::ClientError;

/// Runs one bulk action takes at most, unless the caller sets another cap.
pub const DEFAULT_BULK_CAP: u64 = 100_000;
/// The largest cap a caller may set.
pub const MAX_BULK_CAP: u64 = 1_000_000;
/// Runs handled per statement.
pub const BULK_BATCH: u32 = MAX_PAGE_SIZE;

/// Which runs a bulk action takes.
#[derive(Debug, Clone)]
pub enum BulkSelection {
    /// These runs.
    Ids(Vec<Uuid>),
    /// Every run the filter matches (its cursor, `before` and page size are ignored).
    Filter(Box<RunFilter>),
}

/// What a bulk action did, so far or in the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BulkProgress {
    /// Runs selected and looked at.
    pub matched: u64,
    /// Runs canceled, or new runs triggered by a replay.
    pub done: u64,
    /// Runs left as they were: already finished (cancel), not found, or whose payload no
    /// longer matches its task's schema (replay).
    pub skipped: u64,
    /// True when the action stopped at its cap with runs left unselected.
    pub capped: bool,
}

/// A bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Cancel every unfinished run selected (with its unfinished descendants).
    Cancel,
    /// Trigger a new run of each run selected, with its payload and options.
    Replay,
}

impl BulkAction {
    /// The action's name in the API and the audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Replay => "replay",
        }
    }
}

impl std::str::FromStr for BulkAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cancel" => Ok(Self::Cancel),
            "replay" => Ok(Self::Replay),
            other => Err(format!("no bulk action {other:?}: use cancel or replay")),
        }
    }
}

/// The runs of a selection, one batch at a time.
struct Batches<'a> {
    ops: Ops<'a>,
    selection: BulkSelection,
    cap: u64,
    taken: u64,
    cursor: Option<Uuid>,
    finished: bool,
}

impl Batches<'_> {
    /// The next batch of runs, or `None` when the selection or the cap is exhausted. Sets
    /// `capped` when runs remain past the cap.
    async fn next(&mut self, progress: &mut BulkProgress) -> Result<Option<Vec<Run>>, ClientError> {
        if self.finished {
            return Ok(None);
        }
        let room = self.cap - self.taken;
        let runs = match &self.selection {
            BulkSelection::Ids(ids) => {
                let start = self.taken as usize;
                let end = (start + BULK_BATCH as usize).min(ids.len());
                if start >= ids.len() {
                    self.finished = true;
                    return Ok(None);
                }
                if room == 0 {
                    progress.capped = true;
                    self.finished = true;
                    return Ok(None);
                }
                let end = end.min(start + room as usize);
                let wanted = &ids[start..end];
                let found = run_list_by_ids(self.ops.pool, wanted).await?;
                self.taken += wanted.len() as u64;
                progress.matched += wanted.len() as u64;
                progress.skipped += (wanted.len() - found.len()) as u64;
                found
            }
            BulkSelection::Filter(filter) => loop {
                let page = run_list(
                    self.ops.pool,
                    &RunFilter {
                        cursor: self.cursor,
                        before: None,
                        limit: Some(BULK_BATCH),
                        ..filter.as_ref().clone()
                    },
                )
                .await?;
                // A status-filtered page may stop at its scan budget with no run: go on.
                self.cursor = page.next_cursor;
                if page.next_cursor.is_none() {
                    self.finished = true;
                }
                if page.runs.is_empty() {
                    if self.finished {
                        return Ok(None);
                    }
                    continue;
                }
                if room == 0 {
                    progress.capped = true;
                    self.finished = true;
                    return Ok(None);
                }
                let mut runs = page.runs;
                if runs.len() as u64 > room {
                    runs.truncate(room as usize);
                    progress.capped = true;
                    self.finished = true;
                }
                self.taken += runs.len() as u64;
                progress.matched += runs.len() as u64;
                break runs;
            },
        };
        Ok(Some(runs))
    }
}

/// Runs a bulk action, calling `report` after each batch. `cap` is at most [`MAX_BULK_CAP`].
pub(crate) async fn run_bulk(
    ops: Ops<'_>,
    action: BulkAction,
    selection: BulkSelection,
    cap: u64,
    mut report: impl FnMut(BulkProgress),
) -> Result<BulkProgress, ClientError> {
    if !(1..=MAX_BULK_CAP).contains(&cap) {
        return Err(ClientError::Invalid(format!(
            "a bulk action's cap must be between 1 and {MAX_BULK_CAP} runs, got {cap}"
        )));
    }
    if let BulkSelection::Ids(ids) = &selection {
        if ids.is_empty() {
            return Err(ClientError::Invalid(
                "a bulk action needs at least one run id, or a filter".into(),
            ));
        }
    }
    let summary = selection_summary(&selection);
    let mut progress = BulkProgress::default();
    let mut batches = Batches {
        ops,
        selection,
        cap,
        taken: 0,
        cursor: None,
        finished: false,
    };
    while let Some(runs) = batches.next(&mut progress).await? {
        let done = match action {
            BulkAction::Cancel => {
                let ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
                run_cancel_many(ops.pool, &ids).await?
            }
            BulkAction::Replay => replay_batch(ops, &runs).await?,
        };
        progress.done += done;
        progress.skipped += runs.len() as u64 - done;
        report(progress);
    }
    ops.audit(
        &format!("runs.bulk_{}", action.as_str()),
        "runs",
        serde_json::json!({ "selection": summary, "result": progress }),
    )
    .await;
    Ok(progress)
}

/// Replays a batch: one insert statement per task. A run whose payload no longer matches its
/// task's schema is skipped.
async fn replay_batch(ops: Ops<'_>, runs: &[Run]) -> Result<u64, ClientError> {
    let mut by_task: BTreeMap<&str, Vec<RunSpec>> = BTreeMap::new();
    for run in runs {
        if ops
            .client
            .check_payload_schema(&run.task_id, &run.payload)
            .await
            .is_err()
        {
            continue;
        }
        by_task
            .entry(run.task_id.as_str())
            .or_default()
            .push(crate::runs::replay_spec(run, run.payload.clone()));
    }
    let mut done = 0;
    for (task_id, specs) in by_task {
        done += run_insert_many(ops.pool, task_id, None, &specs, true)
            .await?
            .len() as u64;
    }
    Ok(done)
}

/// The selection as recorded in the audit log.
fn selection_summary(selection: &BulkSelection) -> serde_json::Value {
    match selection {
        BulkSelection::Ids(ids) => serde_json::json!({ "ids": ids.len() }),
        BulkSelection::Filter(f) => serde_json::json!({
            "tasks": f.task_ids,
            "statuses": f.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "retrying": f.retrying,
            "queue": f.queue,
            "tags": f.tags,
            "concurrency_key": f.concurrency_key,
            "created_after": f.created_after,
            "created_before": f.created_before,
            "parent_run_id": f.parent_run_id,
            "root_only": f.root_only,
        }),
    }
}
