//! Tasks the tests run. The probe tasks record each body's start and end with the database's
//! clock in `probe_intervals`, so the tests can compute the concurrency actually observed.

use std::sync::OnceLock;
use std::time::Duration;

use kiln::{task, Context, Error, Result};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

static POOL: OnceLock<PgPool> = OnceLock::new();

/// Gives the probe tasks their database. One per process: the first call wins, so tests that
/// run probe tasks in-process live in test binaries of their own.
pub fn set_probe_pool(pool: PgPool) {
    let _ = POOL.set(pool);
}

fn pool() -> Result<&'static PgPool> {
    POOL.get()
        .ok_or_else(|| Error::abort("set_probe_pool was not called in this process"))
}

/// Creates the table the probe tasks write to.
pub async fn create_probe_table(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS probe_intervals (
             run_id uuid NOT NULL, attempt int NOT NULL, queue text NOT NULL, key text NOT NULL,
             worker text NOT NULL, started_at timestamptz NOT NULL, finished_at timestamptz,
             PRIMARY KEY (run_id, attempt));
         CREATE TABLE IF NOT EXISTS probe_events (run_id uuid NOT NULL, event text NOT NULL,
             at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .execute(pool)
    .await
    .expect("create probe tables");
}

/// What a probe run does.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbePayload {
    /// How long the body works.
    pub sleep_ms: u64,
    /// Fail the first attempt (after working), so the run is retried.
    #[serde(default)]
    pub fail_first: bool,
}

async fn probe(ctx: &Context, payload: &ProbePayload) -> Result<u64> {
    let pool = pool()?;
    let worker = std::env::var("KILN_WORKER_ID").unwrap_or_else(|_| "in-process".into());
    sqlx::query(
        "INSERT INTO probe_intervals (run_id, attempt, queue, key, worker, started_at)
         VALUES ($1, $2, $3, $4, $5, clock_timestamp())",
    )
    .bind(ctx.run_id())
    .bind(ctx.attempt() as i32)
    .bind(ctx.queue())
    .bind(ctx.concurrency_key().unwrap_or(""))
    .bind(worker)
    .execute(pool)
    .await?;
    // A stopped body (canceled, fenced, shut down) records when it stopped, so the observed
    // intervals end when the body really did.
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(payload.sleep_ms)) => {}
        _ = ctx.cancelled() => {}
    }
    sqlx::query("UPDATE probe_intervals SET finished_at = clock_timestamp() WHERE run_id = $1 AND attempt = $2")
        .bind(ctx.run_id())
        .bind(ctx.attempt() as i32)
        .execute(pool)
        .await?;
    if ctx.is_cancelled() {
        return Err(Error::msg("stopped before its work was done"));
    }
    if payload.fail_first && ctx.attempt() == 1 {
        return Err(Error::msg("first attempt fails on purpose"));
    }
    Ok(payload.sleep_ms)
}

task! {
    /// Probe in a queue limited to 2 runs per concurrency key.
    pub KeyedProbe {
        id: "keyed-probe",
        queue: { concurrency_limit: 2 },
        retry: { max_attempts: 3, min_timeout: "50ms", max_timeout: "200ms" },
        run: async |ctx: Context, payload: ProbePayload| -> Result<u64> { probe(&ctx, &payload).await }
    }
}

task! {
    /// Probe in a queue limited to 3 runs in all.
    pub LimitedProbe {
        id: "limited-probe",
        queue: { concurrency_limit: 3 },
        retry: { max_attempts: 3, min_timeout: "50ms", max_timeout: "200ms" },
        run: async |ctx: Context, payload: ProbePayload| -> Result<u64> { probe(&ctx, &payload).await }
    }
}

task! {
    /// Probe in a queue without limits (claimed with row-level locks, in parallel).
    pub FreeProbe {
        id: "free-probe",
        run: async |ctx: Context, payload: ProbePayload| -> Result<u64> { probe(&ctx, &payload).await }
    }
}

task! {
    /// Probe limited to 2 per key and 3 across keys.
    pub TotalProbe {
        id: "total-probe",
        queue: { concurrency_limit: 2, total_limit: 3 },
        run: async |ctx: Context, payload: ProbePayload| -> Result<u64> { probe(&ctx, &payload).await }
    }
}

