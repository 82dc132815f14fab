//! Timeouts and cancels of executing runs. Its own test binary: the probe tasks write to one
//! database per process.

use std::time::Duration;

use kiln::{CancelOutcome, Client, ErrorKind, RunStatus, TriggerOptions};
use kiln_tests::tasks::*;
use kiln_tests::{wait_until, InProcessWorker, TestDb};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(20);

async fn wait_for_status(client: &Client, id: Uuid, status: RunStatus) -> kiln::Run {
    let start = tokio::time::Instant::now();
    loop {
        let run = client.runs().retrieve(id).await.expect("retrieve");
        if run.status == status {
            return run;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "run {id} did not reach {status}; last seen {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_times_the_run_out_and_cancel_fires_the_token_of_an_executing_run() {
    let db = TestDb::new().await;
    let worker = InProcessWorker::start(&db, "w1", 4).await;
    let client = Client::new(db.pool.clone());

    let overrun = client
        .trigger::<Overrunning>(ProbePayload { sleep_ms: 60_000 }, TriggerOptions::new())
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
        .trigger::<Patient>(ProbePayload { sleep_ms: 60_000 }, TriggerOptions::new())
        .await
        .unwrap();
    wait_for_status(&client, patient.id, RunStatus::Executing).await;
    wait_until("the patient body started", DEADLINE, || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM probe_events WHERE run_id = $1 AND event = 'started'",
        )
        .bind(patient.id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
            == 1
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
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM probe_events WHERE run_id = $1 AND event = 'cancelled'",
            )
            .bind(patient.id)
            .fetch_one(&db.pool)
            .await
            .unwrap()
                == 1
        },
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
