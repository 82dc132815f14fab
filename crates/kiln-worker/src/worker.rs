//! The worker: claims runs, executes them, keeps their leases alive, records their outcomes,
//! and drains on shutdown.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use kiln_core::Task;
use kiln_store::lease::{lease_claim_prefetch, lease_heartbeat, AttemptEnd, ClaimedRun};
use kiln_store::schedule::schedule_sync_declarative;
use kiln_store::task::task_register;
use kiln_store::worker::{
    worker_register, worker_seen, worker_set_state, worker_warm_connection, WorkerSpec,
};
use kiln_store::Pool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::children::{AttemptChildren, LocalSlot, Waiters};
use crate::completer::run_completer;
use crate::config::{WorkerConfig, CLAIM_GATHER, CONTENDED_RETRY};
use crate::execute::{execute, handed_back};
use crate::fence::{fence_margin, watch_leases, Fence};
use crate::inflight::{InFlight, InFlightRuns, StopReason};
use crate::logs::{flush_logs, LogBuffer};
use crate::maintenance::{run_maintenance, run_scheduler};
use crate::registry::Registry;
use crate::WorkerError;
use kiln_client::backoff::{Backoff, FIRST_ERROR_BACKOFF};

/// Channel on which inserts into `kiln.ready` are announced.
const READY_CHANNEL: &str = "kiln_ready";
/// Notified when schedules are created, changed or fired (migration 0014).
const SCHEDULES_CHANNEL: &str = "kiln_schedules";
/// Channel on which cancels of executing runs are announced.
const CANCEL_CHANNEL: &str = "kiln_cancel";
/// The first pause after the notification connection failed.
const LISTEN_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Channel on which finished child runs name their parent.
const FINISHED_CHANNEL: &str = "kiln_run_finished";

/// Builds a [`Worker`]: `Worker::builder().database_url(url).register(MyTask).concurrency(50)`.
#[derive(Default)]
pub struct WorkerBuilder {
    database_url: Option<String>,
    pool: Option<Pool>,
    registry: Registry,
    errors: Vec<String>,
    worker_id: Option<String>,
    config: WorkerConfig,
    metrics_listen: Option<std::net::SocketAddr>,
    states: kiln_core::States,
}

