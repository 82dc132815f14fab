//! Support for Kiln's cross-crate tests: a fresh migrated database per test, a deadline-based
//! `wait_until`, the tasks the tests run (shared with the `kiln-test-worker` binary), and
//! helpers to spawn real worker processes.

#![forbid(unsafe_code)]

pub mod tasks;

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;
use tokio::process::{Child, Command};

/// A migrated database of its own for one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its URL.
    pub url: String,
    /// A pool on it.
    pub pool: PgPool,
}

/// Where a private Postgres for tests lives when no server is found.
fn fallback_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/kiln-test-postgres")
}

impl TestDb {
    /// Creates a fresh database (finding or starting a server) with Kiln's schema and the probe
    /// table the test tasks write to.
    pub async fn new() -> TestDb {
        let server = kiln_devdb::server_for_tests(&fallback_dir())
            .await
            .unwrap_or_else(|e| panic!("no PostgreSQL for tests: {e}"));
        let url = kiln_devdb::create_test_database(&server)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect(&url)
            .await
            .expect("connect to the test database");
        tasks::create_probe_table(&pool).await;
        TestDb { url, pool }
    }
}

/// Polls `condition` every 20 ms until it returns true; panics naming `what` after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if condition().await {
            return;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts runs in the given status.
pub async fn count_status(pool: &PgPool, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM kiln.runs WHERE status::text = $1")
        .bind(status)
        .fetch_one(pool)
        .await
        .expect("count runs")
}

/// Settings of a spawned worker process.
#[derive(Debug, Clone)]
pub struct WorkerProcess {
    /// Its worker id.
    pub id: String,
    /// Runs it executes at once.
    pub concurrency: usize,
    /// Lease length in ms.
    pub lease_ms: u64,
    /// Heartbeat period in ms.
    pub heartbeat_ms: u64,
    /// Shutdown grace in ms.
    pub shutdown_grace_ms: u64,
    /// Task ids to register (all when `None`).
    pub only_tasks: Option<String>,
    /// Whether it runs the maintenance services (the rescuer among them).
    pub maintenance: bool,
}

impl WorkerProcess {
    /// A worker with this id and concurrency, a 5 s lease and a 1 s heartbeat (long enough that
    /// a loaded CI machine does not lose leases; the crash test shortens it).
    pub fn new(id: &str, concurrency: usize) -> Self {
        Self {
            id: id.to_owned(),
            concurrency,
            lease_ms: 5_000,
            heartbeat_ms: 1_000,
            shutdown_grace_ms: 10_000,
            only_tasks: None,
            maintenance: true,
        }
    }

    /// Registers only these task ids.
    pub fn only(mut self, task_ids: &[&str]) -> Self {
        self.only_tasks = Some(task_ids.join(","));
        self
    }

    /// Spawns the real worker binary `exe` (tests pass `env!("CARGO_BIN_EXE_kiln-test-worker")`)
    /// against `db`.
    pub fn spawn(&self, exe: &str, db: &TestDb) -> Child {
        self.spawn_with_env(exe, db, &[])
    }

    /// [`WorkerProcess::spawn`] with extra environment variables.
    pub fn spawn_with_env(&self, exe: &str, db: &TestDb, env: &[(&str, &str)]) -> Child {
        let mut command = Command::new(exe);
        if let Some(only) = &self.only_tasks {
            command.env("KILN_ONLY_TASKS", only);
        }
        if !self.maintenance {
            command.env("KILN_NO_MAINTENANCE", "1");
        }
        command
            .env("DATABASE_URL", &db.url)
            .env("KILN_WORKER_ID", &self.id)
            .env("KILN_CONCURRENCY", self.concurrency.to_string())
            .env("KILN_LEASE_MS", self.lease_ms.to_string())
            .env("KILN_HEARTBEAT_MS", self.heartbeat_ms.to_string())
            .env("KILN_SHUTDOWN_GRACE_MS", self.shutdown_grace_ms.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // The caller's variables win (RUST_LOG among them).
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kiln-test-worker")
    }
}

/// Sends SIGTERM to a child process.
pub async fn send_sigterm(child: &Child) {
    send_signal(child, "TERM").await;
}

/// Sends a signal (`TERM`, `STOP`, `CONT`, ...) to a child process.
pub async fn send_signal(child: &Child, signal: &str) {
    let pid = child.id().expect("child is running");
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .await
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits until `worker_id` holds at least `n` leases.
pub async fn wait_for_leases(pool: &PgPool, worker_id: &str, n: i64, deadline: Duration) {
    wait_until(
        &format!("worker {worker_id} holds {n} leases"),
        deadline,
        || async {
            let held: i64 =
                sqlx::query_scalar("SELECT count(*) FROM kiln.leases WHERE worker_id = $1")
                    .bind(worker_id)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            held >= n
        },
    )
    .await;
}

/// A worker running inside the test process; stopped (drained) by [`InProcessWorker::stop`].
#[derive(Debug)]
pub struct InProcessWorker {
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), kiln::WorkerError>>,
}

impl InProcessWorker {
    /// Starts a worker with every test task and short timings (200 ms polls, 200 ms cancel grace).
    pub async fn start(db: &TestDb, id: &str, concurrency: usize) -> InProcessWorker {
        tasks::set_probe_pool(db.pool.clone());
        let worker =
            tasks::register_all(kiln::Worker::builder().database_url(&db.url).worker_id(id))
                .configure(|c| {
                    c.concurrency = concurrency;
                    c.lease = Duration::from_secs(2);
                    c.heartbeat_interval = Duration::from_millis(300);
                    c.cancel_grace = Duration::from_millis(200);
                    c.maintenance_interval = Duration::from_millis(100);
                    c.poll_interval = Duration::from_millis(200);
                    c.shutdown_grace = Duration::from_secs(5);
                })
                .build()
                .await
                .expect("build the worker");
        InProcessWorker::spawn(worker)
    }

