//! `/metrics` parses as Prometheus text exposition, and its counters move by exactly the runs a
//! test completes and fails. Its own test binary: the recorder is global to the process.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kiln_core::{RunStatus, Task};
use kiln_server::{app, AppState, ServerConfig};
use kiln_tests::tasks::*;
use kiln_tests::{registered, wait_for_status, InProcessWorker};
use tower::ServiceExt;

/// Scrapes through a fresh state, so the gauges are read now (not from the last scrape's cache).
async fn scrape(client: &kiln_client::Client) -> prometheus_parse::Scrape {
    let state = AppState::new(client.clone(), ServerConfig::default());
    let response = app(state)
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{text}"))
}

/// The value of `name` with these labels (0 when absent).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_the_runs_completed_and_failed_and_gauges_read_postgres() {
    let (db, client) = registered().await;
    let before = scrape(&client).await;

    // Three runs wait in a paused queue: the gauges see them.
    client.queues().pause("echo").await.unwrap();
    let mut echoes = Vec::new();
    for i in 0..3 {
        let payload = WorkspacePayload {
            ws_id: format!("ws_{i}"),
        };
        echoes.push(client.trigger::<Echo>(payload).await.unwrap().id);
    }
    let waiting = scrape(&client).await;
    assert_eq!(
        value(
            &waiting,
            "kiln_runs",
            &[("queue", "echo"), ("state", "queued")]
        ),
        3.0
    );
    assert!(
        value(
            &waiting,
            "kiln_queue_oldest_age_seconds",
            &[("queue", "echo")]
        ) >= 0.0
    );
    assert_eq!(
        value(&waiting, "kiln_runs_triggered_total", &[("task", Echo::ID)])
            - value(&before, "kiln_runs_triggered_total", &[("task", Echo::ID)]),
        3.0
    );

    let worker = InProcessWorker::start(&db, "metrics-worker", 4).await;
    client.queues().resume("echo").await.unwrap();
    let aborted = [
        client.trigger::<Aborting>(()).await.unwrap().id,
        client.trigger::<Aborting>(()).await.unwrap().id,
    ];
    for id in &echoes {
        wait_for_status(&client, *id, RunStatus::Completed).await;
    }
    for id in &aborted {
        wait_for_status(&client, *id, RunStatus::Failed).await;
    }
    let after = scrape(&client).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(
        moved(
            "kiln_attempts_finished_total",
            &[("task", "echo"), ("outcome", "completed")]
        ),
        3.0
    );
    assert_eq!(
        moved(
            "kiln_attempts_finished_total",
            &[("task", "aborting"), ("outcome", "failed")]
        ),
        2.0
    );
    assert_eq!(
        moved("kiln_attempts_finished_total", &[("outcome", "retried")]),
        0.0
    );
    assert!(moved("kiln_claimed_runs_total", &[]) >= 5.0);
    // Histograms carry a count per task.
    let durations = after
        .samples
        .iter()
        .find(|s| s.metric == "kiln_run_duration_seconds" && s.labels.get("task") == Some("echo"))
        .expect("a duration histogram for echo");
    match &durations.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.iter().any(|b| b.count >= 3.0), "{buckets:?}");
        }
        other => panic!("kiln_run_duration_seconds is not a histogram: {other:?}"),
    }
    assert_eq!(
        value(
            &after,
            "kiln_runs",
            &[("queue", "echo"), ("state", "queued")]
        ),
        0.0
    );
    assert_eq!(value(&after, "kiln_workers_alive", &[]), 1.0);
    worker.stop().await;
}
