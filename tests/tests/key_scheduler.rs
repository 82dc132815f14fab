//! The key scheduler (migration 0012): a claim of a queue with a per-key limit locks the keys it
//! serves, so several claimers take disjoint keys without a queue lock. These tests drive
//! `kiln.claim_runs` directly from several claimers at once, with completions, retries, stalls and
//! rescues, and check the per-key limit from the leases table and from the observed intervals;
//! and they check that no run is left behind by the scheduler's bookkeeping (parked keys, keys a
//! claim found empty while a trigger was committing, a limit given to a queue that had none).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use kiln::worker::Rescuer;
use kiln_store::lease::{lease_claim, lease_complete_many, lease_heartbeat, AttemptEnd};
use kiln_tests::{attempt_end, TestDb};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TASK: &str = "key-scheduler-probe";
const LIMIT: i64 = 3;
const KEYS: usize = 12;
const LEASE: Duration = Duration::from_millis(700);

async fn pool(db: &TestDb, connections: u32) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect(&db.url)
        .await
        .expect("connect")
}

/// Triggers `n` runs over the keys `k0..k{KEYS}`, some delayed by up to 300 ms.
async fn trigger_runs(pool: &PgPool, n: i32, key_prefix: &str) -> Vec<Uuid> {
    sqlx::query_scalar(
        "SELECT kiln.trigger($1, '{}'::jsonb,
                             jsonb_build_object('allow_unregistered', true,
                                                'concurrency_key', $3 || (i % $4),
                                                'max_attempts', 1000,
                                                'delay', CASE WHEN i % 5 = 0
                                                              THEN ((i * 37) % 300) || 'ms' END))
           FROM generate_series(1, $2) i",
    )
    .bind(TASK)
    .bind(n)
    .bind(key_prefix)
    .bind(KEYS as i32)
    .fetch_all(pool)
    .await
    .expect("trigger runs")
}

/// One attempt as its claimer saw it: from the claim's answer to just before its completion was
/// sent. Kept only when the completion was accepted, so it lies inside the lease's own interval.
#[derive(Clone, Copy)]
struct Observed {
    start: Instant,
    end: Instant,
}

/// A run a claimer holds: its attempt, key, when the claim answered, and when its "body" ends.
struct Held {
    attempt: u32,
    key: String,
    start: Instant,
    until: Instant,
}

#[derive(Default)]
struct Tally {
    claims: AtomicU64,
    claimed: AtomicU64,
    completed: AtomicU64,
    retried: AtomicU64,
    fenced: AtomicU64,
    rescued: AtomicU64,
    samples: AtomicU64,
    errors: AtomicU64,
}

