//! The workers registry: live worker processes are listed with what they hold; a killed one
//! shows as dead once it missed three heartbeats, a drained one as stopped.

use std::time::Duration;

use kiln::BatchItem;
use kiln_tests::tasks::*;
use kiln_tests::{registered, send_sigterm, wait_until, WorkerProcess};

const WORKER_EXE: &str = env!("CARGO_BIN_EXE_kiln-test-worker");

async fn states(client: &kiln::Client) -> Vec<(String, String)> {
    let mut workers: Vec<(String, String)> = client
        .workers()
        .list(true)
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.id, w.state))
        .collect();
    workers.sort();
    workers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_lists_live_workers_and_shows_killed_and_stopped_ones() {
    let (db, client) = registered().await;
    let process = |id: &str| WorkerProcess {
        heartbeat_ms: 300,
        shutdown_grace_ms: 1_000,
        ..WorkerProcess::new(id, 4)
    };
    let mut workers: Vec<_> = ["w-1", "w-2", "w-3"]
        .iter()
        .map(|id| process(id).spawn(WORKER_EXE, &db))
        .collect();
    wait_until(
        "three workers are running",
        Duration::from_secs(30),
        || async {
            let live = client.workers().list(false).await.unwrap();
            live.iter()
                .filter(|w| w.id.starts_with("w-") && w.state == "running")
                .count()
                == 3
        },
    )
    .await;
    let live = client.workers().list(false).await.unwrap();
    let w1 = live.iter().find(|w| w.id == "w-1").unwrap();
    assert_eq!(w1.concurrency, 4);
    assert!(w1.tasks.contains(&"patient".to_owned()));
    assert!(w1.pid > 0 && !w1.hostname.is_empty());

    // Two runs that wait: the heartbeats report them in flight.
    let items = (0..2)
        .map(|_| {
            BatchItem::new(ProbePayload {
                sleep_ms: 60_000,
                fail_first: false,
            })
        })
        .collect();
    client.batch_trigger::<Patient>(items).await.unwrap();
    wait_until(
        "two runs are in flight",
        Duration::from_secs(20),
        || async {
            let live = client.workers().list(false).await.unwrap();
            live.iter().map(|w| w.in_flight).sum::<i32>() == 2
        },
    )
    .await;

    workers[0].kill().await.expect("SIGKILL w-1");
    wait_until("w-1 shows as dead", Duration::from_secs(20), || async {
        states(&client)
            .await
            .contains(&("w-1".into(), "dead".into()))
    })
    .await;
    assert!(
        !client
            .workers()
            .list(false)
            .await
            .unwrap()
            .iter()
            .any(|w| w.id == "w-1"),
        "a dead worker is not listed as alive"
    );

    send_sigterm(&workers[1]).await;
    assert!(workers[1].wait().await.unwrap().success());
    wait_until("w-2 shows as stopped", Duration::from_secs(20), || async {
        states(&client)
            .await
            .contains(&("w-2".into(), "stopped".into()))
    })
    .await;
    assert_eq!(
        states(&client)
            .await
            .iter()
            .find(|(id, _)| id == "w-3")
            .map(|s| s.1.as_str()),
        Some("running")
    );
    send_sigterm(&workers[2]).await;
    assert!(workers[2].wait().await.unwrap().success());
    let _ = db;
}

/// Reads `http://addr/metrics` with a plain HTTP/1.0 request; `None` until it answers.
async fn fetch_metrics(addr: std::net::SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.lines()
        .next()?
        .contains(" 200 ")
        .then(|| body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_its_metrics_on_the_address_it_is_given() {
    let (db, client) = registered().await;
    // A free port: bound, read and released for the worker to take.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut worker = WorkerProcess::new("metered", 4)
        .only(&["echo"])
        .spawn_with_env(
            WORKER_EXE,
            &db,
            &[("KILN_METRICS_LISTEN", &addr.to_string())],
        );
    for i in 0..4 {
        let id = client
            .trigger::<Echo>(WorkspacePayload {
                ws_id: format!("ws_{i}"),
            })
            .await
            .unwrap()
            .id;
        kiln_tests::wait_for_status(&client, id, kiln::RunStatus::Completed).await;
    }
    wait_until(
        "the worker's metrics count 4 completed attempts",
        Duration::from_secs(20),
        || async {
            let Some(text) = fetch_metrics(addr).await else {
                return false;
            };
            let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
                .expect("Prometheus text");
            let completed: f64 = scrape
                .samples
                .iter()
                .filter(|s| s.metric == "kiln_attempts_finished_total")
                .filter(|s| s.labels.get("outcome") == Some("completed"))
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                    _ => 0.0,
                })
                .sum();
            completed == 4.0
        },
    )
    .await;
    send_sigterm(&worker).await;
    assert!(worker.wait().await.unwrap().success());
}

/// A worker readies its first connections by triggering and claiming a run it rolls back: the
/// run, its queue, its ready row and its lease are gone after, nobody is notified, and a real
/// run triggered meanwhile is left for its worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readying_a_connection_stores_nothing_and_notifies_nobody() {
    let (db, client) = registered().await;
    let waiting = client
        .trigger::<Echo>(WorkspacePayload {
            ws_id: "ws_ready".into(),
        })
        .await
        .unwrap();
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
        .await
        .unwrap();
    listener
        .listen_all(["kiln_ready", "kiln_runs_finished"])
        .await
        .unwrap();
    let counts = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(
            "SELECT (SELECT count(*) FROM kiln.runs), (SELECT count(*) FROM kiln.ready),
                    (SELECT count(*) FROM kiln.leases), (SELECT count(*) FROM kiln.queues),
                    (SELECT count(*) FROM kiln.tasks)",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let before = counts(db.pool.clone()).await;

    let mut conn = db.pool.acquire().await.unwrap();
    for _ in 0..3 {
        kiln_store::worker::worker_warm_connection(&mut conn)
            .await
            .expect("the connection is readied");
    }
    drop(conn);

    assert_eq!(counts(db.pool.clone()).await, before, "nothing was kept");
    let heard = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(heard.is_err(), "a notification was delivered: {heard:?}");
    let run = client.runs().retrieve(waiting.id).await.unwrap();
    assert_eq!(
        run.status,
        kiln::RunStatus::Queued,
        "the real run is left waiting"
    );
}
