//! The chaos suite: three worker processes run thousands of short runs under a per-key limit
//! while the test kills workers (SIGKILL) every few seconds, freezes one past its leases
//! (SIGSTOP, then SIGCONT), and restarts Postgres once. Bodies record their own start and end in
//! a table of the test's (`probe_intervals`), so the limit is checked from what really ran, not
//! from Kiln's bookkeeping. It runs on a private Postgres of its own (the one it restarts).
//!
//! Asserted: the faults happened (kills, a freeze past the lease, a restart, runs rescued, a
//! stale outcome refused by the fence); then no run lost, exactly one final state per run, the
//! limit never exceeded by leases nor by the bodies of running processes, the workers reconnected
//! unaided, and no deadlock in the server's log. The figures are printed (docs/reliability.md).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kiln::{BatchItem, Client, TriggerOptions};
use kiln_store::lease::{lease_claim, lease_complete_many};
use kiln_tests::tasks::{create_probe_table, KeyedProbe, ProbePayload};
use kiln_tests::{attempt_end, send_signal, stop_all, wait_until, TestDb, WorkerProcess};
use sqlx::PgPool;
use tokio::process::Child;

const WORKER_EXE: &str = env!("CARGO_BIN_EXE_kiln-test-worker");
const RUNS: usize = 6_000;
const KEYS: usize = 40;
const LIMIT_PER_KEY: i64 = 2;
const LEASE_MS: u64 = 2_000;

fn worker(id: &str) -> WorkerProcess {
    WorkerProcess {
        lease_ms: LEASE_MS,
        heartbeat_ms: 400,
        ..WorkerProcess::new(id, 8)
    }
    .only(&["keyed-probe"])
}

