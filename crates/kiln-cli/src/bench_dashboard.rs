//! `kiln bench dashboard`: fills a run history (1,000,000 runs by default) and times each
//! dashboard page's server response on it, unfiltered and with each filter.

use std::time::{Duration, Instant};

use clap::Args;
use kiln::Client;
use kiln_store::bench::{bench_fill_history, BENCH_HISTORY_PARENT, BENCH_HISTORY_TASKS};

use crate::ops::DbArgs;
use crate::{table, CliResult, Failure};

#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Runs in the history (added to what the database holds).
    #[arg(long, default_value_t = 1_000_000)]
    runs: u64,
    /// Requests per page; the median is reported.
    #[arg(long, default_value_t = 7)]
    requests: u32,
    /// Time the pages on the history already there, adding none.
    #[arg(long)]
    no_fill: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One page timed.
#[derive(Debug, serde::Serialize)]
struct Timing {
    page: String,
    median_ms: f64,
    max_ms: f64,
    bytes: usize,
}

async fn time_page(
    http: &reqwest::Client,
    base: &str,
    page: &str,
    requests: u32,
) -> Result<Timing, Failure> {
    let mut times = Vec::with_capacity(requests as usize);
    let mut bytes = 0;
    for _ in 0..requests {
        let started = Instant::now();
        let response = http
            .get(format!("{base}{page}"))
            .send()
            .await
            .map_err(|e| Failure::new(format!("{page}: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::new(format!("{page}: {e}")))?;
        times.push(started.elapsed());
        if !status.is_success() {
            return Err(Failure::new(format!(
                "{page} answered {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )));
        }
        bytes = body.len();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Timing {
        page: page.to_owned(),
        median_ms: ms(times[times.len() / 2]),
        max_ms: ms(*times.last().expect("at least one request")),
        bytes,
    })
}

pub(crate) async fn dashboard(args: DashboardArgs) -> CliResult {
    if args.requests == 0 {
        return Err(Failure::usage("--requests must be at least 1"));
    }
    let client = args.db.client_unchecked().await?;
    client.migrate().await?;
    if !args.no_fill {
        let started = Instant::now();
        bench_fill_history(client.pool(), args.runs)
            .await
            .map_err(Failure::new)?;
        if !args.json {
            println!(
                "filled {} runs in {:.1} s",
                args.runs,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let total = client
        .runs()
        .count(&kiln::RunFilter::default(), u64::MAX >> 1)
        .await?;
    let sample = client
        .runs()
        .list(&kiln::RunFilter {
            task_ids: vec![BENCH_HISTORY_TASKS[2].to_owned()],
            limit: Some(1),
            ..kiln::RunFilter::default()
        })
        .await?
        .runs
        .into_iter()
        .next()
        .ok_or_else(|| Failure::new("the history holds no run of the sync task"))?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Failure::new(format!("cannot listen: {e}")))?;
    let address = listener.local_addr().map_err(Failure::new)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let config = kiln_server::ServerConfig {
        dashboard_dev_mode: true,
        ..kiln_server::ServerConfig::default()
    };
    let state = kiln_server::AppState::new(Client::new(client.pool().clone()), config);
    let server = {
        let stop = stop.clone();
        tokio::spawn(kiln_server::serve(listener, state, async move {
            stop.cancelled().await
        }))
    };
    let http = reqwest::Client::new();
    let base = format!("http://{address}");
    let key = sample.concurrency_key.clone().unwrap_or_default();
    let pages = [
        "/runs".to_owned(),
        "/runs?status=failed".to_owned(),
        "/runs?status=crashed".to_owned(),
        "/runs?status=system_failure".to_owned(),
        "/runs?status=queued&status=delayed".to_owned(),
        format!("/runs?task={}", BENCH_HISTORY_TASKS[0]),
        "/runs?tag=sync".to_owned(),
        "/runs?tag=nightly".to_owned(),
        format!("/runs?key={key}"),
        "/runs?root=1".to_owned(),
        format!("/runs?status=failed&task={}", BENCH_HISTORY_TASKS[2]),
        format!(
            "/runs?status=system_failure&task={}",
            BENCH_HISTORY_TASKS[2]
        ),
        format!("/runs/{}", sample.id),
        format!("/runs?parent={BENCH_HISTORY_PARENT}"),
        format!("/runs?parent={BENCH_HISTORY_PARENT}&status=failed"),
        format!("/runs/{BENCH_HISTORY_PARENT}"),
        "/tasks".to_owned(),
        "/queues".to_owned(),
        format!("/queues/{}", BENCH_HISTORY_TASKS[2]),
        "/schedules".to_owned(),
        "/workers".to_owned(),
    ];
    let mut timings = Vec::new();
    for page in &pages {
        timings.push(time_page(&http, &base, page, args.requests).await?);
    }
    stop.cancel();
    let _ = server.await;
    if args.json {
        table::json(&serde_json::json!({ "runs_in_database": total, "pages": timings }));
    } else {
        println!(
            "runs in the database: {total}; median and slowest of {} requests per page",
            args.requests
        );
        let rows: Vec<Vec<String>> = timings
            .iter()
            .map(|t| {
                vec![
                    t.page.clone(),
                    format!("{:.1}", t.median_ms),
                    format!("{:.1}", t.max_ms),
                    t.bytes.to_string(),
                ]
            })
            .collect();
        table::print(&["PAGE", "MEDIAN MS", "MAX MS", "BYTES"], &rows);
    }
    Ok(())
}
