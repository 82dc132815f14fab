//! A run's lifecycle against real Postgres: triggering and its options, retries, aborts,
//! timeouts, cancels, ttl, delays, idempotency, pause and resume, listing and replay.

use std::time::Duration;

use kiln::{
    BatchItem, CancelOutcome, Client, ClientError, ErrorKind, RunFilter, RunStatus, TriggerOptions,
};
use kiln_tests::tasks::*;
use kiln_tests::{count_status, registered, wait_for_status, InProcessWorker, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_trigger_completes_with_a_structured_output_and_one_attempt() {
    let db = TestDb::new().await;
    let worker = InProcessWorker::start(&db, "w1", 4).await;
    let client = Client::new(db.pool.clone());
    let handle = client
        .trigger::<Echo>(WorkspacePayload {
            ws_id: "ws_1".into(),
        })
        .tag("calendar")
        .await
        .unwrap();
    assert!(!handle.is_cached);
    let run = wait_for_status(&client, handle.id, RunStatus::Completed).await;
    assert_eq!(
        run.output,
        Some(serde_json::json!({"ws_id": "ws_1", "success": true, "error": null}))
    );
    assert_eq!(run.attempts, 1);
    assert_eq!(run.attempt_list.len(), 1);
    assert_eq!(run.attempt_list[0].status, "completed");
    assert_eq!(run.attempt_list[0].worker_id, "w1");
    assert_eq!(run.tags, ["calendar"]);
    assert!(run.finished_at.is_some() && run.started_at.is_some());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_errors_retry_with_backoff_then_succeed_or_fail_with_every_attempt_recorded() {
    let db = TestDb::new().await;
    let worker = InProcessWorker::start(&db, "w1", 4).await;
    let client = Client::new(db.pool.clone());
    let recovers = client
        .trigger::<Flaky>(FlakyPayload { succeed_on: 3 })
        .await
        .unwrap();
    let never = client
        .trigger::<Flaky>(FlakyPayload { succeed_on: 0 })
        .await
        .unwrap();

    let run = wait_for_status(&client, recovers.id, RunStatus::Completed).await;
    assert_eq!(run.output, Some(serde_json::json!(3)));
    let outcomes: Vec<&str> = run.attempt_list.iter().map(|a| a.status.as_str()).collect();
    assert_eq!(outcomes, ["failed", "failed", "completed"]);
    // Backoff of 100 ms then 200 ms (factor 2, not randomized) between attempts.
    let gap1 = run.attempt_list[1].started_at - run.attempt_list[0].finished_at.unwrap();
    let gap2 = run.attempt_list[2].started_at - run.attempt_list[1].finished_at.unwrap();
    assert!(gap1.num_milliseconds() >= 90, "first retry after {gap1}");
    assert!(gap2.num_milliseconds() >= 190, "second retry after {gap2}");

    let run = wait_for_status(&client, never.id, RunStatus::Failed).await;
    assert_eq!(run.attempts, 3);
    let error = run.error.expect("a failed run keeps its error");
    assert_eq!(error.kind, ErrorKind::Error);
    assert!(error.message.contains("attempt 3"), "{}", error.message);
    assert!(run.attempt_list.iter().all(|a| a.error.is_some()));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_bad_payload_and_panic_are_handled_as_documented() {
    let db = TestDb::new().await;
    let worker = InProcessWorker::start(&db, "w1", 4).await;
    let client = Client::new(db.pool.clone());

    let aborted = client.trigger::<Aborting>(()).await.unwrap();
    let run = wait_for_status(&client, aborted.id, RunStatus::Failed).await;
    assert_eq!(
        run.attempts, 1,
        "abort must not retry though 5 attempts are allowed"
    );
    assert_eq!(run.error.unwrap().kind, ErrorKind::Abort);

    // A task without a registered payload schema queues any payload; the worker fails the
    // run at once when it does not decode. (A task with a schema refuses it at trigger time.)
    let bad = client
        .trigger_by_id("flaky", serde_json::json!({"succeed_on": "soon"}))
        .await
        .unwrap();
    let run = wait_for_status(&client, bad.id, RunStatus::Failed).await;
    assert_eq!(run.attempts, 1);
    let error = run.error.unwrap();
    assert_eq!(error.kind, ErrorKind::Payload);
    assert!(
        error.message.contains("\"flaky\"")
            && error.message.contains("field `succeed_on`")
            && error.message.contains("expected u32"),
        "{}",
        error.message
    );
    let refused = client
        .trigger_by_id("echo", serde_json::json!({"ws_id": 42}))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::InvalidPayload { .. }),
        "{refused}"
    );

    let panicked = client.trigger::<Panicking>(()).await.unwrap();
    let run = wait_for_status(&client, panicked.id, RunStatus::Failed).await;
    assert_eq!(run.attempts, 2, "a panic is retried like an ordinary error");
    let error = run.error.unwrap();
    assert_eq!(error.kind, ErrorKind::Panic);
    assert!(
        error.message.contains("index out of bounds"),
        "{}",
        error.message
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_queued_and_expired_runs_follow_their_clock() {
    let (db, client) = registered().await;
    client.queues().create("parked", None).await.unwrap();

    let delayed = client
        .trigger::<Echo>(WorkspacePayload { ws_id: "d".into() })
        .delay(Duration::from_millis(800))
        .await
        .unwrap();
    let expiring = client
        .trigger::<Echo>(WorkspacePayload { ws_id: "e".into() })
        .ttl(Duration::from_millis(300))
        .queue("parked")
        .await
        .unwrap();
    let canceled = client
        .trigger::<Echo>(WorkspacePayload { ws_id: "c".into() })
        .await
        .unwrap();
    assert_eq!(
        client.runs().retrieve(delayed.id).await.unwrap().status,
        RunStatus::Delayed
    );
    assert_eq!(
        client.runs().retrieve(canceled.id).await.unwrap().status,
        RunStatus::Queued
    );
    assert_eq!(
        client.runs().cancel(canceled.id).await.unwrap(),
        CancelOutcome::Canceled {
            was: RunStatus::Queued
        }
    );
    client.queues().pause("parked").await.unwrap();

    let worker = InProcessWorker::start(&db, "w1", 4).await;
    let run = wait_for_status(&client, expiring.id, RunStatus::Expired).await;
    assert_eq!(run.attempts, 0);
    assert_eq!(run.error.unwrap().kind, ErrorKind::Expired);
    let run = wait_for_status(&client, delayed.id, RunStatus::Completed).await;
    let waited = run.started_at.unwrap() - run.created_at;
    assert!(
        waited >= chrono::Duration::milliseconds(780),
        "a delayed run started after {waited}"
    );
    let run = client.runs().retrieve(canceled.id).await.unwrap();
    assert_eq!((run.status, run.attempts), (RunStatus::Canceled, 0));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_dedupe_until_the_run_fails_or_the_key_expires() {
    let (db, client) = registered().await;

    let opts = || TriggerOptions::new().idempotency_key("sync-ws_1-2026-11-21");
    let first = client
        .trigger::<Flaky>(FlakyPayload { succeed_on: 0 })
        .options(opts())
        .await
        .unwrap();
    let second = client
        .trigger::<Flaky>(FlakyPayload { succeed_on: 0 })
        .options(opts())
        .await
        .unwrap();
    assert!(!first.is_cached);
    assert_eq!((second.id, second.is_cached), (first.id, true));
    // The same key on another task is another key.
    let other = client
        .trigger::<Echo>(WorkspacePayload { ws_id: "x".into() })
        .idempotency_key("sync-ws_1-2026-11-21")
        .await
        .unwrap();
    assert!(!other.is_cached);

    // A failed run releases its key.
    let worker = InProcessWorker::start(&db, "w1", 4).await;
    wait_for_status(&client, first.id, RunStatus::Failed).await;
    let third = client
        .trigger::<Flaky>(FlakyPayload { succeed_on: 1 })
        .options(opts())
        .await
        .unwrap();
    assert!(!third.is_cached && third.id != first.id);
    wait_for_status(&client, third.id, RunStatus::Completed).await;
    // A completed run keeps it.
    let fourth = client
        .trigger::<Flaky>(FlakyPayload { succeed_on: 1 })
        .options(opts())
        .await
        .unwrap();
    assert_eq!((fourth.id, fourth.is_cached), (third.id, true));
    // A key past its ttl no longer dedupes.
    let short = || {
        TriggerOptions::new()
            .idempotency_key("short")
            .idempotency_key_ttl(Duration::from_millis(200))
    };
    let a = client
        .trigger::<Echo>(WorkspacePayload { ws_id: "a".into() })
        .options(short())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // the ttl itself is what is tested
    let b = client
        .trigger::<Echo>(WorkspacePayload { ws_id: "a".into() })
        .options(short())
        .await
        .unwrap();
    assert!(!b.is_cached && b.id != a.id);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_tasks_are_refused_unless_the_caller_opts_in() {
    let db = TestDb::new().await;
    let client = Client::new(db.pool.clone());
    let err = client
        .trigger_by_id("shedule-task", serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::UnregisteredTask { task_id } if task_id == "shedule-task"),
        "{err:?}"
    );
    assert!(err.to_string().contains("allow_unregistered"), "{err}");
    // A typed trigger carries its task's definition: it registers the task and its run waits
    // for a worker, so that app and worker can start in any order.
    let typed = client
        .trigger::<Echo>(WorkspacePayload { ws_id: "x".into() })
        .await
        .unwrap();
    let echo = client.tasks().retrieve("echo").await.unwrap();
    assert_eq!(
        (echo.queue.as_str(), echo.served, echo.waiting),
        ("echo", false, 1)
    );
    let worker = InProcessWorker::start(&db, "late", 1).await;
    wait_for_status(&client, typed.id, RunStatus::Completed).await;
    worker.stop().await;
    let handle = client
        .trigger_by_id("shedule-task", serde_json::json!({}))
        .allow_unregistered()
        .await
        .unwrap();
    let run = client.runs().retrieve(handle.id).await.unwrap();
    assert_eq!(
        (run.queue.as_str(), run.max_attempts, run.status),
        ("shedule-task", 3, RunStatus::Queued)
    );
    assert_eq!(
        count_status(&db.pool, "queued").await,
        1,
        "nothing else was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_insert_in_order_in_one_statement_and_trigger_tx_follows_the_transaction() {
    let (db, client) = registered().await;

    let items: Vec<_> = (0..1_000)
        .map(|i| {
            BatchItem::with_options(
                WorkspacePayload {
                    ws_id: format!("ws_{i}"),
                },
                TriggerOptions::new().concurrency_key(format!("ws_{i}")),
            )
        })
        .collect();
    let handles = client.batch_trigger::<Echo>(items).await.unwrap();
    assert_eq!(handles.len(), 1_000);
    let run = client.runs().retrieve(handles[417].id).await.unwrap();
    assert_eq!(run.payload, serde_json::json!({"ws_id": "ws_417"}));
    assert_eq!(run.concurrency_key.as_deref(), Some("ws_417"));

    let too_many: Vec<_> = (0..1_001)
        .map(|i| {
            BatchItem::new(WorkspacePayload {
                ws_id: i.to_string(),
            })
        })
        .collect();
    let err = client.batch_trigger::<Echo>(too_many).await.unwrap_err();
    assert!(err.to_string().contains("at most 1000"), "{err}");
    let err = client
        .trigger::<Echo>(WorkspacePayload { ws_id: "x".into() })
        .options(TriggerOptions {
            tags: (0..11).map(|i| i.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at most 10 tags"), "{err}");

    let mut tx = db.pool.begin().await.unwrap();
    let rolled_back = client
        .trigger_tx::<Echo>(&mut tx, WorkspacePayload { ws_id: "rb".into() })
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(matches!(
        client.runs().retrieve(rolled_back.id).await,
        Err(ClientError::RunNotFound(_))
    ));
    let mut tx = db.pool.begin().await.unwrap();
    let committed = client
        .trigger_tx::<Echo>(&mut tx, WorkspacePayload { ws_id: "ok".into() })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        client.runs().retrieve(committed.id).await.unwrap().status,
        RunStatus::Queued
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_queues_hold_their_runs_until_resumed_and_priority_gives_a_head_start() {
    let (db, client) = registered().await;
    client.queues().pause("echo").await.unwrap();
    let plain = client
        .trigger::<Echo>(WorkspacePayload {
            ws_id: "plain".into(),
        })
        .await
        .unwrap();
    let urgent = client
        .trigger::<Echo>(WorkspacePayload {
            ws_id: "urgent".into(),
        })
        .priority(Duration::from_secs(60))
        .await
        .unwrap();

    let worker = InProcessWorker::start(&db, "w1", 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // nothing may start in a paused queue
    assert_eq!(
        client.runs().retrieve(plain.id).await.unwrap().status,
        RunStatus::Queued
    );
    let queue = client.queues().retrieve("echo").await.unwrap().unwrap();
    assert!(queue.paused);
    assert_eq!((queue.queued, queue.running), (2, 0));

    client.queues().resume("echo").await.unwrap();
    let plain_run = wait_for_status(&client, plain.id, RunStatus::Completed).await;
    let urgent_run = wait_for_status(&client, urgent.id, RunStatus::Completed).await;
    assert!(
        urgent_run.started_at < plain_run.started_at,
        "the run with a 60 s head start goes first"
    );
    let err = client.queues().pause("no-such-queue").await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_filters_and_pages_and_replay_makes_a_new_run() {
    let (_db, client) = registered().await;
    for i in 0..7 {
        let opts = TriggerOptions::new()
            .concurrency_key(if i % 2 == 0 { "even" } else { "odd" })
            .tag(format!("n{i}"));
        client
            .trigger::<Echo>(WorkspacePayload {
                ws_id: i.to_string(),
            })
            .options(opts)
            .await
            .unwrap();
    }
    client
        .trigger::<Flaky>(FlakyPayload { succeed_on: 1 })
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut filter = RunFilter {
        task_ids: vec!["echo".into()],
        limit: Some(3),
        ..Default::default()
    };
    loop {
        let page = client.runs().list(&filter).await.unwrap();
        seen.extend(page.runs.iter().map(|r| r.id));
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    let even = client
        .runs()
        .list(&RunFilter {
            concurrency_key: Some("even".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(even.runs.len(), 4);
    let tagged = client
        .runs()
        .list(&RunFilter {
            tags: vec!["n3".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tagged.runs.len(), 1);
    let queued = client
        .runs()
        .list(&RunFilter {
            statuses: vec![RunStatus::Queued],
            queue: Some("flaky".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.runs.len(), 1);
    let future = client
        .runs()
        .list(&RunFilter {
            created_after: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(future.runs.is_empty());

    let original = tagged.runs[0].clone();
    let replay = client
        .runs()
        .replay(original.id, Some(serde_json::json!({"ws_id": "edited"})))
        .await
        .unwrap();
    let run = client.runs().retrieve(replay.id).await.unwrap();
    assert_eq!(run.replay_of, Some(original.id));
    assert_eq!(run.payload, serde_json::json!({"ws_id": "edited"}));
    assert_eq!(run.concurrency_key, original.concurrency_key);
    assert_eq!(run.tags, original.tags);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleaner_deletes_finished_runs_past_retention_and_keeps_the_rest() {
    let (db, client) = registered().await;
    client.queues().create("parked", None).await.unwrap();
    let waiting = client
        .trigger::<Echo>(WorkspacePayload { ws_id: "w".into() })
        .queue("parked")
        .await
        .unwrap();
    client.queues().pause("parked").await.unwrap();
    let items = (0..3)
        .map(|i| {
            BatchItem::new(WorkspacePayload {
                ws_id: i.to_string(),
            })
        })
        .collect();
    let done = client.batch_trigger::<Echo>(items).await.unwrap();
    let worker = InProcessWorker::start(&db, "w1", 4).await;
    for handle in &done {
        wait_for_status(&client, handle.id, RunStatus::Completed).await;
    }
    worker.stop().await;

    let keep_an_hour = kiln::Cleaner {
        retention: Duration::from_secs(3600),
        batch: 2,
    };
    assert_eq!(keep_an_hour.delete_old_runs(&db.pool).await.unwrap(), 0);
    let keep_nothing = kiln::Cleaner {
        retention: Duration::ZERO,
        batch: 2,
    };
    assert_eq!(
        keep_nothing.delete_old_runs(&db.pool).await.unwrap(),
        3,
        "two batches of at most 2"
    );
    for handle in &done {
        assert!(matches!(
            client.runs().retrieve(handle.id).await,
            Err(ClientError::RunNotFound(_))
        ));
    }
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "attempts go with their runs");
    assert_eq!(
        client.runs().retrieve(waiting.id).await.unwrap().status,
        RunStatus::Queued,
        "unfinished runs stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_moves_a_waiting_run_and_refuses_a_finished_one() {
    let (db, client) = registered().await;
    let later = client
        .trigger::<Echo>(WorkspacePayload {
            ws_id: "later".into(),
        })
        .delay(Duration::from_secs(3600))
        .await
        .unwrap();
    let soon = client
        .trigger::<Echo>(WorkspacePayload {
            ws_id: "soon".into(),
        })
        .await
        .unwrap();
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    client.runs().reschedule(soon.id, in_an_hour).await.unwrap();
    assert_eq!(
        client.runs().retrieve(soon.id).await.unwrap().status,
        RunStatus::Delayed
    );
    client
        .runs()
        .reschedule(later.id, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        client.runs().retrieve(later.id).await.unwrap().status,
        RunStatus::Queued
    );

    let worker = InProcessWorker::start(&db, "w1", 2).await;
    wait_for_status(&client, later.id, RunStatus::Completed).await;
    assert_eq!(
        client.runs().retrieve(soon.id).await.unwrap().status,
        RunStatus::Delayed
    );
    let err = client
        .runs()
        .reschedule(later.id, chrono::Utc::now())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::NotWaiting {
                status: RunStatus::Completed,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("only a run that has not started"),
        "{err}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_the_database_refuses_fails_its_run_and_wedges_nothing() {
    let (db, client) = registered().await;
    let payload = |nul_in: &str| {
        BatchItem::new(UnstorablePayload {
            nul_in: nul_in.into(),
        })
    };
    // Bad and clean outcomes finish together, so they share completion batches.
    let mut items = vec![payload("output"), payload("error")];
    items.extend((0..30).map(|_| payload("none")));
    let handles = client.batch_trigger::<Unstorable>(items).await.unwrap();
    let worker = InProcessWorker::start(&db, "w1", 32).await;

    let bad_output = wait_for_status(&client, handles[0].id, RunStatus::Failed).await;
    let error = bad_output.error.expect("an error is recorded");
    assert_eq!(error.kind, ErrorKind::Unstorable);
    assert!(
        error.message.starts_with("output could not be stored:"),
        "{}",
        error.message
    );
    assert_eq!(bad_output.output, None);
    assert_eq!(
        bad_output.attempts, 1,
        "an unstorable output is not retried"
    );

    let bad_error = wait_for_status(&client, handles[1].id, RunStatus::Failed).await;
    let error = bad_error.error.expect("an error is recorded");
    assert_eq!(error.kind, ErrorKind::Unstorable);
    assert!(
        error.message.starts_with("error could not be stored:")
            && error.message.contains("provider said \u{FFFD} and hung up"),
        "{}",
        error.message
    );
    for handle in &handles[2..] {
        let run = wait_for_status(&client, handle.id, RunStatus::Completed).await;
        assert_eq!(run.output, Some(serde_json::json!("clean")));
    }
    // Nothing stays held, and the worker goes on completing runs.
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.leases")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(leases, 0);
    let later = client
        .trigger::<Unstorable>(UnstorablePayload {
            nul_in: "none".into(),
        })
        .await
        .unwrap();
    wait_for_status(&client, later.id, RunStatus::Completed).await;
    worker.stop().await;
}