/// A claimer: claims a random number of runs, holds each for a random 10–80 ms, completes most
/// and retries some (a few ms later). A stalling claimer stops beating and completing for 1.5 s
/// of every 2.5 s (longer than its lease), so the rescuer takes its runs and its late completions
/// are refused.
#[allow(clippy::too_many_arguments)]
async fn claimer(
    id: String,
    pool: PgPool,
    stalls: bool,
    stop: CancellationToken,
    tally: Arc<Tally>,
    observed: Arc<Mutex<HashMap<String, Vec<Observed>>>>,
) {
    let tasks = vec![TASK.to_owned()];
    let held: Arc<Mutex<HashMap<Uuid, Held>>> = Arc::default();
    let started = Instant::now();
    let stalled = move || stalls && started.elapsed().as_millis() % 2_500 >= 1_000;
    let beat = {
        let (pool, held, stop, id) = (pool.clone(), Arc::clone(&held), stop.clone(), id.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stalled() {
                    continue;
                }
                let runs: Vec<(Uuid, u32)> = held
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(run, held)| (*run, held.attempt))
                    .collect();
                if !runs.is_empty() {
                    let _ = lease_heartbeat(&pool, &id, &runs, LEASE).await;
                }
            }
        })
    };
    while !stop.is_cancelled() {
        if stalled() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let want = fastrand::u32(1..=20);
        match lease_claim(&pool, &id, &tasks, want, LEASE, None).await {
            Ok(claim) => {
                tally.claims.fetch_add(1, Ordering::Relaxed);
                tally
                    .claimed
                    .fetch_add(claim.runs.len() as u64, Ordering::Relaxed);
                let now = Instant::now();
                let mut held = held.lock().unwrap();
                for run in claim.runs {
                    let until = now + Duration::from_millis(fastrand::u64(10..=80));
                    let key = run.concurrency_key.unwrap_or_default();
                    held.insert(
                        run.run_id,
                        Held {
                            attempt: run.attempt,
                            key,
                            start: now,
                            until,
                        },
                    );
                }
            }
            Err(error) => {
                eprintln!("{id}: claim failed: {error}");
                tally.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=5))).await;
        let now = Instant::now();
        let due: Vec<(Uuid, u32, String, Instant)> = held
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, held)| held.until <= now)
            .map(|(run, held)| (*run, held.attempt, held.key.clone(), held.start))
            .collect();
        if due.is_empty() || stalled() {
            continue;
        }
        let ends: Vec<AttemptEnd> = due
            .iter()
            .map(|(run_id, attempt, ..)| {
                let retry = fastrand::u8(..8) == 0;
                attempt_end(
                    *run_id,
                    *attempt,
                    Some(serde_json::json!({ "ok": true })),
                    retry.then(|| {
                        Utc::now() + chrono::Duration::milliseconds(fastrand::i64(0..=40))
                    }),
                )
            })
            .collect();
        let sent = Instant::now();
        match lease_complete_many(&pool, &ends, false, None).await {
            Ok(accepted) => {
                let accepted: std::collections::HashSet<Uuid> =
                    accepted.iter().map(|(id, _)| *id).collect();
                let mut observed = observed.lock().unwrap();
                for (end, (run_id, _, key, start)) in ends.iter().zip(&due) {
                    if accepted.contains(run_id) {
                        observed.entry(key.clone()).or_default().push(Observed {
                            start: *start,
                            end: sent,
                        });
                        if end.retry_at.is_some() {
                            tally.retried.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tally.completed.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        tally.fenced.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(error) => {
                eprintln!("{id}: completion failed: {error}");
                tally.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut held = held.lock().unwrap();
        for (run_id, ..) in &due {
            held.remove(run_id);
        }
    }
    let _ = beat.await;
}

/// The most intervals of one key open at once.
fn max_overlap(intervals: &[Observed]) -> usize {
    let mut edges: Vec<(Instant, i32)> = intervals
        .iter()
        .flat_map(|o| [(o.start, 1), (o.end, -1)])
        .collect();
    // At equal instants, an end comes before a start: touching intervals do not overlap.
    edges.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        open += step;
        most = most.max(open);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_claims_stay_exact_under_random_claimers_completions_stalls_and_rescues() {
    let db = TestDb::new().await;
    sqlx::query("INSERT INTO kiln.queues (name, concurrency_limit) VALUES ($1, $2)")
        .bind(TASK)
        .bind(LIMIT as i32)
        .execute(&db.pool)
        .await
        .unwrap();
    let operator = pool(&db, 4).await;
    let mut total = trigger_runs(&operator, 3_000, "k").await.len();

    let stop = CancellationToken::new();
    let tally = Arc::new(Tally::default());
    let observed: Arc<Mutex<HashMap<String, Vec<Observed>>>> = Arc::default();
    let mut claimers = Vec::new();
    for i in 0..4 {
        claimers.push(tokio::spawn(claimer(
            format!("claimer-{i}"),
            pool(&db, 3).await,
            i == 3,
            stop.clone(),
            Arc::clone(&tally),
            Arc::clone(&observed),
        )));
    }

    // Leases per key, sampled from the table while everything runs.
    let worst_sample = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (pool, stop, tally, worst) = (
            operator.clone(),
            stop.clone(),
            Arc::clone(&tally),
            Arc::clone(&worst_sample),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let most: Option<i64> = sqlx::query_scalar(
                    "SELECT max(n) FROM (SELECT count(*) AS n FROM kiln.leases
                                          WHERE queue = $1 GROUP BY concurrency_key) c",
                )
                .bind(TASK)
                .fetch_one(&pool)
                .await
                .expect("sample leases");
                worst.fetch_max(most.unwrap_or(0) as u64, Ordering::Relaxed);
                tally.samples.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let rescuer = {
        let (pool, stop, tally) = (operator.clone(), stop.clone(), Arc::clone(&tally));
        tokio::spawn(async move {
            let rescuer = Rescuer::default();
            while !stop.is_cancelled() {
                match rescuer.rescue_expired_leases(&pool).await {
                    Ok(n) => {
                        tally.rescued.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(error) => {
                        eprintln!("rescue failed: {error}");
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // New keys keep arriving while the first ones are served.
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        total += trigger_runs(&operator, 120, &format!("late{round}-"))
            .await
            .len();
    }
    let finished = |pool: PgPool| async move {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM kiln.runs WHERE task_id = $1 AND status = 'completed'",
        )
        .bind(TASK)
        .fetch_one(&pool)
        .await
        .unwrap();
        n as usize
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while finished(operator.clone()).await < total {
        assert!(
            Instant::now() < deadline,
            "runs left behind: {} of {total} completed",
            finished(operator.clone()).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for claimer in claimers {
        claimer.await.expect("claimer");
    }
    sampler.await.expect("sampler");
    rescuer.await.expect("rescuer");

    let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let (worst_observed, keys_served) = {
        let observed = observed.lock().unwrap();
        (
            observed.values().map(|v| max_overlap(v)).max().unwrap_or(0),
            observed.len(),
        )
    };
    let (completed_attempts, leases, ready): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM kiln.attempts WHERE status = 'completed'),
                (SELECT count(*) FROM kiln.leases), (SELECT count(*) FROM kiln.ready)",
    )
    .fetch_one(&operator)
    .await
    .unwrap();
    println!(
        "observed: {total} runs over {} keys, limit {LIMIT}: {} claims took {} runs; {} completed, \
         {} retried, {} late completions refused, {} leases rescued; most leases of one key in \
         {} samples: {}; most observed attempts of one key at once: {worst_observed}",
        keys_served,
        read(&tally.claims),
        read(&tally.claimed),
        read(&tally.completed),
        read(&tally.retried),
        read(&tally.fenced),
        read(&tally.rescued),
        read(&tally.samples),
        read(&worst_sample),
    );
    assert_eq!(read(&tally.errors), 0, "statements failed");
    assert!(read(&tally.retried) > 50, "too few retries");
    assert!(read(&tally.rescued) > 0, "no lease was rescued");
    assert!(read(&tally.fenced) > 0, "no late completion met the fence");
    assert!(read(&tally.samples) > 500, "too few lease samples");
    assert!(
        read(&worst_sample) <= LIMIT as u64,
        "a key held more leases than its limit"
    );
    assert_eq!(
        read(&worst_sample),
        LIMIT as u64,
        "keys reached their limit"
    );
    assert!(
        worst_observed <= LIMIT as usize,
        "a key ran more attempts at once than its limit: {worst_observed}"
    );
    assert_eq!(keys_served, KEYS * 5, "every key was served");
    assert_eq!(
        (completed_attempts as usize, leases, ready),
        (total, 0, 0),
        "each run completed exactly once and nothing is left"
    );
}

async fn claim(pool: &PgPool, max: u32) -> Vec<(Uuid, u32)> {
    lease_claim(pool, "probe", &[TASK.to_owned()], max, LEASE, None)
        .await
        .expect("claim")
        .runs
        .into_iter()
        .map(|run| (run.run_id, run.attempt))
        .collect()
}

async fn complete(pool: &PgPool, runs: &[(Uuid, u32)]) {
    let ends: Vec<AttemptEnd> = runs
        .iter()
        .map(|(run_id, attempt)| attempt_end(*run_id, *attempt, None, None))
        .collect();
    let accepted = lease_complete_many(pool, &ends, false, None)
        .await
        .expect("complete");
    assert_eq!(accepted.len(), runs.len(), "completions accepted");
}

async fn trigger_one(pool: impl sqlx::PgExecutor<'_>, key: &str, delay: Option<&str>) -> Uuid {
    sqlx::query_scalar(
        "SELECT kiln.trigger($1, '{}'::jsonb,
                             jsonb_build_object('allow_unregistered', true,
                                                'concurrency_key', $2::text, 'delay', $3::text))",
    )
    .bind(TASK)
    .bind(key)
    .bind(delay)
    .fetch_one(pool)
    .await
    .expect("trigger")
}

#[tokio::test]
async fn no_run_is_left_behind_by_parked_rescheduled_emptied_or_newly_limited_keys() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    sqlx::query("INSERT INTO kiln.queues (name, concurrency_limit) VALUES ($1, 1)")
        .bind(TASK)
        .execute(pool)
        .await
        .unwrap();

    // A key whose only run is delayed is parked, and its run starts once due.
    let delayed = trigger_one(pool, "later", Some("400ms")).await;
    let now = trigger_one(pool, "now", None).await;
    let got = claim(pool, 10).await;
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![now],
        "only the run due now started"
    );
    complete(pool, &got).await;
    let (waiting, parked): (bool, bool) = sqlx::query_as(
        "SELECT waiting, next_at IS NOT NULL FROM kiln.queue_keys
          WHERE queue = $1 AND concurrency_key = 'later'",
    )
    .bind(TASK)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((waiting, parked), (false, true), "the key is parked");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let got = claim(pool, 10).await;
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![delayed]);
    complete(pool, &got).await;

    // A run delayed by a day parks its key until then; rescheduled to now, it starts now.
    let tomorrow = trigger_one(pool, "rescheduled", Some("1d")).await;
    assert!(claim(pool, 10).await.is_empty(), "nothing is due");
    let moved = kiln_store::run::run_reschedule(pool, tomorrow, chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(
        moved,
        kiln_store::run::RescheduleOutcome::Rescheduled
    ));
    let got = claim(pool, 10).await;
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![tomorrow],
        "the rescheduled run started at its new time"
    );
    complete(pool, &got).await;

    // A claim takes a key's last visible run and finds the key empty while another transaction
    // has a run of that key still uncommitted: once it commits, the run is claimed.
    let first = trigger_one(pool, "busy", None).await;
    let mut open = pool.begin().await.unwrap();
    let second = trigger_one(&mut *open, "busy", None).await;
    let got = claim(pool, 10).await;
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![first]);
    let waiting: bool = sqlx::query_scalar(
        "SELECT waiting FROM kiln.queue_keys WHERE queue = $1 AND concurrency_key = 'busy'",
    )
    .bind(TASK)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(!waiting, "the claim saw the key as empty");
    open.commit().await.unwrap();
    assert!(
        claim(pool, 10).await.is_empty(),
        "the key's limit of 1 is taken"
    );
    complete(pool, &got).await;
    let got = claim(pool, 10).await;
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![second]);
    complete(pool, &got).await;

    // A queue without a limit drops its wakeups; given a limit later, its waiting runs are still
    // found.
    sqlx::query("UPDATE kiln.queues SET concurrency_limit = NULL WHERE name = $1")
        .bind(TASK)
        .execute(pool)
        .await
        .unwrap();
    let unlimited: Vec<Uuid> = vec![
        trigger_one(pool, "a", None).await,
        trigger_one(pool, "b", None).await,
    ];
    // Its wakeups: the two triggers', and the one the last completion left while it had a limit.
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.key_wakeups WHERE queue = $1")
        .bind(TASK)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(pending, 3);
    let pruned: i32 = sqlx::query_scalar("SELECT kiln.prune_key_wakeups()")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(pruned, 3, "the unlimited queue's wakeups were dropped");
    sqlx::query("UPDATE kiln.queues SET concurrency_limit = 1 WHERE name = $1")
        .bind(TASK)
        .execute(pool)
        .await
        .unwrap();
    let mut got: Vec<Uuid> = claim(pool, 10).await.into_iter().map(|r| r.0).collect();
    got.sort();
    let mut want = unlimited.clone();
    want.sort();
    assert_eq!(got, want, "both keys' runs started after the limit was set");
}

#[tokio::test]
async fn idle_keys_are_dropped_but_not_a_key_whose_parent_waits_on_children() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    sqlx::query(
        "INSERT INTO kiln.queue_keys (queue, concurrency_key, last_served_at, created_at)
         VALUES ($1, 'idle', now() - interval '2 days', now() - interval '2 days'),
                ($1, 'parent-waits', now() - interval '2 days', now() - interval '2 days'),
                ($1, 'recent', now(), now())",
    )
    .bind(TASK)
    .execute(pool)
    .await
    .unwrap();
    // A parent of this key gave its slot back while its children run: it resumes under the
    // key's row lock, so the row stays.
    sqlx::query(
        "INSERT INTO kiln.waits (run_id, attempt, task_id, queue, concurrency_key, worker_id,
                                 started_at, expires_at)
         VALUES (gen_random_uuid(), 1, $1, $1, 'parent-waits', 'w', now(), now() + interval '1 minute')",
    )
    .bind(TASK)
    .execute(pool)
    .await
    .unwrap();
    let dropped = kiln_store::queue::queue_key_drop_idle(
        pool,
        chrono::Utc::now() - chrono::Duration::days(1),
    )
    .await
    .unwrap();
    assert_eq!(dropped, 1);
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT concurrency_key FROM kiln.queue_keys WHERE queue = $1 ORDER BY 1",
    )
    .bind(TASK)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(left, ["parent-waits", "recent"]);
}

#[tokio::test]
async fn a_slot_freed_among_many_full_keys_is_found_by_the_next_claim() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    sqlx::query("INSERT INTO kiln.queues (name, concurrency_limit) VALUES ($1, 1)")
        .bind(TASK)
        .execute(pool)
        .await
        .unwrap();
    // 200 keys with two runs each; one claim starts the first run of every key, so every key's
    // limit of 1 is taken.
    sqlx::query(
        "SELECT kiln.trigger($1, '{}'::jsonb,
                             jsonb_build_object('allow_unregistered', true,
                                                'concurrency_key', 'k' || (i % 200)))
           FROM generate_series(0, 399) i",
    )
    .bind(TASK)
    .execute(pool)
    .await
    .unwrap();
    let first = claim(pool, 200).await;
    assert_eq!(first.len(), 200);
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln.queue_keys WHERE queue = $1 AND waiting")
            .bind(TASK)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(waiting, 0, "full keys leave the line");
    assert!(claim(pool, 10).await.is_empty(), "every key is full");

    // The key last in line finishes its run: the very next claim of one run starts its second.
    let last: String = sqlx::query_scalar(
        "SELECT concurrency_key FROM kiln.queue_keys WHERE queue = $1 ORDER BY turn DESC LIMIT 1",
    )
    .bind(TASK)
    .fetch_one(pool)
    .await
    .unwrap();
    let (done, rest): (Vec<_>, Vec<_>) = {
        let keys: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT run_id, concurrency_key FROM kiln.leases WHERE queue = $1")
                .bind(TASK)
                .fetch_all(pool)
                .await
                .unwrap();
        let last_run = keys.iter().find(|(_, k)| *k == last).unwrap().0;
        first.iter().partition(|(id, _)| *id == last_run)
    };
    complete(pool, &done).await;
    let next = claim(pool, 1).await;
    assert_eq!(next.len(), 1, "the freed slot was found at once");
    let key: String = sqlx::query_scalar("SELECT concurrency_key FROM kiln.runs WHERE id = $1")
        .bind(next[0].0)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(key, last);

    // Raising the limit makes room without any lease ending: every key with a run left is back
    // in line for the next claim.
    sqlx::query("UPDATE kiln.queues SET concurrency_limit = 2 WHERE name = $1")
        .bind(TASK)
        .execute(pool)
        .await
        .unwrap();
    let more = claim(pool, 300).await;
    assert_eq!(more.len(), 199, "each other key's second run started");
    complete(pool, &rest).await;
    complete(pool, &next).await;
    complete(pool, &more).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.ready WHERE queue = $1")
        .bind(TASK)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "every run started");
}

