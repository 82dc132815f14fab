//! Bulk cancel and replay from the runs page: the operator picks runs (or "all matching the
//! filter"), a confirmation page says how many, and the action runs in the background through
//! the operations layer (bounded batches, capped, audited) while its page shows the progress.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use kiln_client::{BulkAction, BulkProgress, BulkSelection, ErrorCode};
use maud::{html, Markup};
use uuid::Uuid;

use super::layout::{csrf, fragment, page, when, Nav};
use super::runs::Filters;
use super::session::Session;
use super::{checked_form, error_page, field};
use crate::{ApiError, AppState};

/// Bulk actions a server remembers (the oldest are forgotten first).
const JOBS_KEPT: usize = 50;

/// A bulk action started from the dashboard.
#[derive(Debug, Clone)]
struct Job {
    action: BulkAction,
    who: String,
    what: String,
    started_at: DateTime<Utc>,
    progress: BulkProgress,
    outcome: Option<Result<(), String>>,
}

/// The bulk actions this server started, newest last.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    jobs: Mutex<VecDeque<(Uuid, Arc<Mutex<Job>>)>>,
}

impl Jobs {
    fn add(&self, job: Job) -> (Uuid, Arc<Mutex<Job>>) {
        let id = Uuid::now_v7();
        let job = Arc::new(Mutex::new(job));
        let mut jobs = self.jobs.lock().expect("bulk jobs");
        if jobs.len() >= JOBS_KEPT {
            jobs.pop_front();
        }
        jobs.push_back((id, Arc::clone(&job)));
        (id, job)
    }

    fn get(&self, id: Uuid) -> Option<Job> {
        let jobs = self.jobs.lock().expect("bulk jobs");
        jobs.iter()
            .find(|(job_id, _)| *job_id == id)
            .map(|(_, job)| job.lock().expect("bulk job").clone())
    }
}

/// The form of the runs page, read: the action, and the runs it is for.
struct Request {
    action: BulkAction,
    selection: BulkSelection,
    /// The filter's query string, to show it and to go back to it.
    query: String,
    /// How the selection reads on the page.
    what: String,
}

