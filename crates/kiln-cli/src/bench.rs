//! `kiln bench`: throughput and latency, measured the way the peer benchmark measures them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use kiln::{task, Context, Result, Task, TriggerOptions, Worker};
use kiln_store::run::{run_insert_many, run_purge_task, run_status_counts, RunSpec};
use kiln_store::stats::stats_deadlocks;
use kiln_store::task::task_register;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::ops::DbArgs;
use crate::{table, CliResult, Failure};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Bulk-insert N no-op runs in one statement, then drain them with one worker.
    Throughput(ThroughputArgs),
    /// Enqueue-to-start latency: one run at a time into an idle worker.
    Latency(LatencyArgs),
    /// One parent triggers N children with batch_trigger_and_wait: time until all complete and
    /// the parent has resumed and completed.
    Fanout(FanoutArgs),
    /// Triggers over the HTTP API against the Rust client, single and batched, same
    /// concurrency and pool size.
    Http(crate::bench_http::HttpArgs),
    /// Fills a run history (1,000,000 runs by default) and times each dashboard page on it,
    /// unfiltered and with each filter.
    Dashboard(crate::bench_dashboard::DashboardArgs),
    /// Per-key limits: the same runs unconstrained and spread over K keys under a limit of N per
    /// key, and one claim timed at the full keyed backlog.
    Keys(crate::bench_keys::KeysArgs),
    /// Resident memory of a worker holding N runs in flight (sleeping bodies)
    Memory(crate::bench_memory::MemoryArgs),
    /// Trigger and execute rates on top of a 1,000,000-run backlog and a 1,000,000-run history,
    /// against the same on empty tables
    Backlog(crate::bench_backlog::BacklogArgs),
}

#[derive(Debug, Args)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Children the parent triggers (batches of up to 1,000 each).
    #[arg(long, default_value_t = 1_000)]
    children: u32,
    /// Runs the worker executes at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct FanoutPayload {
    children: u32,
}

