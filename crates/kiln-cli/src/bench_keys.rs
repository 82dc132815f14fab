//! `kiln bench keys`: what per-key limits cost. The same number of no-op runs is executed twice in
//! one session, once in a queue without limits and once spread over K concurrency keys under a
//! limit of N runs per key; and one claim of 500 runs is timed at the full keyed backlog (in a
//! transaction rolled back, so it consumes nothing): the first claim after the insert, which also
//! turns the insert's key wakeups into waiting keys, and then a claim once they were applied.

use std::sync::atomic::Ordering;
use std::time::Instant;

use clap::Args;
use kiln::worker::SchedulerVacuum;
use kiln::{task, Context, Result, Task, TriggerOptions, Worker};
use kiln_store::queue::queue_set_limit_override;
use kiln_store::run::{run_insert_many, run_purge_task, RunSpec};
use kiln_store::task::task_register;
use sqlx::PgPool;

use crate::bench::{count_executed, execute_all, BenchNoop, NoopPayload, LOG_LINES};
use crate::ops::DbArgs;
use crate::{table, CliResult, Failure};

#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Concurrency keys the runs are spread over (up to 100,000).
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// Runs at once per key.
    #[arg(long, default_value_t = 2)]
    limit: i32,
    /// Runs in each phase.
    #[arg(long, default_value_t = 50_000)]
    runs: u32,
    /// Runs the worker executes at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Time the claim only: skip executing the keyed runs (at 100,000 keys that takes long).
    #[arg(long)]
    claim_only: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

task! {
    /// Does nothing, in a queue whose per-key limit the benchmark sets.
    pub(crate) BenchKeyed {
        id: "kiln-bench-keyed",
        queue: { concurrency_limit: 2 },
        run: async |_ctx: Context, _payload: NoopPayload| -> Result<()> {
            count_executed();
            Ok(())
        }
    }
}

/// Inserts `runs` runs of `T` in statements of 50,000, each with the concurrency key `key(i)`.
async fn insert<T: Task>(
    pool: &PgPool,
    runs: u32,
    key: impl Fn(u32) -> Option<String>,
) -> CliResult {
    let mut start = 0;
    while start < runs {
        let end = (start + 50_000).min(runs);
        let specs: Vec<RunSpec> = (start..end)
            .map(|i| RunSpec {
                payload: serde_json::json!({ "i": i }),
                options: match key(i) {
                    Some(k) => TriggerOptions::new().concurrency_key(k),
                    None => TriggerOptions::new(),
                },
            })
            .collect();
        run_insert_many(pool, T::ID, Some(&T::DEFINITION), &specs, false)
            .await
            .map_err(Failure::new)?;
        start = end;
    }
    Ok(())
}

/// Times one claim of up to `max` runs at the current backlog, `rounds` times, each rolled back;
/// returns the median in milliseconds and how many runs a claim took.
async fn time_claim(
    pool: &PgPool,
    task_id: &str,
    max: i32,
    rounds: usize,
) -> std::result::Result<(f64, i64), Failure> {
    let mut samples = Vec::new();
    let mut claimed = 0;
    for _ in 0..rounds {
        let mut tx = pool.begin().await.map_err(Failure::new)?;
        let started = Instant::now();
        claimed = sqlx::query_scalar(
            "SELECT count(*) FROM kiln.claim_runs('kiln-bench-claim-probe', ARRAY[$1], $2, 30000)",
        )
        .bind(task_id)
        .bind(max)
        .fetch_one(&mut *tx)
        .await
        .map_err(Failure::new)?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        tx.rollback().await.map_err(Failure::new)?;
    }
    samples.sort_by(f64::total_cmp);
    Ok((samples[rounds / 2], claimed))
}

