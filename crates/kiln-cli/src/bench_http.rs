//! `kiln bench http`: triggers over the HTTP API against triggers through the Rust client, at the
//! same concurrency and with the same database pool size, in one run, single and batched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use kiln::{BatchItem, Client, Scope, Task};
use kiln_store::run::{run_purge_task, run_status_counts};
use kiln_store::task::task_register;
use serde_json::json;

use crate::bench::BenchNoop;
use crate::ops::DbArgs;
use crate::{table, CliResult, Failure};

#[derive(Debug, Args)]
pub(crate) struct HttpArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Single triggers per path.
    #[arg(long, default_value_t = 20_000)]
    triggers: u32,
    /// Concurrent callers (HTTP clients on keep-alive connections, or client tasks).
    #[arg(long, default_value_t = 64)]
    clients: u32,
    /// Database connections, for the server's pool and for the direct client's alike.
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// Runs per batch in the batch phase.
    #[arg(long, default_value_t = 100)]
    batch_size: u32,
    /// Batches per path in the batch phase.
    #[arg(long, default_value_t = 400)]
    batches: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `calls` calls of `call` from `clients` concurrent tasks; returns the elapsed time.
async fn drive<F, Fut>(clients: u32, calls: u32, call: F) -> Result<Duration, Failure>
where
    F: Fn(u32) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls {
                    return Ok::<(), String>(());
                }
                call(i).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(Failure::new)?.map_err(Failure::new)?;
    }
    Ok(started.elapsed())
}

/// POSTs `body` as JSON with the key; anything but 201 Created is an error.
async fn post_created(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    let response = http
        .post(url)
        .header("authorization", auth)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != reqwest::StatusCode::CREATED {
        return Err(format!("{url} answered {}", response.status()));
    }
    Ok(())
}

pub(crate) async fn http(args: HttpArgs) -> CliResult {
    if args.triggers == 0 || args.clients == 0 || args.batch_size == 0 || args.batches == 0 {
        return Err(Failure::usage(
            "--triggers, --clients, --batch-size and --batches must be at least 1",
        ));
    }
    if args.batch_size as usize > kiln::MAX_BATCH_SIZE {
        return Err(Failure::usage(format!(
            "--batch-size is at most {}",
            kiln::MAX_BATCH_SIZE
        )));
    }
    let url = args
        .db
        .database_url
        .clone()
        .ok_or_else(|| Failure::usage("DATABASE_URL is not set"))?;
    let connect = || async {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(args.pool)
            .connect_with(kiln_client::connect_options(&url)?)
            .await
            .map_err(|e| Failure::new(crate::ops::redact_error(e.to_string(), &url)))
    };
    let direct = Client::new(connect().await?);
    direct.migrate().await?;
    let pool = direct.pool().clone();
    run_purge_task(&pool, BenchNoop::ID)
        .await
        .map_err(Failure::new)?;
    task_register(&pool, &BenchNoop::DEFINITION, None)
        .await
        .map_err(Failure::new)?;

    let key_name = format!("kiln-bench-{}", std::process::id());
    let key = direct.keys().create(&key_name, Scope::Trigger).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Failure::new(format!("cannot listen: {e}")))?;
    let address = listener.local_addr().map_err(Failure::new)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let server_client = Client::new(connect().await?);
    let state = kiln_server::AppState::new(server_client, kiln_server::ServerConfig::default());
    let server = {
        let stop = stop.clone();
        tokio::spawn(kiln_server::serve(listener, state, async move {
            stop.cancelled().await
        }))
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients as usize)
        .build()
        .map_err(Failure::new)?;
    let auth = format!("Bearer {}", key.secret);
    let base = format!("http://{address}/api/v1/tasks/{}", BenchNoop::ID);

    let single_client = {
        let client = direct.clone();
        drive(args.clients, args.triggers, move |i| {
            let client = client.clone();
            async move {
                client
                    .trigger_by_id(BenchNoop::ID, json!({ "i": i }))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await?
    };
    run_purge_task(&pool, BenchNoop::ID)
        .await
        .map_err(Failure::new)?;
    let single_http = {
        let (http, auth, url) = (http.clone(), auth.clone(), format!("{base}/trigger"));
        drive(args.clients, args.triggers, move |i| {
            let (http, auth, url) = (http.clone(), auth.clone(), url.clone());
            async move { post_created(&http, &url, &auth, &json!({ "payload": { "i": i } })).await }
        })
        .await?
    };
    run_purge_task(&pool, BenchNoop::ID)
        .await
        .map_err(Failure::new)?;
    let size = args.batch_size;
    let batch_client = {
        let client = direct.clone();
        drive(args.clients, args.batches, move |b| {
            let client = client.clone();
            async move {
                let items = (0..size)
                    .map(|i| BatchItem::new(json!({ "i": b * size + i })))
                    .collect();
                client
                    .batch_trigger_by_id(BenchNoop::ID, items)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await?
    };
    run_purge_task(&pool, BenchNoop::ID)
        .await
        .map_err(Failure::new)?;
    let batch_http = {
        let (http, auth, url) = (http.clone(), auth.clone(), format!("{base}/batch"));
        drive(args.clients, args.batches, move |b| {
            let (http, auth, url) = (http.clone(), auth.clone(), url.clone());
            async move {
                let items: Vec<_> = (0..size)
                    .map(|i| json!({ "payload": { "i": b * size + i } }))
                    .collect();
                post_created(&http, &url, &auth, &json!({ "items": items })).await
            }
        })
        .await?
    };
    let stored: i64 = run_status_counts(&pool, Some(BenchNoop::ID))
        .await
        .map_err(Failure::new)?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let expected = i64::from(args.batches) * i64::from(size);
    run_purge_task(&pool, BenchNoop::ID)
        .await
        .map_err(Failure::new)?;
    direct.keys().revoke(&key_name).await?;
    stop.cancel();
    let _ = server.await;
    if stored != expected {
        return Err(Failure::new(format!(
            "the HTTP batch phase stored {stored} runs, not {expected}"
        )));
    }

    let rate = |n: u32, d: Duration| f64::from(n) / d.as_secs_f64();
    let single = (
        rate(args.triggers, single_client),
        rate(args.triggers, single_http),
    );
    let runs = args.batches * size;
    let batch = (rate(runs, batch_client), rate(runs, batch_http));
    if args.json {
        table::json(&json!({
            "clients": args.clients, "pool": args.pool, "triggers": args.triggers,
            "batches": args.batches, "batch_size": size,
            "single_client_per_s": single.0.round(), "single_http_per_s": single.1.round(),
            "single_ratio": (single.1 / single.0 * 100.0).round() / 100.0,
            "batch_client_runs_per_s": batch.0.round(), "batch_http_runs_per_s": batch.1.round(),
            "batch_ratio": (batch.1 / batch.0 * 100.0).round() / 100.0,
        }));
    } else {
        println!(
            "kiln bench http: {} concurrent callers, database pool {} (server and client alike)",
            args.clients, args.pool
        );
        println!(
            "single triggers: client {:.0}/s, HTTP {:.0}/s (HTTP at {:.0}% of the client)",
            single.0,
            single.1,
            single.1 / single.0 * 100.0
        );
        println!(
            "batches of {size}: client {:.0} runs/s, HTTP {:.0} runs/s (HTTP at {:.0}% of the client)",
            batch.0, batch.1, batch.1 / batch.0 * 100.0
        );
    }
    Ok(())
}
