//! A worker survives losing every database connection: the pool and the LISTEN connection
//! reconnect on their own, and runs keep flowing.

use std::time::Duration;

use kiln::{BatchItem, Client};
use kiln_tests::tasks::*;
use kiln_tests::{count_status, wait_until, InProcessWorker, TestDb};

async fn terminate_other_backends(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&db.pool)
    .await
    .expect("terminate backends")
}

fn workspaces(range: std::ops::Range<u32>) -> Vec<BatchItem<WorkspacePayload>> {
    range
        .map(|i| {
            BatchItem::new(WorkspacePayload {
                ws_id: format!("ws_{i}"),
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reconnects_after_every_connection_is_killed_and_keeps_running_runs() {
    let db = TestDb::new().await;
    let worker = InProcessWorker::start(&db, "w1", 4).await;
    let client = Client::new(db.pool.clone());
    client
        .batch_trigger::<Echo>(workspaces(0..20))
        .await
        .unwrap();
    wait_until(
        "the first 20 runs completed",
        Duration::from_secs(20),
        || async { count_status(&db.pool, "completed").await == 20 },
    )
    .await;

    let killed = terminate_other_backends(&db).await;
    assert!(
        killed >= 2,
        "the worker's pool and LISTEN connections were killed ({killed})"
    );

    // The test's own pool reconnects too; the worker must pick these up without a restart.
    let mut triggered = false;
    for _ in 0..50 {
        if client
            .batch_trigger::<Echo>(workspaces(20..40))
            .await
            .is_ok()
        {
            triggered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(triggered, "the client reconnected");
    wait_until(
        "all 40 runs completed after the connections died",
        Duration::from_secs(30),
        || async { count_status(&db.pool, "completed").await == 40 },
    )
    .await;
    let (leases, ready): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM kiln.leases), (SELECT count(*) FROM kiln.ready)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((leases, ready), (0, 0));
    worker.stop().await;
}
