//! What a task body knows about the run it executes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::ChildRuntime;
use uuid::Uuid;

/// The run a body executes, as the worker claimed it.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The run's id.
    pub run_id: Uuid,
    /// The task id.
    pub task_id: String,
    /// The queue it was claimed from.
    pub queue: String,
    /// Its concurrency key, if any.
    pub concurrency_key: Option<String>,
    /// This attempt's number, starting at 1.
    pub attempt: u32,
    /// Attempts the run may use in all.
    pub max_attempts: u32,
    /// The run's metadata as triggered.
    pub metadata: serde_json::Value,
    /// The run that triggered this one, if any.
    pub parent_run_id: Option<Uuid>,
    /// The first run of the tree this one belongs to, if it has a parent.
    pub root_run_id: Option<Uuid>,
}

/// Handed to every task body: the run's identity, its cancellation signal, and the way to
/// trigger child runs (see [`Context::trigger`]).
#[derive(Clone)]
pub struct Context {
    info: Arc<RunInfo>,
    cancel: CancellationToken,
    runtime: Option<Arc<dyn ChildRuntime>>,
    /// Child trigger calls made so far in this attempt: the call order children's keys derive from.
    calls: Arc<AtomicU32>,
    /// Where `ctx.log()` lines go.
    log: Option<Arc<dyn crate::LogSink>>,
    /// The app state the worker was given.
    states: Arc<crate::States>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("info", &self.info)
            .field("cancelled", &self.cancel.is_cancelled())
            .field("can_trigger", &self.runtime.is_some())
            .finish()
    }
}

impl Context {
    /// A context for one attempt with no worker behind it: tests of task bodies use these
    /// (triggering children from it is refused).
    pub fn new(info: RunInfo, cancel: CancellationToken) -> Self {
        Self {
            info: Arc::new(info),
            cancel,
            runtime: None,
            calls: Arc::new(AtomicU32::new(0)),
            log: None,
            states: Arc::default(),
        }
    }

    /// A context whose child triggers go through `runtime` (the worker builds these).
    pub fn with_runtime(
        info: RunInfo,
        cancel: CancellationToken,
        runtime: Arc<dyn ChildRuntime>,
    ) -> Self {
        Self {
            runtime: Some(runtime),
            ..Self::new(info, cancel)
        }
    }

    /// The same context, keeping the lines of [`Context::log`] in `sink` (the worker sets this).
    pub fn with_log(mut self, sink: Arc<dyn crate::LogSink>) -> Self {
        self.log = Some(sink);
        self
    }

    /// The same context, with the app state `states` (the worker sets this; tests of task
    /// bodies can too).
    pub fn with_states(mut self, states: Arc<crate::States>) -> Self {
        self.states = states;
        self
    }

    /// The app state of type `T` the worker was given with `Worker::builder().state(value)`:
    /// `let app = ctx.state::<App>();`. A task that declares `state: App` in
    /// [`task!`](crate::task) cannot start on a worker without it, so for such a task this
    /// never fails.
    ///
    /// # Panics
    ///
    /// When the worker holds no state of type `T` (declare it in `task!` to have this checked
    /// when the worker starts instead), or use [`Context::try_state`].
    pub fn state<T: Send + Sync + 'static>(&self) -> &T {
        self.try_state::<T>().unwrap_or_else(|| {
            panic!(
                "task {:?} asked for state of type {}, which this worker was not given: pass it \
                 with Worker::builder().state(value), and declare it in task! with `state: {}` \
                 so that a worker without it refuses to start",
                self.info.task_id,
                std::any::type_name::<T>(),
                std::any::type_name::<T>()
            )
        })
    }

    /// The app state of type `T`, if the worker was given one.
    pub fn try_state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.states.get::<T>()
    }

    /// Writes log lines kept with this run and attempt: `ctx.log().info("synced")`.
    pub fn log(&self) -> crate::RunLog {
        crate::RunLog::new(self.log.clone())
    }

    pub(crate) fn runtime(&self) -> Option<&Arc<dyn ChildRuntime>> {
        self.runtime.as_ref()
    }

    /// Numbers child trigger calls in the order the body makes them.
    pub(crate) fn next_call(&self) -> u32 {
        self.calls.fetch_add(1, Ordering::Relaxed)
    }

    /// The run's id.
    pub fn run_id(&self) -> Uuid {
        self.info.run_id
    }

    /// The task id.
    pub fn task_id(&self) -> &str {
        &self.info.task_id
    }

    /// The queue the run was claimed from.
    pub fn queue(&self) -> &str {
        &self.info.queue
    }

    /// The run's concurrency key, if any.
    pub fn concurrency_key(&self) -> Option<&str> {
        self.info.concurrency_key.as_deref()
    }

    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }

    /// True when an earlier attempt of this run failed or crashed.
    pub fn is_retry(&self) -> bool {
        self.info.attempt > 1
    }

    /// The run's metadata as triggered.
    pub fn metadata(&self) -> &serde_json::Value {
        &self.info.metadata
    }

    /// Everything the worker knows about the run.
    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    /// Fires when the run is canceled, times out, or the worker must stop it.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// True once the run should stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the run should stop; `select!` on it around long waits.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}