/// Index pages read by the scan a claim starts with: its queue's wakeups, oldest first.
async fn wakeup_scan_pages(pool: &PgPool) -> i64 {
    let plan: serde_json::Value = sqlx::query_scalar(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
         SELECT x.id FROM kiln.key_wakeups x WHERE x.queue = 'key-scheduler-probe'
          ORDER BY x.id LIMIT 10000",
    )
    .fetch_one(pool)
    .await
    .expect("explain the wakeup scan");
    let top = &plan[0]["Plan"];
    top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap()
}

#[tokio::test]
async fn maintenance_vacuums_the_wakeups_claims_consumed() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    sqlx::query("INSERT INTO kiln.queues (name, concurrency_limit) VALUES ($1, 1)")
        .bind(TASK)
        .execute(pool)
        .await
        .unwrap();
    // The pass is what is tested: autovacuum (told by migration 0018 to come after 10,000 dead
    // rows) would otherwise race it for the table.
    sqlx::query("ALTER TABLE kiln.key_wakeups SET (autovacuum_enabled = false)")
        .execute(pool)
        .await
        .unwrap();
    // A fan-out over 30,000 keys in one statement: one wakeup per key. Three claims apply them
    // (10,000 each).
    sqlx::query(
        "SELECT count(*) FROM kiln.trigger_batch($1,
                (SELECT jsonb_agg(jsonb_build_object('payload', '{}'::jsonb,
                                                     'options', jsonb_build_object(
                                                         'concurrency_key', 'ws' || i)))
                   FROM generate_series(1, 30000) i),
                '{\"allow_unregistered\": true}')",
    )
    .bind(TASK)
    .execute(pool)
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(claim(pool, 1).await.len(), 1);
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.key_wakeups")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the claims applied every wakeup");
    let before = wakeup_scan_pages(pool).await;
    assert!(
        before >= 50,
        "consumed wakeups still fill the index: {before} pages read"
    );

    // The statistics reach pg_stat_user_tables within a second or so.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let dead: i64 = sqlx::query_scalar(
            "SELECT n_dead_tup FROM pg_stat_user_tables
              WHERE schemaname = 'kiln' AND relname = 'key_wakeups'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if dead >= kiln::worker::DEFAULT_SCHEDULER_VACUUM_DEAD_ROWS || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // While another session vacuums the table (it holds the lock a vacuum takes), the pass leaves
    // it alone, and says so.
    let vacuum = kiln::worker::SchedulerVacuum::default();
    let mut other = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE kiln.key_wakeups IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(&mut *other)
        .await
        .unwrap();
    let meanwhile = vacuum
        .vacuum_scheduler_tables(pool)
        .await
        .expect("vacuum pass");
    assert!(
        !meanwhile.contains(&"kiln.key_wakeups".to_owned()),
        "the pass vacuumed a table another session was vacuuming: {meanwhile:?}"
    );
    other.rollback().await.unwrap();

    // Then the pass vacuums it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let vacuumed = loop {
        let tables = vacuum
            .vacuum_scheduler_tables(pool)
            .await
            .expect("vacuum pass");
        if !tables.is_empty() || Instant::now() > deadline {
            break tables;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        vacuumed.contains(&"kiln.key_wakeups".to_owned()),
        "the pass vacuumed the wakeups: {vacuumed:?}"
    );
    let after = wakeup_scan_pages(pool).await;
    assert!(
        after <= 5,
        "a claim's wakeup scan reads {after} pages after the vacuum (was {before})"
    );
}

