//! Trace context from a trigger into its run: a trigger from Rust stores the current span's
//! `traceparent` as the app's propagator reads it (or the one its options give), SQL triggers
//! take it as an option, a malformed one is refused, and the worker hands each attempt's span to
//! the propagator with the run's stored context. Its own test binary: the propagator is
//! process-wide.

use std::sync::Mutex;

use kiln::{task, Context, Result, RunStatus, TracePropagator, Worker};
use kiln_tests::{wait_for_status, InProcessWorker, TestDb};

const FROM_SPAN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const FROM_OPTION: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const FROM_SQL: &str = "00-6e0c63257de34c926f9efcd03899f8a1-d4cda95b652f4a15-00";

/// What the app's tracing system would say the current context is.
static AMBIENT: Mutex<Option<String>> = Mutex::new(None);
/// The contexts attempts' spans were linked to, with the span's name.
static ATTACHED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct RecordingPropagator;

impl TracePropagator for RecordingPropagator {
    fn current(&self) -> Option<String> {
        AMBIENT.lock().unwrap().clone()
    }

    fn attach(&self, span: &tracing::Span, traceparent: &str) {
        let name = span.metadata().map(|m| m.name()).unwrap_or("(disabled)");
        ATTACHED
            .lock()
            .unwrap()
            .push((name.to_owned(), traceparent.to_owned()));
    }
}

task! {
    /// Does nothing.
    pub Traced {
        id: "trace-probe",
        run: async |_ctx: Context, _payload: ()| -> Result<()> { Ok(()) }
    }
}

fn set_ambient(value: Option<&str>) {
    *AMBIENT.lock().unwrap() = value.map(str::to_owned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_trace_context_comes_from_its_trigger_and_reaches_its_attempts_span() {
    // The worker's spans must be enabled for the propagator to get them.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    assert!(kiln::set_trace_propagator(RecordingPropagator));
    assert!(
        !kiln::set_trace_propagator(RecordingPropagator),
        "a second propagator is refused"
    );
    let db = TestDb::new().await;
    let client = kiln::Client::new(db.pool.clone());

    set_ambient(Some(FROM_SPAN));
    let ambient = client.trigger::<Traced>(()).await.unwrap().id;
    let explicit = client
        .trigger::<Traced>(())
        .traceparent(FROM_OPTION)
        .await
        .unwrap()
        .id;
    set_ambient(Some("not a traceparent"));
    let ignored = client.trigger::<Traced>(()).await.unwrap().id;
    set_ambient(None);
    let outside = client.trigger::<Traced>(()).await.unwrap().id;
    let from_sql: uuid::Uuid = sqlx::query_scalar(
        "SELECT kiln.trigger('trace-probe', 'null', jsonb_build_object('traceparent', $1::text))",
    )
    .bind(FROM_SQL)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    // Malformed values are refused on every path, naming the option; nothing is stored.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let refused = client
        .trigger::<Traced>(())
        .traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("traceparent"), "{refused}");
    let refused = sqlx::query("SELECT kiln.trigger('trace-probe', 'null', '{\"traceparent\": 7}')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    let refused = refused.as_database_error().unwrap();
    assert_eq!(refused.code().as_deref(), Some("KL400"));
    assert!(refused.message().contains("traceparent"), "{refused}");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, after, "a refused trigger stored nothing");

    let stored = |id| {
        let client = client.clone();
        async move { client.runs().retrieve(id).await.unwrap().traceparent }
    };
    assert_eq!(stored(ambient).await.as_deref(), Some(FROM_SPAN));
    assert_eq!(stored(explicit).await.as_deref(), Some(FROM_OPTION));
    assert_eq!(stored(ignored).await, None);
    assert_eq!(stored(outside).await, None);
    assert_eq!(stored(from_sql).await.as_deref(), Some(FROM_SQL));

    let worker = InProcessWorker::spawn(
        Worker::builder()
            .pool(db.pool.clone())
            .register(Traced)
            .build()
            .await
            .unwrap(),
    );
    for id in [ambient, explicit, ignored, outside, from_sql] {
        wait_for_status(&client, id, RunStatus::Completed).await;
    }
    worker.stop().await;

    let mut attached = ATTACHED.lock().unwrap().clone();
    attached.sort();
    let mut expected: Vec<(String, String)> = [FROM_SPAN, FROM_OPTION, FROM_SQL]
        .into_iter()
        .map(|tp| ("run".to_owned(), tp.to_owned()))
        .collect();
    expected.sort();
    assert_eq!(
        attached, expected,
        "each attempt's span was linked to its run's context, and only those with one"
    );
}
