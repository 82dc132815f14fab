//! `client.tasks()` and `client.workers()`: the tasks workers have registered, with their
//! definitions, and the worker processes themselves.

use kiln_store::task::{task_get, task_list, task_unregistered_waiting};
pub use kiln_store::task::{TaskRow, UnregisteredWaiting};

use crate::audit::Ops;
use crate::ClientError;

/// Reads registered tasks.
#[derive(Debug, Clone, Copy)]
pub struct Tasks<'a> {
    ops: Ops<'a>,
}

impl<'a> Tasks<'a> {
    pub(crate) fn new(ops: Ops<'a>) -> Self {
        Self { ops }
    }

    /// Every registered task, by id.
    pub async fn list(&self) -> Result<Vec<TaskRow>, ClientError> {
        Ok(task_list(self.ops.pool).await?)
    }

    /// Task ids no worker ever registered that have runs waiting (triggered with
    /// `allow_unregistered`): they wait until a worker registering the task starts.
    pub async fn unregistered_waiting(&self) -> Result<Vec<UnregisteredWaiting>, ClientError> {
        Ok(task_unregistered_waiting(self.ops.pool).await?)
    }

    /// One registered task.
    pub async fn retrieve(&self, task_id: &str) -> Result<TaskRow, ClientError> {
        task_get(self.ops.pool, task_id)
            .await?
            .ok_or_else(|| ClientError::UnregisteredTask {
                task_id: task_id.to_owned(),
            })
    }
}

/// A registered worker process, as listed.
pub use kiln_store::worker::WorkerRow;

/// Reads the workers registry.
#[derive(Debug, Clone, Copy)]
pub struct Workers<'a> {
    ops: Ops<'a>,
}

impl<'a> Workers<'a> {
    pub(crate) fn new(ops: Ops<'a>) -> Self {
        Self { ops }
    }

    /// Running and draining workers, newest first; with `all`, stopped and dead ones too (a
    /// worker that missed three heartbeats is `dead`).
    pub async fn list(&self, all: bool) -> Result<Vec<WorkerRow>, ClientError> {
        Ok(kiln_store::worker::worker_list(self.ops.pool, all).await?)
    }
}
