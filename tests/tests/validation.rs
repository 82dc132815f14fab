//! One set of rules: every trigger path (Rust client, SQL) goes through the database's one
//! validator, with the limits of `kiln.limits`; refused triggers store nothing and change nothing.

use kiln::{ClientError, ErrorCode, ErrorKind, RunStatus, TriggerOptions};
use kiln_tests::tasks::{Echo, WorkspacePayload};
use kiln_tests::{registered, wait_for_status, InProcessWorker, TestDb};
use uuid::Uuid;

/// SQLSTATE and message of a refused SQL call.
async fn sql_error(db: &TestDb, sql: &str, binds: &[&str]) -> (String, String) {
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    match query.execute(&db.pool).await {
        Ok(_) => panic!("{sql} {binds:?} was accepted"),
        Err(sqlx::Error::Database(e)) => (
            e.code().unwrap_or_default().into_owned(),
            e.message().to_owned(),
        ),
        Err(other) => panic!("{other}"),
    }
}

/// Every run and attempt as text, to show that a refused call changed nothing.
async fn snapshot(db: &TestDb) -> String {
    sqlx::query_scalar(
        "SELECT coalesce(string_agg(r::text, E'\\n' ORDER BY r.id), '') FROM kiln.runs r",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

fn ws(id: &str) -> WorkspacePayload {
    WorkspacePayload { ws_id: id.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_triggers_refuse_every_probe_by_name_and_store_nothing() {
    let (db, client) = registered().await;
    let existing = client.trigger::<Echo>(ws("kept")).await.unwrap().id;
    let before = snapshot(&db).await;
    let long = "k".repeat(3000);
    let long_key = format!(r#"{{"concurrency_key": "{long}"}}"#);
    let long_idem = format!(r#"{{"idempotency_key": "{long}"}}"#);
    let long_tag = format!(r#"{{"tags": ["{long}"]}}"#);
    let parent = format!(r#"{{"parent_run_id": "{existing}"}}"#);
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            r#"{"max_attempts": "3"}"#,
            "KL400",
            "max_attempts must be a whole number from 1 to 1000",
        ),
        (r#"{"max_attempts": 1001}"#, "KL400", "from 1 to 1000"),
        (r#"{"max_attempts": 2.5}"#, "KL400", "whole number"),
        (
            r#"{"tags": [1, {"a": 1}]}"#,
            "KL400",
            "tags must be an array of non-empty strings",
        ),
        (r#"{"tags": "one"}"#, "KL400", "tags must be an array"),
        (
            r#"{"metadata": [1]}"#,
            "KL400",
            "metadata must be a JSON object",
        ),
        (r#"{"queue": "bad queue!"}"#, "KL400", "is not a valid name"),
        (
            r#"{"queue": "brand-new-queue"}"#,
            "KL410",
            "queue \"brand-new-queue\" does not exist",
        ),
        (
            r#"{"max_duration": -1}"#,
            "KL400",
            "\"max_duration\": must not be negative",
        ),
        (
            r#"{"max_duration": 0}"#,
            "KL400",
            "max_duration must be from 1 ms",
        ),
        (
            r#"{"ttl": "4000w"}"#,
            "KL400",
            "ttl must be from 0 to 3650 days",
        ),
        (
            r#"{"priority": 999999999999}"#,
            "KL400",
            "priority must be from 0",
        ),
        (
            r#"{"delay_ms": 5}"#,
            "KL400",
            "unknown trigger option \"delay_ms\"",
        ),
        (r#"{"max_attempts_": 5}"#, "KL400", "unknown trigger option"),
        (&parent, "KL400", "unknown trigger option \"parent_run_id\""),
        (
            r#"{"concurrency_key": ""}"#,
            "KL400",
            "concurrency_key must be a non-empty string",
        ),
        (
            r#"{"concurrency_key": 7}"#,
            "KL400",
            "concurrency_key must be a non-empty string",
        ),
        (
            &long_key,
            "KL400",
            "concurrency_key is 3000 bytes, over the limit of 255",
        ),
        (
            &long_idem,
            "KL400",
            "idempotency_key is 3000 bytes, over the limit of 255",
        ),
        (&long_tag, "KL400", "over the limit of 255 bytes"),
        (
            r#"{"allow_unregistered": "yes"}"#,
            "KL400",
            "must be true or false",
        ),
    ];
    for (options, code, needle) in &cases {
        let (got_code, message) = sql_error(
            &db,
            "SELECT kiln.trigger('echo', '{\"ws_id\": \"x\"}', $1::jsonb)",
            &[options],
        )
        .await;
        assert_eq!(&got_code, code, "{options}: {message}");
        assert!(message.contains(needle), "{options}: {message}");
        assert!(
            !message.contains("SELECT") && !message.contains("INSERT"),
            "no statement text: {message}"
        );
    }
    let long_task = "t".repeat(5000);
    let (code, message) = sql_error(&db, "SELECT kiln.trigger($1, '{}')", &[&long_task]).await;
    assert_eq!(code, "KL400");
    assert!(
        message.contains("is not valid: task ids are 1 to 128"),
        "{message}"
    );
    assert!(message.len() < 300, "the id is cut short in the message");

    // The internal form is checked as strictly: a parent must exist, and the root is derived.
    let (code, message) = sql_error(
        &db,
        "SELECT * FROM kiln.trigger_runs('echo', ARRAY[$1::jsonb])",
        &[&format!(
            r#"{{"payload": {{}}, "parent_run_id": "{}"}}"#,
            Uuid::now_v7()
        )],
    )
    .await;
    assert_eq!(code, "KL410", "{message}");
    assert!(message.contains("parent run") && message.contains("does not exist"));
    let (code, message) = sql_error(
        &db,
        "SELECT * FROM kiln.trigger_runs('echo', ARRAY[$1::jsonb, $2::jsonb])",
        &[r#"{"payload": {}}"#, r#"{"payload": {}, "parent": "x"}"#],
    )
    .await;
    assert_eq!(code, "KL400");
    assert!(
        message.contains("batch item 1: unknown option \"parent\""),
        "{message}"
    );
    // A batch names the refused item (0-based).
    let (code, message) = sql_error(
        &db,
        "SELECT * FROM kiln.trigger_batch('echo', $1::jsonb)",
        &[r#"[{"payload": {"ws_id": "a"}}, {"payload": {"ws_id": "b"}, "options": {"tags": [""]}}]"#],
    )
    .await;
    assert_eq!(code, "KL400");
    assert!(message.contains("batch item 1: tags"), "{message}");

    assert_eq!(
        snapshot(&db).await,
        before,
        "refused triggers changed nothing"
    );

    // Inputs that used to escape as raw Postgres errors (casts, overflows, out-of-range dates).
    for (options, needle) in [
        ("5", "must be a JSON object"),
        (r#""{\"delay\": \"5m\"}""#, "must be a JSON object"),
        (r#"{"delay": 1e400}"#, "delay must be from 0 to 3650 days"),
        (r#"{"ttl": 1e131071}"#, "ttl must be from 0 to 3650 days"),
        (
            r#"{"delay": "294276-12-31T00:00:00Z"}"#,
            "must be within 3650 days of now",
        ),
        (
            r#"{"delay": "infinity"}"#,
            "must be within 3650 days of now",
        ),
        (
            r#"{"delay": "-infinity"}"#,
            "must be within 3650 days of now",
        ),
        (
            r#"{"delay": "2900-01-01T00:00:00Z"}"#,
            "must be within 3650 days of now",
        ),
    ] {
        let (code, message) = sql_error(
            &db,
            "SELECT kiln.trigger('echo', '{\"ws_id\": \"x\"}', $1::jsonb)",
            &[options],
        )
        .await;
        assert_eq!(code, "KL400", "{options}: {message}");
        assert!(message.contains(needle), "{options}: {message}");
    }
    let (code, message) = sql_error(
        &db,
        "SELECT * FROM kiln.trigger_runs('echo', ARRAY[ARRAY['{}'::jsonb, '{}'::jsonb], ARRAY['{}'::jsonb, '{}'::jsonb]])",
        &[],
    )
    .await;
    assert_eq!(code, "KL400", "{message}");
    assert!(message.contains("one-dimensional"), "{message}");
    assert_eq!(
        snapshot(&db).await,
        before,
        "refused triggers changed nothing"
    );

    // Whole numbers written as 3.0, null options and JSON null are read as meant.
    for options in [
        r#"{"max_attempts": 3.0}"#,
        r#"{"ttl": null, "delay": null}"#,
        "null",
    ] {
        sqlx::query("SELECT kiln.trigger('echo', '{\"ws_id\": \"x\"}', $1::jsonb)")
            .bind(options)
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{options}: {e}"));
    }
    // Without its row, kiln.limits checks nothing: triggers are refused until it is restored.
    sqlx::query("DELETE FROM kiln.limits")
        .execute(&db.pool)
        .await
        .unwrap();
    let (code, message) = sql_error(
        &db,
        "SELECT kiln.trigger('echo', '{\"ws_id\": \"x\"}')",
        &[],
    )
    .await;
    assert_eq!(code, "KL400");
    assert!(message.contains("kiln.limits has no row"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_triggers_meet_the_same_rules_with_typed_errors() {
    let (db, client) = registered().await;
    let before = snapshot(&db).await;
    let long = "k".repeat(3000);
    let refused: Vec<(TriggerOptions, ErrorCode, &str)> = vec![
        (
            TriggerOptions::new().concurrency_key(long.clone()),
            ErrorCode::InvalidOption,
            "concurrency_key is 3000 bytes",
        ),
        (
            (0..11).fold(TriggerOptions::new(), |o, i| o.tag(format!("t{i}"))),
            ErrorCode::InvalidOption,
            "at most 10 tags, got 11",
        ),
        (
            TriggerOptions::new().max_attempts(0),
            ErrorCode::InvalidOption,
            "max_attempts must be a whole number from 1",
        ),
        (
            TriggerOptions::new().queue("somewhere-else"),
            ErrorCode::NotFound,
            "queue \"somewhere-else\" does not exist",
        ),
        (
            TriggerOptions::new().ttl(std::time::Duration::from_secs(u64::MAX)),
            ErrorCode::InvalidOption,
            "ttl must be from 0 to 3650 days",
        ),
        (
            TriggerOptions::new().concurrency_key("a\u{0}b"),
            ErrorCode::InvalidOption,
            "concurrency_key holds the character \\u0000",
        ),
    ];
    for (options, code, needle) in refused {
        let error = client
            .trigger::<Echo>(ws("w"))
            .options(options.clone())
            .await
            .expect_err(needle);
        assert_eq!(error.code(), code, "{options:?}: {error}");
        assert!(error.to_string().contains(needle), "{error}");
    }
    let error = client
        .trigger::<Echo>(ws(&"x".repeat(kiln::MAX_PAYLOAD_BYTES)))
        .await
        .expect_err("a payload over 4 MiB");
    assert_eq!(error.code(), ErrorCode::PayloadTooLarge, "{error}");
    assert!(error.to_string().contains("payload is"), "{error}");
    let error = client
        .trigger::<Echo>(ws("nul \u{0} here"))
        .await
        .expect_err("a NUL in the payload");
    assert!(
        error
            .to_string()
            .contains("payload.ws_id holds the character"),
        "{error}"
    );
    assert!(matches!(error, ClientError::InvalidTrigger { .. }));
    assert_eq!(snapshot(&db).await, before);

    // A queue an operator created may be named; a trigger never creates one.
    client.queues().create("overflow", Some(2)).await.unwrap();
    let run = client
        .trigger::<Echo>(ws("w"))
        .queue("overflow")
        .await
        .unwrap();
    assert_eq!(
        client.runs().retrieve(run.id).await.unwrap().queue,
        "overflow"
    );
    let again = client.queues().create("overflow", None).await.unwrap_err();
    assert_eq!(again.code(), ErrorCode::Conflict, "{again}");
    let bad = client.queues().create("no spaces", None).await.unwrap_err();
    assert_eq!(bad.code(), ErrorCode::InvalidOption, "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_are_configurable_in_one_row() {
    let (db, client) = registered().await;
    sqlx::query("UPDATE kiln.limits SET max_tags = 2, max_key_bytes = 8, max_attempts = 5")
        .execute(&db.pool)
        .await
        .unwrap();
    let error = client
        .trigger::<Echo>(ws("w"))
        .tag("a")
        .tag("b")
        .tag("c")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("at most 2 tags"), "{error}");
    let error = client
        .trigger::<Echo>(ws("w"))
        .concurrency_key("123456789")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("over the limit of 8"), "{error}");
    let error = client
        .trigger::<Echo>(ws("w"))
        .max_attempts(6)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("from 1 to 5"), "{error}");
    client
        .trigger::<Echo>(ws("w"))
        .tag("a")
        .tag("b")
        .concurrency_key("12345678")
        .max_attempts(5)
        .await
        .unwrap();

    // The limits table refuses nonsense itself.
    let (code, _) = sql_error(&db, "UPDATE kiln.limits SET max_key_bytes = 5000", &[]).await;
    assert_eq!(code, "23514", "a check constraint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_its_limit_fails_the_run_instead_of_wedging_the_worker() {
    let (db, client) = registered().await;
    sqlx::query("UPDATE kiln.limits SET max_output_bytes = 1024")
        .execute(&db.pool)
        .await
        .unwrap();
    let big = client.trigger::<Echo>(ws(&"x".repeat(2000))).await.unwrap();
    let small = client.trigger::<Echo>(ws("small")).await.unwrap();
    let worker = InProcessWorker::start(&db, "w1", 2).await;
    let failed = wait_for_status(&client, big.id, RunStatus::Failed).await;
    let error = failed.error.expect("an error");
    assert_eq!(error.kind, ErrorKind::Unstorable);
    assert!(
        error
            .message
            .contains("output could not be stored: output is")
            && error.message.contains("over the limit of 1024 bytes"),
        "{}",
        error.message
    );
    wait_for_status(&client, small.id, RunStatus::Completed).await;
    // An error over the limit too: its replacement keeps only the start of the message, so it
    // fits, and the run ends after one attempt (it is not left to the rescuer and run again).
    let big_error = client
        .trigger::<kiln_tests::tasks::Unstorable>(kiln_tests::tasks::UnstorablePayload {
            nul_in: "big-error".into(),
        })
        .await
        .unwrap();
    let failed = wait_for_status(&client, big_error.id, RunStatus::Failed).await;
    let error = failed.error.expect("an error");
    assert_eq!(error.kind, ErrorKind::Unstorable);
    assert!(
        error
            .message
            .contains("error could not be stored: error is"),
        "{}",
        error.message
    );
    assert_eq!(failed.attempts, 1);
    worker.stop().await;
}

/// The rules written in both languages agree: task ids and queue names, durations, and the
/// defaults a run of an unregistered task gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_sql_agree_on_names_durations_and_defaults() {
    let db = TestDb::new().await;
    let names = [
        "schedule-task",
        "a",
        "google-calendar-sync",
        "ns:task/v2.1_x",
        "",
        "has space",
        "ünïcode",
        "semi;colon",
        "new\nline",
        &"n".repeat(128),
        &"n".repeat(129),
        "UPPER-lower-0123",
        "quote'd",
    ];
    for name in names {
        let sql: bool = sqlx::query_scalar("SELECT kiln.valid_name($1)")
            .bind(name)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            kiln::validate_task_id(name).is_ok(),
            sql,
            "task id {name:?}"
        );
    }
    // Every duration Rust reads, SQL reads the same; SQL also reads Postgres intervals ("5
    // minutes", "1.5h"), a superset. Both refuse what is neither.
    for text in [
        "500ms", "30s", "5m", "1h30m", "2d", "1w", "1w2d3h", "0s", "90s",
    ] {
        let rust = kiln::parse_duration(text).unwrap().as_millis() as i64;
        let sql: i64 = sqlx::query_scalar("SELECT kiln.duration_ms(to_jsonb($1::text), 'test')")
            .bind(text)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(rust, sql, "duration {text:?}");
    }
    for text in ["m", "-5s", "soon", ""] {
        assert!(kiln::parse_duration(text).is_err(), "{text:?}");
        let sql =
            sqlx::query_scalar::<_, i64>("SELECT kiln.duration_ms(to_jsonb($1::text), 'test')")
                .bind(text)
                .fetch_one(&db.pool)
                .await;
        assert!(sql.is_err(), "SQL refuses {text:?}");
    }
    let defaults: serde_json::Value =
        sqlx::query_scalar("SELECT kiln.default_task_definition('x')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let rust = kiln::TaskDefinition::new().id("x");
    let mut expected = kiln_store::run::definition_json(&rust);
    // The SQL default keeps max_attempts beside the retry policy, not inside it.
    expected["retry"]
        .as_object_mut()
        .unwrap()
        .remove("max_attempts");
    for field in [
        "queue",
        "max_attempts",
        "retry",
        "max_duration_ms",
        "ttl_ms",
        "priority_s",
    ] {
        assert_eq!(defaults[field], expected[field], "default {field}");
    }
    let idempotency_ttl_ms: i64 = sqlx::query_scalar(
        "SELECT (regexp_match(prosrc, 'idempotency_key_ttl_ms''\\)::numeric::bigint, (\\d+)\\)'))[1]::bigint
           FROM pg_proc WHERE proname = 'trigger_runs'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        idempotency_ttl_ms as u128,
        kiln::DEFAULT_IDEMPOTENCY_KEY_TTL.as_millis()
    );
    let limits: (i32, i32, i32, i32, i64) = sqlx::query_as(
        "SELECT max_payload_bytes, max_key_bytes, max_tags, max_attempts, max_duration_ms FROM kiln.limits",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        limits,
        (
            kiln::MAX_PAYLOAD_BYTES as i32,
            kiln::MAX_KEY_BYTES as i32,
            kiln::MAX_TAGS as i32,
            kiln::MAX_ATTEMPTS_LIMIT as i32,
            kiln::MAX_OPTION_DURATION.as_millis() as i64
        ),
        "the documented defaults are the table's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_its_retry_cannot_be_rescheduled_and_a_moved_run_starts_at_once() {
    use kiln_store::lease::{lease_claim, lease_complete_many, AttemptEnd};
    let (db, client) = registered().await;
    let retrying = client.trigger::<Echo>(ws("r")).await.unwrap().id;
    let claim = lease_claim(
        &db.pool,
        "w",
        &["echo".to_owned()],
        1,
        std::time::Duration::from_secs(30),
        None,
    )
    .await
    .unwrap();
    assert_eq!(claim.runs[0].run_id, retrying);
    lease_complete_many(
        &db.pool,
        &[AttemptEnd {
            run_id: retrying,
            attempt: 1,
            outcome: kiln::AttemptOutcome::Failed,
            retry_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            final_status: RunStatus::Failed,
            output: None,
            error: None,
            released: false,
        }],
        false,
        None,
    )
    .await
    .unwrap();
    let before = snapshot(&db).await;
    let error = client
        .runs()
        .reschedule(retrying, chrono::Utc::now())
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Conflict);
    assert!(
        error.to_string().contains("is waiting for its retry"),
        "{error}"
    );
    assert_eq!(snapshot(&db).await, before, "nothing moved");

    // A delayed run moved to now starts at once: the reschedule wakes the workers (their poll
    // interval here is far longer than the wait allowed).
    let delayed = client
        .trigger::<Echo>(ws("d"))
        .delay(std::time::Duration::from_secs(3600))
        .await
        .unwrap()
        .id;
    let worker = kiln::Worker::builder()
        .database_url(&db.url)
        .worker_id("waker")
        .concurrency(2)
        .poll_interval(std::time::Duration::from_secs(30))
        .register(Echo)
        .build()
        .await
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    let running = tokio::spawn(async move { worker.run_until(token).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let moved_at = std::time::Instant::now();
    client
        .runs()
        .reschedule(delayed, chrono::Utc::now())
        .await
        .unwrap();
    let done = wait_for_status(&client, delayed, RunStatus::Completed).await;
    assert!(
        moved_at.elapsed() < std::time::Duration::from_secs(5),
        "started {:?} after the reschedule",
        moved_at.elapsed()
    );
    assert_eq!(done.attempts, 1);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_no_worker_serves_are_visible_as_such() {
    let (db, client) = registered().await;
    // The worker that registered the tasks has stopped: nothing serves them now.
    client.trigger::<Echo>(ws("a")).await.unwrap();
    client.trigger::<Echo>(ws("b")).await.unwrap();
    client
        .trigger_by_id("never-registered", serde_json::json!({}))
        .allow_unregistered()
        .await
        .unwrap();
    let echo = client.tasks().retrieve("echo").await.unwrap();
    assert_eq!((echo.served, echo.waiting), (false, 2));
    let unregistered = client.tasks().unregistered_waiting().await.unwrap();
    assert_eq!(unregistered.len(), 1);
    assert_eq!(
        (unregistered[0].task_id.as_str(), unregistered[0].waiting),
        ("never-registered", 1)
    );

    let worker = InProcessWorker::start(&db, "server", 2).await;
    kiln_tests::wait_until(
        "echo is served and its runs ran",
        std::time::Duration::from_secs(20),
        || async {
            let echo = client.tasks().retrieve("echo").await.unwrap();
            echo.served && echo.waiting == 0
        },
    )
    .await;
    worker.stop().await;
    assert!(!client.tasks().retrieve("echo").await.unwrap().served);
}
