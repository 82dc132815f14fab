//! `client.runs()`: retrieve, list, cancel, replay.

use kiln_core::{CancelOutcome, Run, RunFilter, RunPage, TriggerOptions};
use kiln_store::run::{
    run_cancel, run_get, run_insert_many, run_list, run_reschedule, RescheduleOutcome, RunSpec,
};
use uuid::Uuid;

use crate::audit::Ops;
use crate::{ClientError, RunHandle};

/// Log lines one page holds at most.
pub const MAX_LOG_PAGE: u32 = 1_000;

/// Reads and steers runs.
#[derive(Debug, Clone, Copy)]
pub struct Runs<'a> {
    ops: Ops<'a>,
}

impl<'a> Runs<'a> {
    pub(crate) fn new(ops: Ops<'a>) -> Self {
        Self { ops }
    }

    /// One run with its attempts.
    pub async fn retrieve(&self, id: Uuid) -> Result<Run, ClientError> {
        run_get(self.ops.pool, id)
            .await?
            .ok_or(ClientError::RunNotFound(id))
    }

    /// Up to `limit` (1 to [`MAX_LOG_PAGE`]) log lines of a run in order, of one attempt when
    /// given, after the line `after` = (attempt, seq) when given. An unknown run is
    /// [`ClientError::RunNotFound`].
    pub async fn logs(
        &self,
        id: Uuid,
        attempt: Option<u32>,
        after: Option<(u32, u32)>,
        limit: u32,
    ) -> Result<Vec<kiln_core::LogLine>, ClientError> {
        if !(1..=MAX_LOG_PAGE).contains(&limit) {
            return Err(ClientError::Invalid(format!(
                "a page of log lines holds 1 to {MAX_LOG_PAGE} lines, got {limit}"
            )));
        }
        let lines =
            kiln_store::run_log::run_log_list(self.ops.pool, id, attempt, after, limit).await?;
        if lines.is_empty() && after.is_none() {
            // Tell "no lines yet" from "no such run".
            self.retrieve(id).await?;
        }
        Ok(lines)
    }

    /// How many child runs this run triggered.
    pub async fn count_children(&self, id: Uuid) -> Result<i64, ClientError> {
        Ok(kiln_store::run::run_count_children(self.ops.pool, id).await?)
    }

    /// This run's newest `at_most` children counted per status (lifecycle order), and whether it
    /// has more: the cost follows `at_most`, not the size of the fan-out.
    pub async fn count_newest_children_by_status(
        &self,
        id: Uuid,
        at_most: u64,
    ) -> Result<kiln_core::ChildCounts, ClientError> {
        Ok(kiln_store::run::run_count_children_by_status(self.ops.pool, id, at_most).await?)
    }

    /// How many child runs this run triggered, per status (lifecycle order). Reads every child:
    /// for a large fan-out, [`count_newest_children_by_status`](Self::count_newest_children_by_status)
    /// is bounded.
    pub async fn count_children_by_status(
        &self,
        id: Uuid,
    ) -> Result<Vec<(kiln_core::RunStatus, u64)>, ClientError> {
        self.counts(&RunFilter {
            parent_run_id: Some(id),
            ..RunFilter::default()
        })
        .await
    }

    /// A page of runs, newest first, filtered.
    pub async fn list(&self, filter: &RunFilter) -> Result<RunPage, ClientError> {
        let strings = filter
            .task_ids
            .iter()
            .map(|v| ("task", v))
            .chain(filter.tags.iter().map(|v| ("tag", v)))
            .chain(filter.queue.iter().map(|v| ("queue", v)))
            .chain(
                filter
                    .concurrency_key
                    .iter()
                    .map(|v| ("concurrency_key", v)),
            )
            .chain(
                filter
                    .idempotency_key
                    .iter()
                    .map(|v| ("idempotency_key", v)),
            );
        for (name, value) in strings {
            kiln_core::check_key(&format!("filter {name}"), value).map_err(ClientError::Invalid)?;
        }
        Ok(run_list(self.ops.pool, filter).await?)
    }

    /// Cancels a run that has not finished; a finished run is left as it is.
    pub async fn cancel(&self, id: Uuid) -> Result<CancelOutcome, ClientError> {
        match run_cancel(self.ops.pool, id).await? {
            CancelOutcome::NotFound => Err(ClientError::RunNotFound(id)),
            outcome => {
                if let CancelOutcome::Canceled { was } = outcome {
                    self.ops
                        .audit(
                            "run.cancel",
                            &id.to_string(),
                            serde_json::json!({ "was": was }),
                        )
                        .await;
                }
                Ok(outcome)
            }
        }
    }

    /// Cancels a run that has not finished and returns the status it had; a run that already
    /// finished is [`ClientError::AlreadyFinished`] (a conflict). What operators call: the CLI
    /// and the HTTP API.
    pub async fn cancel_unfinished(&self, id: Uuid) -> Result<kiln_core::RunStatus, ClientError> {
        match self.cancel(id).await? {
            CancelOutcome::Canceled { was } => Ok(was),
            CancelOutcome::AlreadyFinished(status) => {
                Err(ClientError::AlreadyFinished { id, status })
            }
            CancelOutcome::NotFound => Err(ClientError::RunNotFound(id)),
        }
    }

