//! Waiting for a run from outside a run: `trigger_and_wait` and `runs().wait` return the typed
//! output, or the failure, or a timeout; they are woken by the finish notification, not the
//! slow poll; `runs().counts` counts by status.

use std::time::{Duration, Instant};

use kiln::{task, Context, Error, Result, RunFilter, RunStatus, TriggerOptions, WaitError, Worker};
use kiln_tests::TestDb;
use serde::{Deserialize, Serialize};

/// Two numbers to add, or a reason to fail.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sum {
    a: i64,
    b: i64,
    fail: Option<String>,
}

/// The sum.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Total {
    total: i64,
}

task! {
    /// Adds after a short pause, or fails with the reason given.
    pub Adder {
        id: "wait-adder",
        retry: { max_attempts: 1 },
        run: async |_ctx: Context, payload: Sum| -> Result<Total> {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(reason) = payload.fail {
                return Err(Error::msg(reason));
            }
            Ok(Total { total: payload.a + payload.b })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_and_wait_returns_the_typed_output_the_failure_or_a_timeout() {
    let db = TestDb::new().await;
    let worker = Worker::builder()
        .pool(db.pool.clone())
        .register(Adder)
        .configure(|c| c.poll_interval = Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move { worker.run_until(stop).await });
    }
    let client = kiln::Client::new(db.pool.clone());

    // The output, typed; woken by the notification, well before the 5 s poll.
    let started = Instant::now();
    let total = client
        .trigger_and_wait::<Adder>(
            Sum {
                a: 2,
                b: 40,
                fail: None,
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(total, Total { total: 42 });
    let took = started.elapsed();
    assert!(
        took < kiln::WAIT_POLL_INTERVAL,
        "the wait took {took:?}: it should be woken by the finish notification"
    );

    // A failure, with its status and error.
    let failed = client
        .trigger_and_wait::<Adder>(
            Sum {
                a: 0,
                b: 0,
                fail: Some("the ledger is locked".into()),
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
    match &failed {
        WaitError::Failed { status, error, .. } => {
            assert_eq!(*status, RunStatus::Failed);
            assert_eq!(error.as_ref().unwrap().message, "the ledger is locked");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(
        failed
            .to_string()
            .contains("ended failed: the ledger is locked"),
        "{failed}"
    );

    // A timeout leaves the run going on; waiting again by id gets its output.
    let later = client
        .trigger::<Adder>(Sum {
            a: 1,
            b: 1,
            fail: None,
        })
        .options(TriggerOptions::new().delay(Duration::from_millis(700)))
        .await
        .unwrap();
    let timed_out = client
        .runs()
        .wait::<Adder>(later.id, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(timed_out, WaitError::Timeout { .. }),
        "{timed_out:?}"
    );
    let total = client
        .runs()
        .wait::<Adder>(later.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(total, Total { total: 2 });

    // Counts by status, filtered by task.
    let counts = client
        .runs()
        .counts(&RunFilter {
            task_ids: vec!["wait-adder".into()],
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        counts,
        vec![(RunStatus::Completed, 2), (RunStatus::Failed, 1)]
    );
    stop.cancel();
}
