//! A queue without limits is claimed with row-level locks: several worker processes claim it in
//! parallel and still run each run exactly once. Its own test binary, so that it does not share
//! the machine with the other multi-process tests.

use std::time::Duration;

use kiln::{BatchItem, Client, TriggerOptions};
use kiln_tests::tasks::*;
use kiln_tests::{count_status, stop_all, wait_until, TestDb, WorkerProcess};

const WORKER_EXE: &str = env!("CARGO_BIN_EXE_kiln-test-worker");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_without_limits_is_claimed_in_parallel_and_runs_each_run_once() {
    let db = TestDb::new().await;
    let client = Client::new(db.pool.clone());
    for chunk in 0..3 {
        let items = (0..1_000)
            .map(|i| {
                BatchItem::with_options(
                    ProbePayload {
                        sleep_ms: 1,
                        fail_first: false,
                    },
                    TriggerOptions::new()
                        .concurrency_key(format!("ws-{}", (chunk * 1_000 + i) % 5))
                        .allow_unregistered(),
                )
            })
            .collect();
        client.batch_trigger::<FreeProbe>(items).await.unwrap();
    }
    let mut workers: Vec<_> = (1..=3)
        .map(|i| WorkerProcess::new(&format!("free-{i}"), 16).spawn(WORKER_EXE, &db))
        .collect();
    wait_until("3,000 runs completed", Duration::from_secs(120), || async {
        count_status(&db.pool, "completed").await == 3_000
    })
    .await;
    assert!(
        stop_all(&mut workers).await,
        "a worker exited with an error"
    );
    let (attempts, bodies, doubled): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM kiln.attempts), (SELECT count(*) FROM probe_intervals),
                (SELECT count(*) FROM kiln.runs WHERE attempts <> 1)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (attempts, bodies, doubled),
        (3_000, 3_000, 0),
        "every run ran exactly once"
    );
    let per_worker: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker_id, count(*) FROM kiln.attempts GROUP BY 1 ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    eprintln!("observed: unlimited queue, 3,000 runs over {per_worker:?}");
    assert_eq!(
        per_worker.len(),
        3,
        "all three processes claimed runs: {per_worker:?}"
    );
}