    /// Runs a worker the test built itself.
    pub fn spawn(worker: kiln::Worker) -> InProcessWorker {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move { worker.run_until(token).await });
        InProcessWorker { shutdown, handle }
    }

    /// Drains and stops the worker.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("worker task").expect("worker ran");
    }
}

/// The most probe bodies observed running at once, per (queue, key) and per queue. A body whose
/// process was killed (no `finished_at`) counts as running until `killed_at`.
pub async fn observed_max_concurrency(
    pool: &PgPool,
    killed_at: Option<chrono::DateTime<chrono::Utc>>,
) -> (
    std::collections::BTreeMap<(String, String), i64>,
    std::collections::BTreeMap<String, i64>,
) {
    // Sweep line over start (+1) and end (-1) events; an end sorts before a start at the same
    // instant (the next run of a slot is claimed only after the previous body returned).
    let sweep = |partition: &str| {
        format!(
            "WITH ev AS (
                 SELECT queue, key, started_at AS t, 1 AS d FROM probe_intervals
                 UNION ALL
                 SELECT queue, key, coalesce(finished_at, $1, 'infinity'), -1 FROM probe_intervals)
             SELECT queue, {key}, max(c)::bigint FROM (
                 SELECT queue, key, sum(d) OVER (PARTITION BY {partition} ORDER BY t, d
                                                 ROWS UNBOUNDED PRECEDING) AS c
                   FROM ev) x
             GROUP BY 1, 2",
            key = if partition.contains("key") {
                "key"
            } else {
                "''"
            },
        )
    };
    let per_key: Vec<(String, String, i64)> = sqlx::query_as(&sweep("queue, key"))
        .bind(killed_at)
        .fetch_all(pool)
        .await
        .expect("sweep per key");
    let per_queue: Vec<(String, String, i64)> = sqlx::query_as(&sweep("queue"))
        .bind(killed_at)
        .fetch_all(pool)
        .await
        .expect("sweep per queue");
    (
        per_key.into_iter().map(|(q, k, m)| ((q, k), m)).collect(),
        per_queue.into_iter().map(|(q, _, m)| (q, m)).collect(),
    )
}

/// Waits until run `id` reaches `status` and returns it; panics with the last state seen.
pub async fn wait_for_status(
    client: &kiln::Client,
    id: uuid::Uuid,
    status: kiln::RunStatus,
) -> kiln::Run {
    let deadline = Duration::from_secs(20);
    let start = tokio::time::Instant::now();
    loop {
        let run = client.runs().retrieve(id).await.expect("retrieve the run");
        if run.status == status {
            return run;
        }
        assert!(
            start.elapsed() < deadline,
            "run {id} did not reach {status} within {deadline:?}; last seen {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGTERM to every worker and waits for each to exit; returns whether all exited cleanly.
pub async fn stop_all(workers: &mut [Child]) -> bool {
    for worker in workers.iter() {
        send_sigterm(worker).await;
    }
    let mut clean = true;
    for worker in workers.iter_mut() {
        clean &= worker.wait().await.expect("wait for a worker").success();
    }
    clean
}

/// How many times a probe task recorded `event` for run `id`.
pub async fn probe_event_count(pool: &PgPool, id: uuid::Uuid, event: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM probe_events WHERE run_id = $1 AND event = $2")
        .bind(id)
        .bind(event)
        .fetch_one(pool)
        .await
        .expect("count probe events")
}

/// A fresh database with every test task registered (a worker started and stopped), and a client
/// on it: runs triggered now wait until the test starts a worker.
pub async fn registered() -> (TestDb, kiln::Client) {
    let db = TestDb::new().await;
    InProcessWorker::start(&db, "registrar", 1)
        .await
        .stop()
        .await;
    let client = kiln::Client::new(db.pool.clone());
    (db, client)
}

/// Deadlocks Postgres recorded in the test's database, read after every given pool's idle
/// connections flushed their pending statistics (see `kiln_store::stats::stats_deadlocks`).
/// The pools are closed afterwards.
pub async fn deadlocks_recorded(db: &TestDb, pools: &[&PgPool]) -> i64 {
    for pool in pools {
        kiln_store::stats::stats_deadlocks(pool)
            .await
            .expect("flush and read statistics");
        pool.close().await;
    }
    let reader = PgPool::connect(&db.url)
        .await
        .expect("connect to read statistics");
    let deadlocks = kiln_store::stats::stats_deadlocks(&reader)
        .await
        .expect("read pg_stat_database");
    reader.close().await;
    deadlocks
}

/// An attempt's end as a worker's completer sends it: completed with `output`, or, when
/// `retry_at` is set, failed and queued again for then.
pub fn attempt_end(
    run_id: uuid::Uuid,
    attempt: u32,
    output: Option<serde_json::Value>,
    retry_at: Option<chrono::DateTime<chrono::Utc>>,
) -> kiln_store::lease::AttemptEnd {
    kiln_store::lease::AttemptEnd {
        run_id,
        attempt,
        outcome: if retry_at.is_some() {
            kiln::AttemptOutcome::Failed
        } else {
            kiln::AttemptOutcome::Completed
        },
        retry_at,
        final_status: kiln::RunStatus::Completed,
        output,
        error: None,
        released: false,
    }
}
