//! The `kiln` command: run a development setup, migrate, inspect and steer runs and queues,
//! trigger tasks, and benchmark.
//!
//! Exit codes: 0 success, 1 failure, 2 bad usage or input, 3 not found, 4 the state does not allow
//! it (see `exit_code`).

#![forbid(unsafe_code)]

mod api;
mod bench;
mod bench_backlog;
mod bench_dashboard;
mod bench_http;
mod bench_keys;
mod bench_memory;
mod dev;
mod ops;
mod schedules;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable background jobs on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Kiln locally: a private Postgres (unless DATABASE_URL is set), migrations, and a worker
    /// running the example tasks with runs flowing through it.
    Dev(dev::DevArgs),
    /// Apply Kiln's migrations to DATABASE_URL.
    Migrate(ops::DbArgs),
    /// Inspect and steer runs.
    #[command(subcommand)]
    Runs(ops::RunsCommand),
    /// Inspect and steer queues.
    #[command(subcommand)]
    Queues(ops::QueuesCommand),
    /// Inspect and steer cron schedules.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// List the tasks workers have registered.
    #[command(subcommand)]
    Tasks(ops::TasksCommand),
    /// Trigger a run of a task by id.
    Trigger(ops::TriggerArgs),
    /// Serve the HTTP API (`/api/v1`, API keys, OpenAPI document).
    Serve(api::ServeArgs),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(api::KeysCommand),
    /// Show who changed what (operator actions, newest first).
    Audit(api::AuditArgs),
    /// List the worker processes (alive, draining; --all for stopped and dead ones).
    #[command(subcommand)]
    Workers(api::WorkersCommand),
    /// Measure throughput and latency against DATABASE_URL.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// A failure to report, with the exit code it maps to and the operations layer's error code
/// (printed with `--json`).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
    pub(crate) kind: kiln::ErrorCode,
}

impl Failure {
    pub(crate) fn new(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: 1,
            kind: kiln::ErrorCode::Internal,
        }
    }

    pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: 2,
            kind: kiln::ErrorCode::InvalidRequest,
        }
    }
}

impl From<kiln::ClientError> for Failure {
    fn from(error: kiln::ClientError) -> Self {
        Self {
            code: exit_code(error.code()),
            kind: error.code(),
            message: error.to_string(),
        }
    }
}

/// The one place where the operations layer's error codes become exit codes: 2 bad usage or
/// input, 3 not found, 4 the state does not allow it, 1 anything else.
fn exit_code(code: kiln::ErrorCode) -> u8 {
    use kiln::ErrorCode;
    match code {
        ErrorCode::InvalidRequest
        | ErrorCode::InvalidOption
        | ErrorCode::InvalidPayload
        | ErrorCode::PayloadTooLarge => 2,
        ErrorCode::NotFound => 3,
        ErrorCode::Conflict => 4,
        ErrorCode::Unauthorized
        | ErrorCode::Forbidden
        | ErrorCode::Timeout
        | ErrorCode::Unavailable
        | ErrorCode::Internal => 1,
    }
}

pub(crate) type CliResult = Result<(), Failure>;

fn init_tracing(default: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| default.parse().expect("default filter parses"));
    // RUST_LOG filters what is printed; what task bodies log is kept in their runs' logs
    // whatever is printed.
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false)
                .with_filter(filter),
        )
        .with(
            // KILN_NO_LOG_CAPTURE leaves the layer out (to measure what capture costs).
            std::env::var_os("KILN_NO_LOG_CAPTURE")
                .is_none()
                .then(kiln::log_layer),
        )
        .try_init();
}

fn main() -> ExitCode {
    // With --json anywhere, a failure is also printed as JSON on standard output, where the
    // command's answer would have been: {"error": {"code": "not_found", "message": "..."}}.
    let json_errors = std::env::args().any(|arg| arg == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error (a bad --payload, a malformed id) is a failure like any other.
        Err(error) if json_errors && error.use_stderr() => {
            let message = error.render().to_string();
            let first = message.lines().next().unwrap_or_default();
            println!(
                "{}",
                serde_json::json!({
                    "error": {
                        "code": kiln::ErrorCode::InvalidRequest.as_str(),
                        "message": first.trim_start_matches("error: "),
                    }
                })
            );
            eprint!("{message}");
            return ExitCode::from(2);
        }
        Err(error) => error.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => {
                init_tracing("info,sqlx=warn");
                dev::run(args).await
            }
            Command::Bench(command) => {
                init_tracing("warn");
                bench::run(command).await
            }
            other => {
                init_tracing("warn");
                match other {
                    Command::Migrate(args) => ops::migrate(args).await,
                    Command::Runs(c) => ops::runs(c).await,
                    Command::Queues(c) => ops::queues(c).await,
                    Command::Schedules(c) => schedules::schedules(c).await,
                    Command::Tasks(c) => ops::tasks(c).await,
                    Command::Trigger(args) => ops::trigger(args).await,
                    Command::Serve(args) => api::serve(args).await,
                    Command::Keys(c) => api::keys(c).await,
                    Command::Audit(args) => api::audit(args).await,
                    Command::Workers(c) => api::workers(c).await,
                    Command::Dev(_) | Command::Bench(_) => unreachable!("handled above"),
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if json_errors {
                println!(
                    "{}",
                    serde_json::json!({
                        "error": {"code": failure.kind.as_str(), "message": failure.message}
                    })
                );
            }
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
