//! Listing runs by status on a large history: no index serves `status`, so a page reads at
//! most `STATUS_SCAN_BUDGET` runs; a page that stopped there says so and its cursor goes on.

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

    // A status no run has: each page stops at the budget with nothing and says where; the
    // cursor goes on until every run was read, exactly once.
    let none = RunFilter {
        statuses: vec![RunStatus::SystemFailure],
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
