//! Child runs from inside a run: parent and root recorded, typed results from trigger_and_wait,
//! the parent's slot given back while it waits (a parent and its 20 children in one queue with
//! limit 2 finish), and cancel of a parent cancelling its unfinished children.
//!
//! One test function: the probe tasks write through a process-wide pool.

use std::time::Duration;

use kiln::RunStatus;
use kiln_tests::tasks::{ChildPayload, FanOut, FanOutPayload, FanOutReport, Sequential};
use kiln_tests::{
    observed_max_concurrency, registered, wait_for_status, wait_until, InProcessWorker,
};

async fn children_of(
    pool: &sqlx::PgPool,
    parent: uuid::Uuid,
) -> Vec<(uuid::Uuid, String, Option<uuid::Uuid>, i32)> {
    sqlx::query_as(
        "SELECT id, status::text, root_run_id, attempts FROM kiln.runs
          WHERE parent_run_id = $1 ORDER BY (payload->>'n')::int",
    )
    .bind(parent)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn parents_fan_out_wait_for_typed_results_and_cancel_their_children() {
    let (db, client) = registered().await;
    let worker = InProcessWorker::start(&db, "fanout", 10).await;

    // 1. A parent and its 20 children share queue `family` (limit 2). While the parent waits,
    //    its slot is free, so the children run two at a time and the parent resumes.
    let parent = client
        .trigger::<FanOut>(FanOutPayload {
            children: 20,
            child_sleep_ms: 30,
            failing: vec![3, 17],
            lone: false,
            detached: false,
        })
        .await
        .unwrap();
    let waiting = wait_for_status(&client, parent.id, RunStatus::Waiting).await;
    assert_eq!(waiting.status, RunStatus::Waiting);
    let done = wait_for_status(&client, parent.id, RunStatus::Completed).await;
    let report: FanOutReport = serde_json::from_value(done.output.unwrap()).unwrap();
    assert_eq!(report.child_ids.len(), 20);
    for (n, result) in report.results.iter().enumerate() {
        match n {
            3 | 17 => {
                let message = result.as_ref().unwrap_err();
                assert!(
                    message.contains(&format!("child {n} fails on purpose")),
                    "{message}"
                );
                assert!(message.contains("failed"), "{message}");
            }
            _ => assert_eq!(result, &Ok(n as u32 * 2)),
        }
    }
    let children = children_of(&db.pool, parent.id).await;
    assert_eq!(children.len(), 20);
    assert!(children
        .iter()
        .all(|(_, _, root, attempts)| *root == Some(parent.id) && *attempts == 1));
    // Limit 2 held in the shared queue (children only record intervals), and was reached.
    let (per_key, _) = observed_max_concurrency(&db.pool, None).await;
    let family = per_key[&("family".to_owned(), String::new())];
    assert_eq!(family, 2, "{per_key:?}");
    // The parent ran once (it waited in memory and resumed; no retry).
    assert_eq!(done.attempts, 1);

    // 2. Detached children record parent and root; children of children keep the root.
    let detached = client
        .trigger::<FanOut>(FanOutPayload {
            children: 3,
            child_sleep_ms: 0,
            failing: vec![],
            lone: true,
            detached: true,
        })
        .await
        .unwrap();
    let done = wait_for_status(&client, detached.id, RunStatus::Completed).await;
    let report: FanOutReport = serde_json::from_value(done.output.unwrap()).unwrap();
    for child in &report.child_ids {
        let run = wait_for_status(&client, *child, RunStatus::Completed).await;
        assert_eq!(run.parent_run_id, Some(detached.id));
        assert_eq!(run.root_run_id, Some(detached.id));
        // The key derived from parent and call order.
        assert!(run
            .idempotency_key
            .as_deref()
            .unwrap()
            .starts_with(&detached.id.to_string()));
    }

    // 3. Two waits in sequence, typed: a child's output feeds the next trigger.
    let sequential = client
        .trigger::<Sequential>(ChildPayload {
            n: 21,
            sleep_ms: 0,
            fail: false,
        })
        .await
        .unwrap();
    let done = wait_for_status(&client, sequential.id, RunStatus::Completed).await;
    assert_eq!(done.output.unwrap(), serde_json::json!([42, 5]));
    let echo: (Option<String>, Option<uuid::Uuid>) = sqlx::query_as(
        "SELECT concurrency_key, root_run_id FROM kiln.runs WHERE parent_run_id = $1 AND task_id = 'echo'",
    )
    .bind(sequential.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(echo, (Some("ws_42".to_owned()), Some(sequential.id)));

    // 4. Cancel a waiting parent: its unfinished children are canceled with it.
    let parent = client
        .trigger::<FanOut>(FanOutPayload {
            children: 6,
            child_sleep_ms: 60_000,
            failing: vec![],
            lone: true,
            detached: false,
        })
        .await
        .unwrap();
    wait_for_status(&client, parent.id, RunStatus::Waiting).await;
    wait_until("two children execute", Duration::from_secs(20), || async {
        children_of(&db.pool, parent.id)
            .await
            .iter()
            .filter(|c| c.1 == "executing")
            .count()
            == 2
    })
    .await;
    client.runs().cancel(parent.id).await.unwrap();
    wait_for_status(&client, parent.id, RunStatus::Canceled).await;
    for (child, ..) in children_of(&db.pool, parent.id).await {
        let run = wait_for_status(&client, child, RunStatus::Canceled).await;
        assert_eq!(run.error.unwrap().message, "canceled with its parent run");
    }
    wait_until(
        "every lease and wait is released",
        Duration::from_secs(20),
        || async {
            let held: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM kiln.leases) + (SELECT count(*) FROM kiln.waits)",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            held == 0
        },
    )
    .await;

    worker.stop().await;
}
