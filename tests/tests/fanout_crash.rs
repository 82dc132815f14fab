//! Kill -9 the worker of a parent while it waits: the parent is rescued and retried, and its
//! retry re-attaches to the children it had started (their keys derive from the parent run and
//! the call order), so no child is triggered or run twice.

use std::time::Duration;

use kiln::RunStatus;
use kiln_tests::tasks::{FanOut, FanOutPayload, FanOutReport};
use kiln_tests::{probe_event_count, registered, wait_for_status, wait_until, WorkerProcess};

const EXE: &str = env!("CARGO_BIN_EXE_kiln-test-worker");

#[tokio::test]
async fn a_parent_retried_after_a_crash_reattaches_to_its_children() {
    let (db, client) = registered().await;
    let mut parent_worker = WorkerProcess::new("parents-1", 4).only(&["fan-out"]);
    parent_worker.lease_ms = 2_000;
    parent_worker.heartbeat_ms = 400;
    let mut first = parent_worker.spawn(EXE, &db);
    let children_worker = WorkerProcess::new("children", 4)
        .only(&["lone-child"])
        .spawn(EXE, &db);

    let parent = client
        .trigger::<FanOut>(FanOutPayload {
            children: 10,
            child_sleep_ms: 400,
            failing: vec![],
            lone: true,
            detached: false,
        })
        .await
        .unwrap();
    wait_for_status(&client, parent.id, RunStatus::Waiting).await;
    wait_until(
        "some children completed",
        Duration::from_secs(20),
        || async {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM kiln.runs WHERE parent_run_id = $1 AND status = 'completed'",
            )
            .bind(parent.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            done >= 2
        },
    )
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let unfinished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM kiln.runs WHERE parent_run_id = $1 AND status <> 'completed'",
    )
    .bind(parent.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        unfinished > 0,
        "the parent must be killed while children remain"
    );

    parent_worker.id = "parents-2".into();
    let second = parent_worker.spawn(EXE, &db);
    let done = wait_for_status(&client, parent.id, RunStatus::Completed).await;
    let report: FanOutReport = serde_json::from_value(done.output.unwrap()).unwrap();
    assert_eq!(
        report.results,
        (0..10).map(|n| Ok(n * 2)).collect::<Vec<_>>()
    );

    // The parent's first attempt crashed while it waited; the second finished it.
    assert_eq!(done.attempts, 2);
    assert_eq!(done.attempt_list[0].status, "crashed");
    assert_eq!(
        probe_event_count(&db.pool, parent.id, "parent-started").await,
        2
    );
    // Ten children, each triggered once and run once.
    let children: Vec<(uuid::Uuid, i32)> =
        sqlx::query_as("SELECT id, attempts FROM kiln.runs WHERE parent_run_id = $1")
            .bind(parent.id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(children.len(), 10);
    for (child, attempts) in &children {
        assert_eq!(*attempts, 1, "child {child}");
        let bodies: i64 =
            sqlx::query_scalar("SELECT count(*) FROM probe_intervals WHERE run_id = $1")
                .bind(child)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(bodies, 1, "child {child} ran {bodies} times");
    }
    assert!(kiln_tests::stop_all(&mut [second, children_worker]).await);
}

#[tokio::test]
async fn a_draining_worker_hands_a_waiting_parent_back_at_once() {
    let (db, client) = registered().await;
    let parent_worker = WorkerProcess::new("drain-parents-1", 4).only(&["fan-out"]);
    let mut first = parent_worker.spawn(EXE, &db);
    let children_worker = WorkerProcess::new("drain-children", 2)
        .only(&["lone-child"])
        .spawn(EXE, &db);
    let parent = client
        .trigger::<FanOut>(FanOutPayload {
            children: 6,
            child_sleep_ms: 500,
            failing: vec![],
            lone: true,
            detached: false,
        })
        .await
        .unwrap();
    wait_for_status(&client, parent.id, RunStatus::Waiting).await;

    // SIGTERM: the parent may wait far longer than the shutdown grace (10 s here); the worker
    // hands it back at once instead of waiting for it.
    let started = tokio::time::Instant::now();
    kiln_tests::send_sigterm(&first).await;
    assert!(first.wait().await.unwrap().success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let handed_back = client.runs().retrieve(parent.id).await.unwrap();
    assert_eq!(handed_back.status, RunStatus::Queued);

    let second = WorkerProcess::new("drain-parents-2", 4)
        .only(&["fan-out"])
        .spawn(EXE, &db);
    let done = wait_for_status(&client, parent.id, RunStatus::Completed).await;
    let report: FanOutReport = serde_json::from_value(done.output.unwrap()).unwrap();
    assert_eq!(
        report.results,
        (0..6).map(|n| Ok(n * 2)).collect::<Vec<_>>()
    );
    assert_eq!(done.attempt_list[0].status, "interrupted");
    let children: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln.runs WHERE parent_run_id = $1")
            .bind(parent.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(children, 6);
    let bodies: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM probe_intervals p JOIN kiln.runs r ON r.id = p.run_id
          WHERE r.parent_run_id = $1",
    )
    .bind(parent.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(bodies, 6, "each child ran once");
    assert!(kiln_tests::stop_all(&mut [second, children_worker]).await);
}
