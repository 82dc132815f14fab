//! Every statement that locks several rows takes its locks in one order (see the lock order in
//! docs/architecture.md), so heartbeats, completions, cancels, rescues and reschedules running at
//! once over the same rows never deadlock. The count comes from Postgres itself
//! (`pg_stat_database.deadlocks` for the test's own database), and a second test shows that the
//! count does catch a deadlock when one is provoked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use kiln::worker::Rescuer;
use kiln_store::lease::{lease_claim, lease_complete_many, lease_heartbeat, AttemptEnd};
use kiln_store::run::{run_cancel, run_reschedule};
use kiln_store::StoreError;
use kiln_tests::{attempt_end, deadlocks_recorded, TestDb};
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TASK: &str = "lock-order-probe";
/// How long every actor runs at once.
const STRESS: Duration = Duration::from_secs(12);
/// Runs each simulated worker holds at most.
const WORKER_CONCURRENCY: usize = 50;
/// Leases are short and heartbeats frequent, so the two meet often.
const LEASE: Duration = Duration::from_millis(1_500);
const HEARTBEAT: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Tally {
    claimed: AtomicU64,
    completed: AtomicU64,
    heartbeats: AtomicU64,
    canceled: AtomicU64,
    rescued: AtomicU64,
    rescheduled: AtomicU64,
    deadlock_errors: AtomicU64,
    other_errors: AtomicU64,
}

impl Tally {
    fn record<T>(&self, result: Result<T, StoreError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                let deadlock = matches!(
                    &error,
                    StoreError::Database { source: sqlx::Error::Database(e), .. }
                        if e.code().as_deref() == Some("40P01")
                );
                if deadlock {
                    self.deadlock_errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("unexpected error: {error}");
                    self.other_errors.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
        }
    }
}

/// A stalling worker is frozen for 3 s of every 4 s since it started, twice its lease.
fn stalled(start: tokio::time::Instant) -> bool {
    start.elapsed().as_millis() % 4_000 >= 1_000
}

async fn pool(db: &TestDb, connections: u32) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect(&db.url)
        .await
        .expect("connect")
}

async fn trigger_runs(pool: &PgPool, n: i32) -> Vec<Uuid> {
    sqlx::query_scalar(
        "SELECT kiln.trigger($1, '{}'::jsonb,
                             jsonb_build_object('allow_unregistered', true,
                                                'concurrency_key', 'k' || (i % 8),
                                                'max_attempts', 1000))
           FROM generate_series(1, $2) i",
    )
    .bind(TASK)
    .bind(n)
    .fetch_all(pool)
    .await
    .expect("trigger runs")
}

