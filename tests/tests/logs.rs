//! Run logs: lines a body writes with `ctx.log()` are kept with the run and attempt, in order,
//! with their fields; an attempt keeps at most its cap; lines already flushed survive a worker
//! killed with SIGKILL; retention deletes them with their run.

use std::time::Duration;

use kiln::{LogLevel, RunStatus};
use kiln_tests::tasks::*;
use kiln_tests::{registered, wait_for_status, wait_until, InProcessWorker, WorkerProcess};

const WORKER_EXE: &str = env!("CARGO_BIN_EXE_kiln-test-worker");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_with_ctx_log_are_kept_in_order_with_their_fields() {
    let (db, client) = registered().await;
    let worker = InProcessWorker::start(&db, "w1", 2).await;
    let run = client
        .trigger::<Chatty>(ChattyPayload {
            lines: 3,
            then_wait: false,
        })
        .await
        .unwrap();
    wait_for_status(&client, run.id, RunStatus::Completed).await;
    // Stored before the status changed: no wait needed.
    let lines = client.runs().logs(run.id, None, None, 100).await.unwrap();
    let seen: Vec<(u32, u32, LogLevel, &str, serde_json::Value)> = lines
        .iter()
        .map(|l| {
            (
                l.attempt,
                l.seq,
                l.level,
                l.message.as_str(),
                l.fields.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, 1, LogLevel::Info, "starting", serde_json::json!({})),
            (1, 2, LogLevel::Info, "step", serde_json::json!({"i": 0})),
            (1, 3, LogLevel::Info, "step", serde_json::json!({"i": 1})),
            (1, 4, LogLevel::Info, "step", serde_json::json!({"i": 2})),
            (
                1,
                5,
                LogLevel::Warn,
                "almost done",
                serde_json::json!({"left": 0})
            ),
        ]
    );
    assert!(lines.windows(2).all(|w| w[0].at <= w[1].at));
    let after = client
        .runs()
        .logs(run.id, Some(1), Some((1, 3)), 100)
        .await
        .unwrap();
    assert_eq!(after.iter().map(|l| l.seq).collect::<Vec<_>>(), [4, 5]);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_keeps_at_most_its_cap_then_one_truncation_marker() {
    let (db, client) = registered().await;
    let worker = InProcessWorker::start(&db, "w1", 2).await;
    let run = client
        .trigger::<Chatty>(ChattyPayload {
            lines: 1_500,
            then_wait: false,
        })
        .await
        .unwrap();
    wait_for_status(&client, run.id, RunStatus::Completed).await;
    let lines = client.runs().logs(run.id, None, None, 1_000).await.unwrap();
    let rest = client
        .runs()
        .logs(run.id, None, Some((1, 1_000)), 1_000)
        .await
        .unwrap();
    assert_eq!(lines.len(), 1_000, "the default cap is 1,000 lines");
    assert_eq!(lines[999].message, "step");
    assert_eq!(rest.len(), 1, "one marker after the cap");
    assert_eq!(rest[0].level, LogLevel::Warn);
    assert!(
        rest[0].message.starts_with("log truncated"),
        "{}",
        rest[0].message
    );
    assert_eq!(rest[0].fields, serde_json::json!({"kiln": "truncated"}));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_flushed_while_the_body_runs_survive_a_worker_killed_with_sigkill() {
    let (db, client) = registered().await;
    let mut worker = WorkerProcess::new("doomed", 2)
        .only(&["chatty"])
        .spawn(WORKER_EXE, &db);
    let run = client
        .trigger::<Chatty>(ChattyPayload {
            lines: 2,
            then_wait: true,
        })
        .await
        .unwrap();
    // The body logged four lines and now waits: they reach the database within a flush
    // interval, while it still runs.
    wait_until(
        "the running body's lines are stored",
        Duration::from_secs(20),
        || async {
            client
                .runs()
                .logs(run.id, None, None, 100)
                .await
                .unwrap()
                .len()
                == 4
        },
    )
    .await;
    assert_eq!(
        client.runs().retrieve(run.id).await.unwrap().status,
        RunStatus::Executing
    );
    worker.kill().await.expect("SIGKILL the worker");
    let lines = client.runs().logs(run.id, None, None, 100).await.unwrap();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3].message, "almost done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_a_runs_lines_with_the_run() {
    let (db, client) = registered().await;
    let worker = InProcessWorker::start(&db, "w1", 2).await;
    let run = client
        .trigger::<Chatty>(ChattyPayload {
            lines: 1,
            then_wait: false,
        })
        .await
        .unwrap();
    wait_for_status(&client, run.id, RunStatus::Completed).await;
    worker.stop().await;
    assert_eq!(
        client
            .runs()
            .logs(run.id, None, None, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    let deleted = kiln_store::run::run_delete_finished_before(
        &db.pool,
        chrono::Utc::now() + chrono::Duration::hours(1),
        100,
    )
    .await
    .unwrap();
    assert!(deleted >= 1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.run_logs WHERE run_id = $1")
        .bind(run.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_events_in_a_body_are_kept_with_the_layer_installed() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(kiln::log_layer())
        .try_init();
    let (db, client) = registered().await;
    let worker = InProcessWorker::start(&db, "w1", 2).await;
    let run = client.trigger::<Traced>(()).await.unwrap();
    wait_for_status(&client, run.id, RunStatus::Completed).await;
    let lines = client.runs().logs(run.id, None, None, 100).await.unwrap();
    let seen: Vec<(LogLevel, &str, serde_json::Value)> = lines
        .iter()
        .map(|l| (l.level, l.message.as_str(), l.fields.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (LogLevel::Info, "before", serde_json::json!({})),
            (
                LogLevel::Info,
                "synced via tracing",
                serde_json::json!({"events": 3})
            ),
            (
                LogLevel::Warn,
                "slow provider",
                serde_json::json!({"ws_id": "w1"})
            ),
            (LogLevel::Info, "after", serde_json::json!({})),
        ]
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_stored_as_chunks_read_back_in_order_across_chunks_and_replayed_flushes() {
    let (db, client) = registered().await;
    let run = client
        .trigger::<Chatty>(ChattyPayload {
            lines: 0,
            then_wait: false,
        })
        .await
        .unwrap();
    let line = |attempt: u32, seq: u32| kiln_store::run_log::NewLogLine {
        run_id: run.id,
        attempt,
        seq,
        at: chrono::Utc::now(),
        level: LogLevel::Info,
        message: format!("a{attempt} line {seq}"),
        fields: serde_json::json!({ "seq": seq }).to_string(),
    };
    let store = |lines: Vec<kiln_store::run_log::NewLogLine>| {
        let pool = db.pool.clone();
        async move { kiln_store::run_log::run_log_insert_many(&pool, &lines).await }
    };
    // A flush with two attempts, lines out of order within one attempt.
    store(vec![line(1, 2), line(2, 1), line(1, 1), line(1, 3)])
        .await
        .unwrap();
    // Its answer was lost: the retry carries the same lines plus later ones, in one chunk.
    store(vec![
        line(1, 1),
        line(1, 2),
        line(1, 3),
        line(1, 4),
        line(1, 5),
    ])
    .await
    .unwrap();
    // A replay of the shorter batch does not shrink what is stored.
    store(vec![line(1, 1), line(1, 2)]).await.unwrap();
    // A message and fields that need escaping in the stored text come back as they were.
    let awkward = kiln_store::run_log::NewLogLine {
        message: "quote \" backslash \\ newline \n tab \t é 🔥 [1,\"x\"]".to_owned(),
        fields: serde_json::json!({ "nested": { "list": [1, "two\nlines"] }, "seq": 6 })
            .to_string(),
        ..line(1, 6)
    };
    store(vec![awkward.clone(), line(2, 2)]).await.unwrap();
    // A chunk as stored before migration 0016 (parallel arrays) is still read.
    sqlx::query(
        "INSERT INTO kiln.run_log_chunks (run_id, attempt, first_seq, last_seq, seqs, ats, levels,
                                          messages, fields)
         VALUES ($1, 3, 1, 2, '{1,2}', ARRAY[now(), now()], '{info,error}',
                 '{\"old line 1\",\"old line 2\"}', ARRAY['{\"old\": 1}', '{}'])",
    )
    .bind(run.id)
    .execute(&db.pool)
    .await
    .unwrap();

    let all = client.runs().logs(run.id, None, None, 100).await.unwrap();
    let order: Vec<(u32, u32)> = all.iter().map(|l| (l.attempt, l.seq)).collect();
    assert_eq!(
        order,
        [
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (1, 5),
            (1, 6),
            (2, 1),
            (2, 2),
            (3, 1),
            (3, 2)
        ]
    );
    assert_eq!(all[3].message, "a1 line 4");
    assert_eq!(all[3].fields, serde_json::json!({ "seq": 4 }));
    assert_eq!(all[5].message, awkward.message);
    assert_eq!(
        all[5].fields,
        serde_json::from_str::<serde_json::Value>(&awkward.fields).unwrap()
    );
    assert_eq!(
        (all[5].at - awkward.at).num_microseconds(),
        Some(0),
        "the time is kept to the microsecond"
    );
    assert_eq!(all[9].message, "old line 2");
    assert_eq!(all[9].level, LogLevel::Error);
    assert_eq!(all[8].fields, serde_json::json!({ "old": 1 }));
    // Pages that start inside a chunk.
    let page = client
        .runs()
        .logs(run.id, None, Some((1, 4)), 3)
        .await
        .unwrap();
    let order: Vec<(u32, u32)> = page.iter().map(|l| (l.attempt, l.seq)).collect();
    assert_eq!(order, [(1, 5), (1, 6), (2, 1)]);
    let second = client.runs().logs(run.id, Some(2), None, 10).await.unwrap();
    assert_eq!(second.len(), 2);
    // A page that crosses from text chunks into an array chunk.
    let page = client
        .runs()
        .logs(run.id, None, Some((2, 1)), 2)
        .await
        .unwrap();
    let order: Vec<(u32, u32)> = page.iter().map(|l| (l.attempt, l.seq)).collect();
    assert_eq!(order, [(2, 2), (3, 1)]);
    // The per-line view for SQL readers.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.run_logs WHERE run_id = $1")
        .bind(run.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 10);
}
