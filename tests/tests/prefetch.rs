//! Prefetch (`Worker::builder().prefetch(n)`): a worker leases up to n runs of queues without
//! limits ahead of its free slots, never runs of limited queues; buffered runs show as executing,
//! start as slots free, and a stopping worker hands them back at once without counting an
//! attempt, so another worker runs each exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiln::{task, Context, Result, Worker};
use kiln_tests::{wait_until, InProcessWorker, TestDb};
use serde::{Deserialize, Serialize};

static FREE_STARTED: AtomicU64 = AtomicU64::new(0);
static LIMITED_STARTED: AtomicU64 = AtomicU64::new(0);

/// How long to sleep.
#[derive(Debug, Serialize, Deserialize)]
pub struct Nap {
    ms: u64,
}

task! {
    /// Sleeps; in a queue without limits.
    pub FreeNap {
        id: "prefetch-free",
        run: async |_ctx: Context, nap: Nap| -> Result<()> {
            FREE_STARTED.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(nap.ms)).await;
            Ok(())
        }
    }
}

task! {
    /// Sleeps; in a queue limited to 50 at once (more than the worker's slots, so only the
    /// worker decides how many it leases).
    pub LimitedNap {
        id: "prefetch-limited",
        queue: { concurrency_limit: 50 },
        run: async |_ctx: Context, nap: Nap| -> Result<()> {
            LIMITED_STARTED.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(nap.ms)).await;
            Ok(())
        }
    }
}

/// A worker serving both tasks, with `concurrency` slots and a buffer of `prefetch`.
async fn start_worker(db: &TestDb, concurrency: usize, prefetch: usize) -> InProcessWorker {
    InProcessWorker::spawn(
        Worker::builder()
            .pool(db.pool.clone())
            .register(FreeNap)
            .register(LimitedNap)
            .concurrency(concurrency)
            .prefetch(prefetch)
            .build()
            .await
            .unwrap(),
    )
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_buffers_unlimited_runs_only_and_hands_its_buffer_back_when_it_stops() {
    let db = TestDb::new().await;
    let client = kiln::Client::new(db.pool.clone());
    let naps = |n: usize, ms: u64| {
        (0..n)
            .map(|_| kiln::BatchItem::new(Nap { ms }))
            .collect::<Vec<_>>()
    };
    client
        .batch_trigger::<FreeNap>(naps(200, 1_500))
        .await
        .unwrap();
    client
        .batch_trigger::<LimitedNap>(naps(100, 50))
        .await
        .unwrap();

    let worker = start_worker(&db, 4, 50).await;
    // Four bodies run; 50 runs of the unlimited queue wait in the buffer, leased.
    wait_until("the buffer filled", Duration::from_secs(10), || async {
        count(
            &db,
            "SELECT count(*) FROM kiln.leases WHERE queue = 'prefetch-free'",
        )
        .await
            >= 50
    })
    .await;
    let (free_leased, limited_leased, executing) = (
        count(
            &db,
            "SELECT count(*) FROM kiln.leases WHERE queue = 'prefetch-free'",
        )
        .await,
        count(
            &db,
            "SELECT count(*) FROM kiln.leases WHERE queue = 'prefetch-limited'",
        )
        .await,
        count(
            &db,
            "SELECT count(*) FROM kiln.runs WHERE status = 'executing'",
        )
        .await,
    );
    let started = FREE_STARTED.load(Ordering::SeqCst) as i64;
    println!(
        "observed: {free_leased} unlimited and {limited_leased} limited runs leased, {executing} \
         executing, {started} unlimited bodies started"
    );
    assert!(
        started <= 4,
        "at most the concurrency runs bodies: {started}"
    );
    assert!(
        (50..=54).contains(&free_leased),
        "the buffer holds 50 unlimited runs beside the running ones: {free_leased}"
    );
    assert!(
        limited_leased <= 4,
        "a limited run is leased only for a slot: {limited_leased}"
    );
    assert_eq!(executing, free_leased + limited_leased);

    // A buffered run canceled before it starts ends canceled, and its body never runs (the
    // buffer starts its runs oldest first, so the newest leased one is still waiting in it).
    let buffered: uuid::Uuid = sqlx::query_scalar(
        "SELECT max(run_id::text)::uuid FROM kiln.leases WHERE queue = 'prefetch-free'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    client.runs().cancel(buffered).await.unwrap();

    // Stopping hands the buffer back at once: the running bodies finish (1.5 s), the buffered
    // runs are queued again with an `interrupted` attempt that does not count.
    let stopped_at = std::time::Instant::now();
    worker.stop().await;
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "the worker stopped without running its buffer"
    );
    let (leases, handed_back, counted_retries) = (
        count(&db, "SELECT count(*) FROM kiln.leases").await,
        count(
            &db,
            "SELECT count(*) FROM kiln.attempts WHERE status = 'interrupted'",
        )
        .await,
        count(
            &db,
            "SELECT count(*) FROM kiln.runs WHERE attempts - released_attempts > 1",
        )
        .await,
    );
    assert_eq!(leases, 0, "nothing stays leased");
    assert!(
        handed_back >= 50,
        "the buffered runs were handed back: {handed_back}"
    );
    assert_eq!(counted_retries, 0, "a handed-back attempt does not count");

    // Another worker runs everything, each run exactly once.
    let worker = start_worker(&db, 100, 20).await;
    wait_until(
        "all 299 other runs completed",
        Duration::from_secs(60),
        || async {
            count(
                &db,
                "SELECT count(*) FROM kiln.runs WHERE status = 'completed'",
            )
            .await
                == 299
        },
    )
    .await;
    worker.stop().await;
    let completed_attempts = count(
        &db,
        "SELECT count(*) FROM kiln.attempts WHERE status = 'completed'",
    )
    .await;
    assert_eq!(completed_attempts, 299, "each run completed once");
    let canceled: (String, i64) = sqlx::query_as(
        "SELECT status::text, (SELECT count(*) FROM kiln.attempts a WHERE a.run_id = r.id
                                 AND a.status NOT IN ('canceled', 'interrupted'))
           FROM kiln.runs r WHERE id = $1",
    )
    .bind(buffered)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // Its attempt ended canceled, or was handed back with the buffer: either way no body ran.
    assert_eq!(
        canceled,
        ("canceled".to_owned(), 0),
        "the canceled run stays canceled"
    );
    assert_eq!(
        (
            FREE_STARTED.load(Ordering::SeqCst),
            LIMITED_STARTED.load(Ordering::SeqCst)
        ),
        (199, 100),
        "every body ran once, the canceled one never: no buffered run started before it was \
         handed back"
    );
}
