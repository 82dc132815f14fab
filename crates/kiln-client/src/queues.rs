//! `client.queues()`: list, pause, resume, limit.

use kiln_core::QueueRow;
use kiln_store::queue::{queue_get, queue_list, queue_set_limit_override, queue_set_paused};

use crate::ClientError;

/// Lists and steers queues.
#[derive(Debug, Clone, Copy)]
pub struct Queues<'a> {
    pool: &'a sqlx::PgPool,
}

impl<'a> Queues<'a> {
    pub(crate) fn new(pool: &'a sqlx::PgPool) -> Self {
        Self { pool }
    }

    /// Every queue with its limits and live counts.
    pub async fn list(&self) -> Result<Vec<QueueRow>, ClientError> {
        Ok(queue_list(self.pool).await?)
    }

    /// One queue, if it exists.
    pub async fn retrieve(&self, name: &str) -> Result<Option<QueueRow>, ClientError> {
        Ok(queue_get(self.pool, name).await?)
    }

    /// Stops new runs of the queue from starting; executing runs finish.
    pub async fn pause(&self, name: &str) -> Result<(), ClientError> {
        Ok(queue_set_paused(self.pool, name, true).await?)
    }

    /// Lets the queue's runs start again.
    pub async fn resume(&self, name: &str) -> Result<(), ClientError> {
        Ok(queue_set_paused(self.pool, name, false).await?)
    }

    /// Overrides the queue's concurrency limit (per key when runs carry keys); `None` returns to
    /// the limit declared in code.
    pub async fn set_limit(&self, name: &str, limit: Option<i32>) -> Result<(), ClientError> {
        Ok(queue_set_limit_override(self.pool, name, limit).await?)
    }
}
