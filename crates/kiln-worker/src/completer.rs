//! The completer: records attempt outcomes in batches, one statement per batch, and retries a
//! batch until the database takes it (an outcome is never dropped while the worker lives).

use std::time::Duration;

use kiln_store::lease::{lease_complete_many, AttemptEnd};
use kiln_store::Pool;
use tokio::sync::mpsc;

use crate::config::MAX_ERROR_BACKOFF;

/// Records outcomes received on `outcomes` until the channel closes and is drained.
pub(crate) async fn run_completer(
    pool: Pool,
    mut outcomes: mpsc::UnboundedReceiver<AttemptEnd>,
    batch_max: usize,
) {
    let mut batch = Vec::with_capacity(batch_max);
    while let Some(first) = outcomes.recv().await {
        batch.push(first);
        while batch.len() < batch_max {
            match outcomes.try_recv() {
                Ok(end) => batch.push(end),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match lease_complete_many(&pool, &batch, false, None).await {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, runs = batch.len(), "recording finished attempts failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                }
            }
        }
        batch.clear();
    }
}