    /// Triggers a new run of the same task with the same payload (or `payload` when given),
    /// queue, concurrency key, tags and metadata. The new run records `replay_of`.
    pub async fn replay(
        &self,
        id: Uuid,
        payload: Option<serde_json::Value>,
    ) -> Result<RunHandle, ClientError> {
        let original = self.retrieve(id).await?;
        let payload = payload.unwrap_or_else(|| original.payload.clone());
        ClientError::check_payload(&original.task_id, &payload)?;
        self.ops
            .client
            .check_payload_schema(&original.task_id, &payload)
            .await?;
        let spec = replay_spec(&original, payload);
        let mut runs =
            run_insert_many(self.ops.pool, &original.task_id, None, &[spec], true).await?;
        let handle: RunHandle = runs.remove(0).into();
        self.ops
            .audit(
                "run.replay",
                &id.to_string(),
                serde_json::json!({ "new_run": handle.id }),
            )
            .await;
        Ok(handle)
    }

    /// Waits until run `id` of task `T` is final and returns its typed output, or why there is
    /// none: [`WaitError::Failed`](crate::WaitError::Failed) with its status and error,
    /// [`WaitError::Timeout`](crate::WaitError::Timeout) when `timeout` passed first (the run
    /// goes on). Woken by Kiln's finish notification, with a
    /// slow poll behind it; one listening connection serves every wait of the process.
    pub async fn wait<T: kiln_core::Task>(
        &self,
        id: Uuid,
        timeout: std::time::Duration,
    ) -> Result<T::Output, crate::WaitError> {
        let run = self
            .wait_final(id, timeout)
            .await?
            .ok_or(crate::WaitError::Timeout {
                run_id: id,
                waited: timeout,
            })?;
        typed_output::<T>(run)
    }

    /// Run `id` once it is final, or `None` when `timeout` passed first; untyped (the HTTP
    /// API's long poll uses this). An unknown id is [`ClientError::RunNotFound`].
    pub async fn wait_final(
        &self,
        id: Uuid,
        timeout: std::time::Duration,
    ) -> Result<Option<Run>, ClientError> {
        self.ops.client.waiter().wait(id, timeout).await
    }

    /// How many runs match `filter` (its page position ignored), per status, in lifecycle
    /// order. Without a filter this counts every run: on a large history prefer a filter.
    pub async fn counts(
        &self,
        filter: &RunFilter,
    ) -> Result<Vec<(kiln_core::RunStatus, u64)>, ClientError> {
        Ok(kiln_store::run::run_status_counts_filtered(self.ops.pool, filter).await?)
    }

    /// How many runs match `filter` (its page position ignored), counting at most `at_most`.
    pub async fn count(&self, filter: &RunFilter, at_most: u64) -> Result<u64, ClientError> {
        Ok(kiln_store::run::run_count(self.ops.pool, filter, at_most).await?)
    }

    /// Cancels or replays many runs, chosen by id or by a filter, in batches of
    /// [`BULK_BATCH`](crate::BULK_BATCH), stopping after `cap` runs (at most
    /// [`MAX_BULK_CAP`](crate::MAX_BULK_CAP)). `report` sees the progress after each batch. One
    /// audit entry records the selection and the result.
    pub async fn bulk(
        &self,
        action: crate::BulkAction,
        selection: crate::BulkSelection,
        cap: u64,
        report: impl FnMut(crate::BulkProgress),
    ) -> Result<crate::BulkProgress, ClientError> {
        crate::bulk::run_bulk(self.ops, action, selection, cap, report).await
    }

    /// Moves a run that has not started yet to become available at `at` (a later time delays
    /// it, an earlier one lets it start sooner). A run that started or finished is refused.
    pub async fn reschedule(
        &self,
        id: Uuid,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ClientError> {
        match run_reschedule(self.ops.pool, id, at).await? {
            RescheduleOutcome::Rescheduled => {
                self.ops
                    .audit(
                        "run.reschedule",
                        &id.to_string(),
                        serde_json::json!({ "at": at }),
                    )
                    .await;
                Ok(())
            }
            RescheduleOutcome::NotFound => Err(ClientError::RunNotFound(id)),
            RescheduleOutcome::NotWaiting(status) => Err(ClientError::NotWaiting { id, status }),
        }
    }
}

/// The spec of a replay of `original` with `payload`: same task, queue, concurrency key, tags,
/// metadata and attempts, and `replay_of` naming the original.
pub(crate) fn replay_spec(original: &Run, payload: serde_json::Value) -> RunSpec {
    RunSpec {
        payload,
        options: TriggerOptions {
            concurrency_key: original.concurrency_key.clone(),
            queue: Some(original.queue.clone()),
            tags: original.tags.clone(),
            metadata: Some(original.metadata.clone()),
            max_attempts: Some(original.max_attempts),
            replay_of: Some(original.id),
            allow_unregistered: true,
            ..TriggerOptions::default()
        },
    }
}

/// A final run's typed result.
pub(crate) fn typed_output<T: kiln_core::Task>(run: Run) -> Result<T::Output, crate::WaitError> {
    if run.status != kiln_core::RunStatus::Completed {
        return Err(crate::WaitError::Failed {
            run_id: run.id,
            status: run.status,
            error: run.error,
        });
    }
    serde_json::from_value(run.output.unwrap_or(serde_json::Value::Null)).map_err(|e| {
        crate::WaitError::Output {
            run_id: run.id,
            expected: std::any::type_name::<T::Output>(),
            message: e.to_string(),
        }
    })
}