/// One simulated worker: claims, heartbeats its held runs every 20 ms, and completes what it
/// holds in batches in random order, mostly as retries (queued again at once) so that runs cycle.
/// A worker that `stalls` stops beating and completing for 3 s now and then, so its leases
/// expire, the rescuer takes them, and its late completions meet the fence.
async fn simulated_worker(
    id: String,
    db: TestDb,
    stalls: bool,
    stop: CancellationToken,
    tally: Arc<Tally>,
) -> PgPool {
    let pool = pool(&db, 4).await;
    let held: Arc<Mutex<HashMap<Uuid, u32>>> = Arc::default();
    let start = tokio::time::Instant::now();
    let heartbeat = {
        let (pool, held, stop, tally, id) = (
            pool.clone(),
            Arc::clone(&held),
            stop.clone(),
            Arc::clone(&tally),
            id.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                tokio::time::sleep(HEARTBEAT).await;
                if stalls && stalled(start) {
                    continue;
                }
                let runs: Vec<(Uuid, u32)> = held
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(id, attempt)| (*id, *attempt))
                    .collect();
                if runs.is_empty() {
                    continue;
                }
                if tally
                    .record(lease_heartbeat(&pool, &id, &runs, LEASE).await)
                    .is_some()
                {
                    tally.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let tasks = vec![TASK.to_owned()];
    while !stop.is_cancelled() {
        if stalls && stalled(start) {
            tokio::time::sleep(HEARTBEAT).await;
            continue;
        }
        let free = WORKER_CONCURRENCY - held.lock().unwrap().len();
        if free > 0 {
            if let Some(claim) =
                tally.record(lease_claim(&pool, &id, &tasks, free as u32, LEASE, None).await)
            {
                tally
                    .claimed
                    .fetch_add(claim.runs.len() as u64, Ordering::Relaxed);
                let mut held = held.lock().unwrap();
                for run in claim.runs {
                    held.insert(run.run_id, run.attempt);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=3))).await;
        let ends: Vec<AttemptEnd> = {
            let held = held.lock().unwrap();
            let mut runs: Vec<_> = held.iter().map(|(id, a)| (*id, *a)).collect();
            fastrand::shuffle(&mut runs);
            runs.truncate(runs.len().div_ceil(2));
            runs.into_iter()
                .map(|(run_id, attempt)| {
                    let retry = fastrand::u8(..10) != 0;
                    attempt_end(
                        run_id,
                        attempt,
                        Some(serde_json::json!({ "ok": true })),
                        retry.then(Utc::now),
                    )
                })
                .collect()
        };
        if tally
            .record(lease_complete_many(&pool, &ends, false, None).await)
            .is_some()
        {
            tally
                .completed
                .fetch_add(ends.len() as u64, Ordering::Relaxed);
        }
        let mut held = held.lock().unwrap();
        for end in &ends {
            held.remove(&end.run_id);
        }
    }
    let _ = heartbeat.await;
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_completion_cancel_rescue_and_reschedule_never_deadlock() {
    let db = TestDb::new().await;
    sqlx::query("INSERT INTO kiln.queues (name, concurrency_limit) VALUES ($1, 40)")
        .bind(TASK)
        .execute(&db.pool)
        .await
        .unwrap();
    let ids = Arc::new(Mutex::new(trigger_runs(&db.pool, 600).await));
    let stop = CancellationToken::new();
    let tally = Arc::new(Tally::default());

    let workers: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(simulated_worker(
                format!("sim-{i}"),
                db.clone(),
                i == 2,
                stop.clone(),
                Arc::clone(&tally),
            ))
        })
        .collect();

    let operator = pool(&db, 4).await;
    let operator_task = {
        let (pool, ids, stop, tally) = (
            operator.clone(),
            Arc::clone(&ids),
            stop.clone(),
            Arc::clone(&tally),
        );
        tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.is_cancelled() {
                round += 1;
                let pick = {
                    let ids = ids.lock().unwrap();
                    ids[fastrand::usize(..ids.len())]
                };
                if round % 3 == 0 {
                    if let Some(run_cancel_outcome) = tally.record(run_cancel(&pool, pick).await) {
                        if matches!(run_cancel_outcome, kiln::CancelOutcome::Canceled { .. }) {
                            tally.canceled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Keep the supply of runs up as cancels finish them.
                    let fresh = trigger_runs(&pool, 2).await;
                    ids.lock().unwrap().extend(fresh);
                } else if let Some(outcome) =
                    tally.record(run_reschedule(&pool, pick, Utc::now()).await)
                {
                    // A run waiting for its retry is refused, after the statement took the
                    // same locks: both count as reschedule statements run.
                    if matches!(
                        outcome,
                        kiln_store::run::RescheduleOutcome::Rescheduled
                            | kiln_store::run::RescheduleOutcome::NotWaiting(_)
                    ) {
                        tally.rescheduled.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let rescuer_task = {
        let (pool, stop, tally) = (operator.clone(), stop.clone(), Arc::clone(&tally));
        tokio::spawn(async move {
            let rescuer = Rescuer::default();
            while !stop.is_cancelled() {
                if let Some(n) = tally.record(rescuer.rescue_expired_leases(&pool).await) {
                    tally.rescued.fetch_add(n, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    tokio::time::sleep(STRESS).await;
    stop.cancel();
    rescuer_task.await.expect("rescuer");
    let mut pools = Vec::new();
    for worker in workers {
        pools.push(worker.await.expect("simulated worker"));
    }
    operator_task.await.expect("operator");
    pools.push(operator);
    pools.push(db.pool.clone());
    let recorded = deadlocks_recorded(&db, &pools.iter().collect::<Vec<_>>()).await;

    let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
    println!(
        "claimed {} completed {} heartbeats {} canceled {} rescued {} rescheduled {} \
         deadlock errors {} other errors {} deadlocks recorded by Postgres {recorded}",
        read(&tally.claimed),
        read(&tally.completed),
        read(&tally.heartbeats),
        read(&tally.canceled),
        read(&tally.rescued),
        read(&tally.rescheduled),
        read(&tally.deadlock_errors),
        read(&tally.other_errors),
    );
    // Every kind of statement really ran, over the same rows.
    assert!(read(&tally.completed) > 1_000, "too few completions");
    assert!(read(&tally.heartbeats) > 100, "too few heartbeats");
    assert!(read(&tally.canceled) > 10, "too few cancels");
    assert!(read(&tally.rescued) > 0, "no lease was rescued");
    assert!(read(&tally.rescheduled) > 10, "too few reschedules");
    assert_eq!(read(&tally.other_errors), 0, "statements failed");
    assert_eq!(
        read(&tally.deadlock_errors),
        0,
        "a statement was a deadlock victim"
    );
    assert_eq!(recorded, 0, "Postgres recorded deadlocks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadlock_count_catches_a_provoked_deadlock() {
    let db = TestDb::new().await;
    sqlx::raw_sql(
        "CREATE TABLE two_rows (id int PRIMARY KEY); INSERT INTO two_rows VALUES (1), (2)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let before = deadlocks_recorded(&db, &[&db.pool]).await;
    let mut first = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut second = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let lock = "SELECT id FROM two_rows WHERE id = $1 FOR UPDATE";
    sqlx::query("BEGIN").execute(&mut first).await.unwrap();
    sqlx::query("BEGIN").execute(&mut second).await.unwrap();
    sqlx::query(lock).bind(1).execute(&mut first).await.unwrap();
    sqlx::query(lock)
        .bind(2)
        .execute(&mut second)
        .await
        .unwrap();
    // Opposite orders: each now waits for the other, and Postgres ends one of them.
    let (a, b) = tokio::join!(
        sqlx::query(lock).bind(2).execute(&mut first),
        sqlx::query(lock).bind(1).execute(&mut second),
    );
    let victims = [a.err(), b.err()]
        .into_iter()
        .flatten()
        .filter(|e| matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("40P01")))
        .count();
    assert_eq!(victims, 1, "exactly one transaction is the deadlock victim");
    for conn in [&mut first, &mut second] {
        sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let pool = pool(&db, 1).await;
    let after = deadlocks_recorded(&db, &[&pool]).await;
    assert_eq!(after - before, 1, "the provoked deadlock is counted");
}

/// Claimers that each serve several keyed queues, while runs keep arriving for the same keys: a
/// claim applies each queue's wakeups (which writes key rows, and may wait for them) and picks
/// keys, queue after queue. Every keyed queue is scheduled before any key is picked, in name
/// order, so no claimer holding keys waits for another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimers_of_several_keyed_queues_never_deadlock() {
    const QUEUES: [&str; 4] = ["keyed-a", "keyed-b", "keyed-c", "keyed-d"];
    const CLAIMERS: usize = 8;
    let db = TestDb::new().await;
    let pool = pool(&db, 16).await;
    for queue in QUEUES {
        sqlx::query("INSERT INTO kiln.queues (name, concurrency_limit) VALUES ($1, 1)")
            .bind(queue)
            .execute(&pool)
            .await
            .unwrap();
    }
    let tasks: Vec<String> = QUEUES.iter().map(|q| (*q).to_owned()).collect();
    let stop = CancellationToken::new();
    let claimed = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut actors = tokio::task::JoinSet::new();
    for t in 0..2 {
        let (pool, stop, failures) = (pool.clone(), stop.clone(), failures.clone());
        actors.spawn(async move {
            let mut round = t;
            while !stop.is_cancelled() {
                // Every queue, from a different one each round, a few runs per key each time.
                let first = round % QUEUES.len();
                round += 1 + t;
                let order: Vec<String> = (0..QUEUES.len())
                    .map(|i| QUEUES[(first + i) % QUEUES.len()].to_owned())
                    .collect();
                let triggered = sqlx::query(
                    "SELECT kiln.trigger(q, '{}'::jsonb,
                                         jsonb_build_object('allow_unregistered', true,
                                                            'concurrency_key', 'k' || (i % 3)))
                       FROM unnest($1::text[]) q, generate_series(1, 6) i",
                )
                .bind(&order)
                .execute(&pool)
                .await;
                if let Err(error) = triggered {
                    failures.lock().unwrap().push(format!("trigger: {error}"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    for c in 0..CLAIMERS {
        let (pool, stop, failures, claimed, tasks) = (
            pool.clone(),
            stop.clone(),
            failures.clone(),
            claimed.clone(),
            tasks.clone(),
        );
        actors.spawn(async move {
            let worker = format!("claimer-{c}");
            while !stop.is_cancelled() {
                let batch = match lease_claim(&pool, &worker, &tasks, 8, LEASE, None).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        failures.lock().unwrap().push(format!("claim: {error}"));
                        continue;
                    }
                };
                claimed.fetch_add(batch.runs.len() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
                let ends: Vec<AttemptEnd> = batch
                    .runs
                    .iter()
                    .map(|run| attempt_end(run.run_id, run.attempt, None, None))
                    .collect();
                if let Err(error) = lease_complete_many(&pool, &ends, false, None).await {
                    failures.lock().unwrap().push(format!("complete: {error}"));
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.cancel();
    while actors.join_next().await.is_some() {}
    let claimed = claimed.load(Ordering::Relaxed);
    let failures = failures.lock().unwrap().clone();
    let recorded = deadlocks_recorded(&db, &[&pool]).await;
    assert!(claimed > 200, "the claimers claimed {claimed} runs");
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(recorded, 0, "Postgres recorded deadlocks");
}
