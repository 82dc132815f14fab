//! Self-fencing: a worker frozen (SIGSTOP) past its leases cancels its bodies as soon as it
//! resumes (SIGCONT), before any database call, instead of extending leases that expired while
//! it could not act. No other worker and no rescuer run here, so nothing but the worker's own
//! fence can stop the bodies: without it, its first heartbeat would extend the expired leases
//! and the bodies would run on.

use std::time::Duration;

use kiln::{BatchItem, RunStatus};
use kiln_tests::tasks::*;
use kiln_tests::{registered, send_signal, stop_all, wait_until, WorkerProcess};

const WORKER_EXE: &str = env!("CARGO_BIN_EXE_kiln-test-worker");

async fn events(pool: &sqlx::PgPool, event: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM probe_events WHERE event = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_leases_stops_its_bodies_as_soon_as_it_resumes() {
    let (db, client) = registered().await;
    let mut worker = WorkerProcess {
        lease_ms: 1_500,
        heartbeat_ms: 300,
        maintenance: false,
        ..WorkerProcess::new("frozen", 4)
    }
    .only(&["patient"])
    .spawn(WORKER_EXE, &db);
    let items = (0..3)
        .map(|_| {
            BatchItem::new(ProbePayload {
                sleep_ms: 60_000,
                fail_first: false,
            })
        })
        .collect();
    let handles = client.batch_trigger::<Patient>(items).await.unwrap();
    wait_until("three bodies started", Duration::from_secs(20), || async {
        events(&db.pool, "started").await == 3
    })
    .await;

    send_signal(&worker, "STOP").await;
    wait_until(
        "every lease of the frozen worker expired",
        Duration::from_secs(20),
        || async {
            let expired: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM kiln.leases WHERE worker_id = 'frozen' AND expires_at < now()",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            expired == 3
        },
    )
    .await;
    let resumed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    send_signal(&worker, "CONT").await;

    wait_until(
        "each body saw its token fire",
        Duration::from_secs(10),
        || async { events(&db.pool, "cancelled").await == 3 },
    )
    .await;
    let last_cancel: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(at) FROM probe_events WHERE event = 'cancelled'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let after = (last_cancel - resumed_at).num_milliseconds();
    println!("the resumed worker stopped its 3 bodies within {after} ms of SIGCONT");
    assert!(
        after < 1_500,
        "bodies ran on for {after} ms after the worker resumed"
    );
    assert_eq!(events(&db.pool, "finished").await, 0);

    // The worker recorded the attempts itself (nothing else could): crashed, and the runs, with
    // no attempt left, crashed too.
    for handle in &handles {
        let run = kiln_tests::wait_for_status(&client, handle.id, RunStatus::Crashed).await;
        assert_eq!(run.attempt_list.len(), 1);
        assert_eq!(run.attempt_list[0].status, "crashed");
        assert_eq!(run.attempt_list[0].worker_id, "frozen");
    }
    assert!(
        stop_all(std::slice::from_mut(&mut worker)).await,
        "the worker exited cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescued_run_keeps_its_place_at_the_head_of_its_queue() {
    use kiln::Task;
    use kiln_store::lease::lease_claim;
    let (db, client) = registered().await;
    let task_ids = vec![LimitedProbe::ID.to_owned()];
    let payload = || ProbePayload {
        sleep_ms: 1,
        fail_first: false,
    };
    let oldest = client.trigger::<LimitedProbe>(payload()).await.unwrap();
    let claim = lease_claim(
        &db.pool,
        "dies",
        &task_ids,
        1,
        Duration::from_millis(200),
        None,
    )
    .await
    .unwrap();
    assert_eq!(claim.runs[0].run_id, oldest.id);
    let mut newer = Vec::new();
    for _ in 0..5 {
        newer.push(client.trigger::<LimitedProbe>(payload()).await.unwrap().id);
    }
    wait_until("the lease expired", Duration::from_secs(10), || async {
        let expired: bool =
            sqlx::query_scalar("SELECT bool_and(expires_at < now()) FROM kiln.leases")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        expired
    })
    .await;
    let rescued = kiln::Rescuer::default()
        .rescue_expired_leases(&db.pool)
        .await
        .unwrap();
    assert_eq!(rescued, 1);
    let next = lease_claim(
        &db.pool,
        "survivor",
        &task_ids,
        1,
        Duration::from_secs(30),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        next.runs[0].run_id, oldest.id,
        "the rescued run is claimed before the five runs triggered after it"
    );
    assert_eq!(next.runs[0].attempt, 2);
}
