//! The Next.js route example (`examples/nextjs-route`), run by the machine's `node` against a
//! real `kiln serve` and a real worker: it triggers `schedule-task` over HTTP and waits for the
//! run's structured outcome. Without `node` the test is skipped, except in CI (`CI=true`), where
//! a missing `node` fails it.

use std::path::PathBuf;
use std::time::Duration;

use kiln::{Client, Scope, Worker};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nextjs_route_triggers_schedule_task_over_http_and_gets_its_outcome() {
    let node_found = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok();
    if !node_found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "node is required in CI to run the Next.js example (install Node.js 18 or later)"
        );
        eprintln!("skipped: no `node` on PATH");
        return;
    }
    let fallback =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kiln-test-postgres");
    let server = kiln_devdb::server_for_tests(&fallback).await.unwrap();
    let url = kiln_devdb::create_test_database(&server).await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let (_provider, app) = kiln_tuturuuu::start_demo(&client, 2).await.unwrap();
    let worker = kiln_tuturuuu::register(Worker::builder().pool(client.pool().clone()), app)
        .concurrency(4)
        .build()
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let worker_task = {
        let stop = stop.clone();
        tokio::spawn(async move { worker.run_until(stop).await })
    };
    let key = client
        .keys()
        .create("nextjs", Scope::Trigger)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state = kiln_server::AppState::new(client.clone(), kiln_server::ServerConfig::default());
    let api = {
        let stop = stop.clone();
        tokio::spawn(kiln_server::serve(listener, state, async move {
            stop.cancelled().await
        }))
    };

    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nextjs-route");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg("call.mjs")
            .arg("ws_1")
            .current_dir(&example)
            .env("KILN_API_URL", format!("http://{address}"))
            .env("KILN_API_KEY", &key.secret)
            .output(),
    )
    .await
    .expect("the example answers within a minute")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node call.mjs failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let body = &answer["body"];
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(body["status"], "completed", "{answer}");
    assert_eq!(body["output"]["ws_id"], "ws_1");
    assert_eq!(body["output"]["success"], true);
    assert!(body["output"]["error"].is_null());

    // The run is the one the route triggered, with the route's options.
    let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let run = client.runs().retrieve(id).await.unwrap();
    assert_eq!(run.task_id, "schedule-task");
    assert_eq!(run.concurrency_key.as_deref(), Some("ws_1"));
    assert_eq!(run.tags, ["nextjs"]);

    stop.cancel();
    worker_task.await.unwrap().unwrap();
    api.await.unwrap().unwrap();
}
