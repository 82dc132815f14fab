//! A worker killed with SIGKILL mid-run loses nothing, and the limits still hold.

use std::time::Duration;

use kiln::{BatchItem, Client, TriggerOptions};
use kiln_tests::tasks::*;
use kiln_tests::{
    count_status, observed_max_concurrency, stop_all, wait_for_leases, wait_until, TestDb,
    WorkerProcess,
};

const WORKER_EXE: &str = env!("CARGO_BIN_EXE_kiln-test-worker");

/// A worker whose leases last 2 s (heartbeat 400 ms), so a killed worker's runs are rescued soon.
fn short_lease(id: &str) -> WorkerProcess {
    WorkerProcess {
        lease_ms: 2_000,
        heartbeat_ms: 400,
        ..WorkerProcess::new(id, 6)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_nothing_and_the_limit_still_holds() {
    let db = TestDb::new().await;
    let client = Client::new(db.pool.clone());
    // 5 keys x 40 runs of 40 ms, limit 2 per key; 20 long runs so the victim dies mid-run.
    for key in ["k1", "k2", "k3", "k4", "k5"] {
        let items = (0..40)
            .map(|i| {
                let sleep_ms = if i % 10 == 0 { 1_500 } else { 40 };
                BatchItem::with_options(
                    ProbePayload {
                        sleep_ms,
                        fail_first: false,
                    },
                    TriggerOptions::new()
                        .concurrency_key(key)
                        .allow_unregistered(),
                )
            })
            .collect();
        client.batch_trigger::<KeyedProbe>(items).await.unwrap();
    }
    let mut victim = short_lease("victim").spawn(WORKER_EXE, &db);
    wait_for_leases(&db.pool, "victim", 4, Duration::from_secs(30)).await;
    let mut survivors: Vec<_> = (1..=2)
        .map(|i| short_lease(&format!("survivor-{i}")).spawn(WORKER_EXE, &db))
        .collect();
    wait_until("some runs completed", Duration::from_secs(30), || async {
        count_status(&db.pool, "completed").await >= 20
    })
    .await;
    wait_for_leases(&db.pool, "victim", 1, Duration::from_secs(30)).await;

    victim.kill().await.expect("SIGKILL the victim");
    let killed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln.leases WHERE worker_id = 'victim'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(held > 0, "the victim died holding leases");

    wait_until(
        "all 200 runs completed",
        Duration::from_secs(120),
        || async { count_status(&db.pool, "completed").await == 200 },
    )
    .await;
    assert!(
        stop_all(&mut survivors).await,
        "a worker exited with an error"
    );

    // The victim's attempts were recorded as crashed and retried by the survivors.
    let crashed: Vec<(uuid::Uuid, f64)> = sqlx::query_as(
        "SELECT run_id, (extract(epoch FROM finished_at - $1) * 1000)::float8 FROM kiln.attempts
          WHERE status = 'crashed' AND worker_id = 'victim'",
    )
    .bind(killed_at)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let rescue_ms = crashed.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    eprintln!("observed: victim killed holding {held} leases; {} attempts rescued as crashed within {rescue_ms:.0} ms (lease 2 s)", crashed.len());
    assert_eq!(
        crashed.len() as i64,
        held,
        "every lease the victim held was rescued"
    );
    assert!(
        rescue_ms < 5_000.0,
        "rescued {rescue_ms} ms after the kill; the lease is 2 s"
    );
    for (run_id, _) in &crashed {
        let statuses: Vec<String> = sqlx::query_scalar(
            "SELECT status FROM kiln.attempts WHERE run_id = $1 ORDER BY number",
        )
        .bind(run_id)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(statuses.first().map(String::as_str), Some("crashed"));
        assert_eq!(
            statuses.last().map(String::as_str),
            Some("completed"),
            "run {run_id}: {statuses:?}"
        );
    }
    // Nothing lost, nothing left behind, exactly one final status per run.
    let (runs, done, leases, ready, completed_attempts): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM kiln.runs), (SELECT count(*) FROM kiln.runs WHERE status = 'completed'),
                (SELECT count(*) FROM kiln.leases), (SELECT count(*) FROM kiln.ready),
                (SELECT count(*) FROM kiln.attempts WHERE status = 'completed')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (runs, done, leases, ready, completed_attempts),
        (200, 200, 0, 0, 200)
    );

    let (per_key, _) = observed_max_concurrency(&db.pool, Some(killed_at)).await;
    let key_max = per_key.values().max().copied().unwrap();
    eprintln!(
        "observed: max per key {key_max} (limit 2) with the victim's bodies counted until the kill"
    );
    assert!(key_max <= 2, "a key ran {key_max} at once; its limit is 2");
}