/// The seed platform's per-workspace result shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceOutcome {
    /// Workspace id.
    pub ws_id: String,
    /// Whether it worked.
    pub success: bool,
    /// Why not.
    pub error: Option<String>,
}

/// Payload naming a workspace.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkspacePayload {
    /// Workspace id.
    pub ws_id: String,
}

task! {
    /// Echoes the workspace back as a structured outcome.
    pub Echo {
        id: "echo",
        payload_schema: true,
        run: async |_ctx: Context, payload: WorkspacePayload| -> Result<WorkspaceOutcome> {
            Ok(WorkspaceOutcome { ws_id: payload.ws_id, success: true, error: None })
        }
    }
}

/// Fails until the given attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlakyPayload {
    /// The first attempt that succeeds (0: never).
    pub succeed_on: u32,
}

task! {
    /// Fails with an ordinary error until `succeed_on`.
    pub Flaky {
        id: "flaky",
        retry: { max_attempts: 3, factor: 2.0, min_timeout: "100ms", max_timeout: "1s", randomize: false },
        run: async |ctx: Context, payload: FlakyPayload| -> Result<u32> {
            if payload.succeed_on != 0 && ctx.attempt() >= payload.succeed_on {
                Ok(ctx.attempt())
            } else {
                Err(Error::msg(format!("calendar provider answered 503 on attempt {}", ctx.attempt())))
            }
        }
    }
}

/// Which part of an attempt's outcome holds a character Postgres cannot store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnstorablePayload {
    /// `"output"`: the body returns an output holding `\u0000`; `"error"`: its error message
    /// holds one; `"big-error"`: its error message is 4,000 characters; anything else: a clean
    /// output.
    pub nul_in: String,
}

task! {
    /// Returns an outcome the database refuses (a `\u0000` in a string) when asked to.
    pub Unstorable {
        id: "unstorable",
        retry: { max_attempts: 2, min_timeout: "50ms", randomize: false },
        run: async |_ctx: Context, payload: UnstorablePayload| -> Result<String> {
            match payload.nul_in.as_str() {
                "output" => Ok("before\u{0}after".to_owned()),
                "error" => Err(Error::abort("provider said \u{0} and hung up")),
                "big-error" => Err(Error::abort(format!("provider said {}", "x".repeat(4000)))),
                _ => Ok("clean".to_owned()),
            }
        }
    }
}

/// What a chatty run logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChattyPayload {
    /// Step lines to write between the first and the last.
    pub lines: u32,
    /// Wait for cancellation after logging instead of returning.
    #[serde(default)]
    pub then_wait: bool,
}

task! {
    /// Writes log lines through `ctx.log()`: "starting", one "step" line per `lines` (with its
    /// index as a field), and a warning "almost done".
    pub Chatty {
        id: "chatty",
        retry: { max_attempts: 1 },
        run: async |ctx: Context, payload: ChattyPayload| -> Result<u32> {
            ctx.log().info("starting");
            for i in 0..payload.lines {
                ctx.log().info_with("step", serde_json::json!({ "i": i }));
            }
            ctx.log().warn_with("almost done", serde_json::json!({ "left": 0 }));
            if payload.then_wait {
                ctx.cancelled().await;
            }
            Ok(payload.lines)
        }
    }
}

task! {
    /// Logs through `ctx.log()` and through `tracing` (kept when `kiln::log_layer()` is installed).
    pub Traced {
        id: "traced",
        run: async |ctx: Context, _payload: ()| -> Result<()> {
            ctx.log().info("before");
            tracing::info!(events = 3, "synced via tracing");
            tracing::debug!("below the layer's level");
            tracing::warn!(ws_id = "w1", "slow provider");
            ctx.log().info("after");
            Ok(())
        }
    }
}

task! {
    /// Aborts: fails at once whatever attempts remain.
    pub Aborting {
        id: "aborting",
        retry: { max_attempts: 5 },
        run: async |_ctx: Context, _payload: ()| -> Result<()> {
            Err(Error::abort("the workspace was deleted"))
        }
    }
}