async fn db_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .expect("read the database clock")
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Lines of the server log written since `from` (a byte offset) that report a deadlock.
fn deadlocks_logged(log: &std::path::Path, from: u64) -> usize {
    let text = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(&text[(from as usize).min(text.len())..])
        .lines()
        .filter(|l| l.contains("deadlock detected"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_a_freeze_and_a_postgres_restart_lose_nothing_and_never_exceed_the_limit() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/kiln-chaos-postgres");
    let server = kiln_devdb::start_private(&dir)
        .await
        .expect("a private PostgreSQL for the chaos suite (it needs the server binaries)");
    let data_dir = server.data_dir.clone().expect("a private server");
    let log = data_dir.join("server.log");
    let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let url = kiln_devdb::create_test_database(&server)
        .await
        .expect("a database");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(6)
        .connect(&url)
        .await
        .unwrap();
    let db = TestDb {
        url: url.clone(),
        pool: pool.clone(),
    };
    create_probe_table(&pool).await;
    sqlx::raw_sql("CREATE TABLE chaos_kills (worker text PRIMARY KEY, at timestamptz NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();

    let mut generation = 0;
    let mut spawn = |workers: &mut Vec<(String, Child)>| {
        generation += 1;
        let id = format!("chaos-{generation}");
        // Failures on purpose and rescues are expected by the thousand: print only errors.
        let child = worker(&id).spawn_with_env(WORKER_EXE, &db, &[("RUST_LOG", "error")]);
        workers.push((id, child));
    };
    let mut workers: Vec<(String, Child)> = Vec::new();
    for _ in 0..3 {
        spawn(&mut workers);
    }
    wait_until(
        "the workers registered the task",
        Duration::from_secs(30),
        || async {
            count(
                &pool,
                "SELECT count(*) FROM kiln.tasks WHERE id = 'keyed-probe'",
            )
            .await
                == 1
        },
    )
    .await;

    // Thousands of short runs over 40 keys; every tenth fails its first attempt on purpose.
    let client = Client::new(pool.clone());
    let items: Vec<BatchItem<ProbePayload>> = (0..RUNS)
        .map(|i| BatchItem {
            payload: ProbePayload {
                sleep_ms: 30 + (i as u64 * 7919) % 60,
                fail_first: i % 10 == 0,
            },
            options: TriggerOptions::new()
                .concurrency_key(format!("k{}", i % KEYS))
                .max_attempts(20),
        })
        .collect();
    for chunk in items.chunks(1_000) {
        client
            .batch_trigger::<KeyedProbe>(chunk.to_vec())
            .await
            .unwrap();
    }

    // The lease-side limit, sampled all along (errors while Postgres restarts are skipped).
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn({
        let pool = pool.clone();
        let stop = sampling.clone();
        async move {
            let mut max = 0i64;
            let mut samples = 0u64;
            while !stop.is_cancelled() {
                if let Ok(Some(n)) = sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT max(c) FROM (SELECT count(*) AS c FROM kiln.leases
                      WHERE queue = 'keyed-probe' GROUP BY concurrency_key) t",
                )
                .fetch_one(&pool)
                .await
                {
                    max = max.max(n);
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (max, samples)
        }
    });

    // A worker that claims one run and goes silent: the rescuer takes the run back, and the
    // outcome the silent worker sends afterwards must be refused by the fence.
    let mut ghost_run = None;
    for _ in 0..200 {
        // A claim that finds the queue's claim lock taken returns nothing: try again.
        let claim = lease_claim(
            &pool,
            "ghost",
            &["keyed-probe".to_owned()],
            1,
            Duration::from_millis(500),
            None,
        )
        .await
        .unwrap();
        if let Some(run) = claim.runs.first() {
            ghost_run = Some(run.run_id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ghost_run = ghost_run.expect("the silent worker claimed a run");

    let started = Instant::now();
    let mut kills = 0;
    let kill_one = |workers: &mut Vec<(String, Child)>, index: usize| {
        let (id, mut child) = workers.remove(index);
        let pool = pool.clone();
        async move {
            child.kill().await.expect("SIGKILL a worker");
            let at = db_now(&pool).await;
            sqlx::query("INSERT INTO chaos_kills (worker, at) VALUES ($1, $2)")
                .bind(&id)
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
        }
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = fastrand::usize(..workers.len());
    kill_one(&mut workers, victim).await;
    kills += 1;
    spawn(&mut workers);

    // Freeze the oldest worker past its leases, then let it go on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frozen = workers[0].0.clone();
    send_signal(&workers[0].1, "STOP").await;
    let stopped_at = db_now(&pool).await;
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 1_500)).await;
    send_signal(&workers[0].1, "CONT").await;
    let continued_at = db_now(&pool).await;

    // Restart Postgres: every connection of every worker is cut.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down_at = db_now(&pool).await;
    let restart = tokio::task::spawn_blocking({
        let server = server.clone();
        move || server.restart()
    });
    restart.await.unwrap().expect("restart the test's Postgres");
    let mut up_at = None;
    for _ in 0..100 {
        if let Ok(at) = sqlx::query_scalar::<_, DateTime<Utc>>("SELECT clock_timestamp()")
            .fetch_one(&pool)
            .await
        {
            up_at = Some(at);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let up_at = up_at.expect("Postgres answers again");

    // More kills every few seconds while enough runs remain to be hit.
    while kills < 6 {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let left = count(
            &pool,
            "SELECT count(*) FROM kiln.runs WHERE status IN ('queued', 'executing')",
        )
        .await;
        if left < 200 {
            break;
        }
        let victim = fastrand::usize(..workers.len());
        kill_one(&mut workers, victim).await;
        kills += 1;
        spawn(&mut workers);
    }

    wait_until(
        "every run reached a final status",
        Duration::from_secs(180),
        || async {
            count(
                &pool,
                "SELECT count(*) FROM kiln.runs
                  WHERE status IN ('delayed', 'queued', 'executing', 'waiting')",
            )
            .await
                == 0
        },
    )
    .await;
    let elapsed = started.elapsed();
    sampling.cancel();
    let (lease_max, samples) = sampler.await.unwrap();

    // The ghost's stale outcome is refused: its run was rescued and ran again elsewhere.
    let recorded = lease_complete_many(
        &pool,
        &[attempt_end(
            ghost_run,
            1,
            Some(serde_json::json!("from a worker that lost its lease")),
            None,
        )],
        false,
        None,
    )
    .await
    .unwrap();
    let ghost_after = client.runs().retrieve(ghost_run).await.unwrap();
    assert!(recorded.is_empty(), "the stale outcome was refused");
    assert_ne!(
        ghost_after.output,
        Some(serde_json::json!("from a worker that lost its lease"))
    );
    assert!(ghost_after.attempts >= 2);

    // Every surviving worker is alive: they reconnected after the restart by themselves.
    for (id, child) in workers.iter_mut() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "worker {id} exited during the chaos"
        );
    }

    let completed = count(
        &pool,
        "SELECT count(*) FROM kiln.runs WHERE status = 'completed'",
    )
    .await;
    let lost = RUNS as i64 - completed;
    let duplicated = count(
        &pool,
        "SELECT count(*) FROM (SELECT run_id FROM kiln.attempts WHERE status = 'completed'
                                GROUP BY run_id HAVING count(*) > 1) t",
    )
    .await;
    let with_one_final = count(
        &pool,
        "SELECT count(DISTINCT run_id) FROM kiln.attempts WHERE status = 'completed'",
    )
    .await;
    let rescued = count(
        &pool,
        "SELECT count(*) FROM kiln.attempts WHERE status = 'crashed'",
    )
    .await;
    let retried = count(
        &pool,
        "SELECT count(*) FROM kiln.attempts WHERE status = 'failed'",
    )
    .await;

    // The observed limit: a body ends when it recorded its end; else when its worker recorded
    // the attempt's outcome (a body whose end could not be written while Postgres restarted);
    // else, for a killed worker's bodies, when it was killed; else when Postgres came back (its
    // slot is freed only once its outcome is recorded, after that). An attempt recorded as
    // crashed was ended by the rescuer, not by its body, so it bounds nothing. A frozen process
    // runs nothing: its bodies count until the freeze, and must stop at once when it resumes
    // (asserted below).
    let ends = "SELECT p.key, p.worker, p.started_at AS s,
                       CASE WHEN p.worker = $1 AND p.started_at < $2
                                 AND coalesce(p.finished_at, 'infinity') > $2 THEN $2
                            ELSE coalesce(p.finished_at, a.finished_at, k.at,
                                          greatest($4, p.started_at)) END AS e,
                       p.finished_at
                  FROM probe_intervals p LEFT JOIN chaos_kills k ON k.worker = p.worker
                  LEFT JOIN kiln.attempts a
                         ON a.run_id = p.run_id AND a.number = p.attempt AND a.status <> 'crashed'
                 WHERE p.queue = 'keyed-probe' AND $3::timestamptz IS NOT NULL";
    let unexplained: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM ({ends}) b LEFT JOIN chaos_kills k ON k.worker = b.worker
          WHERE b.finished_at IS NULL AND k.worker IS NULL AND b.s > $4"
    ))
    .bind(&frozen)
    .bind(stopped_at)
    .bind(continued_at)
    .bind(up_at)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unexplained, 0, "every body's end is known");
    let observed_max: i64 = sqlx::query_scalar(&format!(
        "WITH b AS ({ends}),
              ev AS (SELECT key, s AS t, 1 AS d FROM b UNION ALL SELECT key, e, -1 FROM b)
         SELECT coalesce(max(running), 0) FROM (
             SELECT sum(d) OVER (PARTITION BY key ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS running
               FROM ev) x"
    ))
    .bind(&frozen)
    .bind(stopped_at)
    .bind(continued_at)
    .bind(up_at)
    .fetch_one(&pool)
    .await
    .unwrap();
    if observed_max > LIMIT_PER_KEY {
        // Name the bodies that overlapped, with their attempts' records, to tell why.
        let rows: Vec<String> =
            sqlx::query_scalar(&format!(
                "WITH b AS ({ends}),
                      ev AS (SELECT key, s AS t, 1 AS d FROM b UNION ALL SELECT key, e, -1 FROM b),
                      worst AS (SELECT key, t FROM (
                          SELECT key, t, sum(d) OVER (PARTITION BY key ORDER BY t, d
                                                      ROWS UNBOUNDED PRECEDING) AS running
                            FROM ev) x WHERE running > {LIMIT_PER_KEY} LIMIT 1)
                 SELECT concat_ws(' ', p.key, p.worker, p.run_id, p.attempt, p.started_at,
                        coalesce(p.finished_at::text, 'unfinished'), 'attempt:',
                        (SELECT a.status || ' ' || a.started_at::text || '..' || a.finished_at::text
                           FROM kiln.attempts a
                          WHERE a.run_id = p.run_id AND a.number = p.attempt))
                   FROM probe_intervals p JOIN worst w ON w.key = p.key
                  WHERE p.started_at <= w.t AND coalesce(p.finished_at, 'infinity') >= w.t - interval '1 s'
                  ORDER BY p.started_at"
            ))
            .bind(&frozen)
            .bind(stopped_at)
            .bind(continued_at)
            .bind(up_at)
            .fetch_all(&pool)
            .await
            .unwrap();
        for row in rows {
            eprintln!("overlap: {row}");
        }
    }
    let frozen_tail_ms: f64 = sqlx::query_scalar(
        "SELECT coalesce(max(extract(epoch FROM finished_at - $3) * 1000), 0)::float8
           FROM probe_intervals
          WHERE worker = $1 AND started_at < $2 AND finished_at > $2",
    )
    .bind(&frozen)
    .bind(stopped_at)
    .bind(continued_at)
    .fetch_one(&pool)
    .await
    .unwrap();
    let frozen_bodies: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM probe_intervals
          WHERE worker = $1 AND started_at < $2 AND (finished_at IS NULL OR finished_at > $2)",
    )
    .bind(&frozen)
    .bind(stopped_at)
    .fetch_one(&pool)
    .await
    .unwrap();
    let deadlocks = deadlocks_logged(&log, log_start);

    eprintln!(
        "chaos: {RUNS} runs over {KEYS} keys (limit {LIMIT_PER_KEY} per key), 3 workers, {:.1} s; \
         kills {kills}, freezes 1 ({frozen_bodies} bodies frozen, stopped {frozen_tail_ms:.0} ms \
         after resuming), Postgres restarts 1 (down at {down_at}, back at {up_at}); \
         attempts rescued as crashed {rescued}, failed on purpose {retried}; stale outcomes \
         refused 1; lost {lost}, duplicated final states {duplicated}; max observed per key \
         {observed_max}, max by leases {lease_max} ({samples} samples); deadlocks {deadlocks}",
        elapsed.as_secs_f64()
    );

    assert!(kills >= 3, "workers were killed ({kills})");
    assert!(rescued > 0, "runs were rescued from killed workers");
    assert!(
        frozen_bodies > 0,
        "the frozen worker held bodies when it froze"
    );
    assert!(
        frozen_tail_ms < 1_000.0,
        "the frozen worker stopped its bodies {frozen_tail_ms:.0} ms after resuming"
    );
    assert_eq!(lost, 0, "no run lost");
    assert_eq!(duplicated, 0, "no run has two completed attempts");
    assert_eq!(with_one_final, RUNS as i64);
    assert!(samples > 100, "the lease sampler ran ({samples})");
    assert!(lease_max <= LIMIT_PER_KEY, "leases per key: {lease_max}");
    assert!(
        observed_max <= LIMIT_PER_KEY,
        "bodies observed at once on one key: {observed_max}"
    );
    assert_eq!(deadlocks, 0, "deadlocks in the server log");

    let mut children: Vec<Child> = workers.into_iter().map(|(_, c)| c).collect();
    stop_all(&mut children).await;
    pool.close().await;
    let _ = tokio::task::spawn_blocking(move || server.stop()).await;
}
