//! Operator commands: migrate, runs, queues, tasks, trigger.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use kiln::{Client, Run, RunFilter, RunStatus, TriggerOptions};
use uuid::Uuid;

use crate::{table, CliResult, Failure};

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub(crate) struct DbArgs {
    /// PostgreSQL URL, e.g. postgres://user@localhost:5432/app.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
}

impl DbArgs {
    /// A client on a database that has every migration of this build; otherwise the failure
    /// says to run `kiln migrate`.
    pub(crate) async fn client(&self) -> Result<Client, Failure> {
        let client = self.client_unchecked().await?;
        client.check_ready().await?;
        Ok(client)
    }

    /// A client, whatever the state of the database's schema (for `kiln migrate`).
    pub(crate) async fn client_unchecked(&self) -> Result<Client, Failure> {
        let url = self.database_url.as_deref().ok_or_else(|| {
            Failure::usage("DATABASE_URL is not set: set it (e.g. postgres://user@localhost:5432/app) or pass --database-url")
        })?;
        let client = Client::connect(url)
            .await
            .map_err(|e| Failure::new(redact_error(e.to_string(), url)))?;
        Ok(client.acting_as(cli_actor()))
    }
}

/// Who the CLI's operator actions are recorded as: `cli:<login name>`.
pub(crate) fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Removes the URL's password from a message, in case a driver error echoes it.
pub(crate) fn redact_error(message: String, url: &str) -> String {
    let redacted = kiln_devdb::redact(url);
    if redacted == url {
        return message;
    }
    let password = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('@').next())
        .and_then(|u| u.split(':').nth(1));
    match password {
        Some(p) if !p.is_empty() => message.replace(url, &redacted).replace(p, "***"),
        _ => message,
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    kiln::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 30s, 5m, 1h30m"))
}

/// JSON given inline, from a file (`@path`), or from standard input (`-`).
fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    let (source, from) = if text == "-" {
        let mut input = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        (input, " from standard input".to_owned())
    } else if let Some(path) = text.strip_prefix('@') {
        let input =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
        (input, format!(" in {path:?}"))
    } else {
        (text.to_owned(), String::new())
    };
    serde_json::from_str(&source).map_err(|e| {
        format!("not valid JSON{from}: {e} (pass JSON inline, @file to read a file, or - for standard input)")
    })
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = kiln::parse_duration(text) {
        return Ok(Utc::now() - chrono::Duration::from_std(d).unwrap_or_default());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time (2026-11-21T10:00:00Z) nor a duration ago (1h)"))
}

pub(crate) async fn migrate(args: DbArgs) -> CliResult {
    let client = args.client_unchecked().await?;
    let applied = client.migrate().await?;
    if applied.is_empty() {
        println!("database is up to date");
    } else {
        println!("applied migrations {applied:?}");
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// List runs, newest first.
    List(RunsListArgs),
    /// Show one run with its attempts.
    Show(RunIdArgs),
    /// Cancel a run that has not finished.
    Cancel(RunIdArgs),
    /// Print the log lines a run's body wrote (`ctx.log()`), oldest first.
    Logs(LogsArgs),
    /// Trigger a new run with the same task, payload and options.
    Replay(ReplayArgs),
    /// Move a run that has not started to a new time.
    Reschedule(RescheduleArgs),
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The run's id.
    id: Uuid,
    /// Only this attempt's lines.
    #[arg(long)]
    attempt: Option<u32>,
    /// Keep printing new lines until the run is final.
    #[arg(long, short)]
    follow: bool,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RescheduleArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The run to move.
    id: Uuid,
    /// Start no earlier than this long from now (0s: as soon as possible).
    #[arg(long, value_parser = parse_duration, required_unless_present = "at", conflicts_with = "at")]
    delay: Option<Duration>,
    /// Start no earlier than this time (RFC 3339).
    #[arg(long, value_parser = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| e.to_string()))]
    at: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub(crate) struct RunsListArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Only runs of this task (repeatable).
    #[arg(long = "task")]
    tasks: Vec<String>,
    /// Only runs in this status (repeatable): delayed, queued, executing, waiting, completed,
    /// failed, canceled, crashed, timed_out, expired, system_failure.
    #[arg(long = "status")]
    statuses: Vec<RunStatusArg>,
    /// Only runs in this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only runs with this tag (repeatable; all must match).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only runs with this concurrency key.
    #[arg(long = "key")]
    concurrency_key: Option<String>,
    /// Only runs triggered since this time (RFC 3339) or this long ago (1h).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Only runs triggered before this time (RFC 3339) or this long ago.
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// Page size (1 to 500).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue after this cursor (printed after a full page).
    #[arg(long)]
    cursor: Option<Uuid>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A `--status` value: a run status, or `retrying` (queued for a retry, as tables show it).
#[derive(Debug, Clone)]
struct RunStatusArg(Option<RunStatus>);

impl std::str::FromStr for RunStatusArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "retrying" {
            return Ok(RunStatusArg(None));
        }
        s.parse()
            .map(|status| RunStatusArg(Some(status)))
            .map_err(|e: kiln::UnknownStatus| format!("{e} (or retrying)"))
    }
}