impl WorkerBuilder {
    /// Hands every task body `value`, read with `ctx.state::<T>()`: a database pool, an HTTP
    /// client, settings. One value per type; call it once per type the tasks need. A task that
    /// declares `state: T` in `task!` makes [`WorkerBuilder::build`] fail without it.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(value);
        self
    }

    /// Connects to this database (ignored when [`WorkerBuilder::pool`] is given).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Uses an existing pool.
    pub fn pool(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Registers a task: this worker runs its runs, and its definition is recorded at start.
    pub fn register<T: Task>(mut self, task: T) -> Self {
        if let Err(e) = self.registry.insert(task) {
            self.errors.push(e);
        }
        self
    }

    /// Runs this process executes at once (its own limit, beside the global queue limits).
    pub fn concurrency(mut self, runs: usize) -> Self {
        self.config.concurrency = runs;
        self
    }

    /// Claims up to `runs` runs of queues without limits ahead of free slots, into a local
    /// buffer, so a slot that frees starts its next run without a round trip (default 0: none).
    /// See [`WorkerConfig::prefetch`] for what a buffered run looks like.
    pub fn prefetch(mut self, runs: usize) -> Self {
        self.config.prefetch = runs;
        self
    }

    /// How long a claimed run's lease lasts without a heartbeat (default [`DEFAULT_LEASE`], 30 s):
    /// a worker that dies loses its runs to another worker after at most this long.
    ///
    /// [`DEFAULT_LEASE`]: crate::DEFAULT_LEASE
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// How often held leases are extended (default 10 s); must be shorter than the lease.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.config.heartbeat_interval = every;
        self
    }

    /// How often an idle worker looks for runs besides being notified (default 1 s).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.config.poll_interval = every;
        self
    }

    /// How long runs in flight may finish when the worker is asked to stop (default 30 s);
    /// runs still going then are handed back without using up an attempt.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// How long a body may take to return after its run was canceled or timed out (default 5 s).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.config.cancel_grace = grace;
        self
    }

    /// How often the frequent maintenance services run: scheduler, rescuer, delayed promoter and
    /// expirer (default 1 s). [`WorkerBuilder::run_maintenance`] turns all of them off in this
    /// process.
    pub fn maintenance_interval(mut self, every: Duration) -> Self {
        self.config.maintenance_interval = every;
        self
    }

    /// How often the cleaner deletes finished runs past their retention (default 1 min).
    pub fn cleaner_interval(mut self, every: Duration) -> Self {
        self.config.cleaner_interval = every;
        self
    }

    /// How often idle concurrency keys and long-gone workers are forgotten (default 1 min).
    pub fn key_cleanup_interval(mut self, every: Duration) -> Self {
        self.config.key_cleanup_interval = every;
        self
    }

    /// Whether this process runs the maintenance services (default yes; every worker may, they
    /// coordinate through the database).
    pub fn run_maintenance(mut self, run: bool) -> Self {
        self.config.run_maintenance = run;
        self
    }

    /// How long finished runs are kept (default 30 days); `None` keeps them forever.
    pub fn retention(mut self, keep: Option<Duration>) -> Self {
        self.config.retention = keep;
        self
    }

    /// Serves this process's metrics (Prometheus text: attempts, durations, claims) on `addr`,
    /// e.g. `0.0.0.0:9464`. Installs the process's global `metrics` recorder: building fails if
    /// another one is installed already. The gauges read from Postgres are on `kiln serve`'s
    /// `/metrics`.
    pub fn metrics_listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_listen = Some(addr);
        self
    }

    /// Names this worker in leases and attempts (default: host, pid and a random suffix).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Replaces every setting at once.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Changes settings in place: `.configure(|c| c.lease = Duration::from_secs(10))`.
    pub fn configure(mut self, change: impl FnOnce(&mut WorkerConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Connects, migrates (unless disabled) and registers the tasks.
    pub async fn build(self) -> Result<Worker, WorkerError> {
        if let Some(error) = self.errors.into_iter().next() {
            return Err(WorkerError::Config(error));
        }
        if self.registry.is_empty() {
            return Err(WorkerError::Config(
                "no task is registered: call .register(MyTask) for each task this worker runs"
                    .into(),
            ));
        }
        self.config.validate().map_err(WorkerError::Config)?;
        if let Some((task, state)) = self.registry.missing_state(&self.states) {
            return Err(WorkerError::Config(format!(
                "task {task:?} declares `state: {state}`, but this worker was not given one: \
                 add .state(value) of type {state} to Worker::builder()"
            )));
        }
        if let Some(addr) = self.metrics_listen {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(kiln_client::metrics::DURATION_BUCKETS)
                .and_then(|b| b.with_http_listener(addr).install())
                .map_err(|e| WorkerError::Config(format!("cannot serve metrics on {addr}: {e}")))?;
            tracing::info!(%addr, "serving metrics");
        }
        // Declarative schedules: every pattern and timezone must parse before anything starts.
        let mut crons = Vec::new();
        for definition in self.registry.definitions() {
            let schedule =
                match &definition.cron {
                    Some(cron) => Some(cron.schedule().map_err(|e| {
                        WorkerError::Config(format!("task {:?}: {e}", definition.id))
                    })?),
                    None => None,
                };
            crons.push((definition.id, schedule));
        }
        let pool = match (self.pool, self.database_url) {
            (Some(pool), _) => pool,
            (None, Some(url)) => PgPoolOptions::new()
                .max_connections(self.config.max_connections)
                .connect_with(kiln_client::connect_options(&url).map_err(|e| {
                    WorkerError::Config(format!("DATABASE_URL does not parse: {e}"))
                })?)
                .await
                .map_err(WorkerError::Connect)?,
            (None, None) => {
                return Err(WorkerError::Config(
                    "no database: call .database_url(..) or .pool(..)".into(),
                ))
            }
        };
        if self.config.migrate {
            kiln_store::migrate(&pool).await?;
        }
        for (definition, schema) in self.registry.registrations() {
            task_register(&pool, definition, schema.as_ref()).await?;
        }
        let now = self.config.clock.now();
        for (task_id, schedule) in &crons {
            let cron = schedule
                .as_ref()
                .map(|s| (s.pattern(), s.timezone().name(), s.next_after(now)));
            schedule_sync_declarative(&pool, task_id, cron).await?;
        }
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        let mut registry = self.registry;
        registry.set_states(self.states);
        Ok(Worker {
            inner: Arc::new(Inner {
                pool,
                registry,
                worker_id,
                config: self.config,
            }),
        })
    }

    /// Builds and runs the worker until SIGTERM or Ctrl-C (see [`Worker::run`]).
    pub async fn run(self) -> Result<(), WorkerError> {
        self.build().await?.run().await
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".to_owned())
}

fn default_worker_id() -> String {
    format!(
        "{}-{}-{:04x}",
        hostname(),
        std::process::id(),
        fastrand::u16(..)
    )
}

struct Inner {
    pool: Pool,
    registry: Registry,
    worker_id: String,
    config: WorkerConfig,
}

/// A worker process's runtime. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.inner.worker_id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts building a worker.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// This worker's id, as recorded in leases and attempts.
    pub fn id(&self) -> &str {
        &self.inner.worker_id
    }

    /// The pool the worker uses.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Runs until SIGTERM or Ctrl-C. The first signal drains: no new claims, in-flight runs get
    /// the shutdown grace period, then the rest are handed back to the queue. A second signal
    /// returns at once (leases of runs still executing expire and are rescued elsewhere).
    pub async fn run(&self) -> Result<(), WorkerError> {
        let shutdown = CancellationToken::new();
        let abort = CancellationToken::new();
        let signals = tokio::spawn(watch_signals(shutdown.clone(), abort.clone()));
        let result = tokio::select! {
            result = self.run_until(shutdown) => result,
            _ = abort.cancelled() => {
                tracing::warn!("second signal: exiting without waiting for in-flight runs");
                Ok(())
            }
        };
        signals.abort();
        result
    }

    /// Runs until `shutdown` fires, then drains as [`Worker::run`] does on the first signal.
    pub async fn run_until(&self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let inner = &self.inner;
        let config = &inner.config;
        let task_ids = inner.registry.ids();
        tracing::info!(worker_id = %inner.worker_id, tasks = ?task_ids, concurrency = config.concurrency,
                       version = env!("CARGO_PKG_VERSION"), "worker started");
        worker_register(
            &inner.pool,
            &WorkerSpec {
                id: &inner.worker_id,
                hostname: &hostname(),
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION"),
                tasks: &task_ids,
                concurrency: config.concurrency as u32,
                heartbeat_ms: config.heartbeat_interval.as_millis() as u64,
            },
        )
        .await?;
        // In the background: a backlog's first claims need not wait for it.
        tokio::spawn(warm_connections(inner.pool.clone()));

        let wake = Arc::new(Notify::new());
        let slot_freed = Arc::new(Notify::new());
        let inflight = InFlightRuns::default();
        let waiters = Waiters::default();
        let worker_id: Arc<str> = Arc::from(inner.worker_id.as_str());
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let fence = Arc::new(Fence::default());
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel::<AttemptEnd>();
        let background = CancellationToken::new();

        let logs = LogBuffer::new(inner.pool.clone());
        let log_stop = CancellationToken::new();
        let log_flusher = tokio::spawn(flush_logs(
            Arc::clone(&logs),
            config.log_flush_interval,
            log_stop.clone(),
        ));
        let completer = tokio::spawn(run_completer(
            inner.pool.clone(),
            outcomes_rx,
            config.completion_batch,
            inflight.clone(),
            Arc::clone(&logs),
        ));
        let schedules_changed = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(
            inner.pool.clone(),
            Arc::clone(&wake),
            Arc::clone(&schedules_changed),
            inflight.clone(),
            waiters.clone(),
            background.clone(),
        ));
        let heartbeat = tokio::spawn(heartbeat(
            inner.pool.clone(),
            inner.worker_id.clone(),
            inflight.clone(),
            Arc::clone(&fence),
            config.clone(),
            background.clone(),
        ));
        let watchdog = tokio::spawn(watch_leases(
            inflight.clone(),
            Arc::clone(&fence),
            config.lease,
            background.clone(),
        ));
        let maintenance = config.run_maintenance.then(|| {
            (
                tokio::spawn(run_maintenance(
                    inner.pool.clone(),
                    config.clone(),
                    background.clone(),
                )),
                tokio::spawn(run_scheduler(
                    inner.pool.clone(),
                    config.clone(),
                    schedules_changed,
                    background.clone(),
                )),
            )
        });
        let mut bodies = tokio::task::JoinSet::new();
        // Starts one claimed run in `permit`'s slot.
        let start = |bodies: &mut tokio::task::JoinSet<()>,
                     run: ClaimedRun,
                     permit: OwnedSemaphorePermit,
                     flight: Arc<InFlight>| {
            let slot = Arc::new(LocalSlot::new(
                permit,
                Arc::clone(&slots),
                Arc::clone(&slot_freed),
            ));
            let children = Arc::new(AttemptChildren {
                pool: inner.pool.clone(),
                run_id: run.run_id,
                attempt: run.attempt,
                worker_id: Arc::clone(&worker_id),
                lease: config.lease,
                poll: config.poll_interval,
                waiters: waiters.clone(),
                slot: Arc::clone(&slot),
                token: flight.token.clone(),
                flight: Arc::clone(&flight),
            });
            let span = run_span(&run);
            let registry = inner.registry.clone();
            let outcomes = outcomes_tx.clone();
            let cancel_grace = config.cancel_grace;
            let margin = fence_margin(config.lease);
            let log = logs.attempt(
                run.run_id,
                run.attempt,
                config.log_max_lines,
                config.log_max_bytes,
            );
            let labels = AttemptLabels::of(&run);
            bodies.spawn(
                async move {
                    tracing::debug!("attempt started");
                    let started = tokio::time::Instant::now();
                    let end = execute(
                        &registry,
                        run,
                        Arc::clone(&flight),
                        cancel_grace,
                        margin,
                        children,
                        log,
                    )
                    .await;
                    flight.mark_finished();
                    labels.record(&end, started.elapsed());
                    tracing::debug!(outcome = end.outcome.as_str(), retry = end.retry_at.is_some(), "attempt ended");
                    if let Some(error) = &end.error {
                        tracing::warn!(kind = ?error.kind, error = %error.message, retry = end.retry_at.is_some(), "attempt failed");
                    }
                    // The completer forgets the run once the outcome is recorded.
                    let _ = outcomes.send(end);
                    slot.release();
                }
                .instrument(span),
            );
        };
        // Runs of queues without limits claimed ahead of free slots (`WorkerConfig::prefetch`):
        // leased, heartbeated and fenced like running ones, started as slots free.
        let mut buffer: VecDeque<(ClaimedRun, Arc<InFlight>)> = VecDeque::new();
        let prefetch = config.prefetch;

        let mut more_waiting = true;
        let half_batch = config.claim_batch.min(config.concurrency).div_ceil(2);
        let mut error_backoff = Backoff::new(FIRST_ERROR_BACKOFF);
        while !shutdown.is_cancelled() {
            while bodies.try_join_next().is_some() {}
            // Buffered runs take free slots first: no round trip.
            while !buffer.is_empty() {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    break;
                };
                let (run, flight) = buffer.pop_front().expect("the buffer is not empty");
                start(&mut bodies, run, permit, flight);
            }
            // Refill the buffer while bodies run, once it is half empty.
            let refill = prefetch > 0 && more_waiting && buffer.len() <= prefetch / 2;
            if slots.available_permits() == 0 && !refill {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = slot_freed.notified() => continue,
                }
            }
            if !more_waiting {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(config.poll_interval) => {}
                }
            } else if slots.available_permits() < half_batch && !refill {
                // Under a backlog, let a few more slots free up (briefly) so that each claim
                // takes a worthwhile batch instead of many claims taking a few runs each.
                let deadline = tokio::time::Instant::now() + CLAIM_GATHER;
                while slots.available_permits() < half_batch {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = slot_freed.notified() => {}
                    }
                }
            }
            // A fenced worker claims nothing until a heartbeat shows it reaches the database.
            if fence.is_raised() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = fence.lowered() => {}
                    _ = tokio::time::sleep(config.poll_interval) => {}
                }
                continue;
            }
            // Reserve the slots first: a waiting parent may take one back at any moment.
            let free = slots.available_permits().min(config.claim_batch);
            let room = prefetch.saturating_sub(buffer.len());
            if free == 0 && room == 0 {
                continue;
            }
            let mut reserved = if free > 0 {
                let Ok(reserved) = Arc::clone(&slots).try_acquire_many_owned(free as u32) else {
                    continue;
                };
                Some(reserved)
            } else {
                None
            };
            let claim_sent = tokio::time::Instant::now();
            let claim = lease_claim_prefetch(
                &inner.pool,
                &inner.worker_id,
                &task_ids,
                free as u32,
                room as u32,
                config.lease,
                None,
            )
            .await;
            metrics::histogram!(kiln_client::metrics::CLAIM_DURATION)
                .record(claim_sent.elapsed().as_secs_f64());
            match claim {
                Ok(mut claim) => {
                    metrics::counter!(kiln_client::metrics::CLAIMS).increment(1);
                    metrics::counter!(kiln_client::metrics::CLAIMED_RUNS)
                        .increment(claim.runs.len() as u64);
                    error_backoff.reset();
                    more_waiting = claim.runs.len() == free + room;
                    // Runs claimed for a slot start now; prefetched ones fill what is left,
                    // then wait in the buffer.
                    claim.runs.sort_by_key(|run| run.prefetched);
                    for run in claim.runs {
                        let flight =
                            inflight.insert(run.run_id, run.attempt, claim_sent + config.lease);
                        match reserved.as_mut().and_then(|r| r.split(1)) {
                            Some(permit) => start(&mut bodies, run, permit, flight),
                            None => buffer.push_back((run, flight)),
                        }
                    }
                    // Slots reserved but not filled go back now.
                    drop(reserved);
                    if claim.contended && !more_waiting {
                        more_waiting = true;
                        tokio::time::sleep(CONTENDED_RETRY.mul_f64(1.0 + fastrand::f64())).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "claiming runs failed; retrying");
                    more_waiting = true;
                    if !error_backoff.wait(&shutdown).await {
                        break;
                    }
                }
            }
        }

        // Buffered runs never started: hand them back at once, without counting an attempt.
        if !buffer.is_empty() {
            tracing::info!(runs = buffer.len(), "handing back prefetched runs");
        }
        for (run, flight) in buffer.drain(..) {
            flight.mark_finished();
            let _ = outcomes_tx.send(handed_back(&run));
        }

        // Drain: in-flight runs get the grace period, then are stopped and handed back.
        tracing::info!(
            in_flight = inflight.len(),
            "worker stopping: no new claims; draining"
        );
        if let Err(error) = worker_set_state(&inner.pool, &inner.worker_id, "draining").await {
            tracing::warn!(%error, "could not record that the worker drains");
        }
        let handed_back = inflight.stop_waiting(StopReason::Shutdown);
        if handed_back > 0 {
            tracing::info!(
                runs = handed_back,
                "handing back runs that wait on children"
            );
        }
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while bodies.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                in_flight = inflight.len(),
                "shutdown grace ran out; handing the remaining runs back"
            );
            inflight.stop_all(StopReason::Shutdown);
            while bodies.join_next().await.is_some() {}
        }
        drop(outcomes_tx);
        let _ = completer.await;
        log_stop.cancel();
        let _ = log_flusher.await;
        background.cancel();
        let _ = listener.await;
        let _ = heartbeat.await;
        let _ = watchdog.await;
        if let Some((maintenance, scheduler)) = maintenance {
            let _ = maintenance.await;
            let _ = scheduler.await;
        }
        if let Err(error) = worker_set_state(&inner.pool, &inner.worker_id, "stopped").await {
            tracing::warn!(%error, "could not record that the worker stopped");
        }
        tracing::info!(worker_id = %inner.worker_id, "worker stopped");
        Ok(())
    }
}

