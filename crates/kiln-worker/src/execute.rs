//! Executing one attempt: decode, run the body under its limits, and say how the attempt ended.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_core::{
    AttemptOutcome, ChildRuntime, Context, Error, ErrorKind, ErrorRecord, RunInfo, RunStatus,
};
use kiln_store::lease::{AttemptEnd, ClaimedRun};
use tracing::Instrument;

use crate::inflight::{InFlight, StopReason};
use crate::registry::Registry;

/// How the body ended, before retry rules apply.
enum BodyEnd {
    Output(serde_json::Value),
    Failed(Error),
    Stopped(StopReason),
}

/// Runs one attempt of `run` to its end and returns the outcome to record.
pub(crate) async fn execute(
    registry: &Registry,
    run: ClaimedRun,
    flight: Arc<InFlight>,
    cancel_grace: Duration,
    lease_margin: Duration,
    children: Arc<dyn ChildRuntime>,
    log: Arc<crate::logs::AttemptLog>,
) -> AttemptEnd {
    // The process may have stalled between the claim and now: no body starts on a lease that
    // may have expired (another worker may run it already).
    if flight.lease_expiring(lease_margin) {
        flight.stop(StopReason::Fenced);
        tracing::warn!(
            "the lease may have expired before the attempt started; handing the run back"
        );
        return outcome(&run, BodyEnd::Stopped(StopReason::Fenced));
    }
    // Stopped before it started (canceled while it waited in the prefetch buffer, say): the body
    // never runs.
    if flight.token.is_cancelled() {
        return outcome(&run, BodyEnd::Stopped(flight.reason()));
    }
    let Some(task) = registry.get(&run.task_id).cloned() else {
        let error = ErrorRecord::new(
            ErrorKind::SystemFailure,
            format!("this worker has no task {:?} registered", run.task_id),
        );
        return finish(
            &run,
            AttemptOutcome::Failed,
            RunStatus::SystemFailure,
            None,
            Some(error),
        );
    };
    let ctx = Context::with_runtime(
        RunInfo {
            run_id: run.run_id,
            task_id: run.task_id.clone(),
            queue: run.queue.clone(),
            concurrency_key: run.concurrency_key.clone(),
            attempt: run.attempt,
            max_attempts: run.max_attempts,
            metadata: run.metadata.clone(),
            parent_run_id: run.parent_run_id,
            root_run_id: run.root_run_id,
        },
        flight.token.clone(),
        children,
    )
    .with_log(Arc::clone(&log) as Arc<dyn kiln_core::LogSink>)
    .with_states(registry.states());
    // The body runs in a task of its own (so a panic is caught and a stuck body can be dropped),
    // inside the attempt's span.
    // The attempt's log is task-local to the body's task, where `log_layer` finds it.
    let mut body = tokio::spawn(
        crate::log_layer::CURRENT_RUN_LOG
            .scope(Arc::clone(&log), task.call(ctx, run.payload.clone()))
            .instrument(tracing::Span::current()),
    );
    let deadline = run.max_duration.map(|d| tokio::time::Instant::now() + d);

    let end = tokio::select! {
        joined = &mut body => Some(joined),
        _ = flight.token.cancelled() => None,
        _ = sleep_until(deadline) => {
            flight.stop(StopReason::TimedOut);
            None
        }
    };
    let end = match end {
        Some(joined) => joined_end(joined),
        None => {
            // The token fired: give the body its grace period to return, then drop it.
            match tokio::time::timeout(cancel_grace, &mut body).await {
                // A body that still returned its output during shutdown did its work: keep it.
                Ok(joined) => match (flight.reason(), joined_end(joined)) {
                    (StopReason::None, end) => end,
                    (StopReason::Shutdown, BodyEnd::Output(output)) => BodyEnd::Output(output),
                    (reason, _) => BodyEnd::Stopped(reason),
                },
                Err(_) => {
                    body.abort();
                    BodyEnd::Stopped(flight.reason())
                }
            }
        }
    };
    outcome(&run, end)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn joined_end(joined: Result<Result<serde_json::Value, Error>, tokio::task::JoinError>) -> BodyEnd {
    match joined {
        Ok(Ok(output)) => BodyEnd::Output(output),
        Ok(Err(error)) => BodyEnd::Failed(error),
        Err(join) if join.is_panic() => {
            let panic = join.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the task body panicked".to_owned());
            BodyEnd::Failed(Error::with_kind(
                ErrorKind::Panic,
                format!("panicked: {message}"),
            ))
        }
        Err(_) => BodyEnd::Stopped(StopReason::Shutdown),
    }
}

/// Applies the retry rules to how the body ended.
fn outcome(run: &ClaimedRun, end: BodyEnd) -> AttemptEnd {
    match end {
        BodyEnd::Output(output) => finish(
            run,
            AttemptOutcome::Completed,
            RunStatus::Completed,
            Some(output),
            None,
        ),
        BodyEnd::Failed(error) => {
            let retryable = !error.is_abort() && run.counted_attempt < run.max_attempts;
            let record = error.into_record();
            if retryable {
                let delay = run.retry.delay(run.counted_attempt);
                let retry_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                AttemptEnd {
                    retry_at: Some(retry_at),
                    ..finish(
                        run,
                        AttemptOutcome::Failed,
                        RunStatus::Failed,
                        None,
                        Some(record),
                    )
                }
            } else {
                finish(
                    run,
                    AttemptOutcome::Failed,
                    RunStatus::Failed,
                    None,
                    Some(record),
                )
            }
        }
        BodyEnd::Stopped(StopReason::TimedOut) => {
            let limit = run.max_duration.unwrap_or_default();
            let error = ErrorRecord::new(
                ErrorKind::TimedOut,
                format!("the attempt ran longer than its max_duration of {limit:?}"),
            );
            finish(
                run,
                AttemptOutcome::TimedOut,
                RunStatus::TimedOut,
                None,
                Some(error),
            )
        }
        BodyEnd::Stopped(StopReason::Canceled) => {
            let error = ErrorRecord::new(ErrorKind::Canceled, "canceled by request");
            finish(
                run,
                AttemptOutcome::Canceled,
                RunStatus::Canceled,
                None,
                Some(error),
            )
        }
        BodyEnd::Stopped(StopReason::LeaseLost) => {
            // Either another worker owns the run now (this outcome is fenced off in the store),
            // or this worker stopped the body itself because it could not extend the lease in
            // time: then the attempt counts as crashed and the run is retried as the rescuer
            // would.
            let error = ErrorRecord::new(
                ErrorKind::Crashed,
                "this worker could not keep the run's lease (it stalled or lost the database)",
            );
            AttemptEnd {
                retry_at: (run.counted_attempt < run.max_attempts).then(Utc::now),
                ..finish(
                    run,
                    AttemptOutcome::Crashed,
                    RunStatus::Crashed,
                    None,
                    Some(error),
                )
            }
        }
        BodyEnd::Stopped(StopReason::Fenced) => {
            let error = ErrorRecord::new(
                ErrorKind::Interrupted,
                "the worker stalled past the run's lease before the attempt started; the run was \
                 handed back",
            );
            AttemptEnd {
                retry_at: Some(Utc::now()),
                released: true,
                ..finish(
                    run,
                    AttemptOutcome::Interrupted,
                    RunStatus::Queued,
                    None,
                    Some(error),
                )
            }
        }
        BodyEnd::Stopped(StopReason::Shutdown | StopReason::None) => {
            let error = ErrorRecord::new(
                ErrorKind::Interrupted,
                "the worker shut down before the attempt finished; the run was handed back",
            );
            AttemptEnd {
                retry_at: Some(Utc::now()),
                released: true,
                ..finish(
                    run,
                    AttemptOutcome::Interrupted,
                    RunStatus::Queued,
                    None,
                    Some(error),
                )
            }
        }
    }
}

/// The outcome of a run claimed ahead of a free slot and never started (the worker is stopping):
/// handed back at once, without counting an attempt.
pub(crate) fn handed_back(run: &ClaimedRun) -> AttemptEnd {
    outcome(run, BodyEnd::Stopped(StopReason::Shutdown))
}

fn finish(
    run: &ClaimedRun,
    outcome: AttemptOutcome,
    final_status: RunStatus,
    output: Option<serde_json::Value>,
    error: Option<ErrorRecord>,
) -> AttemptEnd {
    AttemptEnd {
        run_id: run.run_id,
        attempt: run.attempt,
        outcome,
        retry_at: None,
        final_status,
        output,
        error,
        released: false,
    }
}
