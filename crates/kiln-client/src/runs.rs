//! `client.runs()`: retrieve, list, cancel, replay.

use kiln_core::{CancelOutcome, Run, RunFilter, RunPage, TriggerOptions};
use kiln_store::run::{
    run_cancel, run_get, run_insert_many, run_list, run_reschedule, RescheduleOutcome, RunSpec,
};
use uuid::Uuid;

use crate::{ClientError, RunHandle};

/// Reads and steers runs.
#[derive(Debug, Clone, Copy)]
pub struct Runs<'a> {
    pool: &'a sqlx::PgPool,
}

impl<'a> Runs<'a> {
    pub(crate) fn new(pool: &'a sqlx::PgPool) -> Self {
        Self { pool }
    }

    /// One run with its attempts.
    pub async fn retrieve(&self, id: Uuid) -> Result<Run, ClientError> {
        run_get(self.pool, id)
            .await?
            .ok_or(ClientError::RunNotFound(id))
    }

    /// A page of runs, newest first, filtered.
    pub async fn list(&self, filter: &RunFilter) -> Result<RunPage, ClientError> {
        Ok(run_list(self.pool, filter).await?)
    }

    /// Cancels a run that has not finished; a finished run is left as it is.
    pub async fn cancel(&self, id: Uuid) -> Result<CancelOutcome, ClientError> {
        match run_cancel(self.pool, id).await? {
            CancelOutcome::NotFound => Err(ClientError::RunNotFound(id)),
            outcome => Ok(outcome),
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
        let options = TriggerOptions {
            concurrency_key: original.concurrency_key.clone(),
            queue: Some(original.queue.clone()),
            tags: original.tags.clone(),
            metadata: Some(original.metadata.clone()),
            max_attempts: Some(original.max_attempts),
            replay_of: Some(original.id),
            allow_unregistered: true,
            ..TriggerOptions::default()
        };
        let spec = RunSpec {
            payload: payload.unwrap_or(original.payload),
            options,
        };
        let mut runs = run_insert_many(self.pool, &original.task_id, None, &[spec], true).await?;
        Ok(runs.remove(0).into())
    }

    /// Moves a run that has not started yet to become available at `at` (a later time delays
    /// it, an earlier one lets it start sooner). A run that started or finished is refused.
    pub async fn reschedule(
        &self,
        id: Uuid,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ClientError> {
        match run_reschedule(self.pool, id, at).await? {
            RescheduleOutcome::Rescheduled => Ok(()),
            RescheduleOutcome::NotFound => Err(ClientError::RunNotFound(id)),
            RescheduleOutcome::NotWaiting(status) => Err(ClientError::NotWaiting { id, status }),
        }
    }
}
