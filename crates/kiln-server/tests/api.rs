//! The HTTP API through its real router against real Postgres: every route's happy path, its
//! error statuses, and authentication. Every response is checked against the OpenAPI document.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use kiln_server::ServerConfig;
use kiln_tests::{wait_until, InProcessWorker};
use serde_json::{json, Value};
use support::{code, message, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_needs_a_key_whose_scope_covers_it() {
    let api = Api::new().await;
    let (status, body) = api.call(Method::GET, "/api/v1/runs", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "unauthorized");
    assert!(message(&body).contains("Authorization: Bearer"));

    let (status, body) = api.get("/api/v1/runs", "kiln_sk_not-a-real-key").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        !message(&body).contains("not-a-real-key"),
        "keys are never echoed"
    );

    // A trigger key may trigger and read runs, nothing else.
    let (status, _) = api.get("/api/v1/runs", &api.trigger).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api.get("/api/v1/queues", &api.trigger).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&body), "forbidden");
    assert!(
        message(&body).contains("\"app\" has scope trigger"),
        "{body}"
    );
    let (status, _) = api
        .post("/api/v1/queues/echo/pause", &api.trigger, Value::Null)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let paused: bool = sqlx::query_scalar("SELECT paused FROM kiln.queues WHERE name = 'echo'")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert!(!paused, "a refused request does nothing");

    // A read key reads everything and triggers nothing.
    let (status, _) = api.get("/api/v1/queues", &api.read).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .post(
            "/api/v1/tasks/echo/trigger",
            &api.read,
            json!({"payload": {"ws_id": "w"}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.runs")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 0);

    // Health needs no key.
    let (status, body) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, _) = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);

    // A revoked key stops working within the cache's time.
    let (status, _) = api.get("/api/v1/runs", &api.trigger).await;
    assert_eq!(status, StatusCode::OK);
    api.client.keys().revoke("app").await.unwrap();
    wait_until(
        "the revoked key is refused",
        Duration::from_secs(7),
        || async { api.get("/api/v1/runs", &api.trigger).await.0 == StatusCode::UNAUTHORIZED },
    )
    .await;

    // Only the hash is stored.
    let stored: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT prefix, secret_hash FROM kiln.api_keys ORDER BY id")
            .fetch_all(&api.db.pool)
            .await
            .unwrap();
    for (prefix, hash) in stored {
        assert!(
            api.admin.starts_with(&prefix)
                || api.trigger.starts_with(&prefix)
                || api.read.starts_with(&prefix)
        );
        assert_eq!(hash.len(), 32);
        assert!(prefix.len() < 16, "only a short prefix is kept");
    }
    assert!(api.admin.starts_with("kiln_sk_") && api.admin.len() >= "kiln_sk_".len() + 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_run_kiln_migrate_on_an_unmigrated_database() {
    let db = kiln_tests::TestDb::new().await;
    let pool = db.pool.clone();
    sqlx::query("DROP SCHEMA kiln CASCADE")
        .execute(&pool)
        .await
        .unwrap();
    let state = kiln_server::AppState::new(kiln_client::Client::new(pool), ServerConfig::default());
    let response = tower::ServiceExt::oneshot(
        kiln_server::app(state),
        axum::http::Request::get("/readyz")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(code(&body), "unavailable");
    assert!(message(&body).contains("kiln migrate"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_answers_201_then_200_for_an_idempotent_repeat_and_refuses_bad_input_clearly() {
    let api = Api::new().await;
    let url = "/api/v1/tasks/echo/trigger";
    let request = json!({
        "payload": {"ws_id": "ws_1"},
        "options": {"concurrencyKey": "ws_1", "idempotencyKey": "sync-ws_1", "tags": ["sync"],
                    "delay": "1h", "ttl": 7_200_000, "maxAttempts": 2, "priority": "10s",
                    "metadata": {"source": "api"}, "idempotencyKeyTTL": "1d"}
    });
    let (status, first) = api.post(url, &api.trigger, request.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["isCached"], false);
    let (status, again) = api.post(url, &api.trigger, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (again["id"].clone(), again["isCached"].clone()),
        (first["id"].clone(), json!(true))
    );

    let id = first["id"].as_str().unwrap();
    let (status, run) = api.get(&format!("/api/v1/runs/{id}"), &api.trigger).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["status"], "delayed");
    assert_eq!(run["concurrencyKey"], "ws_1");
    assert_eq!(run["tags"], json!(["sync"]));
    assert_eq!(run["maxAttempts"], 2);
    assert_eq!(run["metadata"], json!({"source": "api"}));
    assert_eq!(run["payload"], json!({"ws_id": "ws_1"}));

    let refusals = [
        (
            json!({"payload": {"ws_id": "w"}, "options": {"delay": "5 parsecs"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "delay",
        ),
        (
            json!({"payload": {"ws_id": "w"}, "options": {"maxAttempts": 0}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "maxAttempts",
        ),
        (
            json!({"payload": {"ws_id": "w"}, "options": {"ttl": "-5s"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ttl",
        ),
        (
            json!({"payload": {"ws_id": "w"}, "options": {"tags": vec!["t"; 11]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tags",
        ),
        (
            json!({"payload": {"ws_id": "w"}, "options": {"concurrencyKey": "k".repeat(300)}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "concurrencyKey",
        ),
        (
            json!({"payload": {"title": "a\u{0}b"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "payload.title",
        ),
        (
            json!({"payload": {"ws_id": "w"}, "options": {"queue": "bad queue!"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "queue",
        ),
        (
            json!({"payload": {"ws_id": "w"}, "options": {"concurency": "typo"}}),
            StatusCode::BAD_REQUEST,
            "concurency",
        ),
        (
            json!({"payload": {"ws_id": "w"}, "options": {"maxAttempts": "3"}}),
            StatusCode::BAD_REQUEST,
            "options.maxAttempts",
        ),
        (
            Value::String("{not json".into()),
            StatusCode::BAD_REQUEST,
            "not valid",
        ),
    ];
    for (body, want, names) in refusals {
        let (status, answer) = api.post(url, &api.trigger, body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert!(
            message(&answer).contains(names),
            "{body}: the message should name {names}: {answer}"
        );
        assert!(
            !message(&answer).to_lowercase().contains("select"),
            "no SQL in errors: {answer}"
        );
    }
    let (status, answer) = api
        .post(
            "/api/v1/tasks/no-such-task/trigger",
            &api.trigger,
            json!({"payload": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&answer), "not_found");

    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.runs")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 1, "refused triggers store nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_and_a_payload_at_the_limit_arrives() {
    let api = Api::with_config(ServerConfig {
        max_body_bytes: 64 * 1024,
        max_batch_body_bytes: 128 * 1024,
        ..ServerConfig::default()
    })
    .await;
    let big = "x".repeat(70 * 1024);
    let (status, body) = api
        .post(
            "/api/v1/tasks/echo/trigger",
            &api.trigger,
            json!({"payload": {"ws_id": big}}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&body), "payload_too_large");
    let fits = "x".repeat(60 * 1024);
    let (status, _) = api
        .post(
            "/api/v1/tasks/echo/trigger",
            &api.trigger,
            json!({"payload": {"ws_id": fits}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // The payload limit itself (4 MiB) holds whatever the body limit.
    let roomy = Api::with_config(ServerConfig {
        max_body_bytes: 6 * 1024 * 1024,
        max_batch_body_bytes: 6 * 1024 * 1024,
        ..ServerConfig::default()
    })
    .await;
    let huge = "x".repeat(kiln_core::MAX_PAYLOAD_BYTES);
    let (status, body) = roomy
        .post(
            "/api/v1/tasks/echo/trigger",
            &roomy.trigger,
            json!({"payload": {"ws_id": huge}}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", message(&body));
    assert!(message(&body).contains("over the limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_trigger_returns_ids_in_order_and_names_the_refused_item() {
    let api = Api::new().await;
    let items: Vec<Value> = (0..5)
        .map(|i| json!({"payload": {"ws_id": format!("ws_{i}")}, "options": {"concurrencyKey": format!("ws_{i}")}}))
        .collect();
    let (status, body) = api
        .post(
            "/api/v1/tasks/echo/batch",
            &api.trigger,
            json!({ "items": items }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    for (i, id) in ids.iter().enumerate() {
        let (_, run) = api.get(&format!("/api/v1/runs/{id}"), &api.trigger).await;
        assert_eq!(run["payload"]["ws_id"], format!("ws_{i}"));
    }

    let mut items: Vec<Value> = (0..3).map(|_| json!({"payload": {}})).collect();
    items[2] = json!({"payload": {}, "options": {"delay": "soon"}});
    let (status, body) = api
        .post(
            "/api/v1/tasks/echo/batch",
            &api.trigger,
            json!({ "items": items }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message(&body).contains("batch item 2"), "{body}");

    let too_many: Vec<Value> = (0..1_001).map(|_| json!({"payload": {}})).collect();
    let (status, body) = api
        .post(
            "/api/v1/tasks/echo/batch",
            &api.trigger,
            json!({ "items": too_many }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message(&body).contains("at most 1000"), "{body}");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.runs")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_with_filters_and_cursors_both_ways() {
    let api = Api::new().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        let (_, body) = api
            .post(
                "/api/v1/tasks/echo/trigger",
                &api.trigger,
                json!({"payload": {"ws_id": i.to_string()}, "options": {"tags": [tag], "delay": "1h"}}),
            )
            .await;
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    ids.reverse(); // newest first, as listed
    let (status, page1) = api.get("/api/v1/runs?limit=3&task=echo", &api.read).await;
    assert_eq!(status, StatusCode::OK);
    let listed = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&page1), ids[0..3]);
    assert!(page1["pagination"]["previous"].is_null());
    let next = page1["pagination"]["next"].as_str().unwrap();
    let (_, page2) = api
        .get(&format!("/api/v1/runs?limit=3&cursor={next}"), &api.read)
        .await;
    assert_eq!(listed(&page2), ids[3..6]);
    let previous = page2["pagination"]["previous"].as_str().unwrap();
    let (_, back) = api
        .get(
            &format!("/api/v1/runs?limit=3&before={previous}"),
            &api.read,
        )
        .await;
    assert_eq!(listed(&back), ids[0..3]);
    assert!(
        back["pagination"]["previous"].is_null(),
        "the first page has no previous"
    );

    let (_, odd) = api
        .get("/api/v1/runs?tag=odd&status=delayed,queued", &api.read)
        .await;
    assert_eq!(odd["data"].as_array().unwrap().len(), 3);
    let (_, none) = api.get("/api/v1/runs?status=failed", &api.read).await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);

    let (status, body) = api.get("/api/v1/runs?status=exploded", &api.read).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message(&body).contains("exploded"));
    let (status, _) = api.get("/api/v1/runs?limit=101", &api.read).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api.get("/api/v1/runs?from=yesterday", &api.read).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.get("/api/v1/runs/not-a-uuid", &api.read).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = api
        .get(
            "/api/v1/runs/0190a8a6-0000-7000-8000-000000000000",
            &api.read,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_answers_when_the_run_is_final_and_408_at_the_timeout() {
    let api = Api::new().await;
    let (_, delayed) = api
        .post(
            "/api/v1/tasks/echo/trigger",
            &api.trigger,
            json!({"payload": {"ws_id": "later"}, "options": {"delay": "1h"}}),
        )
        .await;
    let worker = InProcessWorker::start(&api.db, "w1", 4).await;
    let (_, body) = api
        .post(
            "/api/v1/tasks/echo/trigger",
            &api.trigger,
            json!({"payload": {"ws_id": "ws_9"}}),
        )
        .await;
    let id = body["id"].as_str().unwrap();
    let (status, run) = api
        .get(&format!("/api/v1/runs/{id}/wait?timeout=20s"), &api.trigger)
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "completed");
    assert_eq!(
        run["output"],
        json!({"ws_id": "ws_9", "success": true, "error": null})
    );

    let started = std::time::Instant::now();
    let delayed_id = delayed["id"].as_str().unwrap();
    let (status, body) = api
        .get(
            &format!("/api/v1/runs/{delayed_id}/wait?timeout=1s"),
            &api.trigger,
        )
        .await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(code(&body), "timeout");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let (status, _) = api
        .get(
            &format!("/api/v1/runs/{delayed_id}/wait?timeout=10m"),
            &api.trigger,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_cancel_replay_and_reschedule_runs_and_each_action_is_audited() {
    let api = Api::new().await;
    let trigger = |delay: &str| json!({"payload": {"ws_id": "ws_1"}, "options": {"delay": delay}});
    let (_, a) = api
        .post("/api/v1/tasks/echo/trigger", &api.trigger, trigger("1h"))
        .await;
    let a = a["id"].as_str().unwrap().to_owned();

    let (status, moved) = api
        .post(
            &format!("/api/v1/runs/{a}/reschedule"),
            &api.admin,
            json!({"delay": "2h"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let available =
        chrono::DateTime::parse_from_rfc3339(moved["availableAt"].as_str().unwrap()).unwrap();
    assert!(available > chrono::Utc::now() + chrono::Duration::minutes(110));
    let (status, _) = api
        .post(
            &format!("/api/v1/runs/{a}/reschedule"),
            &api.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, canceled) = api
        .post(&format!("/api/v1/runs/{a}/cancel"), &api.admin, Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(canceled["previousStatus"], "delayed");
    let (status, again) = api
        .post(&format!("/api/v1/runs/{a}/cancel"), &api.admin, Value::Null)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&again), "conflict");
    let (status, _) = api
        .post(
            &format!("/api/v1/runs/{a}/reschedule"),
            &api.admin,
            json!({"delay": "1m"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, replay) = api
        .post(
            &format!("/api/v1/runs/{a}/replay"),
            &api.admin,
            json!({"payload": {"ws_id": "ws_2"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let b = replay["id"].as_str().unwrap();
    let (_, run) = api.get(&format!("/api/v1/runs/{b}"), &api.read).await;
    assert_eq!(run["replayOf"], a.as_str());
    assert_eq!(run["payload"], json!({"ws_id": "ws_2"}));

    let (status, audit) = api.get("/api/v1/audit", &api.read).await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<(String, String)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for action in ["run.replay", "run.cancel", "run.reschedule"] {
        assert!(
            actions.contains(&(action.to_owned(), "key:ops".to_owned())),
            "{action} in {actions:?}"
        );
    }
    assert!(actions.contains(&("key.create".to_owned(), "cli:test".to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_and_limit_queues() {
    let api = Api::new().await;
    let (status, list) = api.get("/api/v1/queues", &api.read).await;
    assert_eq!(status, StatusCode::OK);
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "keyed-probe" && q["concurrencyLimit"] == 2));

    let (status, queue) = api
        .post("/api/v1/queues/keyed-probe/pause", &api.admin, Value::Null)
        .await;
    assert_eq!(
        (status, queue["paused"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (_, queue) = api
        .post("/api/v1/queues/keyed-probe/resume", &api.admin, Value::Null)
        .await;
    assert_eq!(queue["paused"], false);
    let (status, queue) = api
        .post(
            "/api/v1/queues/keyed-probe/concurrency/override",
            &api.admin,
            json!({"limit": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            queue["limitOverride"].clone(),
            queue["effectiveLimit"].clone()
        ),
        (json!(7), json!(7))
    );
    let (status, _) = api
        .post(
            "/api/v1/queues/keyed-probe/concurrency/override",
            &api.admin,
            json!({"limit": -1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, queue) = api
        .post(
            "/api/v1/queues/keyed-probe/concurrency/reset",
            &api.admin,
            Value::Null,
        )
        .await;
    assert_eq!(queue["effectiveLimit"], 2);
    let (status, body) = api
        .post("/api/v1/queues/nope/pause", &api.admin, Value::Null)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message(&body).contains("nope"));
    let (status, _) = api.get("/api/v1/queues/nope", &api.read).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, tasks) = api.get("/api/v1/tasks", &api.read).await;
    assert_eq!(status, StatusCode::OK);
    let flaky = tasks["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "flaky")
        .unwrap();
    assert_eq!(flaky["maxAttempts"], 3);
    let ticker = tasks["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "ticker")
        .unwrap();
    assert!(
        ticker["cron"].is_string(),
        "declarative schedules are shown: {ticker}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imperative_schedules_are_managed_and_declarative_ones_only_listed() {
    let api = Api::new().await;
    let (status, created) = api
        .post(
            "/api/v1/schedules",
            &api.admin,
            json!({"task": "echo", "cron": "*/15 9-17 * * MON-FRI", "timezone": "America/New_York",
                     "externalId": "ws_1", "deduplicationKey": "ws_1-sync"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["upcoming"].as_array().unwrap().len(), 5);
    let id = created["id"].as_str().unwrap();

    let (status, updated) = api
        .call(
            Method::PUT,
            &format!("/api/v1/schedules/{id}"),
            Some(&api.admin),
            Some(json!({"cron": "0 * * * *"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["cron"], "0 * * * *");
    let (status, _) = api
        .call(
            Method::PUT,
            &format!("/api/v1/schedules/{id}"),
            Some(&api.admin),
            Some(json!({"task": "unknown-task"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a schedule cannot move to an unregistered task"
    );
    let (_, off) = api
        .post(
            &format!("/api/v1/schedules/{id}/deactivate"),
            &api.admin,
            Value::Null,
        )
        .await;
    assert_eq!(off["active"], false);
    let (_, on) = api
        .post(
            &format!("/api/v1/schedules/{id}/activate"),
            &api.admin,
            Value::Null,
        )
        .await;
    assert_eq!(on["active"], true);
    let (status, body) = api
        .post(
            "/api/v1/schedules",
            &api.admin,
            json!({"task": "echo", "cron": "61 * * * *"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message(&body).contains("61"), "{body}");

    let (_, list) = api.get("/api/v1/schedules", &api.read).await;
    let declarative = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["declarative"] == true)
        .unwrap();
    let declarative_id = declarative["id"].as_str().unwrap();
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/api/v1/schedules/{declarative_id}"),
            Some(&api.admin),
            Some(json!({"cron": "* * * * *"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(message(&body).contains("code"), "{body}");

    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/schedules/{id}"),
            Some(&api.admin),
            None,
        )
        .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, _) = api.get(&format!("/api/v1/schedules/{id}"), &api.read).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_3_1_and_lists_every_route_with_bearer_auth() {
    let api = Api::new().await;
    let (status, doc) = api
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/tasks/{taskId}/trigger",
        "/api/v1/tasks/{taskId}/batch",
        "/api/v1/runs",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/wait",
        "/api/v1/runs/{id}/cancel",
        "/api/v1/runs/{id}/replay",
        "/api/v1/runs/{id}/reschedule",
        "/api/v1/tasks",
        "/api/v1/queues",
        "/api/v1/queues/{name}",
        "/api/v1/queues/{name}/pause",
        "/api/v1/queues/{name}/resume",
        "/api/v1/queues/{name}/concurrency/override",
        "/api/v1/queues/{name}/concurrency/reset",
        "/api/v1/schedules",
        "/api/v1/schedules/{id}",
        "/api/v1/schedules/{id}/activate",
        "/api/v1/schedules/{id}/deactivate",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    let text = doc.to_string();
    for secret in [&api.admin, &api.trigger, &api.read] {
        assert!(!text.contains(secret.as_str()), "no key in the document");
    }
    let (status, body) = api
        .send(Method::GET, "/api/v1/nothing-here", Some(&api.read), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_check_catches_a_body_the_document_does_not_describe() {
    let api = Api::new().await;
    let (_, created) = api
        .post(
            "/api/v1/tasks/echo/trigger",
            &api.trigger,
            json!({"payload": {"ws_id": "w"}}),
        )
        .await;
    let (_, run) = api
        .get(
            &format!("/api/v1/runs/{}", created["id"].as_str().unwrap()),
            &api.read,
        )
        .await;
    let doc = kiln_server::openapi_json();
    let schema = json!({"$ref": "#/components/schemas/RunBody"});
    assert_eq!(
        support::schema::validate(&doc, &schema, &run, "body"),
        Ok(())
    );
    let mut extra = run.clone();
    extra["secretField"] = json!(1);
    assert!(support::schema::validate(&doc, &schema, &extra, "body")
        .unwrap_err()
        .contains("secretField"));
    let mut wrong = run.clone();
    wrong["attemptCount"] = json!("one");
    assert!(support::schema::validate(&doc, &schema, &wrong, "body").is_err());
    let mut missing = run;
    missing.as_object_mut().unwrap().remove("status");
    assert!(support::schema::validate(&doc, &schema, &missing, "body")
        .unwrap_err()
        .contains("status"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_does_not_match_the_task_schema_is_refused_naming_the_field() {
    let api = Api::new().await;
    let url = "/api/v1/tasks/echo/trigger";
    let (status, body) = api
        .post(url, &api.trigger, json!({"payload": {"ws_id": 42}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "invalid_payload");
    assert!(
        message(&body).contains("payload.ws_id: expected a string, got an integer (42)"),
        "{body}"
    );
    let (status, body) = api.post(url, &api.trigger, json!({"payload": {}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        message(&body).contains("payload.ws_id: this field is required"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/api/v1/tasks/echo/batch",
            &api.trigger,
            json!({"items": [{"payload": {"ws_id": "a"}}, {"payload": {"ws_id": null}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        message(&body).contains("batch item 1") && message(&body).contains("payload.ws_id"),
        "{body}"
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.runs")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 0, "nothing is queued for a refused payload");

    let (status, _) = api
        .post(url, &api.trigger, json!({"payload": {"ws_id": "w1"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // A task without a schema takes any payload.
    let (status, _) = api
        .post(
            "/api/v1/tasks/flaky/trigger",
            &api.trigger,
            json!({"payload": {"anything": [1]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, tasks) = api.get("/api/v1/tasks", &api.read).await;
    let echo = tasks["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "echo")
        .unwrap();
    assert_eq!(
        echo["payloadSchema"]["properties"]["ws_id"]["type"],
        "string"
    );
    let flaky = tasks["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "flaky")
        .unwrap();
    assert!(flaky["payloadSchema"].is_null());

    // The same rule holds for Rust callers that trigger by id.
    let refused = api
        .client
        .trigger_by_id("echo", json!({"ws_id": ["not", "a", "string"]}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), kiln_client::ErrorCode::InvalidPayload);
    assert!(refused.to_string().contains("payload.ws_id"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_refuses_a_missing_key_and_a_key_of_too_narrow_a_scope() {
    let api = Api::new().await;
    let doc = kiln_server::openapi_json();
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let uri = template
                .replace("{taskId}", "echo")
                .replace("{id}", "0190a8a6-0000-7000-8000-000000000000")
                .replace("{name}", "echo");
            let needs_key = operation.get("security").is_some();
            let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
            let (status, answer) = api.call(method.clone(), &uri, None, body.clone()).await;
            if !needs_key {
                assert_ne!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {template} needs no key"
                );
                continue;
            }
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {template}: {answer}"
            );
            // Trigger keys may trigger and read runs; nothing else.
            let trigger_may = template.starts_with("/api/v1/tasks/")
                || (template.starts_with("/api/v1/runs") && method == Method::GET);
            let (status, answer) = api
                .call(method.clone(), &uri, Some(&api.trigger), body.clone())
                .await;
            if trigger_may {
                assert_ne!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {template}: {answer}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {template}: {answer}"
                );
            }
            // Read keys read everything and change nothing.
            let (status, answer) = api.call(method.clone(), &uri, Some(&api.read), body).await;
            if method == Method::GET {
                assert_ne!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {template}: {answer}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {template}: {answer}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 24, "checked {checked} routes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_log_is_read_in_pages_and_its_worker_is_listed() {
    let api = Api::new().await;
    let worker = InProcessWorker::start(&api.db, "w1", 2).await;
    let (_, created) = api
        .post(
            "/api/v1/tasks/chatty/trigger",
            &api.trigger,
            json!({"payload": {"lines": 4}}),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let (status, _) = api
        .get(&format!("/api/v1/runs/{id}/wait?timeout=20s"), &api.trigger)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, page) = api
        .get(&format!("/api/v1/runs/{id}/logs?limit=3"), &api.trigger)
        .await;
    assert_eq!(status, StatusCode::OK);
    let messages = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(messages(&page), ["starting", "step", "step"]);
    assert_eq!(page["data"][1]["fields"], json!({"i": 0}));
    let next = page["next"].as_str().unwrap();
    assert_eq!(next, "1.3");
    let (_, rest) = api
        .get(&format!("/api/v1/runs/{id}/logs?after={next}"), &api.read)
        .await;
    assert_eq!(messages(&rest), ["step", "step", "almost done"]);
    assert_eq!(rest["data"][2]["level"], "warn");
    assert!(rest["next"].is_null());
    let (status, _) = api
        .get(&format!("/api/v1/runs/{id}/logs?after=soon"), &api.read)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .get(
            "/api/v1/runs/0190a8a6-0000-7000-8000-000000000000/logs",
            &api.read,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_at_its_limit_arrives_with_the_default_body_limit() {
    let api = Api::new().await;
    // The limit counts the payload as stored (jsonb): a string takes its length plus a few
    // bytes of headers.
    let filler = kiln_core::MAX_PAYLOAD_BYTES - 64;
    let payload = json!({"ws_id": "x".repeat(filler)});
    let (status, body) = api
        .post(
            "/api/v1/tasks/echo/trigger",
            &api.trigger,
            json!({"payload": payload}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_runs_are_listed_apart_from_queued_ones() {
    use kiln_store::lease::{lease_claim, lease_complete_many, AttemptEnd};
    let api = Api::new().await;
    let (_, first) = api
        .post(
            "/api/v1/tasks/echo/trigger",
            &api.trigger,
            json!({"payload": {"ws_id": "a"}}),
        )
        .await;
    let claim = lease_claim(
        &api.db.pool,
        "w",
        &["echo".to_owned()],
        1,
        Duration::from_secs(30),
        None,
    )
    .await
    .unwrap();
    lease_complete_many(
        &api.db.pool,
        &[AttemptEnd {
            run_id: claim.runs[0].run_id,
            attempt: 1,
            outcome: kiln_core::AttemptOutcome::Failed,
            retry_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            final_status: kiln_core::RunStatus::Failed,
            output: None,
            error: None,
            released: false,
        }],
        false,
        None,
    )
    .await
    .unwrap();
    api.post(
        "/api/v1/tasks/echo/trigger",
        &api.trigger,
        json!({"payload": {"ws_id": "b"}}),
    )
    .await;
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, retrying) = api.get("/api/v1/runs?status=retrying", &api.read).await;
    assert_eq!(ids(&retrying), [first["id"].as_str().unwrap()]);
    assert_eq!(retrying["data"][0]["isRetrying"], true);
    let (_, queued) = api.get("/api/v1/runs?status=queued", &api.read).await;
    assert_eq!(
        ids(&queued).len(),
        2,
        "queued includes runs waiting for a retry"
    );
    let (_, both) = api
        .get("/api/v1/runs?status=retrying,completed", &api.read)
        .await;
    assert_eq!(ids(&both), [first["id"].as_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_failure_answers_500_without_the_databases_text() {
    let api = Api::new().await;
    sqlx::query("DROP TABLE kiln.audit_log")
        .execute(&api.db.pool)
        .await
        .unwrap();
    let (status, body) = api.get("/api/v1/audit", &api.read).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(code(&body), "internal");
    let text = message(&body).to_lowercase();
    for leak in ["relation", "audit_log", "select", "kiln."] {
        assert!(!text.contains(leak), "the error names {leak:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_values_are_422_not_500() {
    let api = Api::new().await;
    let url = "/api/v1/tasks/echo/trigger";
    for options in [
        json!({"maxAttempts": 4_000_000_000u64}),
        json!({"delay": -5000}),
        json!({"delay": 1.5}),
        json!({"ttl": "100000d"}),
        json!({"priority": 18_446_744_073_709_551_615u64}),
    ] {
        let (status, body) = api
            .post(
                url,
                &api.trigger,
                json!({"payload": {"ws_id": "w"}, "options": options}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{options} -> {body}"
        );
    }
    let (_, created) = api
        .post(
            url,
            &api.trigger,
            json!({"payload": {"ws_id": "w"}, "options": {"delay": "1h"}}),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let (status, _) = api
        .post(
            &format!("/api/v1/runs/{id}/reschedule"),
            &api.admin,
            json!({"delay": "100000000d"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api
        .post(
            "/api/v1/queues/echo/concurrency/override",
            &api.admin,
            json!({"limit": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api.get("/api/v1/runs?tag=a%00b", &api.read).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api
        .post(
            "/api/v1/schedules",
            &api.admin,
            json!({"task": "echo", "cron": "0 * * * *", "externalId": "a\u{0}b"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_answers_its_documented_not_found_conflict_and_range_errors() {
    let api = Api::new().await;
    let missing = "0190a8a6-0000-7000-8000-000000000000";
    let expect = |status: StatusCode, body: &Value, want: StatusCode, code_want: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(code(body), code_want, "{body}");
    };
    let (s, b) = api
        .post(
            "/api/v1/tasks/no-such-task/batch",
            &api.trigger,
            json!({"items": [{"payload": {}}]}),
        )
        .await;
    expect(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = api
        .post(
            "/api/v1/tasks/echo/batch",
            &api.trigger,
            json!({"things": []}),
        )
        .await;
    expect(s, &b, StatusCode::BAD_REQUEST, "invalid_request");
    for action in ["replay", "cancel"] {
        let (s, b) = api
            .post(
                &format!("/api/v1/runs/{missing}/{action}"),
                &api.admin,
                Value::Null,
            )
            .await;
        expect(s, &b, StatusCode::NOT_FOUND, "not_found");
    }
    let (s, b) = api
        .post(
            &format!("/api/v1/runs/{missing}/reschedule"),
            &api.admin,
            json!({"delay": "1m"}),
        )
        .await;
    expect(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = api
        .get(
            &format!("/api/v1/runs/{missing}/wait?timeout=1s"),
            &api.trigger,
        )
        .await;
    expect(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = api
        .post(
            "/api/v1/schedules",
            &api.admin,
            json!({"task": "no-such-task", "cron": "0 * * * *"}),
        )
        .await;
    expect(s, &b, StatusCode::NOT_FOUND, "not_found");
    let create = json!({"task": "echo", "cron": "0 * * * *", "deduplicationKey": "one"});
    let (s, first) = api
        .post("/api/v1/schedules", &api.admin, create.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, again) = api.post("/api/v1/schedules", &api.admin, create).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "a dedup key in use updates its schedule"
    );
    assert_eq!(again["id"], first["id"]);
    let (s, b) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/schedules/{missing}"),
            Some(&api.admin),
            None,
        )
        .await;
    expect(s, &b, StatusCode::NOT_FOUND, "not_found");
    for action in ["activate", "deactivate"] {
        let (s, b) = api
            .post(
                &format!("/api/v1/schedules/{missing}/{action}"),
                &api.admin,
                Value::Null,
            )
            .await;
        expect(s, &b, StatusCode::NOT_FOUND, "not_found");
    }
    let (s, b) = api
        .post(
            "/api/v1/queues/nope/concurrency/override",
            &api.admin,
            json!({"limit": 3}),
        )
        .await;
    expect(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = api
        .post(
            "/api/v1/queues/nope/concurrency/reset",
            &api.admin,
            Value::Null,
        )
        .await;
    expect(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = api.get("/api/v1/audit?limit=0", &api.read).await;
    expect(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_option");
    let (_, run) = api
        .post(
            "/api/v1/tasks/echo/trigger",
            &api.trigger,
            json!({"payload": {"ws_id": "w"}}),
        )
        .await;
    let (s, b) = api
        .get(
            &format!(
                "/api/v1/runs/{}/logs?limit=5000",
                run["id"].as_str().unwrap()
            ),
            &api.read,
        )
        .await;
    expect(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_option");
    let (s, b) = api
        .post(
            &format!("/api/v1/runs/{}/replay", run["id"].as_str().unwrap()),
            &api.admin,
            json!({"payload": {"ws_id": 5}}),
        )
        .await;
    expect(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload");
    let (s, b) = api.get("/api/v1/queues/echo?x=1", &api.read).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "unknown query parameters of a plain GET are ignored: {b}"
    );
    assert_eq!(b["name"], "echo");
    let (s, b) = api
        .get(
            &format!("/api/v1/schedules/{}", first["id"].as_str().unwrap()),
            &api.read,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["deduplicationKey"], "one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_cancel_and_replay_take_runs_by_filter_or_ids_up_to_a_limit_and_are_audited() {
    let api = Api::new().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let (status, run) = api
            .post(
                "/api/v1/tasks/echo/trigger",
                &api.trigger,
                json!({"payload": {"ws_id": format!("ws_{i}")},
                       "options": {"delay": "1h", "tags": ["bulk"]}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    // A limit stops the action, and says so.
    let (status, done) = api
        .post(
            "/api/v1/runs/bulk/cancel",
            &api.admin,
            json!({"filter": {"tag": ["bulk"], "status": ["delayed"]}, "limit": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        done,
        json!({"action": "cancel", "matched": 5, "done": 5, "skipped": 0, "capped": true})
    );
    // The rest, by filter; the canceled ones no longer match.
    let (_, done) = api
        .post(
            "/api/v1/runs/bulk/cancel",
            &api.admin,
            json!({"filter": {"tag": ["bulk"], "status": ["delayed"]}}),
        )
        .await;
    assert_eq!(
        done,
        json!({"action": "cancel", "matched": 7, "done": 7, "skipped": 0, "capped": false})
    );
    let (_, delayed) = api
        .get("/api/v1/runs?tag=bulk&status=delayed", &api.read)
        .await;
    assert_eq!(delayed["data"].as_array().unwrap().len(), 0);
    // By ids: finished and unknown runs are skipped.
    let unknown = uuid::Uuid::now_v7().to_string();
    let (_, done) = api
        .post(
            "/api/v1/runs/bulk/cancel",
            &api.admin,
            json!({"ids": [ids[0], ids[1], unknown]}),
        )
        .await;
    assert_eq!(
        done,
        json!({"action": "cancel", "matched": 3, "done": 0, "skipped": 3, "capped": false})
    );
    // Replay by ids: one new run each, marked as the replay of its original.
    let (status, done) = api
        .post(
            "/api/v1/runs/bulk/replay",
            &api.admin,
            json!({"ids": [ids[0], ids[1]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["done"], 2);
    let (_, all) = api.get("/api/v1/runs?tag=bulk&limit=100", &api.read).await;
    let replays: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["replayOf"].as_str())
        .collect();
    assert_eq!(replays.len(), 2);
    assert!(replays.contains(&ids[0].as_str()) && replays.contains(&ids[1].as_str()));

    // Bad requests are named; a key that may not administer is refused.
    let (status, body) = api
        .post(
            "/api/v1/runs/bulk/delete",
            &api.admin,
            json!({"ids": [ids[0]]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message(&body).contains("cancel or replay"), "{body}");
    let (status, body) = api
        .post("/api/v1/runs/bulk/cancel", &api.admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api
        .post(
            "/api/v1/runs/bulk/cancel",
            &api.admin,
            json!({"filter": {"status": ["finished"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(message(&body).contains("\"finished\""), "{body}");
    let (status, _) = api
        .post(
            "/api/v1/runs/bulk/cancel",
            &api.admin,
            json!({"ids": [ids[2]], "limit": 2_000_000}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api
        .post(
            "/api/v1/runs/bulk/cancel",
            &api.trigger,
            json!({"ids": [ids[2]]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, audit) = api.get("/api/v1/audit", &api.read).await;
    let bulk: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("runs.bulk_"))
        .collect();
    assert_eq!(bulk.len(), 4, "one audit entry per bulk action: {bulk:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_keeps_the_requests_trace_context_unless_its_options_give_one() {
    let api = Api::new().await;
    let url = "/api/v1/tasks/echo/trigger";
    let from_header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let from_body = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let trigger = |options: Value, traceparent: Option<&'static str>| {
        let api = &api;
        async move {
            let headers: Vec<(&str, &str)> = traceparent
                .map(|value| vec![("traceparent", value)])
                .unwrap_or_default();
            api.send_with_headers(
                Method::POST,
                url,
                Some(&api.trigger),
                Some(json!({"payload": {"ws_id": "w"}, "options": options})),
                &headers,
            )
            .await
        }
    };
    let stored = |id: Value| {
        let api = &api;
        async move {
            let (status, run) = api
                .get(
                    &format!("/api/v1/runs/{}", id.as_str().unwrap()),
                    &api.trigger,
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            run["traceparent"].clone()
        }
    };

    let (status, run) = trigger(json!({}), Some(from_header)).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(stored(run["id"].clone()).await, json!(from_header));

    let (_, run) = trigger(json!({"traceparent": from_body}), Some(from_header)).await;
    assert_eq!(
        stored(run["id"].clone()).await,
        json!(from_body),
        "the option wins"
    );

    // A malformed header is ignored, as W3C asks of a receiver; nothing is stored.
    let (status, run) = trigger(json!({}), Some("00-not-a-trace-01")).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(stored(run["id"].clone()).await, Value::Null);

    // A malformed option is refused, naming it.
    let (status, body) = trigger(json!({"traceparent": "00-XYZ"}), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(message(&body).contains("traceparent"), "{body}");

    // A batch takes the header for every item that gives none.
    let (status, batch) = api
        .send_with_headers(
            Method::POST,
            "/api/v1/tasks/echo/batch",
            Some(&api.trigger),
            Some(json!({"items": [
                {"payload": {"ws_id": "a"}},
                {"payload": {"ws_id": "b"}, "options": {"traceparent": from_body}}
            ]})),
            &[("traceparent", from_header)],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    assert_eq!(
        stored(batch["data"][0]["id"].clone()).await,
        json!(from_header)
    );
    assert_eq!(
        stored(batch["data"][1]["id"].clone()).await,
        json!(from_body)
    );
}