task! {
    /// Panics.
    pub Panicking {
        id: "panicking",
        retry: { max_attempts: 2, min_timeout: "50ms", randomize: false },
        run: async |_ctx: Context, _payload: ()| -> Result<()> {
            panic!("index out of bounds in the scheduler")
        }
    }
}

task! {
    /// Sleeps past its max_duration without looking at its token.
    pub Overrunning {
        id: "overrunning",
        max_duration: "300ms",
        run: async |_ctx: Context, payload: ProbePayload| -> Result<()> {
            tokio::time::sleep(Duration::from_millis(payload.sleep_ms)).await;
            Ok(())
        }
    }
}

task! {
    /// Waits for cancellation (or `sleep_ms`), recording what it saw.
    pub Patient {
        id: "patient",
        retry: { max_attempts: 1 },
        run: async |ctx: Context, payload: ProbePayload| -> Result<String> {
            let pool = pool()?;
            sqlx::query("INSERT INTO probe_events (run_id, event) VALUES ($1, 'started')")
                .bind(ctx.run_id()).execute(pool).await?;
            tokio::select! {
                _ = ctx.cancelled() => {
                    sqlx::query("INSERT INTO probe_events (run_id, event) VALUES ($1, 'cancelled')")
                        .bind(ctx.run_id()).execute(pool).await?;
                    Err(Error::msg("stopped on cancellation"))
                }
                _ = tokio::time::sleep(Duration::from_millis(payload.sleep_ms)) => {
                    sqlx::query("INSERT INTO probe_events (run_id, event) VALUES ($1, 'finished')")
                        .bind(ctx.run_id()).execute(pool).await?;
                    Ok("finished".to_owned())
                }
            }
        }
    }
}

/// One child of a family.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildPayload {
    /// Its number among its siblings.
    pub n: u32,
    /// How long it works.
    pub sleep_ms: u64,
    /// Fail at once (abort) instead of completing.
    #[serde(default)]
    pub fail: bool,
}

/// A child's body: records its interval, then returns its number doubled, or aborts.
async fn child(ctx: &Context, payload: &ChildPayload) -> Result<u32> {
    probe(
        ctx,
        &ProbePayload {
            sleep_ms: payload.sleep_ms,
            fail_first: false,
        },
    )
    .await?;
    if payload.fail {
        return Err(Error::abort(format!(
            "child {} fails on purpose",
            payload.n
        )));
    }
    Ok(payload.n * 2)
}

task! {
    /// A child in queue `family` (limit 2, shared with its parent): records its interval, then
    /// returns its number doubled, or aborts.
    pub FamilyChild {
        id: "family-child",
        queue: { name: "family", concurrency_limit: 2 },
        retry: { max_attempts: 1 },
        run: async |ctx: Context, payload: ChildPayload| -> Result<u32> { child(&ctx, &payload).await }
    }
}

task! {
    /// The same child in a queue of its own (limit 2), for parents in another queue.
    pub LoneChild {
        id: "lone-child",
        queue: { concurrency_limit: 2 },
        retry: { max_attempts: 1 },
        run: async |ctx: Context, payload: ChildPayload| -> Result<u32> { child(&ctx, &payload).await }
    }
}

/// What a fan-out parent does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanOutPayload {
    /// Children to start.
    pub children: u32,
    /// How long each child works.
    pub child_sleep_ms: u64,
    /// Numbers of the children that fail.
    #[serde(default)]
    pub failing: Vec<u32>,
    /// Use `lone-child` (own queue) instead of `family-child` (the parent's queue).
    #[serde(default)]
    pub lone: bool,
    /// Trigger without waiting (returns the child ids only).
    #[serde(default)]
    pub detached: bool,
}

/// A fan-out parent's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanOutReport {
    /// Child run ids, in order.
    pub child_ids: Vec<uuid::Uuid>,
    /// Each child's output, or its error message.
    pub results: Vec<std::result::Result<u32, String>>,
}

