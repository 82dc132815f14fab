//! The SQL interface for apps in other languages: `kiln.trigger(task_id, payload, options)`.

use kiln::RunStatus;
use kiln_tests::{registered, wait_for_status, InProcessWorker, TestDb};
use uuid::Uuid;

async fn trigger(db: &TestDb, task: &str, payload: &str, options: &str) -> Result<Uuid, String> {
    sqlx::query_scalar("SELECT kiln.trigger($1, $2::jsonb, $3::jsonb)")
        .bind(task)
        .bind(payload)
        .bind(options)
        .fetch_one(&db.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(e) => {
                let hint = e
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|pg| pg.hint())
                    .unwrap_or_default()
                    .to_owned();
                format!("{} [{}] {hint}", e.message(), e.code().unwrap_or_default())
            }
            other => other.to_string(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_callers_trigger_with_the_documented_options_and_workers_run_them() {
    let (db, client) = registered().await;

    let id = trigger(
        &db,
        "echo",
        r#"{"ws_id": "ws_sql"}"#,
        r#"{"concurrency_key": "ws_sql", "tags": ["sql"], "metadata": {"from": "psql"},
            "priority": 30, "ttl": "1h", "max_attempts": 2, "idempotency_key": "sql-1",
            "idempotency_key_ttl": "1d", "max_duration": "90s"}"#,
    )
    .await
    .unwrap();
    let run = client.runs().retrieve(id).await.unwrap();
    assert_eq!(
        (
            run.status,
            run.concurrency_key.as_deref(),
            run.priority_s,
            run.max_attempts
        ),
        (RunStatus::Queued, Some("ws_sql"), 30, 2)
    );
    assert_eq!(run.tags, ["sql"]);
    assert_eq!(run.metadata, serde_json::json!({"from": "psql"}));
    assert_eq!(
        (run.expires_at.unwrap() - run.available_at).num_seconds(),
        3600
    );
    let again = trigger(
        &db,
        "echo",
        r#"{"ws_id": "other"}"#,
        r#"{"idempotency_key": "sql-1"}"#,
    )
    .await
    .unwrap();
    assert_eq!(again, id, "a live idempotency key returns the existing run");

    let delayed = trigger(&db, "echo", r#"{"ws_id": "d"}"#, r#"{"delay": "2s"}"#)
        .await
        .unwrap();
    let run = client.runs().retrieve(delayed).await.unwrap();
    assert_eq!(run.status, RunStatus::Delayed);
    assert_eq!((run.available_at - run.created_at).num_seconds(), 2);
    let at = trigger(
        &db,
        "echo",
        r#"{"ws_id": "t"}"#,
        r#"{"delay": "2030-01-01T00:00:00Z"}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        client
            .runs()
            .retrieve(at)
            .await
            .unwrap()
            .available_at
            .to_rfc3339(),
        "2030-01-01T00:00:00+00:00"
    );

    let worker = InProcessWorker::start(&db, "w1", 2).await;
    let run = wait_for_status(&client, id, RunStatus::Completed).await;
    assert_eq!(
        run.output,
        Some(serde_json::json!({"ws_id": "ws_sql", "success": true, "error": null}))
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_callers_get_errors_that_name_the_problem_and_store_nothing() {
    let (db, _client) = registered().await;
    let cases = [
        ("shedule-task", "{}", r#"{}"#, "KL404", "not registered"),
        (
            "echo",
            "{}",
            r#"{"concurency_key": "w1"}"#,
            "KL400",
            "unknown trigger option \"concurency_key\"",
        ),
        (
            "echo",
            "{}",
            r#"{"delay": "tomorrow-ish"}"#,
            "KL400",
            "neither a duration nor a timestamp",
        ),
        (
            "echo",
            "{}",
            r#"{"ttl": "forever"}"#,
            "KL400",
            "\"ttl\": \"forever\" is not a duration",
        ),
        (
            "echo",
            "{}",
            r#"{"max_attempts": 0}"#,
            "KL400",
            "max_attempts",
        ),
        (
            "echo",
            "{}",
            r#"{"tags": ["1","2","3","4","5","6","7","8","9","10","11"]}"#,
            "KL400",
            "tags",
        ),
        (
            "echo",
            "{}",
            r#"["not", "an", "object"]"#,
            "KL400",
            "must be a JSON object",
        ),
    ];
    for (task, payload, options, code, needle) in cases {
        let error = trigger(&db, task, payload, options)
            .await
            .expect_err(options);
        assert!(
            error.contains(code) && error.contains(needle),
            "{options}: {error}"
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    let allowed = trigger(&db, "shedule-task", "{}", r#"{"allow_unregistered": true}"#).await;
    assert!(allowed.is_ok(), "{allowed:?}");
}
