//! Worker settings through the builder: the values people change have methods, and settings
//! that cannot work are refused at build, named.

use std::time::Duration;

use kiln::Worker;
use kiln_tests::tasks::Echo;
use kiln_tests::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_settings_are_checked_when_the_worker_is_built() {
    let db = TestDb::new().await;
    let refused = Worker::builder()
        .pool(db.pool.clone())
        .register(Echo)
        .lease(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_secs(3))
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("heartbeat_interval"), "{refused}");
    assert!(refused.contains("lease"), "{refused}");

    let built = Worker::builder()
        .pool(db.pool.clone())
        .register(Echo)
        .lease(Duration::from_secs(4))
        .heartbeat_interval(Duration::from_secs(1))
        .poll_interval(Duration::from_millis(200))
        .shutdown_grace(Duration::from_secs(2))
        .cancel_grace(Duration::from_millis(500))
        .maintenance_interval(Duration::from_millis(300))
        .cleaner_interval(Duration::from_secs(30))
        .key_cleanup_interval(Duration::from_secs(120))
        .run_maintenance(false)
        .retention(None)
        .build()
        .await;
    assert!(built.is_ok(), "{:?}", built.err());

    let refused = Worker::builder()
        .pool(db.pool.clone())
        .register(Echo)
        .cleaner_interval(Duration::ZERO)
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("cleaner_interval") && refused.contains("run_maintenance(false)"),
        "{refused}"
    );
}