fn child_items(payload: &FanOutPayload) -> Vec<kiln::BatchItem<ChildPayload>> {
    (0..payload.children)
        .map(|n| {
            kiln::BatchItem::new(ChildPayload {
                n,
                sleep_ms: payload.child_sleep_ms,
                fail: payload.failing.contains(&n),
            })
        })
        .collect()
}

task! {
    /// Triggers children and (unless detached) waits for all of them; records each start.
    pub FanOut {
        id: "fan-out",
        queue: { name: "family", concurrency_limit: 2 },
        retry: { max_attempts: 3, min_timeout: "50ms", max_timeout: "200ms" },
        run: async |ctx: Context, payload: FanOutPayload| -> Result<FanOutReport> {
            let pool = pool()?;
            sqlx::query("INSERT INTO probe_events (run_id, event) VALUES ($1, 'parent-started')")
                .bind(ctx.run_id()).execute(pool).await?;
            let items = child_items(&payload);
            if payload.detached {
                let runs = if payload.lone {
                    ctx.batch_trigger::<LoneChild>(items).await?
                } else {
                    ctx.batch_trigger::<FamilyChild>(items).await?
                };
                return Ok(FanOutReport { child_ids: runs.iter().map(|r| r.id).collect(), results: Vec::new() });
            }
            let results = if payload.lone {
                ctx.batch_trigger_and_wait::<LoneChild>(items).await?
            } else {
                ctx.batch_trigger_and_wait::<FamilyChild>(items).await?
            };
            let child_ids: Vec<uuid::Uuid> = sqlx::query_scalar(
                "SELECT id FROM kiln.runs WHERE parent_run_id = $1 ORDER BY (payload->>'n')::int")
                .bind(ctx.run_id()).fetch_all(pool).await?;
            Ok(FanOutReport {
                child_ids,
                results: results.into_iter().map(|r| r.map_err(|e| e.to_string())).collect(),
            })
        }
    }
}

task! {
    /// Triggers one child and waits for it, then a second one: results in call order.
    pub Sequential {
        id: "sequential",
        run: async |ctx: Context, payload: ChildPayload| -> Result<Vec<u32>> {
            let first = ctx.trigger_and_wait::<LoneChild>(payload.clone()).await??;
            let second = ctx
                .trigger_and_wait::<Echo>(WorkspacePayload { ws_id: format!("ws_{first}") })
                .concurrency_key(format!("ws_{first}"))
                .await??;
            Ok(vec![first, second.ws_id.len() as u32])
        }
    }
}

/// Every scheduled tick a `ticker` run received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticked {
    /// The tick's payload as received.
    pub tick: kiln::ScheduleTick,
}

task! {
    /// A scheduled task: returns the tick payload it received. Its declarative schedule ticks
    /// once a year, so it never fires by itself during a test; tests fire it at chosen times.
    pub Ticker {
        id: "ticker",
        cron: { pattern: "30 2 1 1 *", timezone: "Europe/Berlin" },
        run: async |_ctx: Context, tick: kiln::ScheduleTick| -> Result<Ticked> {
            Ok(Ticked { tick })
        }
    }
}

/// Registers every test task on a worker builder.
pub fn register_all(builder: kiln::WorkerBuilder) -> kiln::WorkerBuilder {
    register_only(builder, None)
}

/// Registers the test tasks whose ids are in `only` (all when `None`).
pub fn register_only(builder: kiln::WorkerBuilder, only: Option<&[String]>) -> kiln::WorkerBuilder {
    use kiln::Task;
    let wanted = |id: &str| only.is_none_or(|ids| ids.iter().any(|i| i == id));
    let mut builder = builder;
    macro_rules! maybe {
        ($($task:ident),*) => {
            $( if wanted($task::ID) { builder = builder.register($task); } )*
        };
    }
    maybe!(
        KeyedProbe,
        LimitedProbe,
        TotalProbe,
        FreeProbe,
        Echo,
        Flaky,
        Aborting,
        Chatty,
        Traced,
        Unstorable,
        Panicking,
        Overrunning,
        Patient,
        FamilyChild,
        LoneChild,
        FanOut,
        Sequential,
        Ticker
    );
    builder
}