#[derive(Debug, Args)]
pub(crate) struct RunIdArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The run id.
    id: Uuid,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The run to replay.
    id: Uuid,
    /// Replay with this payload (JSON inline, @file or - for standard input) instead of the
    /// original.
    #[arg(long, value_parser = parse_json)]
    payload: Option<serde_json::Value>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn short_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn run_row(run: &Run) -> Vec<String> {
    vec![
        run.id.to_string(),
        run.task_id.clone(),
        run.display_status().to_owned(),
        format!("{}/{}", run.attempts, run.max_attempts),
        run.queue.clone(),
        table::clean(run.concurrency_key.as_deref().unwrap_or_default()),
        short_time(Some(run.created_at)),
        run.error
            .as_ref()
            .map(|e| table::clean(&e.message.chars().take(60).collect::<String>()))
            .unwrap_or_default(),
    ]
}

pub(crate) async fn runs(command: RunsCommand) -> CliResult {
    match command {
        RunsCommand::List(args) => {
            let client = args.db.client().await?;
            let filter = RunFilter {
                task_ids: args.tasks,
                retrying: args.statuses.iter().any(|s| s.0.is_none()),
                statuses: args.statuses.into_iter().filter_map(|s| s.0).collect(),
                queue: args.queue,
                tags: args.tags,
                concurrency_key: args.concurrency_key,
                created_after: args.since,
                created_before: args.until,
                cursor: args.cursor,
                limit: Some(args.limit),
                // A listing shows neither payloads nor outputs: `runs show` does.
                summary_only: true,
                ..RunFilter::default()
            };
            let page = client.runs().list(&filter).await?;
            if args.json {
                table::json(&page);
            } else {
                let rows: Vec<Vec<String>> = page.runs.iter().map(run_row).collect();
                table::print(
                    &[
                        "ID", "TASK", "STATUS", "ATTEMPTS", "QUEUE", "KEY", "CREATED", "ERROR",
                    ],
                    &rows,
                );
                if let Some(cursor) = page.next_cursor {
                    println!("more: --cursor {cursor}");
                }
            }
        }
        RunsCommand::Show(args) => {
            let client = args.db.client().await?;
            let run = client.runs().retrieve(args.id).await?;
            if args.json {
                table::json(&run);
            } else {
                print_run(&run);
            }
        }
        RunsCommand::Cancel(args) => {
            let client = args.db.client().await?;
            let was = client.runs().cancel_unfinished(args.id).await?;
            if args.json {
                table::json(
                    &serde_json::json!({"id": args.id, "canceled": true, "previous_status": was}),
                );
            } else {
                println!("canceled run {} (was {was})", args.id);
            }
        }
        RunsCommand::Logs(args) => print_logs(args).await?,
        RunsCommand::Reschedule(args) => {
            let client = args.db.client().await?;
            let at = match (args.at, args.delay) {
                (Some(at), _) => at,
                (None, delay) => {
                    Utc::now()
                        + chrono::Duration::from_std(delay.unwrap_or_default()).unwrap_or_default()
                }
            };
            client.runs().reschedule(args.id, at).await?;
            println!("run {} rescheduled to {}", args.id, at.to_rfc3339());
        }
        RunsCommand::Replay(args) => {
            let client = args.db.client().await?;
            let handle = client.runs().replay(args.id, args.payload).await?;
            if args.json {
                table::json(&serde_json::json!({"id": handle.id, "replay_of": args.id}));
            } else {
                println!("replayed run {} as {}", args.id, handle.id);
            }
        }
    }
    Ok(())
}

/// How often `kiln runs logs --follow` asks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

