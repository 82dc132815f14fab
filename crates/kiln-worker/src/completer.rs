//! The completer: records attempt outcomes in batches, one statement per batch, and retries a
//! batch until the database takes it (an outcome is never dropped while the worker lives). A run
//! stays in flight (its lease extended by the heartbeat) until its outcome is recorded, so a slow
//! database cannot make a finished run look abandoned.

use std::time::Duration;

use kiln_store::lease::{lease_complete_many, AttemptEnd};
use kiln_store::Pool;
use tokio::sync::mpsc;

use crate::config::MAX_ERROR_BACKOFF;
use crate::inflight::InFlightRuns;

/// Records outcomes received on `outcomes` until the channel closes and is drained.
pub(crate) async fn run_completer(
    pool: Pool,
    mut outcomes: mpsc::UnboundedReceiver<AttemptEnd>,
    batch_max: usize,
    inflight: InFlightRuns,
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
                Ok(_) => {
                    for end in &batch {
                        inflight.remove_attempt(end.run_id, end.attempt);
                    }
                    break;
                }
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
