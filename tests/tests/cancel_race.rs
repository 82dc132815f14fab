//! Cancels racing claims and completions across worker processes leave each run with exactly one
//! final status, no leaked lease or queue entry, and the limit intact.

use std::time::Duration;

use kiln::{BatchItem, CancelOutcome, Client, RunStatus, TriggerOptions};
use kiln_tests::tasks::*;
use kiln_tests::{observed_max_concurrency, stop_all, wait_until, TestDb, WorkerProcess};

const WORKER_EXE: &str = env!("CARGO_BIN_EXE_kiln-test-worker");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_execution_leave_one_final_status_per_run() {
    let db = TestDb::new().await;
    let client = Client::new(db.pool.clone());
    let items = (0..300)
        .map(|i| {
            let key = format!("ws-{}", i % 6);
            BatchItem::with_options(
                ProbePayload {
                    sleep_ms: 20 + (i % 5) * 10,
                    fail_first: i % 7 == 0,
                },
                TriggerOptions::new()
                    .concurrency_key(key)
                    .allow_unregistered(),
            )
        })
        .collect();
    let handles = client.batch_trigger::<KeyedProbe>(items).await.unwrap();
    let mut workers: Vec<_> = (1..=2)
        .map(|i| WorkerProcess::new(&format!("race-{i}"), 6).spawn(WORKER_EXE, &db))
        .collect();

    // Cancel every third run, in order, while the workers claim and finish runs around them.
    let mut canceled_while = std::collections::BTreeMap::<RunStatus, u32>::new();
    for handle in handles.iter().step_by(3) {
        match client.runs().cancel(handle.id).await.unwrap() {
            CancelOutcome::Canceled { was } => *canceled_while.entry(was).or_default() += 1,
            CancelOutcome::AlreadyFinished(status) => assert_eq!(status, RunStatus::Completed),
            CancelOutcome::NotFound => unreachable!("the client maps it to an error"),
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    wait_until("every run finished", Duration::from_secs(120), || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM kiln.runs WHERE status NOT IN ('completed', 'canceled')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.leases")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        open == 0 && leases == 0
    })
    .await;
    assert!(
        stop_all(&mut workers).await,
        "a worker exited with an error"
    );
    eprintln!("observed: canceled while {canceled_while:?}");
    assert!(
        canceled_while
            .get(&RunStatus::Executing)
            .copied()
            .unwrap_or(0)
            > 0,
        "some cancels hit executing runs"
    );
    assert!(
        canceled_while.get(&RunStatus::Queued).copied().unwrap_or(0) > 0,
        "some cancels hit queued runs"
    );

    let (completed, canceled, ready): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM kiln.runs WHERE status = 'completed'),
                (SELECT count(*) FROM kiln.runs WHERE status = 'canceled'),
                (SELECT count(*) FROM kiln.ready)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let accepted: u32 = canceled_while.values().sum();
    assert_eq!(
        canceled,
        i64::from(accepted),
        "every accepted cancel, and only those, ended canceled"
    );
    assert_eq!((completed + canceled, ready), (300, 0));
    // A canceled run never starts again: no attempt began after its cancel.
    let late_starts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM kiln.attempts a JOIN kiln.runs r ON r.id = a.run_id
          WHERE r.status = 'canceled' AND a.started_at > r.finished_at",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(late_starts, 0);
    // A completed run has exactly one completed attempt.
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT run_id FROM kiln.attempts WHERE status = 'completed'
                                GROUP BY run_id HAVING count(*) > 1) d",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(doubled, 0);
    let (per_key, _) = observed_max_concurrency(&db.pool, None).await;
    assert!(
        per_key.values().all(|m| *m <= 2),
        "limit 2 per key held: {per_key:?}"
    );
}
