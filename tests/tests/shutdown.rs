//! SIGTERM drains: in-flight runs get the grace period, the rest are handed back at once.

use std::time::Duration;

use kiln::{Client, RunStatus};
use kiln_tests::tasks::*;
use kiln_tests::{count_status, send_sigterm, wait_for_leases, wait_until, TestDb, WorkerProcess};

const WORKER_EXE: &str = env!("CARGO_BIN_EXE_kiln-test-worker");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_short_runs_finish_and_hands_long_runs_back_without_using_an_attempt() {
    let db = TestDb::new().await;
    let client = Client::new(db.pool.clone());
    let short = client
        .trigger::<LimitedProbe>(ProbePayload {
            sleep_ms: 300,
            fail_first: false,
        })
        .allow_unregistered()
        .await
        .unwrap();
    let long = client
        .trigger::<Overrunning>(ProbePayload {
            sleep_ms: 200,
            fail_first: false,
        })
        .allow_unregistered()
        .max_attempts(1)
        .max_duration(Duration::from_secs(60))
        .await
        .unwrap();
    let long2 = client
        .trigger::<KeyedProbe>(ProbePayload {
            sleep_ms: 30_000,
            fail_first: false,
        })
        .allow_unregistered()
        .max_attempts(1)
        .await
        .unwrap();

    let mut first = WorkerProcess {
        shutdown_grace_ms: 1_000,
        ..WorkerProcess::new("first", 4)
    }
    .spawn(WORKER_EXE, &db);
    wait_for_leases(&db.pool, "first", 3, Duration::from_secs(30)).await;
    let signalled = std::time::Instant::now();
    send_sigterm(&first).await;
    let status = first.wait().await.unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "the worker exits cleanly on SIGTERM");
    assert!(
        took < Duration::from_secs(4),
        "drained in {took:?} with a 1 s grace"
    );

    let run = client.runs().retrieve(short.id).await.unwrap();
    assert_eq!(
        run.status,
        RunStatus::Completed,
        "a run finishing within the grace completes"
    );
    assert_eq!(
        client.runs().retrieve(long.id).await.unwrap().status,
        RunStatus::Completed
    );
    let run = client.runs().retrieve(long2.id).await.unwrap();
    assert_eq!(
        run.status,
        RunStatus::Queued,
        "an unfinished run is handed back at once"
    );
    assert_eq!(run.attempt_list.len(), 1);
    assert_eq!(run.attempt_list[0].status, "interrupted");
    // Nothing failed: it is shown as queued, not as retrying, and listed that way.
    assert!(!run.is_retrying());
    assert_eq!(run.display_status(), "queued");
    let retrying = client
        .runs()
        .list(&kiln::RunFilter {
            retrying: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(retrying.runs.iter().all(|r| r.id != long2.id));
    assert_eq!(count_status(&db.pool, "executing").await, 0);

    // Another worker picks it up at once; with max_attempts 1 it may still run, since the
    // interrupted attempt does not count.
    sqlx::query("UPDATE kiln.runs SET payload = '{\"sleep_ms\": 10}' WHERE id = $1")
        .bind(long2.id)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut second = WorkerProcess::new("second", 4).spawn(WORKER_EXE, &db);
    wait_until(
        "the handed-back run completed",
        Duration::from_secs(30),
        || async { client.runs().retrieve(long2.id).await.unwrap().status == RunStatus::Completed },
    )
    .await;
    let run = client.runs().retrieve(long2.id).await.unwrap();
    let outcomes: Vec<&str> = run.attempt_list.iter().map(|a| a.status.as_str()).collect();
    assert_eq!(outcomes, ["interrupted", "completed"]);
    send_sigterm(&second).await;
    assert!(second.wait().await.unwrap().success());
}