#[tokio::test]
async fn parked_keys_that_come_due_together_are_woken_ten_thousand_per_claim() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    sqlx::query("INSERT INTO kiln.queues (name, concurrency_limit) VALUES ($1, 1)")
        .bind(TASK)
        .execute(pool)
        .await
        .unwrap();
    // 12,000 keys, each with one run delayed to the same moment.
    sqlx::query(
        "SELECT count(*) FROM kiln.trigger_batch($1,
                (SELECT jsonb_agg(jsonb_build_object('payload', '{}'::jsonb,
                                                     'options', jsonb_build_object(
                                                         'concurrency_key', 'ws' || i,
                                                         'delay', '2s')))
                   FROM generate_series(1, 12000) i),
                '{\"allow_unregistered\": true}')",
    )
    .bind(TASK)
    .execute(pool)
    .await
    .unwrap();
    let key_counts = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT count(*) FILTER (WHERE waiting), count(*) FILTER (WHERE next_at IS NOT NULL)
               FROM kiln.queue_keys WHERE queue = $1",
        )
        .bind(TASK)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let schedule = |at: &'static str| async move {
        sqlx::query(&format!("SELECT kiln.schedule_keys($1, {at})"))
            .bind(TASK)
            .execute(pool)
            .await
            .unwrap();
    };
    // Now: the wakeups (10,000 per call) park every key until its run's time.
    schedule("now()").await;
    schedule("now()").await;
    assert_eq!(key_counts().await, (0, 12_000), "every key parked");
    // Past that time: the oldest 10,000 are woken by one call, the rest by the next.
    schedule("now() + interval '5 seconds'").await;
    assert_eq!(key_counts().await, (10_000, 2_000));
    schedule("now() + interval '5 seconds'").await;
    assert_eq!(
        key_counts().await,
        (12_000, 0),
        "the next call woke the rest"
    );
}

