//! Listing runs by status on a large history: no index serves `status`, so a page reads at
//! most `STATUS_SCAN_BUDGET` runs; a page that stopped there says so and its cursor goes on.

use kiln::{RunFilter, RunStatus, STATUS_SCAN_BUDGET};
use kiln_tests::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_listing_reads_at_most_its_budget_per_page_and_its_cursor_goes_on() {
    let db = TestDb::new().await;
    let client = kiln::Client::new(db.pool.clone());
    let history = STATUS_SCAN_BUDGET as u64 + 10_000;
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

    // A status no run has: the first page stops at the budget with nothing, and says where.
    let none = RunFilter {
        statuses: vec![RunStatus::SystemFailure],
        limit: Some(50),
        ..RunFilter::default()
    };
    let first = client.runs().list(&none).await.unwrap();
    assert!(first.runs.is_empty());
    assert!(first.scan_limited);
    let cursor = first
        .next_cursor
        .expect("the page continues where it stopped");
    let total = client
        .runs()
        .count(&RunFilter::default(), u64::MAX >> 1)
        .await
        .unwrap();
    assert_eq!(total, history);
    // The next page reads the remaining 10,000 runs and ends the listing.
    let second = client
        .runs()
        .list(&RunFilter {
            cursor: Some(cursor),
            ..none.clone()
        })
        .await
        .unwrap();
    assert!(second.runs.is_empty());
    assert!(!second.scan_limited);
    assert_eq!(second.next_cursor, None);

    // Bulk actions walk such pages to the end: a cancel of every queued run finds them all.
    let queued = RunFilter {
        statuses: vec![RunStatus::Queued],
        ..RunFilter::default()
    };
    let expected = client.runs().count(&queued, u64::MAX >> 1).await.unwrap();
    assert!(expected > 500, "{expected}");
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