fn read_request(form: &[(String, String)]) -> Result<Request, ApiError> {
    let action: BulkAction = field(form, "action")
        .unwrap_or_default()
        .parse()
        .map_err(|message| ApiError::new(ErrorCode::InvalidRequest, message))?;
    let query = field(form, "query").unwrap_or_default().to_owned();
    let filters = Filters::parse(Some(&query));
    let (selection, what) = match field(form, "scope") {
        Some("matching") => {
            let described = filters.describe();
            (
                BulkSelection::Filter(Box::new(filters.run_filter()?)),
                format!("runs matching {described}"),
            )
        }
        _ => {
            let ids = form
                .iter()
                .filter(|(name, _)| name == "id")
                .map(|(_, v)| {
                    v.parse::<Uuid>().map_err(|_| {
                        ApiError::new(ErrorCode::InvalidRequest, format!("{v:?} is not a run id"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "no run was selected: tick the runs to act on, or choose all matching the filter",
                ));
            }
            let what = format!("the {} selected runs", ids.len());
            (BulkSelection::Ids(ids), what)
        }
    };
    Ok(Request {
        action,
        selection,
        query,
        what,
    })
}

/// A bulk form's fields, after its CSRF check, and what they ask for.
fn checked_request(
    session: &Session,
    body: &Bytes,
) -> Result<(Vec<(String, String)>, Request), ApiError> {
    let form = checked_form(session, body)?;
    let request = read_request(&form)?;
    Ok((form, request))
}

fn hidden_fields(session: &Session, form: &[(String, String)]) -> Markup {
    html! {
        (csrf(session))
        @for (name, value) in form.iter().filter(|(n, _)| ["action", "scope", "query", "id"].contains(&n.as_str())) {
            input type="hidden" name=(name) value=(value);
        }
    }
}

/// `POST /runs/bulk`: the confirmation, saying how many runs the action will take.
pub(super) async fn confirm(
    State(state): State<AppState>,
    session: Session,
    body: Bytes,
) -> Response {
    let result = async {
        let (form, request) = checked_request(&session, &body)?;
        let cap = state.config.bulk_cap;
        let count = match &request.selection {
            BulkSelection::Ids(ids) => ids.len() as u64,
            BulkSelection::Filter(filter) => session.client.runs().count(filter, cap + 1).await?,
        };
        let verb = match request.action {
            BulkAction::Cancel => "Cancel",
            BulkAction::Replay => "Replay",
        };
        let body = html! {
            p class="crumbs" { a href={ "/runs?" (request.query) } { "Runs" } " / bulk " (request.action.as_str()) }
            h1 { (verb) " runs" }
            @if count == 0 {
                p class="empty" { "No run matches: nothing to do." }
            } @else {
                p class="confirm" {
                    (verb) " " strong { @if count > cap { "the newest " (cap) " of more than " (cap) } @else { (count) } " runs" }
                    " — " (request.what) "?"
                }
                @if request.action == BulkAction::Cancel {
                    p class="hint" { "Runs that already finished are left as they are; canceling a run cancels its unfinished children too." }
                } @else {
                    p class="hint" { "Each run gets a new run with the same payload, queue, key, tags and metadata, marked as its replay." }
                }
                @if count > cap {
                    p class="hint" { "This server acts on at most " (cap) " runs per bulk action; run it again for the rest." }
                }
                form method="post" action="/runs/bulk/start" {
                    (hidden_fields(&session, &form))
                    button type="submit" class=(if request.action == BulkAction::Cancel { "danger" } else { "" }) {
                        (verb) " " (count.min(cap)) " runs"
                    }
                    " "
                    a class="button secondary" href={ "/runs?" (request.query) } { "Back" }
                }
            }
        };
        Ok::<_, ApiError>(page(&session, "Bulk action", Nav::Runs, body))
    };
    result.await.unwrap_or_else(error_page)
}

/// `POST /runs/bulk/start`: starts the action in the background and opens its progress page.
pub(super) async fn start(
    State(state): State<AppState>,
    session: Session,
    body: Bytes,
) -> Response {
    let result = async {
        let (_, request) = checked_request(&session, &body)?;
        let (id, job) = state.dashboard.jobs.add(Job {
            action: request.action,
            who: session.who.clone(),
            what: request.what,
            started_at: Utc::now(),
            progress: BulkProgress::default(),
            outcome: None,
        });
        let client = session.client.clone();
        let cap = state.config.bulk_cap;
        tokio::spawn(async move {
            let report = |progress| job.lock().expect("bulk job").progress = progress;
            let done = client
                .runs()
                .bulk(request.action, request.selection, cap, report)
                .await;
            let mut job = job.lock().expect("bulk job");
            match done {
                Ok(progress) => {
                    job.progress = progress;
                    job.outcome = Some(Ok(()));
                }
                Err(error) => job.outcome = Some(Err(ApiError::from(error).message)),
            }
        });
        Ok::<_, ApiError>(Redirect::to(&format!("/bulk/{id}")).into_response())
    };
    result.await.unwrap_or_else(error_page)
}

/// `GET /bulk/{id}`: a bulk action's progress, refreshed while it runs.
pub(super) async fn progress(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let job = id.parse().ok().and_then(|id| state.dashboard.jobs.get(id));
    let Some(job) = job else {
        return error_page(ApiError::new(
            ErrorCode::NotFound,
            "no such bulk action on this server (finished actions are forgotten when it restarts)",
        ));
    };
    let section = progress_section(&job);
    if headers.contains_key("x-kiln-partial") {
        let mut response = fragment(section);
        if job.outcome.is_some() {
            response
                .headers_mut()
                .insert("x-kiln-live", axum::http::HeaderValue::from_static("done"));
        }
        return response;
    }
    let running = job.outcome.is_none();
    let body = html! {
        h1 { "Bulk " (job.action.as_str()) }
        p { "Started by " strong { (job.who) } " " (when(job.started_at, Utc::now())) ": " (job.action.as_str()) " " (job.what) "." }
        section id="bulk" data-live=[running.then_some("bulk")] data-live-every="1000" aria-live="polite" {
            (section)
        }
        p { a href="/runs" { "Back to runs" } }
    };
    page(&session, "Bulk action", Nav::Runs, body)
}

fn progress_section(job: &Job) -> Markup {
    let p = job.progress;
    let done_label = match job.action {
        BulkAction::Cancel => "canceled",
        BulkAction::Replay => "replayed",
    };
    html! {
        p class="bulk-state" {
            @match &job.outcome {
                None => { span class="status status-executing" { "running" } }
                Some(Ok(())) => { span class="status status-completed" { "done" } }
                Some(Err(_)) => { span class="status status-failed" { "failed" } }
            }
        }
        dl class="facts" {
            dt { "Runs looked at" } dd { (p.matched) }
            dt { "Runs " (done_label) } dd class="bulk-done" { (p.done) }
            dt { "Left as they were" } dd { (p.skipped) }
            @if p.capped { dt { "Stopped at the cap" } dd { "yes: run it again for the rest" } }
        }
        @if let Some(Err(message)) = &job.outcome {
            p class="flash error" role="alert" { (message) }
        }
    }
}
