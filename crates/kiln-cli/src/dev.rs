//! `kiln dev`: everything a newcomer needs to see Kiln work, in one command.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kiln::{Client, Worker};
use kiln_store::run::run_status_counts;
use tokio_util::sync::CancellationToken;

use crate::{CliResult, Failure};

/// Database created on the private server for `kiln dev`.
const DEV_DATABASE: &str = "kiln";
/// Workspaces the example seeds.
const DEMO_WORKSPACES: usize = 5;

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Use this database instead of starting a private Postgres.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where the private Postgres keeps its data.
    #[arg(long, default_value = ".kiln/postgres")]
    data_dir: PathBuf,
    /// Runs the example worker executes at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Do not trigger example runs (only run the worker).
    #[arg(long)]
    no_feed: bool,
    /// Stop after this long (e.g. 20s) instead of waiting for Ctrl-C.
    #[arg(long, value_parser = |s: &str| kiln::parse_duration(s).map_err(|e| e.to_string()))]
    run_for: Option<Duration>,
    /// Where the HTTP API listens (a free port is taken when this one is busy).
    #[arg(long, default_value = kiln_server::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
}

pub(crate) async fn run(args: DevArgs) -> CliResult {
    let (url, server) = match &args.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let server = kiln_devdb::start_private(&args.data_dir)
                .await
                .map_err(Failure::new)?;
            let admin = kiln::Client::connect(&server.admin_url).await?;
            kiln_devdb_create(&admin, DEV_DATABASE).await?;
            let url = server.database_url(DEV_DATABASE);
            let data_dir = server
                .data_dir
                .clone()
                .unwrap_or_else(|| args.data_dir.clone());
            println!(
                "Postgres: private server with data in {}",
                data_dir.display()
            );
            println!(
                "  DATABASE_URL={url}   (use it with `kiln runs list`, `kiln queues list`, ...)"
            );
            (url, Some(server))
        }
    };
    let client = Client::connect(&url)
        .await
        .map_err(|e| Failure::new(crate::ops::redact_error(e.to_string(), &url)))?;
    // The flagship example: Tuturuuu's calendar and scheduling tasks against a local calendar
    // provider, with the full sync fanning out every minute.
    let (_provider, app) = kiln_tuturuuu::start_demo(&client, DEMO_WORKSPACES)
        .await
        .map_err(Failure::new)?;
    let worker = kiln_tuturuuu::register(
        kiln_quickstart::register(Worker::builder().pool(client.pool().clone())),
        app,
    )
    .concurrency(args.concurrency)
    .build()
    .await
    .map_err(Failure::new)?;
    if !args.no_feed {
        kiln_tuturuuu::kick_off(&client)
            .await
            .map_err(Failure::new)?;
    }
    println!(
        "Worker {} runs schedule-task, unified-schedule, google-calendar-sync and \
         google-calendar-full-sync (every minute, one child run per workspace), plus \
         send-welcome-email and resize-image. Ctrl-C stops it.",
        worker.id()
    );

    let stop = CancellationToken::new();
    let api = serve_api(&client, args.listen, stop.clone()).await?;
    let feeder = (!args.no_feed).then(|| tokio::spawn(feed(client.clone(), stop.clone())));
    let reporter = tokio::spawn(report(client.clone(), stop.clone()));
    let result = match args.run_for {
        Some(limit) => {
            let shutdown = CancellationToken::new();
            let timer = {
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    shutdown.cancel();
                })
            };
            let result = worker.run_until(shutdown).await;
            timer.abort();
            result
        }
        None => worker.run().await,
    };
    stop.cancel();
    if let Some(feeder) = feeder {
        let _ = feeder.await;
    }
    let _ = reporter.await;
    let _ = api.await;
    print_counts(&client).await;
    print_example_counts(&client).await;
    if let Some(server) = server {
        if let Err(error) = server.stop() {
            eprintln!("warning: could not stop the private Postgres: {error}");
        }
    }
    result.map_err(Failure::new)
}

/// Name of the API key `kiln dev` creates at each start (the previous one is revoked).
const DEV_KEY_NAME: &str = "kiln-dev";

/// Serves the HTTP API beside the worker and prints its URL and a fresh admin key.
async fn serve_api(
    client: &Client,
    listen: std::net::SocketAddr,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("note: cannot listen on {listen} ({error}); taking a free port instead");
            tokio::net::TcpListener::bind((listen.ip(), 0))
                .await
                .map_err(|e| Failure::new(format!("cannot listen for the API: {e}")))?
        }
    };
    let address = listener
        .local_addr()
        .map_err(|e| Failure::new(format!("cannot read the API's address: {e}")))?;
    let keys = client.acting_as(crate::ops::cli_actor());
    if let Err(error) = keys.keys().revoke(DEV_KEY_NAME).await {
        if error.code() != kiln::ErrorCode::NotFound {
            return Err(error.into());
        }
    }
    let key = keys.keys().create(DEV_KEY_NAME, kiln::Scope::Admin).await?;
    println!("Dashboard: http://{address}/   (development mode: no sign-in)");
    println!("API: http://{address}/api/v1   (OpenAPI: http://{address}/api/v1/openapi.json)");
    println!(
        "  development key (admin scope, shown once): {}",
        key.secret
    );
    println!(
        "  try: curl -s -H 'Authorization: Bearer {}' http://{address}/api/v1/runs?limit=5",
        key.secret
    );
    let config = kiln_server::ServerConfig {
        dashboard_dev_mode: true,
        ..kiln_server::ServerConfig::default()
    };
    let state = kiln_server::AppState::new(client.clone(), config);
    Ok(tokio::spawn(async move {
        if let Err(error) =
            kiln_server::serve(listener, state, async move { stop.cancelled().await }).await
        {
            eprintln!("warning: the API server stopped: {error}");
        }
    }))
}

async fn kiln_devdb_create(admin: &Client, name: &str) -> CliResult {
    // CREATE DATABASE cannot run in a function or transaction; ignore "already exists".
    match sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(admin.pool())
        .await
    {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(()),
        Err(e) => Err(Failure::new(format!(
            "cannot create the dev database {name:?}: {e}"
        ))),
    }
}

/// Triggers a few example runs every few seconds, as an app would.
async fn feed(client: Client, stop: CancellationToken) {
    let mut round = 0;
    loop {
        if let Err(error) = kiln_quickstart::trigger_some(&client, round).await {
            tracing::warn!(%error, "triggering example runs failed");
        }
        round += 1;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
    }
}

async fn report(client: Client, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        print_counts(&client).await;
    }
}

async fn print_counts(client: &Client) {
    if let Ok(counts) = run_status_counts(client.pool(), None).await {
        let parts: Vec<String> = counts
            .iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        println!(
            "runs: {}",
            if parts.is_empty() {
                "none yet".into()
            } else {
                parts.join(", ")
            }
        );
    }
}

/// What each Tuturuuu task did, printed when `kiln dev` stops.
async fn print_example_counts(client: &Client) {
    for task in [
        "google-calendar-full-sync",
        "google-calendar-sync",
        "schedule-task",
        "unified-schedule",
    ] {
        if let Ok(counts) = run_status_counts(client.pool(), Some(task)).await {
            let parts: Vec<String> = counts
                .iter()
                .map(|(status, n)| format!("{n} {status}"))
                .collect();
            if !parts.is_empty() {
                println!("  {task}: {}", parts.join(", "));
            }
        }
    }
}
