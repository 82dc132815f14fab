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

/// A connection as a fresh login role in `kiln_app` (roles are cluster-wide: the name is unique
/// to this test run, and the role is dropped at the end).
async fn app_role_pool(db: &TestDb) -> (sqlx::PgPool, String) {
    use std::str::FromStr;
    let role = format!("kiln_app_probe_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE ROLE {role} LOGIN IN ROLE kiln_app"))
        .execute(&db.pool)
        .await
        .unwrap();
    let options = sqlx::postgres::PgConnectOptions::from_str(&db.url)
        .unwrap()
        .username(&role);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    (pool, role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_triggers_reads_cancels_and_hears_finishes_but_can_do_nothing_else() {
    let (db, client) = registered().await;
    let (app, role) = app_role_pool(&db).await;

    let mut listener = sqlx::postgres::PgListener::connect_with(&app)
        .await
        .unwrap();
    listener.listen("kiln_runs_finished").await.unwrap();
    let id: Uuid = sqlx::query_scalar(
        "SELECT kiln.trigger('echo', '{\"ws_id\": \"app\"}', '{\"tags\": [\"app\"]}')",
    )
    .fetch_one(&app)
    .await
    .unwrap();
    let batch: Vec<(i32, Uuid, bool)> = sqlx::query_as(
        "SELECT * FROM kiln.trigger_batch('echo', '[{\"payload\": {\"ws_id\": \"b1\"}}, {\"payload\": {\"ws_id\": \"b2\"}, \"options\": {\"delay\": \"1h\"}}]')",
    )
    .fetch_all(&app)
    .await
    .unwrap();
    assert_eq!(batch.iter().map(|b| b.0).collect::<Vec<_>>(), [1, 2]);
    let listed: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM kiln.runs_by(p_tag => 'app')")
            .fetch_all(&app)
            .await
            .unwrap();
    assert_eq!(listed, [(id, "queued".to_owned())]);
    let was: String = sqlx::query_scalar("SELECT kiln.cancel($1)")
        .bind(batch[1].1)
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!(was, "delayed");
    let again = sqlx::query("SELECT kiln.cancel($1)")
        .bind(batch[1].1)
        .execute(&app)
        .await
        .unwrap_err();
    assert_eq!(
        again.as_database_error().unwrap().code().as_deref(),
        Some("KL409"),
        "{again}"
    );
    let audit: String =
        sqlx::query_scalar("SELECT actor FROM kiln.audit_log WHERE action = 'run.cancel'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audit, format!("sql:{role}"));

    // The worker runs it; the app hears that it finished and reads the output.
    let worker = InProcessWorker::start(&db, "w1", 2).await;
    let heard = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let note = listener.recv().await.unwrap();
            if note.payload().split(',').any(|p| p == id.to_string()) {
                return;
            }
        }
    })
    .await;
    assert!(heard.is_ok(), "the finish of {id} was announced");
    let run: serde_json::Value = sqlx::query_scalar("SELECT kiln.run($1)")
        .bind(id)
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!(run["status"], "completed");
    assert_eq!(run["output"]["ws_id"], "app");
    assert_eq!(run["attempt_list"][0]["status"], "completed");
    worker.stop().await;

    // What the role cannot do: read or change tables, claim, complete, or call internals.
    let before = client.runs().counts(&Default::default()).await.unwrap();
    for sql in [
        "SELECT count(*) FROM kiln.runs",
        "DELETE FROM kiln.runs",
        "UPDATE kiln.leases SET expires_at = now()",
        "SELECT * FROM kiln.api_keys",
        "SELECT * FROM kiln.claim_runs('w', ARRAY['echo'], 10, 30000)",
        "SELECT * FROM kiln.trigger_runs('echo', ARRAY['{\"payload\": {}}'::jsonb])",
        "SELECT * FROM kiln.cancel_runs(ARRAY[gen_random_uuid()])",
        "SELECT kiln.wait_expire()",
        "INSERT INTO kiln.tasks (id, queue, max_attempts, retry) VALUES ('x', 'x', 1, '{}')",
        "UPDATE kiln.limits SET max_tags = 100",
    ] {
        let error = sqlx::query(sql).execute(&app).await.unwrap_err();
        assert_eq!(
            error.as_database_error().unwrap().code().as_deref(),
            Some("42501"),
            "{sql}: {error}"
        );
    }
    assert_eq!(
        client.runs().counts(&Default::default()).await.unwrap(),
        before
    );
    listener.unlisten_all().await.unwrap();
    drop(listener);
    app.close().await;
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_createrole_the_migration_prints_the_sql_instead_of_failing() {
    let db = TestDb::new().await;
    let role = format!("kiln_owner_probe_{}", Uuid::now_v7().simple());
    // A role like a managed service's: it owns its database but may not create roles. The
    // migration must apply all the same, and say what an administrator should run.
    sqlx::query(&format!("CREATE ROLE {role} LOGIN NOCREATEROLE"))
        .execute(&db.pool)
        .await
        .unwrap();
    let database = format!("{role}_db");
    sqlx::query(&format!("CREATE DATABASE {database} OWNER {role}"))
        .execute(&db.pool)
        .await
        .unwrap();
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(&db.url)
        .unwrap()
        .username(&role)
        .database(&database);
    let pool = sqlx::PgPool::connect_with(options).await.unwrap();
    // Whether kiln_app exists already depends on other tests; the migration works either way
    // for a role that may not create roles (granting to an existing role needs no CREATEROLE).
    kiln_store::migrate(&pool).await.unwrap();
    let id: Uuid =
        sqlx::query_scalar("SELECT kiln.trigger('t', '{}', '{\"allow_unregistered\": true}')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!id.is_nil());
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_a_current_schema_runs_no_ddl() {
    use std::str::FromStr;
    let db = TestDb::new().await;
    // A role that may read which migrations ran but create nothing: on a current schema,
    // migrating must need no more than that (no CREATE ... IF NOT EXISTS, and so no notices).
    let role = format!("kiln_reader_probe_{}", Uuid::now_v7().simple());
    sqlx::raw_sql(&format!(
        "CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA kiln TO {role};
         GRANT SELECT ON kiln.schema_migrations TO {role};"
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let options = sqlx::postgres::PgConnectOptions::from_str(&db.url)
        .unwrap()
        .username(&role);
    let pool = sqlx::PgPool::connect_with(options).await.unwrap();
    let applied = kiln_store::migrate(&pool).await;
    pool.close().await;
    sqlx::raw_sql(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied.unwrap(), Vec::<i32>::new());
}

/// The functions every run goes through plan their statements once per connection (migration
/// 0019): replacing one without restating the setting would bring back planning on every call.
#[tokio::test]
async fn the_hot_functions_keep_generic_plans() {
    let db = TestDb::new().await;
    let settings: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT p.proname::text, p.proconfig FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'kiln'
            AND p.proname IN ('claim_runs', 'trigger_runs', 'schedule_keys', 'notify_ready')
          ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("read the functions' settings");
    let names: Vec<&str> = settings.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "claim_runs",
            "notify_ready",
            "schedule_keys",
            "trigger_runs"
        ],
        "one of each"
    );
    for (name, config) in &settings {
        let config = config.clone().unwrap_or_default();
        assert!(
            config
                .iter()
                .any(|s| s == "plan_cache_mode=force_generic_plan"),
            "kiln.{name} plans each call anew: its settings are {config:?}"
        );
    }
}

/// A batch's specs are matched to their runs by index probes, whatever join methods the planner
/// may use: a generic plan cannot know a batch's length, and a nested loop over two arrays of
/// 20,000 ids took 11 s (migration 0022). With hash and merge joins off, every join is a nested
/// loop; the batch must still be matched in about the time of its inserts.
#[tokio::test]
async fn keyed_batches_match_their_runs_in_linear_time_under_any_join_method() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::raw_sql("SET enable_hashjoin = off; SET enable_mergejoin = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let batch = |first: i32, count: i32| {
        format!(
            "SELECT r.run_id, r.is_cached FROM kiln.trigger_batch('keyed-batch',
                 (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('i', i),
                                                      'options', jsonb_build_object('idempotency_key', 'k' || i)))
                    FROM generate_series({first}, {first} + {count} - 1) i),
                 '{{\"allow_unregistered\": true}}') r
              ORDER BY r.idx"
        )
    };
    let started = std::time::Instant::now();
    let fresh: Vec<(Uuid, bool)> = sqlx::query_as(&batch(1, 20_000))
        .fetch_all(&mut *conn)
        .await
        .expect("a batch of 20,000 keyed specs");
    let took = started.elapsed();
    assert_eq!(fresh.len(), 20_000);
    assert!(fresh.iter().all(|(_, cached)| !cached), "every key was new");
    assert!(
        took < std::time::Duration::from_secs(6),
        "a batch of 20,000 keyed specs took {took:?}: the specs are matched to their runs by a \
         join that grows with the square of the batch"
    );

    // Half of the next batch repeats keys: those specs get the runs already stored, in order.
    let again: Vec<(Uuid, bool)> = sqlx::query_as(&batch(10_001, 20_000))
        .fetch_all(&mut *conn)
        .await
        .expect("a batch that repeats 10,000 keys");
    assert_eq!(again.len(), 20_000);
    assert_eq!(
        &again[..10_000],
        &fresh[10_000..]
            .iter()
            .map(|(id, _)| (*id, true))
            .collect::<Vec<_>>()[..]
    );
    assert!(again[10_000..].iter().all(|(_, cached)| !cached));
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln.runs WHERE task_id = 'keyed-batch'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(stored, 30_000);
}
