//! `client.queues()`: list, pause, resume, limit.

use kiln_core::QueueRow;
use kiln_store::queue::{
    queue_create, queue_get, queue_list, queue_set_limit_override, queue_set_paused,
};

use crate::audit::Ops;
use crate::ClientError;

/// Lists and steers queues.
#[derive(Debug, Clone, Copy)]
pub struct Queues<'a> {
    ops: Ops<'a>,
}

impl<'a> Queues<'a> {
    pub(crate) fn new(ops: Ops<'a>) -> Self {
        Self { ops }
    }

    /// Every queue with its limits and live counts.
    pub async fn list(&self) -> Result<Vec<QueueRow>, ClientError> {
        Ok(queue_list(self.ops.pool).await?)
    }

    /// One queue, if it exists.
    pub async fn retrieve(&self, name: &str) -> Result<Option<QueueRow>, ClientError> {
        Ok(queue_get(self.ops.pool, name).await?)
    }

    /// The `limit` concurrency keys of a queue with the most runs executing or ready, busiest
    /// first.
    pub async fn busiest_keys(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<kiln_core::KeyLoad>, ClientError> {
        Ok(kiln_store::queue::queue_busiest_keys(self.ops.pool, name, limit).await?)
    }

    /// Creates a queue that triggers may then name with the `queue` option (a trigger never
    /// creates one: that would escape its task's limit). `limit` caps its runs at once (per
    /// concurrency key when runs carry keys); `None` leaves it unlimited.
    pub async fn create(&self, name: &str, limit: Option<i32>) -> Result<(), ClientError> {
        queue_create(self.ops.pool, name, limit).await?;
        self.ops
            .audit("queue.create", name, serde_json::json!({ "limit": limit }))
            .await;
        Ok(())
    }

    /// Stops new runs of the queue from starting; executing runs finish.
    pub async fn pause(&self, name: &str) -> Result<(), ClientError> {
        queue_set_paused(self.ops.pool, name, true).await?;
        self.ops
            .audit("queue.pause", name, serde_json::Value::Null)
            .await;
        Ok(())
    }

    /// Lets the queue's runs start again.
    pub async fn resume(&self, name: &str) -> Result<(), ClientError> {
        queue_set_paused(self.ops.pool, name, false).await?;
        self.ops
            .audit("queue.resume", name, serde_json::Value::Null)
            .await;
        Ok(())
    }

    /// Overrides the queue's concurrency limit (per key when runs carry keys); `None` returns to
    /// the limit declared in code.
    pub async fn set_limit(&self, name: &str, limit: Option<i32>) -> Result<(), ClientError> {
        queue_set_limit_override(self.ops.pool, name, limit).await?;
        self.ops
            .audit("queue.limit", name, serde_json::json!({ "limit": limit }))
            .await;
        Ok(())
    }
}
