//! `GET /metrics`: the process's counters and histograms (from the `metrics` facade, rendered by
//! `metrics-exporter-prometheus`) and the gauges read from Postgres, in the Prometheus text
//! format. The gauges come from one statement, reused for [`GAUGES_CACHE_TTL`], so that many
//! scrapers cost one query.

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use kiln_client::metrics::{
    Gauges, DURATION_BUCKETS, QUEUE_OLDEST_AGE, RUNS, RUNS_IN_FLIGHT, WORKERS_ALIVE,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;
use crate::AppState;

/// How long the gauges read from Postgres are reused.
pub const GAUGES_CACHE_TTL: Duration = Duration::from_secs(2);

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed as the global `metrics` recorder on first use.
/// `None` when the app installed another recorder first (then `/metrics` shows only gauges).
pub fn prometheus_handle() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(DURATION_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    tracing::warn!(
                        "another metrics recorder is installed; /metrics shows only Kiln's gauges"
                    );
                    None
                }
            }
        })
        .clone()
}

/// The gauges last read, and when.
#[derive(Debug, Default)]
pub(crate) struct GaugeCache {
    last: Mutex<Option<(Instant, String)>>,
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_gauges(gauges: &Gauges) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP {RUNS} Runs by queue and state (queued, delayed, executing, waiting)."
    );
    let _ = writeln!(out, "# TYPE {RUNS} gauge");
    for (queue, state, n) in &gauges.runs {
        let _ = writeln!(
            out,
            "{RUNS}{{queue=\"{}\",state=\"{state}\"}} {n}",
            label(queue)
        );
    }
    let _ = writeln!(
        out,
        "# HELP {QUEUE_OLDEST_AGE} Seconds the oldest run ready to start has waited, by queue."
    );
    let _ = writeln!(out, "# TYPE {QUEUE_OLDEST_AGE} gauge");
    for (queue, seconds) in &gauges.oldest_queued_seconds {
        let _ = writeln!(
            out,
            "{QUEUE_OLDEST_AGE}{{queue=\"{}\"}} {seconds}",
            label(queue)
        );
    }
    let in_flight: i64 = gauges
        .runs
        .iter()
        .filter(|(_, state, _)| state == "executing" || state == "waiting")
        .map(|(_, _, n)| n)
        .sum();
    let _ = writeln!(
        out,
        "# HELP {RUNS_IN_FLIGHT} Runs executing or waiting on children, in all."
    );
    let _ = writeln!(out, "# TYPE {RUNS_IN_FLIGHT} gauge");
    let _ = writeln!(out, "{RUNS_IN_FLIGHT} {in_flight}");
    let _ = writeln!(
        out,
        "# HELP {WORKERS_ALIVE} Workers running or draining and heartbeating."
    );
    let _ = writeln!(out, "# TYPE {WORKERS_ALIVE} gauge");
    let _ = writeln!(out, "{WORKERS_ALIVE} {}", gauges.workers_alive);
    out
}

/// The `/metrics` page (no key needed: it names queues and counts, nothing else).
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let cached = state
        .gauges
        .last
        .lock()
        .expect("gauge cache")
        .as_ref()
        .filter(|(at, _)| at.elapsed() < GAUGES_CACHE_TTL)
        .map(|(_, text)| text.clone());
    let gauges = match cached {
        Some(text) => text,
        None => {
            let text = render_gauges(&state.client.gauges().await?);
            *state.gauges.last.lock().expect("gauge cache") = Some((Instant::now(), text.clone()));
            text
        }
    };
    let mut body = String::new();
    if let Some(handle) = prometheus_handle() {
        handle.run_upkeep();
        body.push_str(&handle.render());
    }
    body.push_str(&gauges);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}