/// The metric labels of one attempt (bounded: task, queue, outcome).
struct AttemptLabels {
    task: String,
    queue: String,
}

impl AttemptLabels {
    /// Records the run's wait before this attempt: from when it could start (its delay or retry
    /// backoff over) to now.
    fn of(run: &ClaimedRun) -> Self {
        let waited = (chrono::Utc::now() - run.available_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!(kiln_client::metrics::QUEUE_WAIT, "queue" => run.queue.clone())
            .record(waited.as_secs_f64());
        Self {
            task: run.task_id.clone(),
            queue: run.queue.clone(),
        }
    }

    /// Records how the attempt ended and how long its body ran.
    fn record(self, end: &AttemptEnd, ran: Duration) {
        let outcome = match (end.outcome, end.retry_at.is_some()) {
            (kiln_core::AttemptOutcome::Failed, true) => "retried",
            (outcome, _) => outcome.as_str(),
        };
        metrics::histogram!(kiln_client::metrics::RUN_DURATION, "task" => self.task.clone())
            .record(ran.as_secs_f64());
        metrics::counter!(kiln_client::metrics::ATTEMPTS_FINISHED,
                          "task" => self.task, "queue" => self.queue, "outcome" => outcome)
        .increment(1);
    }
}

/// The span of one attempt, linked to its trigger's trace context by the installed
/// [`kiln_core::TracePropagator`] when the run has one.
fn run_span(run: &ClaimedRun) -> tracing::Span {
    let span = tracing::info_span!(
        "run",
        run_id = %run.run_id,
        task = %run.task_id,
        queue = %run.queue,
        key = run.concurrency_key.as_deref().unwrap_or(""),
        attempt = run.attempt,
        traceparent = run.traceparent.as_deref().unwrap_or(""),
    );
    if let Some(traceparent) = &run.traceparent {
        kiln_core::attach_traceparent(&span, traceparent);
    }
    span
}

/// Connections readied for the hot path when a worker starts (at most the pool's size less one).
const WARM_CONNECTIONS: u32 = 4;

/// Readies a few of the pool's connections as the worker starts, so its first runs do not pay for
/// planning Kiln's functions (see [`worker_warm_connection`]). The connections are held together,
/// so that each is a different one, and readied one after the other (two cores need not plan
/// four at once). Best effort: a connection not to be had within a second, or a failure, ends it
/// with a debug line.
async fn warm_connections(pool: sqlx::PgPool) {
    let wanted = WARM_CONNECTIONS.min(pool.options().get_max_connections().saturating_sub(1));
    let mut held = Vec::new();
    for _ in 0..wanted {
        match tokio::time::timeout(Duration::from_secs(1), pool.acquire()).await {
            Ok(Ok(conn)) => held.push(conn),
            Ok(Err(error)) => {
                tracing::debug!(%error, "no connection to ready");
                break;
            }
            Err(_) => break,
        }
    }
    for conn in &mut held {
        if let Err(error) = worker_warm_connection(conn).await {
            tracing::debug!(%error, "a connection was not readied");
            return;
        }
    }
    tracing::debug!(connections = held.len(), "connections readied");
}

async fn watch_signals(shutdown: CancellationToken, abort: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the worker");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            let _ = tokio::signal::ctrl_c().await;
            abort.cancel();
            return;
        }
    };
    for token in [shutdown, abort] {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stop signal received");
        token.cancel();
    }
}

