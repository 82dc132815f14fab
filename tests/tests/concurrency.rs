//! Global concurrency limits, proven with three real worker processes and a few thousand runs.

use std::time::Duration;

use kiln::{BatchItem, Client, TriggerOptions};
use kiln_tests::tasks::*;
use kiln_tests::{
    count_status, observed_max_concurrency, stop_all, wait_until, TestDb, WorkerProcess,
};

const WORKER_EXE: &str = env!("CARGO_BIN_EXE_kiln-test-worker");

/// Enqueues `n` keyed probe runs; with `fail_every_other`, every second run fails its first
/// attempt and is retried.
async fn enqueue_keyed(
    client: &Client,
    key: &str,
    n: usize,
    sleep_ms: u64,
    fail_every_other: bool,
) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let items = chunk
            .iter()
            .map(|i| {
                BatchItem::with_options(
                    ProbePayload {
                        sleep_ms,
                        fail_first: fail_every_other && i % 2 == 1,
                    },
                    TriggerOptions::new()
                        .concurrency_key(key)
                        .allow_unregistered(),
                )
            })
            .collect();
        client.batch_trigger::<KeyedProbe>(items).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_hold_across_three_processes_and_a_late_key_is_served_fairly() {
    let db = TestDb::new().await;
    let client = Client::new(db.pool.clone());

    // Backlog: two keys with big backlogs, 40 small keys (half of whose runs fail their first
    // attempt and are retried), and a queue limited without keys.
    enqueue_keyed(&client, "big-a", 1_000, 2, false).await;
    enqueue_keyed(&client, "big-b", 800, 2, false).await;
    for k in 0..40 {
        enqueue_keyed(&client, &format!("ws-{k}"), 10, 2, true).await;
    }
    let limited: Vec<_> = (0..800)
        .map(|_| {
            BatchItem::with_options(
                ProbePayload {
                    sleep_ms: 2,
                    fail_first: false,
                },
                TriggerOptions::new().allow_unregistered(),
            )
        })
        .collect();
    for chunk in limited.chunks(1_000) {
        client
            .batch_trigger::<LimitedProbe>(chunk.to_vec())
            .await
            .unwrap();
    }

    let started = std::time::Instant::now();
    let mut workers: Vec<_> = (1..=3)
        .map(|i| WorkerProcess::new(&format!("stress-{i}"), 8).spawn(WORKER_EXE, &db))
        .collect();

    // Once runs flow, a new key arrives behind big-a's backlog.
    wait_until("300 runs completed", Duration::from_secs(60), || async {
        count_status(&db.pool, "completed").await >= 300
    })
    .await;
    let late = client
        .trigger::<KeyedProbe>(ProbePayload {
            sleep_ms: 2,
            fail_first: false,
        })
        .concurrency_key("late")
        .await
        .unwrap();

    wait_until(
        "all 3,001 runs completed",
        Duration::from_secs(240),
        || async { count_status(&db.pool, "completed").await == 3_001 },
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        stop_all(&mut workers).await,
        "a worker exited with an error"
    );

    // Every run reached exactly one final status, with exactly one completed attempt; the 200
    // runs that failed first have exactly one failed attempt before it.
    let (runs, completed, failed, bodies, leases, ready): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM kiln.runs),
                (SELECT count(DISTINCT run_id) FROM kiln.attempts WHERE status = 'completed'),
                (SELECT count(*) FROM kiln.attempts WHERE status = 'failed'),
                (SELECT count(*) FROM probe_intervals), (SELECT count(*) FROM kiln.leases),
                (SELECT count(*) FROM kiln.ready)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (runs, completed, failed, bodies, leases, ready),
        (3_001, 3_001, 200, 3_201, 0, 0)
    );
    let malformed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT run_id, string_agg(status, ',' ORDER BY number) AS outcomes
               FROM kiln.attempts GROUP BY run_id) a
          WHERE outcomes NOT IN ('completed', 'failed,completed')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        malformed, 0,
        "every run's attempts are one completion, or one failure then one completion"
    );
    let per_worker: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker_id, count(*) FROM kiln.attempts GROUP BY 1 ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        per_worker.len(),
        3,
        "all three processes ran runs: {per_worker:?}"
    );

    let (per_key, per_queue) = observed_max_concurrency(&db.pool, None).await;
    let keyed_max = per_key
        .iter()
        .filter(|((q, _), _)| q == "keyed-probe")
        .map(|(_, m)| *m)
        .max()
        .unwrap();
    let big_a = per_key[&("keyed-probe".to_owned(), "big-a".to_owned())];
    let limited_max = per_queue["limited-probe"];
    let keyed_queue_max = per_queue["keyed-probe"];
    eprintln!(
        "observed: 3,001 runs in {elapsed:.1?} over {per_worker:?}; max per key {keyed_max} (limit 2; big-a {big_a}); \
         max in limited-probe {limited_max} (limit 3); max in keyed-probe across keys {keyed_queue_max}"
    );
    assert!(
        keyed_max <= 2,
        "a concurrency key ran {keyed_max} runs at once; its limit is 2"
    );
    assert_eq!(
        big_a, 2,
        "the limit of 2 was reached (so the test exercises it)"
    );
    assert!(
        limited_max <= 3,
        "limited-probe ran {limited_max} at once; its limit is 3"
    );
    assert_eq!(limited_max, 3, "the limit of 3 was reached");
    assert!(
        keyed_queue_max > 2,
        "keys run side by side: {keyed_queue_max}"
    );

    // The late key did not wait behind big-a's backlog.
    let (waited_ms, big_a_after): (f64, i64) = sqlx::query_as(
        "SELECT (extract(epoch FROM r.started_at - r.created_at) * 1000)::float8,
                (SELECT count(*) FROM kiln.runs b WHERE b.concurrency_key = 'big-a' AND b.started_at > r.started_at)
           FROM kiln.runs r WHERE r.id = $1",
    )
    .bind(late.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    eprintln!(
        "late key: started {waited_ms:.0} ms after its trigger, ahead of {big_a_after} big-a runs"
    );
    assert!(
        big_a_after > 100,
        "the late key was served while big-a still had {big_a_after} runs waiting"
    );
    assert!(waited_ms < 2_000.0, "the late key waited {waited_ms} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_limit_caps_a_queue_across_its_keys() {
    let db = TestDb::new().await;
    let client = Client::new(db.pool.clone());
    for key in ["a", "b", "c", "d"] {
        let items = (0..40)
            .map(|_| {
                BatchItem::with_options(
                    ProbePayload {
                        sleep_ms: 5,
                        fail_first: false,
                    },
                    TriggerOptions::new()
                        .concurrency_key(key)
                        .allow_unregistered(),
                )
            })
            .collect();
        client.batch_trigger::<TotalProbe>(items).await.unwrap();
    }
    let mut workers: Vec<_> = (1..=2)
        .map(|i| WorkerProcess::new(&format!("total-{i}"), 8).spawn(WORKER_EXE, &db))
        .collect();
    wait_until("160 runs completed", Duration::from_secs(120), || async {
        count_status(&db.pool, "completed").await == 160
    })
    .await;
    assert!(
        stop_all(&mut workers).await,
        "a worker exited with an error"
    );
    let (per_key, per_queue) = observed_max_concurrency(&db.pool, None).await;
    let key_max = per_key.values().max().copied().unwrap();
    eprintln!(
        "observed: max per key {key_max} (limit 2), max across keys {} (total_limit 3)",
        per_queue["total-probe"]
    );
    assert!(key_max <= 2);
    assert_eq!(
        per_queue["total-probe"], 3,
        "total_limit 3 reached and never exceeded"
    );
}