async fn print_logs(args: LogsArgs) -> CliResult {
    let client = args.db.client().await?;
    let runs = client.runs();
    let mut after = None;
    loop {
        let lines = runs
            .logs(args.id, args.attempt, after, kiln::MAX_LOG_PAGE)
            .await?;
        for line in &lines {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(line).expect("a log line serializes")
                );
            } else {
                let fields = match &line.fields {
                    serde_json::Value::Object(map) if map.is_empty() => String::new(),
                    other => format!(" {}", table::clean(&other.to_string())),
                };
                println!(
                    "{} #{} {:<5} {}{fields}",
                    line.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    line.attempt,
                    line.level.as_str(),
                    table::clean(&line.message)
                );
            }
        }
        if let Some(last) = lines.last() {
            after = Some((last.attempt, last.seq));
        }
        if lines.len() as u32 == kiln::MAX_LOG_PAGE {
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        // Lines of a final run were stored before its status changed: read once more, then stop.
        if runs.retrieve(args.id).await?.status.is_final() {
            let rest = runs
                .logs(args.id, args.attempt, after, kiln::MAX_LOG_PAGE)
                .await?;
            if rest.is_empty() {
                return Ok(());
            }
            continue;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

fn print_run(run: &Run) {
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    println!("run        {}", run.id);
    println!("task       {}", run.task_id);
    println!("status     {}", run.display_status());
    println!(
        "queue      {}{}",
        run.queue,
        run.concurrency_key
            .as_ref()
            .map(|k| format!(" (key {})", table::clean(k)))
            .unwrap_or_default()
    );
    println!("attempts   {}/{}", run.attempts, run.max_attempts);
    println!("created    {}", short_time(Some(run.created_at)));
    println!("started    {}", short_time(run.started_at));
    println!("finished   {}", short_time(run.finished_at));
    if !run.tags.is_empty() {
        println!("tags       {}", table::clean(&run.tags.join(", ")));
    }
    for (label, id) in [
        ("parent", run.parent_run_id),
        ("root", run.root_run_id),
        ("replay of", run.replay_of),
    ] {
        if let Some(id) = id {
            println!("{label:<10} {id}");
        }
    }
    if let Some(traceparent) = &run.traceparent {
        println!("trace      {}", table::clean(traceparent));
    }
    println!("payload    {}", pretty(&run.payload));
    if let Some(output) = &run.output {
        println!("output     {}", pretty(output));
    }
    if let Some(error) = &run.error {
        println!(
            "error      [{:?}] {}",
            error.kind,
            table::clean(&error.message)
        );
    }
    if !run.attempt_list.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = run
            .attempt_list
            .iter()
            .map(|a| {
                vec![
                    a.number.to_string(),
                    a.status.clone(),
                    a.worker_id.clone(),
                    short_time(Some(a.started_at)),
                    short_time(a.finished_at),
                    a.error
                        .as_ref()
                        .map(|e| table::clean(&e.message))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        table::print(
            &["#", "OUTCOME", "WORKER", "STARTED", "FINISHED", "ERROR"],
            &rows,
        );
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueuesCommand {
    /// List queues with their limits and live counts.
    List {
        #[command(flatten)]
        db: DbArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a queue that triggers may name with --queue (a trigger never creates one).
    Create {
        #[command(flatten)]
        db: DbArgs,
        /// The queue's name: letters, digits and - _ . : / (at most 128).
        name: String,
        /// Runs at once (per concurrency key when runs carry keys); no limit when left out.
        #[arg(long)]
        limit: Option<i32>,
    },
    /// Stop new runs of a queue from starting (executing runs finish).
    Pause {
        #[command(flatten)]
        db: DbArgs,
        /// The queue.
        name: String,
    },
    /// Let a paused queue's runs start again.
    Resume {
        #[command(flatten)]
        db: DbArgs,
        /// The queue.
        name: String,
    },
    /// Override a queue's concurrency limit (per key when runs carry keys).
    Limit {
        #[command(flatten)]
        db: DbArgs,
        /// The queue.
        name: String,
        /// The new limit.
        #[arg(required_unless_present = "clear")]
        limit: Option<i32>,
        /// Remove the override and go back to the limit declared in code.
        #[arg(long, conflicts_with = "limit")]
        clear: bool,
    },
}

pub(crate) async fn queues(command: QueuesCommand) -> CliResult {
    match command {
        QueuesCommand::List { db, json } => {
            let queues = db.client().await?.queues().list().await?;
            if json {
                table::json(&queues);
            } else {
                let show = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                let rows: Vec<Vec<String>> = queues
                    .iter()
                    .map(|q| {
                        vec![
                            q.name.clone(),
                            if q.paused {
                                "paused".into()
                            } else {
                                "active".into()
                            },
                            show(q.effective_limit()),
                            show(q.total_limit),
                            q.running.to_string(),
                            q.queued.to_string(),
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "QUEUE",
                        "STATE",
                        "LIMIT",
                        "TOTAL LIMIT",
                        "RUNNING",
                        "QUEUED",
                    ],
                    &rows,
                );
            }
        }
        QueuesCommand::Create { db, name, limit } => {
            db.client().await?.queues().create(&name, limit).await?;
            match limit {
                Some(limit) => println!("created queue {name} (limit {limit})"),
                None => println!("created queue {name} (no limit)"),
            }
        }
        QueuesCommand::Pause { db, name } => {
            db.client().await?.queues().pause(&name).await?;
            println!("paused queue {name}");
        }
        QueuesCommand::Resume { db, name } => {
            db.client().await?.queues().resume(&name).await?;
            println!("resumed queue {name}");
        }
        QueuesCommand::Limit {
            db,
            name,
            limit,
            clear,
        } => {
            let limit = if clear { None } else { limit };
            db.client().await?.queues().set_limit(&name, limit).await?;
            match limit {
                Some(l) => println!("queue {name} limit set to {l}"),
                None => println!("queue {name} limit override cleared"),
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// List registered tasks.
    List {
        #[command(flatten)]
        db: DbArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn tasks(command: TasksCommand) -> CliResult {
    let TasksCommand::List { db, json } = command;
    let client = db.client().await?;
    let tasks = client.tasks().list().await?;
    if json {
        table::json(&tasks);
        return Ok(());
    }
    let unregistered = client.tasks().unregistered_waiting().await?;
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.queue.clone(),
                t.max_attempts.to_string(),
                if t.served {
                    "yes".to_owned()
                } else {
                    "NO WORKER".to_owned()
                },
                t.waiting.to_string(),
                t.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::print(
        &[
            "TASK",
            "QUEUE",
            "ATTEMPTS",
            "SERVED",
            "WAITING",
            "DESCRIPTION",
        ],
        &rows,
    );
    let stuck: Vec<&kiln::TaskRow> = tasks
        .iter()
        .filter(|t| !t.served && t.waiting > 0)
        .collect();
    for task in stuck {
        let (runs, are) = runs_are(task.waiting);
        println!(
            "\nwarning: {runs} of {} {are} waiting, and no running worker registers this task: start one that does",
            table::clean(&task.id)
        );
    }
    for task in &unregistered {
        let (runs, are) = runs_are(task.waiting);
        println!(
            "\nwarning: {runs} of {} (a task id no worker ever registered) {are} waiting since {}: start a worker that registers it, or cancel them",
            table::clean(&task.task_id),
            task.oldest_available_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    Ok(())
}

/// "1 run ... is" or "N runs ... are": the count and its verb.
fn runs_are(n: i64) -> (String, &'static str) {
    if n == 1 {
        ("1 run".to_owned(), "is")
    } else {
        (format!("{n} runs"), "are")
    }
}

#[derive(Debug, Args)]
pub(crate) struct TriggerArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The task id.
    task: String,
    /// The payload, as JSON: inline, @file to read a file, or - for standard input.
    #[arg(long, default_value = "null", value_parser = parse_json)]
    payload: serde_json::Value,
    /// Concurrency key (e.g. a workspace id).
    #[arg(long = "key")]
    concurrency_key: Option<String>,
    /// Idempotency key: a second trigger with a live key returns the existing run.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Start no earlier than this long from now (30s, 5m).
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// Expire if not started within this time.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Head start in the queue (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    priority: Option<Duration>,
    /// Tag (repeatable, at most 10).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Metadata, as a JSON object.
    #[arg(long, value_parser = parse_json)]
    metadata: Option<serde_json::Value>,
    /// Attempts in all.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Run in this queue instead of the task's.
    #[arg(long)]
    queue: Option<String>,
    /// The W3C trace context the run links back to; by default the TRACEPARENT environment
    /// variable (OpenTelemetry's convention for processes), when it holds a valid one.
    #[arg(long)]
    traceparent: Option<String>,
    /// Trigger even if no worker has registered the task.
    #[arg(long)]
    allow_unregistered: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn trigger(args: TriggerArgs) -> CliResult {
    let traceparent = args.traceparent.or_else(|| {
        std::env::var("TRACEPARENT")
            .ok()
            .filter(|value| kiln::is_valid_traceparent(value))
    });
    let client = args.db.client().await?;
    let options = TriggerOptions {
        concurrency_key: args.concurrency_key,
        idempotency_key: args.idempotency_key,
        delay: args.delay.map(kiln::Delay::For),
        ttl: args.ttl,
        priority: args.priority,
        tags: args.tags,
        metadata: args.metadata,
        max_attempts: args.max_attempts,
        queue: args.queue,
        allow_unregistered: args.allow_unregistered,
        traceparent,
        ..TriggerOptions::default()
    };
    let handle = client
        .trigger_by_id(&args.task, args.payload)
        .options(options)
        .await?;
    if args.json {
        table::json(&handle);
    } else if handle.is_cached {
        println!("{} (existing run for this idempotency key)", handle.id);
    } else {
        println!("{}", handle.id);
    }
    Ok(())
}
