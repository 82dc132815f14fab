//! The completer: records attempt outcomes in batches, one statement per batch. A run stays in
//! flight (its lease extended by the heartbeat) until its outcome is recorded, so a slow database
//! cannot make a finished run look abandoned.
//!
//! It never wedges: a batch the database cannot reach is retried with backoff; a batch the
//! database refuses for what it contains is split until the refused outcome is alone, and that
//! outcome is replaced by a failure that can be stored (`output could not be stored: ...`), so the
//! run still reaches a final state and its lease and slot are freed.

use kiln_core::{AttemptOutcome, ErrorKind, ErrorRecord, RunStatus};
use kiln_store::lease::{lease_complete_many, AttemptEnd};
use kiln_store::{Pool, StoreError};
use tokio::sync::mpsc;

use crate::inflight::InFlightRuns;
use kiln_client::backoff::{Backoff, FIRST_ERROR_BACKOFF};

/// Records outcomes received on `outcomes` until the channel closes and is drained.
pub(crate) async fn run_completer(
    pool: Pool,
    mut outcomes: mpsc::UnboundedReceiver<AttemptEnd>,
    batch_max: usize,
    inflight: InFlightRuns,
    logs: std::sync::Arc<crate::logs::LogBuffer>,
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
        // A run's lines are stored before its outcome, so a finished run's log is complete.
        // Its body wrote them before its outcome was sent, so they are among the lines pushed
        // by now; the flusher stores them (and goes on with later ones) on its own connection.
        logs.tried_through(logs.pushed()).await;
        for end in record_outcomes(&pool, std::mem::take(&mut batch)).await {
            inflight.remove_attempt(end.0, end.1);
        }
    }
}

/// Records `batch`, splitting it around outcomes the database refuses; returns the `(run,
/// attempt)` pairs dealt with (recorded, replaced by a storable failure, or given up on).
pub(crate) async fn record_outcomes(pool: &Pool, batch: Vec<AttemptEnd>) -> Vec<(uuid::Uuid, u32)> {
    let mut done = Vec::with_capacity(batch.len());
    let mut pending = vec![batch];
    while let Some(part) = pending.pop() {
        let refused = match store_until_reachable(pool, &part).await {
            Ok(()) => {
                done.extend(part.iter().map(|end| (end.run_id, end.attempt)));
                continue;
            }
            Err(refused) => refused,
        };
        if part.len() > 1 {
            let mut first = part;
            let second = first.split_off(first.len() / 2);
            pending.push(second);
            pending.push(first);
            continue;
        }
        let end = part.into_iter().next().expect("a part is never empty");
        let replacement = storable_failure(&end, &refused);
        tracing::error!(run_id = %end.run_id, attempt = end.attempt, error = %refused,
                        "the attempt's outcome could not be stored; recording it as failed");
        if let Err(error) = store_until_reachable(pool, std::slice::from_ref(&replacement)).await {
            // Nothing more can be done here: the lease expires and the rescuer takes the run.
            tracing::error!(run_id = %end.run_id, %error,
                            "even the replacement outcome could not be stored; leaving the run to the rescuer");
        }
        done.push((end.run_id, end.attempt));
    }
    done
}

/// Stores `ends` in one statement, retrying with backoff while the database cannot be reached
/// (or asks to retry). Returns the error when the database refused the statement itself.
async fn store_until_reachable(pool: &Pool, ends: &[AttemptEnd]) -> Result<(), StoreError> {
    let mut backoff = Backoff::new(FIRST_ERROR_BACKOFF);
    loop {
        match lease_complete_many(pool, ends, false, None).await {
            Ok(_) => return Ok(()),
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, runs = ends.len(), "recording finished attempts failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Characters of the refused attempt's own error kept in its replacement (`kiln.limits` allows an
/// output limit down to 1,024 bytes; the whole replacement stays under it).
const REPLACEMENT_ERROR_CHARS: usize = 200;

/// The failure recorded instead of an outcome the database refused: final, not retried (the same
/// body would produce the same outcome), and made only of text the database can store.
fn storable_failure(end: &AttemptEnd, refused: &StoreError) -> AttemptEnd {
    let what = if end.output.is_some() {
        "output"
    } else {
        "error"
    };
    let mut message = format!("{what} could not be stored: {}", refused.database_message());
    if let Some(error) = &end.error {
        // Cut short, so that the replacement always fits under the smallest output limit.
        let original: String = error
            .message
            .replace('\0', "\u{FFFD}")
            .chars()
            .take(REPLACEMENT_ERROR_CHARS)
            .collect();
        message.push_str(&format!("; the attempt's error was: {original}"));
    }
    message = message.chars().take(2 * REPLACEMENT_ERROR_CHARS).collect();
    message.retain(|c| c != '\0');
    AttemptEnd {
        run_id: end.run_id,
        attempt: end.attempt,
        outcome: AttemptOutcome::Failed,
        retry_at: None,
        final_status: RunStatus::Failed,
        output: None,
        error: Some(ErrorRecord::new(ErrorKind::Unstorable, message)),
        released: false,
    }
}
