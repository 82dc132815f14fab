//! `kiln bench backlog`: trigger and execute rates on top of a large backlog and history, against
//! the same on empty tables, in one session. Phase one inserts and runs `--runs` no-op runs on
//! empty tables. Phase two adds a history of `--history` runs (mostly finished, as `kiln bench
//! dashboard` writes it) and a backlog of `--backlog` queued runs of another task, then inserts and
//! runs `--runs` no-op runs again: the trigger writes into tables holding both, and the worker's
//! claims pass the backlog's queue on the way to its own.

use std::time::{Duration, Instant};

use clap::Args;
use kiln::{task, Context, Result, Task, TriggerOptions};
use kiln_store::bench::bench_fill_history;
use kiln_store::run::{run_insert_many, run_purge_task, RunSpec};
use kiln_store::task::task_register;

use crate::bench::{insert_and_drain, BenchNoop, NoopPayload};
use crate::ops::DbArgs;
use crate::{table, CliResult, Failure};

#[derive(Debug, Args)]
pub(crate) struct BacklogArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Runs triggered and executed in each phase.
    #[arg(long, default_value_t = 50_000)]
    runs: u32,
    /// Queued runs waiting in phase two (another task's, in its own queue).
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u32,
    /// Runs of history in phase two (80 % completed, the rest failed, canceled and so on).
    #[arg(long, default_value_t = 1_000_000)]
    history: u64,
    /// Runs the worker executes at once.
    #[arg(long, default_value_t = 500)]
    concurrency: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

task! {
    /// Waits in the backlog; no worker of the benchmark serves it.
    pub(crate) BenchBacklog {
        id: "kiln-bench-backlog",
        run: async |_ctx: Context, _payload: NoopPayload| -> Result<()> { Ok(()) }
    }
}

/// Rows per insert statement when filling the backlog.
const BACKLOG_CHUNK: u32 = 50_000;

pub(crate) async fn backlog(args: BacklogArgs) -> CliResult {
    if args.runs == 0 {
        return Err(Failure::usage("--runs must be at least 1"));
    }
    let client = args.db.client_unchecked().await?;
    client.migrate().await?;
    let pool = client.pool().clone();
    for task in [BenchNoop::ID, BenchBacklog::ID] {
        run_purge_task(&pool, task).await.map_err(Failure::new)?;
    }
    for definition in [&BenchNoop::DEFINITION, &BenchBacklog::DEFINITION] {
        task_register(&pool, definition, None)
            .await
            .map_err(Failure::new)?;
    }
    let rate = |d: Duration| f64::from(args.runs) / d.as_secs_f64();

    let (empty_insert, _, empty_execute) =
        insert_and_drain(&pool, args.runs, args.concurrency, 0).await?;
    run_purge_task(&pool, BenchNoop::ID)
        .await
        .map_err(Failure::new)?;

    let filling = Instant::now();
    bench_fill_history(&pool, args.history)
        .await
        .map_err(Failure::new)?;
    let mut queued = 0;
    while queued < args.backlog {
        let n = (args.backlog - queued).min(BACKLOG_CHUNK);
        let specs: Vec<RunSpec> = (queued..queued + n)
            .map(|i| RunSpec {
                payload: serde_json::json!({ "i": i }),
                options: TriggerOptions::new(),
            })
            .collect();
        run_insert_many(
            &pool,
            BenchBacklog::ID,
            Some(&BenchBacklog::DEFINITION),
            &specs,
            false,
        )
        .await
        .map_err(Failure::new)?;
        queued += n;
    }
    sqlx::query("ANALYZE kiln.runs")
        .execute(&pool)
        .await
        .map_err(Failure::new)?;
    sqlx::query("ANALYZE kiln.ready")
        .execute(&pool)
        .await
        .map_err(Failure::new)?;
    let filled = filling.elapsed();

    let (full_insert, _, full_execute) =
        insert_and_drain(&pool, args.runs, args.concurrency, 0).await?;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.ready WHERE task_id = $1")
        .bind(BenchBacklog::ID)
        .fetch_one(&pool)
        .await
        .map_err(Failure::new)?;

    let (insert_share, execute_share) = (
        rate(full_insert) / rate(empty_insert),
        rate(full_execute) / rate(empty_execute),
    );
    if args.json {
        table::json(&serde_json::json!({
            "runs": args.runs, "backlog": args.backlog, "history": args.history,
            "concurrency": args.concurrency, "fill_s": filled.as_secs(),
            "backlog_still_waiting": waiting,
            "empty": {"insert_runs_per_s": rate(empty_insert).round(),
                      "execute_runs_per_s": rate(empty_execute).round()},
            "backlog_and_history": {"insert_runs_per_s": rate(full_insert).round(),
                                    "execute_runs_per_s": rate(full_execute).round()},
            "insert_share": (insert_share * 100.0).round() / 100.0,
            "execute_share": (execute_share * 100.0).round() / 100.0,
        }));
    } else {
        println!(
            "kiln backlog runs={} backlog={} history={} concurrency={}",
            args.runs, args.backlog, args.history, args.concurrency
        );
        println!(
            "empty tables: insert {:.0} runs/s, execute {:.0} runs/s",
            rate(empty_insert),
            rate(empty_execute)
        );
        println!(
            "with {waiting} queued and {} of history (filled in {:.0} s): insert {:.0} runs/s ({insert_share:.2}), execute {:.0} runs/s ({execute_share:.2})",
            args.history,
            filled.as_secs_f64(),
            rate(full_insert),
            rate(full_execute)
        );
    }
    Ok(())
}
