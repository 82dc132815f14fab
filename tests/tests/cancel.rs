//! Timeouts and cancels of executing runs. Its own test binary: the probe tasks write to one
//! database per process.

use std::time::Duration;

use kiln::{CancelOutcome, Client, ErrorKind, RunStatus};
use kiln_tests::tasks::*;
use kiln_tests::{probe_event_count, wait_for_status, wait_until, InProcessWorker, TestDb};

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_times_the_run_out_and_cancel_fires_the_token_of_an_executing_run() {
    let db = TestDb::new().await;
    let worker = InProcessWorker::start(&db, "w1", 4).await;
    let client = Client::new(db.pool.clone());

    let overrun = client
        .trigger::<Overrunning>(ProbePayload {
            sleep_ms: 60_000,
            fail_first: false,
        })
        .await
        .unwrap();
    let run = wait_for_status(&client, overrun.id, RunStatus::TimedOut).await;
    assert_eq!(run.attempts, 1, "a timeout is final");
    assert_eq!(run.error.unwrap().kind, ErrorKind::TimedOut);
    let took = run.finished_at.unwrap() - run.started_at.unwrap();
    assert!(
        took < chrono::Duration::seconds(5),
        "timed out after {took}, expected ~0.3 s + grace"
    );

    let patient = client
        .trigger::<Patient>(ProbePayload {
            sleep_ms: 60_000,
            fail_first: false,
        })
        .await
        .unwrap();
    wait_for_status(&client, patient.id, RunStatus::Executing).await;
    wait_until("the patient body started", DEADLINE, || async {
        probe_event_count(&db.pool, patient.id, "started").await == 1
    })
    .await;
    let outcome = client.runs().cancel(patient.id).await.unwrap();
    assert_eq!(
        outcome,
        CancelOutcome::Canceled {
            was: RunStatus::Executing
        }
    );
    wait_until(
        "the body saw its cancellation token fire",
        DEADLINE,
        || async { probe_event_count(&db.pool, patient.id, "cancelled").await == 1 },
    )
    .await;
    wait_until(
        "the canceled attempt is recorded and its lease released",
        DEADLINE,
        || async {
            let run = client.runs().retrieve(patient.id).await.unwrap();
            run.attempt_list.len() == 1 && run.attempt_list[0].status == "canceled"
        },
    )
    .await;
    let run = client.runs().retrieve(patient.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Canceled);
    assert_eq!(
        client.runs().cancel(patient.id).await.unwrap(),
        CancelOutcome::AlreadyFinished(RunStatus::Canceled)
    );
    worker.stop().await;
}