#[tokio::test]
async fn a_claimer_of_one_task_in_a_shared_keyed_queue_finds_its_key_behind_the_others() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    sqlx::query("INSERT INTO kiln.queues (name, concurrency_limit) VALUES ($1, 1)")
        .bind(TASK)
        .execute(pool)
        .await
        .unwrap();
    // The workspace key of this task has been served once, so it sits behind new keys.
    trigger_one(pool, "ws-mine", None).await;
    let first = claim(pool, 1).await;
    assert_eq!(first.len(), 1);
    complete(pool, &first).await;
    // Keys of another task that shares the queue (no worker of it runs), then a run of this
    // task on its key: 10 keys ahead (a claim probes the first 256 in line one by one), then 300
    // (it finds the keys behind those from its task's runs).
    let others = |from: i32, to: i32| {
        sqlx::query(
            "SELECT kiln.trigger('key-scheduler-other', '{}'::jsonb,
                                 jsonb_build_object('allow_unregistered', true, 'queue', $1::text,
                                                    'concurrency_key', 'ws-other-' || i))
               FROM generate_series($2::int, $3::int) i",
        )
        .bind(TASK)
        .bind(from)
        .bind(to)
        .execute(pool)
    };
    others(1, 10).await.unwrap();
    let mine = trigger_one(pool, "ws-mine", None).await;
    let next = claim(pool, 1).await;
    assert_eq!(next.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [mine]);
    complete(pool, &next).await;

    others(11, 300).await.unwrap();
    let mine = trigger_one(pool, "ws-mine", None).await;
    // One claim of one run, by a claimer serving only this task, starts this task's run.
    let next = claim(pool, 1).await;
    assert_eq!(next.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [mine]);
    // The other task's keys (new, so first in line) kept their turns: a claimer that cannot
    // serve them passed them by.
    let (keys, served): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE turn <> 0 OR last_served_at IS NOT NULL)
           FROM kiln.queue_keys WHERE queue = $1 AND concurrency_key LIKE 'ws-other-%'",
    )
    .bind(TASK)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((keys, served), (300, 0));
    // With nothing of its own left, a claim says nothing (no "claim again" row to spin on).
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln.claim_runs('probe', ARRAY[$1], 5, 30000)")
            .bind(TASK)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(rows, 0);
    // A claimer of both tasks takes the other task's runs, one per key.
    let both: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM kiln.claim_runs('probe', ARRAY[$1, 'key-scheduler-other'], 500, 30000)
          WHERE run_id IS NOT NULL",
    )
    .bind(TASK)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(both, 300);
}