/// LISTENs for new ready runs (wakes the fetch loop), for cancels (fires run tokens), for
/// finished children (wakes their waiting parents) and for schedule changes (wakes the
/// scheduler). Reconnects on its own; the fetch loop's, the waiting parents' and the scheduler's
/// polls cover the gaps.
async fn listen(
    pool: Pool,
    wake: Arc<Notify>,
    schedules_changed: Arc<Notify>,
    inflight: InFlightRuns,
    waiters: Waiters,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(LISTEN_FIRST_BACKOFF);
    while !stop.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, "cannot open the notification connection; retrying");
                if !backoff.wait(&stop).await {
                    return;
                }
                continue;
            }
        };
        if let Err(error) = listener
            .listen_all([
                READY_CHANNEL,
                CANCEL_CHANNEL,
                FINISHED_CHANNEL,
                SCHEDULES_CHANNEL,
            ])
            .await
        {
            // The connection opened but LISTEN failed: back off too, or this loop would spin.
            tracing::warn!(%error, "cannot LISTEN; retrying");
            if !backoff.wait(&stop).await {
                return;
            }
            continue;
        }
        backoff.reset();
        // Anything inserted or finished while not listening is found by these wake-ups.
        wake.notify_one();
        waiters.wake_all();
        schedules_changed.notify_one();
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(note)) if note.channel() == CANCEL_CHANNEL => {
                    if let Some(run) = note
                        .payload()
                        .parse::<Uuid>()
                        .ok()
                        .and_then(|id| inflight.get(id))
                    {
                        run.stop(StopReason::Canceled);
                    }
                }
                Ok(Some(note)) if note.channel() == SCHEDULES_CHANNEL => {
                    schedules_changed.notify_one();
                }
                Ok(Some(note)) if note.channel() == FINISHED_CHANNEL => {
                    if let Ok(parent) = note.payload().parse::<Uuid>() {
                        waiters.wake(parent);
                    }
                }
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) => {
                    tracing::warn!("notification connection lost; reconnecting");
                    wake.notify_one();
                }
                Err(error) => {
                    tracing::warn!(%error, "notification connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Extends the leases of in-flight runs; fires the token of runs that were canceled or whose
/// lease was lost. Each success lowers the fence (with nothing in flight, a fenced worker pings
/// the database instead).
async fn heartbeat(
    pool: Pool,
    worker_id: String,
    inflight: InFlightRuns,
    fence: Arc<Fence>,
    config: WorkerConfig,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.heartbeat_interval) => {}
        }
        let held = inflight.held();
        if held.is_empty() {
            // Still alive in the registry; for a fenced worker, proof it reaches the database.
            match worker_seen(&pool, &worker_id, 0).await {
                Ok(()) => fence.lower(),
                Err(error) => tracing::warn!(%error, "recording the heartbeat failed; will retry"),
            }
            continue;
        }
        let sent = tokio::time::Instant::now();
        match lease_heartbeat(&pool, &worker_id, &held, config.lease).await {
            Ok(acks) => {
                fence.lower();
                let attempts: std::collections::HashMap<Uuid, u32> = held.iter().copied().collect();
                for ack in &acks {
                    if let Some(attempt) = attempts.get(&ack.run_id).filter(|_| ack.extended) {
                        inflight.extend_lease(ack.run_id, *attempt, sent + config.lease);
                    }
                    if ack.canceled {
                        if let Some(run) = inflight.get(ack.run_id) {
                            run.stop(StopReason::Canceled);
                        }
                    }
                }
                let answered: std::collections::HashSet<Uuid> =
                    acks.iter().map(|a| a.run_id).collect();
                for (run_id, attempt) in held {
                    if !answered.contains(&run_id) {
                        // A finished body's lease is gone because its outcome was just recorded.
                        if let Some(run) = inflight
                            .get(run_id)
                            .filter(|run| run.attempt == attempt && !run.is_finished())
                        {
                            tracing::warn!(%run_id, "lease lost (rescued after a stall); stopping the attempt");
                            run.stop(StopReason::LeaseLost);
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "extending leases failed; will retry"),
        }
    }
}
