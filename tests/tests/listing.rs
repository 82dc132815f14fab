//! Listing runs on a large history. No index serves `status`, so a status page reads at
//! most `STATUS_SCAN_BUDGET` runs; a page that stopped there says so and its cursor goes on.
//! Unsuccessful final statuses are recorded apart (`kiln.run_failures`), so their pages are
//! complete however rare they are.
//! A parent's children are paged by index and counted by status up to a bound.

use kiln::{RunFilter, RunStatus, STATUS_SCAN_BUDGET};
use kiln_tests::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_listing_reads_at_most_its_budget_per_page_and_its_cursor_goes_on() {
    let db = TestDb::new().await;
    let client = kiln::Client::new(db.pool.clone());
    let history = 2 * STATUS_SCAN_BUDGET as u64 + 500;
    kiln_store::bench::bench_fill_history(&db.pool, history)
        .await
        .unwrap();

    // A common status fills its page at once.
    let failed = client
        .runs()
        .list(&RunFilter {
            statuses: vec![RunStatus::Failed],
            limit: Some(50),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.runs.len(), 50);
    assert!(failed.runs.iter().all(|r| r.status == RunStatus::Failed));
    assert!(!failed.scan_limited);
    assert!(failed.next_cursor.is_some());

    // An unsuccessful final status no run has is read from the failure records: one empty,
    // complete page.
    let no_failures = client
        .runs()
        .list(&RunFilter {
            statuses: vec![RunStatus::SystemFailure],
            limit: Some(50),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert!(no_failures.runs.is_empty());
    assert!(!no_failures.scan_limited);
    assert_eq!(no_failures.next_cursor, None);

    // Another status no run has: each page stops at the budget with nothing and says where; the
    // cursor goes on until every run was read, exactly once.
    let none = RunFilter {
        statuses: vec![RunStatus::Waiting],
        limit: Some(50),
        ..RunFilter::default()
    };
    let mut cursor = None;
    let mut limited = 0;
    loop {
        let page = client
            .runs()
            .list(&RunFilter {
                cursor,
                ..none.clone()
            })
            .await
            .unwrap();
        assert!(page.runs.is_empty());
        if !page.scan_limited {
            assert_eq!(page.next_cursor, None);
            break;
        }
        limited += 1;
        assert!(limited <= 3, "the listing never ends");
        cursor = Some(page.next_cursor.expect("a page that stopped goes on"));
    }
    // 2 budgets and 500 runs: two pages stop at the budget, the third reads the rest.
    assert_eq!(limited, 2);

    // Bulk actions walk such pages to the end: a cancel of every queued run finds them all.
    let queued = RunFilter {
        statuses: vec![RunStatus::Queued],
        ..RunFilter::default()
    };
    let expected = client.runs().count(&queued, u64::MAX >> 1).await.unwrap();
    assert!(expected > 100, "{expected}");
    let done = client
        .runs()
        .bulk(
            kiln::BulkAction::Cancel,
            kiln::BulkSelection::Filter(Box::new(queued.clone())),
            kiln::DEFAULT_BULK_CAP,
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(done.done, expected);
    assert_eq!(
        client.runs().count(&queued, u64::MAX >> 1).await.unwrap(),
        0
    );
}

/// Pages of one task's (or one queue's) runs, walked forward by `cursor` and back by `before`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tasks_pages_walk_its_runs_both_ways_behind_another_tasks_newer_backlog() {
    let db = TestDb::new().await;
    let client = kiln::Client::new(db.pool.clone());
    let trigger = |task: &'static str, n: i32| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>(
                "SELECT kiln.trigger($1, jsonb_build_object('i', i), '{\"allow_unregistered\": true}')
                   FROM generate_series(1, $2) i",
            )
            .bind(task)
            .bind(n)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    // The older task's runs, interleaved with a few others, then a newer backlog of another.
    let mut mine = Vec::new();
    for _ in 0..4 {
        mine.extend(trigger("older-task", 5).await);
        trigger("newer-task", 2).await;
    }
    trigger("newer-task", 300).await;
    // Newest first: in id order (ids made in the same millisecond are ordered by their random
    // bits, not by the order they were made).
    mine.sort();
    mine.reverse();

    for filter in [
        RunFilter {
            task_ids: vec!["older-task".into()],
            limit: Some(6),
            ..RunFilter::default()
        },
        RunFilter {
            queue: Some("older-task".into()),
            limit: Some(6),
            ..RunFilter::default()
        },
    ] {
        // Forward: every run of the task once, newest first.
        let pages = pages_forward(&client, &filter).await;
        assert_eq!(pages.concat(), mine, "{filter:?}");
        assert_eq!(pages.len(), 4, "20 runs in pages of 6");
        // Back: from the third page, the page before it is the second.
        let third_first = pages[2][0];
        let back = client
            .runs()
            .list(&RunFilter {
                before: Some(third_first),
                ..filter.clone()
            })
            .await
            .unwrap();
        assert_eq!(
            back.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
            pages[1],
            "{filter:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parents_children_are_paged_both_ways_and_counted_newest_first_up_to_a_bound() {
    let db = TestDb::new().await;
    let client = kiln::Client::new(db.pool.clone());
    kiln_store::bench::bench_fill_history(&db.pool, 2_000)
        .await
        .unwrap();
    let parent = kiln_store::bench::BENCH_HISTORY_PARENT;
    let children: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM kiln.runs WHERE parent_run_id = $1 ORDER BY id DESC")
            .bind(parent)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(children.len() > 300, "the history has a fan-out");

    // Pages of the parent's children, newest first, each child once.
    let filter = RunFilter {
        parent_run_id: Some(parent),
        limit: Some(37),
        ..RunFilter::default()
    };
    let pages = pages_forward(&client, &filter).await;
    assert_eq!(pages.concat(), children);
    let back = client
        .runs()
        .list(&RunFilter {
            before: Some(pages[2][0]),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert_eq!(back.runs.iter().map(|r| r.id).collect::<Vec<_>>(), pages[1]);

    // Counted whole when the bound covers them all, even exactly.
    let exact = client
        .runs()
        .count_children_by_status(parent)
        .await
        .unwrap();
    for bound in [10_000, children.len() as u64] {
        let counts = client
            .runs()
            .count_newest_children_by_status(parent, bound)
            .await
            .unwrap();
        assert_eq!(counts.counted, children.len() as u64);
        assert!(!counts.more, "bound {bound}");
        assert_eq!(counts.by_status, exact);
    }
    // Below the fan-out: the newest 100, and the page says there are more.
    let newest = client
        .runs()
        .count_newest_children_by_status(parent, 100)
        .await
        .unwrap();
    let expected: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status::text, count(*) FROM kiln.runs WHERE id = ANY($1) GROUP BY 1",
    )
    .bind(&children[..100])
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(newest.counted, 100);
    assert!(newest.more);
    let mut got: Vec<(String, i64)> = newest
        .by_status
        .iter()
        .map(|(s, n)| (s.as_str().to_owned(), *n as i64))
        .collect();
    let mut expected = expected;
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

/// The ids of every page of `filter`, first to last, following each page's cursor.
async fn pages_forward(client: &kiln::Client, filter: &RunFilter) -> Vec<Vec<uuid::Uuid>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = client
            .runs()
            .list(&RunFilter {
                cursor,
                ..filter.clone()
            })
            .await
            .unwrap();
        pages.push(page.runs.iter().map(|r| r.id).collect::<Vec<_>>());
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rare_failures_are_listed_completely_both_ways_and_leave_with_their_runs() {
    let db = TestDb::new().await;
    let client = kiln::Client::new(db.pool.clone());
    let history = 2 * STATUS_SCAN_BUDGET as u64 + 500;
    kiln_store::bench::bench_fill_history(&db.pool, history)
        .await
        .unwrap();
    // Seven runs of one task end in system_failure, spread over the history (the row trigger
    // records a status change however it is made).
    let task = "bench-google-calendar-sync";
    let mut failures: Vec<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE kiln.runs SET status = 'system_failure'
          WHERE id IN (SELECT id FROM kiln.runs WHERE task_id = $1 AND status = 'completed'
                        ORDER BY id LIMIT 7 OFFSET 0)
             OR id IN (SELECT id FROM kiln.runs WHERE task_id = $1 AND status = 'completed'
                        ORDER BY id DESC LIMIT 3)
         RETURNING id",
    )
    .bind(task)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    failures.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(failures.len(), 10);

    // Pages of 4, newest first: 4, 4, 2, every page complete, none read past its runs.
    let filter = RunFilter {
        statuses: vec![RunStatus::SystemFailure],
        task_ids: vec![task.to_owned()],
        limit: Some(4),
        ..RunFilter::default()
    };
    let pages = pages_forward(&client, &filter).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
    assert_eq!(pages.concat(), failures);
    // And back: from the last page, `before` gives the page before it.
    let second = client
        .runs()
        .list(&RunFilter {
            cursor: Some(pages[0][3]),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert!(!second.scan_limited);
    let back = client
        .runs()
        .list(&RunFilter {
            before: second.previous_cursor,
            ..filter.clone()
        })
        .await
        .unwrap();
    assert_eq!(back.runs.iter().map(|r| r.id).collect::<Vec<_>>(), pages[0]);

    // Another filter on top (a tag) is checked on each recorded run.
    let tagged: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT id FROM kiln.runs WHERE id = ANY($1) AND tags @> ARRAY['sync'] ORDER BY id DESC",
    )
    .bind(&failures)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let page = client
        .runs()
        .list(&RunFilter {
            tags: vec!["sync".to_owned()],
            limit: Some(50),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert_eq!(page.runs.iter().map(|r| r.id).collect::<Vec<_>>(), tagged);

    // A run canceled through the client is listed as canceled at once.
    let queued = client
        .runs()
        .list(&RunFilter {
            statuses: vec![RunStatus::Queued],
            limit: Some(1),
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .runs[0]
        .id;
    client.runs().cancel(queued).await.unwrap();
    let canceled = pages_forward(
        &client,
        &RunFilter {
            statuses: vec![RunStatus::Canceled],
            limit: Some(500),
            ..RunFilter::default()
        },
    )
    .await
    .concat();
    assert!(canceled.contains(&queued));
    let expected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln.runs WHERE status = 'canceled'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(canceled.len() as i64, expected, "every canceled run, once");

    // Retention deletes the records with their runs.
    kiln_store::run::run_delete_finished_before(
        &db.pool,
        chrono::Utc::now() + chrono::Duration::days(2),
        1_000_000,
    )
    .await
    .unwrap();
    let (runs_left, records_left): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM kiln.runs r
                  WHERE r.status IN ('failed', 'canceled', 'crashed', 'timed_out', 'expired',
                                     'system_failure')),
                (SELECT count(*) FROM kiln.run_failures)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((runs_left, records_left), (0, 0));
}
