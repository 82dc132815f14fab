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
