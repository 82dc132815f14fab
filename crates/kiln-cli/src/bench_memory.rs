//! `kiln bench memory`: the resident memory of a worker holding N runs in flight. One worker of
//! concurrency N runs in this process; N runs whose bodies sleep are triggered, and once all N
//! are executing, the process's resident set (`VmRSS`) is read, against its size before the
//! worker started. The process also holds the client and the benchmark itself, so the figure is
//! an upper bound of the worker's own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use kiln::{task, Context, Result, Task, TriggerOptions, Worker};
use kiln_store::run::{run_insert_many, run_purge_task, RunSpec};
use serde::{Deserialize, Serialize};

use crate::bench::BenchWorker;
use crate::ops::DbArgs;
use crate::{table, CliResult, Failure};

#[derive(Debug, Args)]
pub(crate) struct MemoryArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Runs in flight at once (the worker's concurrency).
    #[arg(long, default_value_t = 1_000)]
    runs: u32,
    /// How long each body sleeps, in seconds: long enough to read the memory while all run.
    #[arg(long, default_value_t = 10)]
    sleep: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Bodies started in this process.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// How long to sleep.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SleepPayload {
    ms: u64,
}

task! {
    /// Sleeps, holding its slot: an in-flight run that costs nothing but its place in memory.
    pub(crate) BenchSleep {
        id: "kiln-bench-sleep",
        run: async |ctx: Context, payload: SleepPayload| -> Result<()> {
            STARTED.fetch_add(1, Ordering::AcqRel);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(payload.ms)) => {}
                _ = ctx.cancelled() => {}
            }
            Ok(())
        }
    }
}

/// This process's resident set and its peak, in bytes, from /proc (Linux).
fn resident() -> std::result::Result<(u64, u64), Failure> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Failure::new(format!("cannot read /proc/self/status (Linux only): {e}")))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
            .ok_or_else(|| Failure::new(format!("/proc/self/status has no {name}")))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

pub(crate) async fn memory(args: MemoryArgs) -> CliResult {
    if args.runs == 0 || args.sleep == 0 {
        return Err(Failure::usage("--runs and --sleep must be at least 1"));
    }
    let client = args.db.client_unchecked().await?;
    client.migrate().await?;
    let pool = client.pool().clone();
    run_purge_task(&pool, BenchSleep::ID)
        .await
        .map_err(Failure::new)?;
    let (before, _) = resident()?;
    let worker = Worker::builder()
        .pool(pool.clone())
        .register(BenchSleep)
        .concurrency(args.runs as usize)
        .configure(|c| c.migrate = false)
        .build()
        .await
        .map_err(Failure::new)?;
    let running = BenchWorker::start(worker);
    let (idle, _) = resident()?;
    STARTED.store(0, Ordering::Release);
    let specs: Vec<RunSpec> = (0..args.runs)
        .map(|_| RunSpec {
            payload: serde_json::json!({ "ms": args.sleep * 1000 }),
            options: TriggerOptions::new(),
        })
        .collect();
    for chunk in specs.chunks(kiln::MAX_BATCH_SIZE) {
        run_insert_many(
            &pool,
            BenchSleep::ID,
            Some(&BenchSleep::DEFINITION),
            chunk,
            false,
        )
        .await
        .map_err(Failure::new)?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.sleep);
    while STARTED.load(Ordering::Acquire) < u64::from(args.runs) {
        if Instant::now() > deadline {
            running.stop().await?;
            return Err(Failure::new(format!(
                "only {} of {} runs started within {} s: raise --sleep",
                STARTED.load(Ordering::Acquire),
                args.runs,
                args.sleep
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the worker settle (heartbeats, log buffers) with every run in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (in_flight, peak) = resident()?;
    running.stop().await?;
    let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    if args.json {
        table::json(&serde_json::json!({
            "runs_in_flight": args.runs,
            "rss_before_worker_mb": (mb(before) * 10.0).round() / 10.0,
            "rss_idle_worker_mb": (mb(idle) * 10.0).round() / 10.0,
            "rss_in_flight_mb": (mb(in_flight) * 10.0).round() / 10.0,
            "rss_peak_mb": (mb(peak) * 10.0).round() / 10.0,
        }));
    } else {
        println!("kiln memory runs_in_flight={}", args.runs);
        println!(
            "process RSS: {:.1} MB before the worker, {:.1} MB with the worker idle, {:.1} MB with {} runs in flight (peak {:.1} MB)",
            mb(before),
            mb(idle),
            mb(in_flight),
            args.runs,
            mb(peak)
        );
    }
    Ok(())
}
