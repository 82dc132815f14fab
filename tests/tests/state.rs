//! App state in task bodies: values handed to the worker once and read with `ctx.state::<T>()`,
//! several types at once; a task that declares a state type cannot start on a worker without it.

use std::time::Duration;

use kiln::{task, Context, Result, RunStatus, Worker};
use kiln_tests::{wait_for_status, TestDb};
use serde::{Deserialize, Serialize};

/// The app's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    greeting: String,
}

/// A counter shared by every run of the process.
#[derive(Debug, Default)]
pub struct Counter(std::sync::atomic::AtomicU32);

/// Who to greet.
#[derive(Debug, Serialize, Deserialize)]
pub struct Greet {
    name: String,
}

task! {
    /// Greets with the app's greeting, counting greetings in the process.
    pub Greeter {
        id: "state-greeter",
        state: Settings,
        state: std::sync::Arc<Counter>,
        run: async |ctx: Context, payload: Greet| -> Result<String> {
            let settings = ctx.state::<Settings>();
            let counter = ctx.state::<std::sync::Arc<Counter>>();
            let n = counter.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Ok(format!("{}, {} (#{n})", settings.greeting, payload.name))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_read_the_app_state_the_worker_was_given() {
    let db = TestDb::new().await;
    let counter = std::sync::Arc::new(Counter::default());
    let worker = Worker::builder()
        .pool(db.pool.clone())
        .state(Settings {
            greeting: "Hello".into(),
        })
        .state(std::sync::Arc::clone(&counter))
        .register(Greeter)
        .build()
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = {
        let stop = stop.clone();
        tokio::spawn(async move { worker.run_until(stop).await })
    };
    let client = kiln::Client::new(db.pool.clone());
    let mut ids = Vec::new();
    for name in ["Ada", "Grace"] {
        let run = client
            .trigger::<Greeter>(Greet { name: name.into() })
            .await
            .unwrap();
        ids.push(run.id);
    }
    let mut outputs = Vec::new();
    for id in ids {
        wait_for_status(&client, id, RunStatus::Completed).await;
        let run = client.runs().retrieve(id).await.unwrap();
        outputs.push(run.output.unwrap().as_str().unwrap().to_owned());
    }
    assert!(outputs[0].starts_with("Hello, Ada (#"), "{outputs:?}");
    assert!(outputs[1].starts_with("Hello, Grace (#"), "{outputs:?}");
    // One counter for the process: the test's handle sees both runs.
    assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_a_declared_state_refuses_to_start_naming_the_type() {
    let db = TestDb::new().await;
    let error = Worker::builder()
        .pool(db.pool.clone())
        .state(Settings {
            greeting: "Hello".into(),
        })
        .register(Greeter)
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("\"state-greeter\""), "{error}");
    assert!(error.contains("Counter"), "{error}");
    assert!(error.contains(".state("), "{error}");
}

#[test]
fn a_body_tested_alone_reads_the_state_given_to_its_context() {
    let mut states = kiln::States::default();
    states.insert(Settings {
        greeting: "Hi".into(),
    });
    let ctx = Context::new(
        kiln::RunInfo {
            run_id: uuid::Uuid::nil(),
            task_id: "state-greeter".into(),
            queue: "state-greeter".into(),
            concurrency_key: None,
            attempt: 1,
            max_attempts: 1,
            metadata: serde_json::Value::Null,
            parent_run_id: None,
            root_run_id: None,
        },
        kiln::CancellationToken::new(),
    )
    .with_states(std::sync::Arc::new(states));
    assert_eq!(ctx.state::<Settings>().greeting, "Hi");
    assert!(ctx.try_state::<String>().is_none());
}