/// Runs the workers' vacuum pass of the key scheduler's tables once their dead rows show in the
/// statistics (within a few seconds); returns the tables it vacuumed.
async fn vacuum_scheduler(pool: &PgPool) -> std::result::Result<Vec<String>, Failure> {
    // Vacuumed now even if autovacuum visited the tables during the fan-out.
    let pass = SchedulerVacuum {
        min_interval: std::time::Duration::ZERO,
        ..SchedulerVacuum::default()
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let vacuumed = pass
            .vacuum_scheduler_tables(pool)
            .await
            .map_err(Failure::new)?;
        if !vacuumed.is_empty() || Instant::now() > deadline {
            return Ok(vacuumed);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Runs a worker of `concurrency` on `task` until `target` bodies ran; returns runs per second,
/// counted until every completion was recorded (the worker drained).
async fn execute<T: Task>(
    pool: &PgPool,
    task: T,
    concurrency: usize,
    target: u32,
) -> std::result::Result<f64, Failure> {
    let worker = Worker::builder()
        .pool(pool.clone())
        .register(task)
        .concurrency(concurrency)
        .configure(|c| c.migrate = false)
        .build()
        .await
        .map_err(Failure::new)?;
    let (_, all_recorded) = execute_all(worker, target).await?;
    Ok(f64::from(target) / all_recorded.as_secs_f64())
}

pub(crate) async fn keys(args: KeysArgs) -> CliResult {
    if args.keys == 0 || args.runs == 0 || args.limit < 1 {
        return Err(Failure::usage(
            "--keys, --runs and --limit must be at least 1",
        ));
    }
    let client = args.db.client_unchecked().await?;
    client.migrate().await?;
    let pool = client.pool().clone();
    for task in [BenchNoop::ID, BenchKeyed::ID] {
        run_purge_task(&pool, task).await.map_err(Failure::new)?;
    }
    task_register(&pool, &BenchNoop::DEFINITION, None)
        .await
        .map_err(Failure::new)?;
    task_register(&pool, &BenchKeyed::DEFINITION, None)
        .await
        .map_err(Failure::new)?;
    queue_set_limit_override(&pool, BenchKeyed::DEFINITION.queue_name(), Some(args.limit))
        .await
        .map_err(Failure::new)?;

    // Unconstrained: the same runs in a queue without limits.
    let free_rate = if args.claim_only {
        None
    } else {
        Some(unconstrained(&pool, &args).await?)
    };

    // Keyed: spread over the keys, limited per key.
    let keys = args.keys;
    insert::<BenchKeyed>(&pool, args.runs, |i| Some(format!("k{}", i % keys))).await?;
    sqlx::query("VACUUM ANALYZE kiln.ready")
        .execute(&pool)
        .await
        .map_err(Failure::new)?;
    let (first_claim_ms, _) = time_claim(&pool, BenchKeyed::ID, 500, 1).await?;
    // What later claims find: the insert's wakeups applied (a claim applies up to 10,000).
    loop {
        sqlx::query("SELECT kiln.schedule_keys($1, now())")
            .bind(BenchKeyed::DEFINITION.queue_name())
            .execute(&pool)
            .await
            .map_err(Failure::new)?;
        let pending: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM kiln.key_wakeups WHERE queue = $1)")
                .bind(BenchKeyed::DEFINITION.queue_name())
                .fetch_one(&pool)
                .await
                .map_err(Failure::new)?;
        if !pending {
            break;
        }
    }
    let (unvacuumed_ms, _) = time_claim(&pool, BenchKeyed::ID, 200, 5).await?;
    // What a worker's maintenance pass does within a second or so: vacuum the consumed wakeups.
    let vacuumed = vacuum_scheduler(&pool).await?;
    let (claim_ms, claimed) = time_claim(&pool, BenchKeyed::ID, 500, 5).await?;
    // The most that 100 keys under a limit of 2 allow: the same claim size at every K.
    let (claim_200_ms, claimed_200) = time_claim(&pool, BenchKeyed::ID, 200, 5).await?;
    let keyed_rate = match free_rate {
        None => None,
        Some(_) => Some(execute(&pool, BenchKeyed, args.concurrency, args.runs).await?),
    };
    let waiting_keys = args.keys.min(args.runs);
    let share = match (keyed_rate, free_rate) {
        (Some(k), Some(f)) => Some((k / f * 100.0).round() / 100.0),
        _ => None,
    };

    if args.json {
        table::json(&serde_json::json!({
            "runs": args.runs, "keys": args.keys, "limit": args.limit,
            "concurrency": args.concurrency,
            "unconstrained_runs_per_s": free_rate.map(f64::round),
            "keyed_runs_per_s": keyed_rate.map(f64::round),
            "keyed_share": share,
            "claim_ms_at_backlog": (claim_ms * 10.0).round() / 10.0,
            "claim_200_ms_at_backlog": (claim_200_ms * 10.0).round() / 10.0,
            "claimed_by_the_200_claim": claimed_200,
            "claim_200_ms_before_maintenance_vacuum": (unvacuumed_ms * 10.0).round() / 10.0,
            "maintenance_vacuumed": vacuumed,
            "first_claim_ms_after_insert": (first_claim_ms * 10.0).round() / 10.0,
            "claimed_by_that_claim": claimed, "waiting_keys": waiting_keys,
        }));
    } else {
        println!(
            "kiln keys={} limit={} runs={} concurrency={}",
            args.keys, args.limit, args.runs, args.concurrency
        );
        if let (Some(free), Some(keyed), Some(share)) = (free_rate, keyed_rate, share) {
            println!("unconstrained execute: {free:.0} runs/s");
            println!("keyed execute: {keyed:.0} runs/s ({share:.2} of unconstrained)");
        }
        println!(
            "one claim at the full backlog ({waiting_keys} keys waiting): {claim_ms:.1} ms for {claimed} runs"
        );
        println!(
            "one claim of up to 200 at the full backlog: {claim_200_ms:.1} ms for {claimed_200} runs"
        );
        println!(
            "the same claim before the maintenance pass vacuumed the consumed wakeups ({}): {unvacuumed_ms:.1} ms",
            if vacuumed.is_empty() { "none due".to_owned() } else { vacuumed.join(", ") }
        );
        println!(
            "the first claim after the insert, applying up to 10,000 of its key wakeups: {first_claim_ms:.1} ms"
        );
    }
    Ok(())
}

/// The unconstrained phase: `args.runs` no-op runs in a queue without limits.
async fn unconstrained(pool: &PgPool, args: &KeysArgs) -> std::result::Result<f64, Failure> {
    LOG_LINES.store(0, Ordering::Release);
    insert::<BenchNoop>(pool, args.runs, |_| None).await?;
    execute(pool, BenchNoop, args.concurrency, args.runs).await
}