task! {
    /// Triggers `children` no-op children in batches and waits for all of them.
    BenchParent {
        id: "kiln-bench-parent",
        max_duration: "1h",
        run: async |ctx: Context, payload: FanoutPayload| -> Result<u32> {
            let mut completed = 0;
            let all: Vec<u64> = (0..u64::from(payload.children)).collect();
            for chunk in all.chunks(kiln::MAX_BATCH_SIZE) {
                let items = chunk.iter().map(|&i| kiln::BatchItem::new(NoopPayload { i })).collect();
                let results = ctx.batch_trigger_and_wait::<BenchNoop>(items).await?;
                completed += results.iter().filter(|r| r.is_ok()).count() as u32;
            }
            Ok(completed)
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ThroughputArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Runs to insert and drain.
    #[arg(long, default_value_t = 50_000)]
    runs: u32,
    /// Runs the worker executes at once (each claim takes up to this many).
    #[arg(long, default_value_t = 500)]
    concurrency: usize,
    /// Log lines each body writes with `ctx.log()` (and one `tracing::info!`, kept when the
    /// log layer is installed, unless KILN_NO_LOG_CAPTURE is set).
    #[arg(long, default_value_t = 0)]
    log_lines: u32,
    /// Runs the worker claims ahead of free slots into its local buffer (`Worker::prefetch`; the
    /// peer's run.sh uses a local queue of 500).
    #[arg(long, default_value_t = 0)]
    prefetch: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LatencyArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Runs to time.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Also print the N slowest samples, with their position in the sequence and the trigger
    /// call's share (the first call on each pooled connection plans Kiln's functions).
    #[arg(long, default_value_t = 0)]
    show_slowest: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

static EXECUTED: AtomicU64 = AtomicU64::new(0);
static ALL_EXECUTED: Notify = Notify::const_new();
static TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
pub(crate) static LOG_LINES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Counts one body that ran toward the current phase's target (benchmark bodies call it).
pub(crate) fn count_executed() {
    if EXECUTED.fetch_add(1, Ordering::AcqRel) + 1 == TARGET.load(Ordering::Acquire) {
        ALL_EXECUTED.notify_one();
    }
}

/// Runs `worker` until `target` bodies counted with [`count_executed`] ran, then drains it.
/// Returns the time until the bodies were done and the time until every completion was
/// recorded (the worker stopped).
pub(crate) async fn execute_all(
    worker: Worker,
    target: u32,
) -> std::result::Result<(Duration, Duration), Failure> {
    EXECUTED.store(0, Ordering::Release);
    TARGET.store(u64::from(target), Ordering::Release);
    let started = Instant::now();
    let running = BenchWorker::start(worker);
    let executed = ALL_EXECUTED.notified();
    if EXECUTED.load(Ordering::Acquire) < u64::from(target) {
        executed.await;
    }
    let bodies = started.elapsed();
    running.stop().await?;
    Ok((bodies, started.elapsed()))
}
/// Inserts `runs` no-op runs in one statement, then runs them with one worker of `concurrency`
/// (and a prefetch buffer of `prefetch`); returns the insert's time, the bodies' time, and the
/// time until every completion was recorded.
pub(crate) async fn insert_and_drain(
    pool: &PgPool,
    runs: u32,
    concurrency: usize,
    prefetch: usize,
) -> std::result::Result<(Duration, Duration, Duration), Failure> {
    let specs: Vec<RunSpec> = (0..u64::from(runs))
        .map(|i| RunSpec {
            payload: serde_json::json!({ "i": i }),
            options: TriggerOptions::new(),
        })
        .collect();
    let started = Instant::now();
    run_insert_many(
        pool,
        BenchNoop::ID,
        Some(&BenchNoop::DEFINITION),
        &specs,
        false,
    )
    .await
    .map_err(Failure::new)?;
    let insert = started.elapsed();
    let worker = Worker::builder()
        .pool(pool.clone())
        .register(BenchNoop)
        .concurrency(concurrency)
        .prefetch(prefetch)
        .configure(|c| c.migrate = false)
        .build()
        .await
        .map_err(Failure::new)?;
    let (bodies, execute) = execute_all(worker, runs).await?;
    Ok((insert, bodies, execute))
}

static LATENCIES: Mutex<Option<mpsc::UnboundedSender<f64>>> = Mutex::new(None);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NoopPayload {
    i: u64,
}

task! {
    /// Does nothing: measures Kiln's own cost per run.
    pub(crate) BenchNoop {
        id: "kiln-bench-noop",
        run: async |ctx: Context, payload: NoopPayload| -> Result<()> {
            let lines = LOG_LINES.load(Ordering::Relaxed);
            for i in 0..lines {
                ctx.log().info_with("step", serde_json::json!({ "i": i, "run": payload.i }));
            }
            if lines > 0 {
                tracing::info!(run = payload.i, "done");
            }
            count_executed();
            Ok(())
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct PingPayload {
    /// Enqueue time, microseconds since the epoch.
    t: u64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

task! {
    /// Reports how long after its enqueue it started.
    BenchPing {
        id: "kiln-bench-ping",
        run: async |_ctx: Context, payload: PingPayload| -> Result<()> {
            let ms = now_micros().saturating_sub(payload.t) as f64 / 1000.0;
            if let Some(tx) = LATENCIES.lock().expect("latency channel").as_ref() {
                let _ = tx.send(ms);
            }
            Ok(())
        }
    }
}

/// A worker running in the benchmark's process until stopped.
pub(crate) struct BenchWorker {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<std::result::Result<(), kiln::WorkerError>>,
}

impl BenchWorker {
    pub(crate) fn start(worker: Worker) -> Self {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move { worker.run_until(token).await });
        Self { shutdown, handle }
    }

    /// Drains the worker and returns how it ended.
    pub(crate) async fn stop(self) -> CliResult {
        self.shutdown.cancel();
        self.handle
            .await
            .map_err(Failure::new)?
            .map_err(Failure::new)
    }
}

pub(crate) async fn run(command: BenchCommand) -> CliResult {
    match command {
        BenchCommand::Throughput(args) => throughput(args).await,
        BenchCommand::Latency(args) => latency(args).await,
        BenchCommand::Fanout(args) => fanout(args).await,
        BenchCommand::Http(args) => crate::bench_http::http(args).await,
        BenchCommand::Dashboard(args) => crate::bench_dashboard::dashboard(args).await,
        BenchCommand::Keys(args) => crate::bench_keys::keys(args).await,
        BenchCommand::Memory(args) => crate::bench_memory::memory(args).await,
        BenchCommand::Backlog(args) => crate::bench_backlog::backlog(args).await,
    }
}

async fn throughput(args: ThroughputArgs) -> CliResult {
    if args.runs == 0 {
        return Err(Failure::usage("--runs must be at least 1"));
    }
    let client = args.db.client_unchecked().await?;
    client.migrate().await?;
    let pool = client.pool().clone();
    run_purge_task(&pool, BenchNoop::ID)
        .await
        .map_err(Failure::new)?;
    task_register(&pool, &BenchNoop::DEFINITION, None)
        .await
        .map_err(Failure::new)?;
    LOG_LINES.store(args.log_lines, Ordering::Release);
    let deadlocks_before = stats_deadlocks(&pool).await.map_err(Failure::new)?;

    let (insert, bodies, execute) =
        insert_and_drain(&pool, args.runs, args.concurrency, args.prefetch).await?;

    let counts = run_status_counts(&pool, Some(BenchNoop::ID))
        .await
        .map_err(Failure::new)?;
    let completed = counts
        .iter()
        .find(|(s, _)| *s == kiln::RunStatus::Completed)
        .map(|(_, n)| *n)
        .unwrap_or(0);
    if completed != i64::from(args.runs) {
        return Err(Failure::new(format!(
            "only {completed} of {} runs were recorded as completed: {counts:?}",
            args.runs
        )));
    }
    let deadlocks = stats_deadlocks(&pool).await.map_err(Failure::new)? - deadlocks_before;
    let rate = |d: Duration| f64::from(args.runs) / d.as_secs_f64();
    if args.json {
        table::json(&serde_json::json!({
            "runs": args.runs, "concurrency": args.concurrency, "deadlocks": deadlocks,
            "log_lines": args.log_lines, "prefetch": args.prefetch,
            "insert_ms": insert.as_millis(), "insert_runs_per_s": rate(insert).round(),
            "execute_ms": execute.as_millis(), "execute_runs_per_s": rate(execute).round(),
            "bodies_ms": bodies.as_millis(), "bodies_runs_per_s": rate(bodies).round(),
        }));
    } else {
        println!(
            "kiln runs={} concurrency={} log_lines={} prefetch={}",
            args.runs, args.concurrency, args.log_lines, args.prefetch
        );
        println!("insert: {:.0} runs/s", rate(insert));
        println!(
            "execute: {:.0} runs/s (all {} completions recorded; bodies done at {:.0} runs/s)",
            rate(execute),
            args.runs,
            rate(bodies)
        );
        println!("deadlocks detected by Postgres in this database during the run: {deadlocks}");
    }
    Ok(())
}

async fn latency(args: LatencyArgs) -> CliResult {
    if args.samples == 0 {
        return Err(Failure::usage("--samples must be at least 1"));
    }
    let client = args.db.client_unchecked().await?;
    client.migrate().await?;
    run_purge_task(client.pool(), BenchPing::ID)
        .await
        .map_err(Failure::new)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    *LATENCIES.lock().expect("latency channel") = Some(tx);
    let worker = Worker::builder()
        .pool(client.pool().clone())
        .register(BenchPing)
        .concurrency(4)
        .configure(|c| c.migrate = false)
        .build()
        .await
        .map_err(Failure::new)?;
    let running = BenchWorker::start(worker);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::with_capacity(args.samples);
    let mut trigger_calls = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let t = now_micros();
        client.trigger::<BenchPing>(PingPayload { t }).await?;
        trigger_calls.push(now_micros().saturating_sub(t) as f64 / 1000.0);
        let ms = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .map_err(|_| {
                Failure::new("a run did not start within 30 s; is the worker able to claim?")
            })?
            .ok_or_else(|| Failure::new("the latency channel closed"))?;
        samples.push(ms);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.stop().await?;
    if args.show_slowest > 0 {
        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.sort_by(|a, b| samples[*b].total_cmp(&samples[*a]));
        for i in order.iter().take(args.show_slowest) {
            eprintln!(
                "sample {i}: {:.1} ms, of which the trigger call {:.1} ms",
                samples[*i], trigger_calls[*i]
            );
        }
    }
    let pick = |samples: &mut Vec<f64>, q: f64| {
        samples.sort_by(f64::total_cmp);
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]
    };
    let (p50, p95, p99) = (
        pick(&mut samples, 0.5),
        pick(&mut samples, 0.95),
        pick(&mut samples, 0.99),
    );
    // The trigger's share: from the call to its answer (the run is committed by then).
    let trigger_p50 = pick(&mut trigger_calls, 0.5);
    if args.json {
        table::json(
            &serde_json::json!({"samples": samples.len(), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                                "trigger_call_p50_ms": trigger_p50}),
        );
    } else {
        println!("kiln enqueue->start latency ms: p50 {p50:.1} p95 {p95:.1} p99 {p99:.1}");
        println!("of which the trigger call, p50: {trigger_p50:.2} ms");
    }
    Ok(())
}

async fn fanout(args: FanoutArgs) -> CliResult {
    if args.children == 0 {
        return Err(Failure::usage("--children must be at least 1"));
    }
    let client = args.db.client_unchecked().await?;
    client.migrate().await?;
    let pool = client.pool().clone();
    for task in [BenchParent::ID, BenchNoop::ID] {
        run_purge_task(&pool, task).await.map_err(Failure::new)?;
    }
    EXECUTED.store(0, Ordering::Release);
    TARGET.store(u64::MAX, Ordering::Release);
    let worker = Worker::builder()
        .pool(pool.clone())
        .register(BenchParent)
        .register(BenchNoop)
        .concurrency(args.concurrency)
        .configure(|c| {
            c.migrate = false;
            c.poll_interval = Duration::from_millis(100);
        })
        .build()
        .await
        .map_err(Failure::new)?;
    let running = BenchWorker::start(worker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let parent = client
        .trigger::<BenchParent>(FanoutPayload {
            children: args.children,
        })
        .await?;
    let mut children_done = None;
    let run = loop {
        let run = client.runs().retrieve(parent.id).await?;
        if children_done.is_none() && EXECUTED.load(Ordering::Acquire) >= u64::from(args.children) {
            children_done = Some(started.elapsed());
        }
        if run.status.is_final() {
            break run;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(Failure::new("the fan-out did not finish within 10 minutes"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let total = started.elapsed();
    running.stop().await?;
    if run.status != kiln::RunStatus::Completed || run.output != Some(args.children.into()) {
        return Err(Failure::new(format!(
            "the parent ended {} with output {:?}; expected all {} children completed",
            run.status, run.output, args.children
        )));
    }
    let children = children_done.unwrap_or(total);
    if args.json {
        table::json(&serde_json::json!({
            "children": args.children, "concurrency": args.concurrency,
            "children_done_ms": children.as_millis(), "parent_done_ms": total.as_millis(),
        }));
    } else {
        println!(
            "kiln fan-out children={} concurrency={}",
            args.children, args.concurrency
        );
        println!(
            "all children executed after {:.0} ms; parent resumed and completed after {:.0} ms",
            children.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
