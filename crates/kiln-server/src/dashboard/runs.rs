//! The runs page (filters held in the URL, cursor pages, live refresh of the first page) and the
//! run page (everything about one run, its logs live while it runs, and its actions).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use kiln_client::ErrorCode;
use kiln_core::{Run, RunFilter, RunStatus};
use maud::{html, Markup};
use uuid::Uuid;

use super::layout::{
    csrf, duration, fragment, json_block, kind_name, page, short_id, status_badge, when, when_long,
    Nav,
};
use super::session::Session;
use super::{checked_form, error_page, field};
use crate::ApiError;

/// Runs per page of the runs list.
const DASHBOARD_PAGE: u32 = 50;
/// Log lines shown on a run's page at most (the CLI and the API page through all of them).
const LOG_LINES_SHOWN: u32 = 1_000;
/// Children listed on a run's page at most.
const CHILDREN_SHOWN: u32 = 50;

/// Children counted by status on a run's page, newest first: a parent of 250,000 children took
/// 178 ms to count whole (BENCHMARKS.md, dashboard).
const CHILDREN_COUNTED: u32 = 10_000;
/// The header the page's script sends to get one live section instead of the whole page.
const PARTIAL_HEADER: &str = "x-kiln-partial";
/// The header of a live section's answer saying it will not change any more.
const LIVE_HEADER: &str = "x-kiln-live";

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidOption, message)
}

/// A `datetime-local` value (`2026-12-01T10:00`) or an RFC 3339 time, read as UTC.
fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            invalid(format!(
                "{name} {value:?} is not a time: use 2026-12-01T10:00 (UTC) or an RFC 3339 time"
            ))
        })
}

/// The runs filter a query string holds, as the page's form wrote it.
#[derive(Debug, Default)]
pub(super) struct Filters {
    pairs: Vec<(String, String)>,
}

impl Filters {
    pub(super) fn parse(query: Option<&str>) -> Self {
        let pairs: Vec<(String, String)> = query
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        Self {
            pairs: pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        }
    }

    fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }

    fn uuid(&self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.one(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid(format!("{name} {v:?} is not a run id")))
            })
            .transpose()
    }

    pub(super) fn run_filter(&self) -> Result<RunFilter, ApiError> {
        let (statuses, retrying) =
            kiln_core::parse_status_names(self.all("status")).map_err(invalid)?;
        Ok(RunFilter {
            task_ids: self.all("task").map(str::to_owned).collect(),
            statuses,
            retrying,
            queue: self.one("queue").map(str::to_owned),
            tags: self
                .all("tag")
                .flat_map(|t| t.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            concurrency_key: self.one("key").map(str::to_owned),
            created_after: self
                .one("from")
                .map(|v| parse_time("from", v))
                .transpose()?,
            created_before: self.one("to").map(|v| parse_time("to", v)).transpose()?,
            parent_run_id: self.uuid("parent")?,
            root_only: self.one("root") == Some("1"),
            idempotency_key: None,
            cursor: self.uuid("cursor")?,
            before: self.uuid("before")?,
            limit: Some(DASHBOARD_PAGE),
            // The runs table shows neither payloads nor outputs.
            summary_only: true,
        })
    }

    /// This filter's query string with the page position replaced.
    fn with_page(&self, name: &str, id: Uuid) -> String {
        let mut pairs: Vec<(&str, String)> = self
            .pairs
            .iter()
            .filter(|(n, _)| n != "cursor" && n != "before")
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        pairs.push((name, id.to_string()));
        format!(
            "/runs?{}",
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        )
    }

    /// The filter's query string without its page position.
    fn query(&self) -> String {
        let pairs: Vec<&(String, String)> = self
            .pairs
            .iter()
            .filter(|(n, _)| n != "cursor" && n != "before")
            .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    /// The filter as a reader sees it: `status=failed, task=sync`, or "no filter".
    pub(super) fn describe(&self) -> String {
        let shown: Vec<String> = self
            .pairs
            .iter()
            .filter(|(n, _)| n != "cursor" && n != "before")
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        if shown.is_empty() {
            "no filter (every run)".to_owned()
        } else {
            shown.join(", ")
        }
    }

    fn is_paged(&self) -> bool {
        self.one("cursor").is_some() || self.one("before").is_some()
    }
}

/// `GET /runs`: the runs list.
pub(super) async fn list(
    session: Session,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let filters = Filters::parse(query.as_deref());
    let (filter, problem) = match filters.run_filter() {
        Ok(filter) => (filter, None),
        Err(error) => (
            RunFilter {
                limit: Some(DASHBOARD_PAGE),
                ..RunFilter::default()
            },
            Some(error.message),
        ),
    };
    let page_of_runs = match session.client.runs().list(&filter).await {
        Ok(page) => page,
        Err(error) => return error_page(error.into()),
    };
    let table = runs_table(&session, &filters, &page_of_runs, problem.is_some());
    if headers.contains_key(PARTIAL_HEADER) {
        return fragment(table);
    }
    let tasks = session.client.tasks().list().await.unwrap_or_default();
    let body = html! {
        h1 { "Runs" }
        @if let Some(problem) = &problem {
            p class="flash error" role="alert" { (problem) " (showing all runs instead)" }
        }
        (filter_form(&filters, &tasks))
        @let live = !filters.is_paged() && problem.is_none();
        section id="runs" aria-live="polite"
            data-live=[live.then_some("runs")] data-live-every="3000" {
            (table)
        }
    };
    page(&session, "Runs", Nav::Runs, body)
}

fn filter_form(filters: &Filters, tasks: &[kiln_client::TaskRow]) -> Markup {
    let chosen: Vec<&str> = filters.all("status").flat_map(|s| s.split(',')).collect();
    let task = filters.one("task").unwrap_or_default();
    html! {
        form class="filters" method="get" action="/runs" {
            fieldset class="statuses" {
                legend { "Status" }
                @for name in std::iter::once("retrying").chain(RunStatus::ALL.iter().map(|s| s.as_str())) {
                    label class="check" {
                        input type="checkbox" name="status" value=(name) checked[chosen.contains(&name)];
                        " " span class={ "status status-" (name) } { (name) }
                    }
                }
            }
            div class="fields" {
                label { "Task "
                    select name="task" {
                        option value="" { "any" }
                        @for t in tasks {
                            option value=(t.id) selected[t.id == task] { (t.id) }
                        }
                        @if !task.is_empty() && !tasks.iter().any(|t| t.id == task) {
                            option value=(task) selected { (task) }
                        }
                    }
                }
                label { "Queue " input type="text" name="queue" value=[filters.one("queue")]; }
                label { "Tag " input type="text" name="tag" value=[filters.one("tag")]; }
                label { "Key " input type="text" name="key" value=[filters.one("key")] placeholder="concurrency key"; }
                label { "From (UTC) " input type="datetime-local" name="from" value=[filters.one("from")]; }
                label { "To (UTC) " input type="datetime-local" name="to" value=[filters.one("to")]; }
                label class="check" { input type="checkbox" name="root" value="1" checked[filters.one("root") == Some("1")]; " root runs only" }
                @if let Some(parent) = filters.one("parent") {
                    input type="hidden" name="parent" value=(parent);
                }
                button type="submit" { "Apply" }
                a class="button secondary" href="/runs" { "Clear" }
            }
        }
    }
}

fn runs_table(
    session: &Session,
    filters: &Filters,
    runs: &kiln_core::RunPage,
    fell_back: bool,
) -> Markup {
    let now = Utc::now();
    html! {
        form id="bulk-form" method="post" action="/runs/bulk" {
            (csrf(session))
            input type="hidden" name="query" value=(filters.query());
            div class="toolbar" {
                span class="count" { (runs.runs.len()) " runs on this page" }
                @if !runs.runs.is_empty() {
                    span class="bulk" {
                        label { "With " select name="action" { option value="cancel" { "cancel" } option value="replay" { "replay" } } }
                        button type="submit" name="scope" value="selected" class="secondary" { "Selected runs…" }
                        button type="submit" name="scope" value="matching" class="secondary" { "All matching the filter…" }
                    }
                }
                @if !filters.is_paged() && !fell_back {
                    button type="button" class="secondary" data-live-toggle="runs" aria-pressed="false" { "Pause live updates" }
                }
            }
            @if runs.scan_limited {
                p class="hint scan-note" {
                    "A status filter reads at most " (scan_budget_shown()) " runs per page, and this page stopped there"
                    @if runs.runs.is_empty() { " without a match" }
                    ": older runs were not searched yet. "
                    @if let Some(cursor) = runs.next_cursor {
                        a href=(filters.with_page("cursor", cursor)) { "Search older runs →" }
                    }
                }
            }
            @if runs.runs.is_empty() {
                @if !runs.scan_limited { p class="empty" { "No runs match these filters." } }
            } @else {
                table class="runs" {
                    thead { tr {
                        th { input type="checkbox" data-select-all="id" aria-label="Select every run on this page"; }
                        th { "Status" } th { "Run" } th { "Task" } th { "Queue / key" } th { "Tags" }
                        th { "Created" } th { "Duration" } th { "Attempts" }
                    } }
                    tbody {
                        @for run in &runs.runs {
                            tr {
                                td { input type="checkbox" name="id" value=(run.id) aria-label={ "Select run " (run.id) }; }
                                td { (status_badge(run)) }
                                td { a href={ "/runs/" (run.id) } title=(run.id) { code { (short_id(run.id)) } } }
                                td { (run.task_id) }
                                td { (run.queue) @if let Some(key) = &run.concurrency_key { " / " code { (key) } } }
                                td { @for tag in &run.tags { span class="tag" { (tag) } " " } }
                                td { (when(run.created_at, now)) }
                                td { (run_duration(run, now).unwrap_or_default()) }
                                td { (run.attempts) "/" (run.max_attempts) }
                            }
                        }
                    }
                }
            }
        }
        nav class="pages" aria-label="Pages" {
            @if let Some(before) = runs.previous_cursor {
                a href=(filters.with_page("before", before)) rel="prev" { "← Newer" }
            }
            @if let Some(cursor) = runs.next_cursor {
                a href=(filters.with_page("cursor", cursor)) rel="next" { "Older →" }
            }
        }
    }
}

/// Runs a status-filtered page reads at most, as shown.
fn scan_budget_shown() -> String {
    let budget = kiln_client::STATUS_SCAN_BUDGET;
    format!("{},{:03}", budget / 1000, budget % 1000)
}

/// How long the run ran (or has run so far).
fn run_duration(run: &Run, now: DateTime<Utc>) -> Option<String> {
    let started = run.started_at?;
    Some(duration(run.finished_at.unwrap_or(now) - started))
}

/// `GET /runs/{id}`: one run.
pub(super) async fn detail(
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(error) => return error_page(error),
    };
    let runs = session.client.runs();
    let run = match runs.retrieve(id).await {
        Ok(run) => run,
        Err(error) => return error_page(error.into()),
    };
    let logs = match runs.logs(id, None, None, LOG_LINES_SHOWN).await {
        Ok(lines) => lines,
        Err(error) => return error_page(error.into()),
    };
    let live = !run.status.is_final();
    if headers.get(PARTIAL_HEADER).is_some_and(|v| v == "logs") {
        let mut response = fragment(logs_section(&logs, live));
        if !live {
            // The run is final: its log will not grow, and the page stops asking.
            response
                .headers_mut()
                .insert(LIVE_HEADER, axum::http::HeaderValue::from_static("done"));
        }
        return response;
    }
    let children = match runs
        .list(&RunFilter {
            parent_run_id: Some(id),
            limit: Some(CHILDREN_SHOWN),
            ..RunFilter::default()
        })
        .await
    {
        Ok(page) => page,
        Err(error) => return error_page(error.into()),
    };
    let child_counts = match runs
        .count_newest_children_by_status(id, CHILDREN_COUNTED as u64)
        .await
    {
        Ok(counts) => counts,
        Err(error) => return error_page(error.into()),
    };
    let now = Utc::now();
    let body = html! {
        p class="crumbs" { a href="/runs" { "Runs" } " / " code { (run.id) } }
        h1 { (run.task_id) " " (status_badge(&run)) }
        (actions(&session, &run))
        @if let Some(error) = &run.error {
            section class="error-box" aria-label="Error" {
                h2 { "Error: " (kind_name(error.kind)) }
                p class="error-message" { (error.message) }
                @if !error.chain.is_empty() {
                    ol class="chain" { @for cause in &error.chain { li { (cause) } } }
                }
            }
        }
        (facts(&run, now))
        div class="two" {
            (json_block("Payload", &run.payload))
            @if let Some(output) = &run.output { (json_block("Output", output)) }
        }
        @if run.metadata.as_object().is_some_and(|m| !m.is_empty()) {
            (json_block("Metadata", &run.metadata))
        }
        h2 { "Attempts" }
        @if run.attempt_list.is_empty() {
            p class="empty" { "Not started yet." }
        } @else {
            table class="attempts" {
                thead { tr { th { "#" } th { "Status" } th { "Worker" } th { "Started" } th { "Duration" } th { "Error" } } }
                tbody {
                    @for attempt in &run.attempt_list {
                        tr {
                            td { (attempt.number) }
                            td { span class={ "status status-" (attempt.status) } { (attempt.status) } }
                            td { code { (attempt.worker_id) } }
                            td { (when(attempt.started_at, now)) }
                            td { (duration(attempt.finished_at.unwrap_or(now) - attempt.started_at)) }
                            td { @if let Some(e) = &attempt.error { (kind_name(e.kind)) ": " (e.message) } }
                        }
                    }
                }
            }
        }
        h2 { "Logs" }
        section id="logs" data-live=[live.then_some("logs")] data-live-every="1000" {
            (logs_section(&logs, live))
        }
        @if child_counts.counted > 0 {
            @if child_counts.more {
                h2 { "Children (over " (child_counts.counted) ")" }
                p { "Counts of the newest " (child_counts.counted) " children:" }
            } @else {
                h2 { "Children (" (child_counts.counted) ")" }
            }
            p class="child-counts" {
                @for (status, n) in &child_counts.by_status {
                    a href={ "/runs?parent=" (run.id) "&status=" (status.as_str()) } {
                        span class={ "status status-" (status.as_str()) } { (status.as_str()) " " (n) }
                    }
                    " "
                }
            }
            (children_table(&children.runs, now))
            @if child_counts.more {
                p { a href={ "/runs?parent=" (run.id) } { "All children" } }
            } @else if child_counts.counted > u64::from(CHILDREN_SHOWN) {
                p { a href={ "/runs?parent=" (run.id) } { "All " (child_counts.counted) " children" } }
            }
        }
    };
    page(
        &session,
        &format!("Run {}", short_id(run.id)),
        Nav::Runs,
        body,
    )
}

fn facts(run: &Run, now: DateTime<Utc>) -> Markup {
    let wait = run.started_at.map(|s| duration(s - run.available_at));
    html! {
        dl class="facts" {
            dt { "Run" } dd { code { (run.id) } }
            dt { "Queue" } dd { (run.queue) }
            @if let Some(key) = &run.concurrency_key { dt { "Concurrency key" } dd { code { (key) } } }
            @if !run.tags.is_empty() { dt { "Tags" } dd { @for tag in &run.tags { span class="tag" { (tag) } " " } } }
            @if let Some(key) = &run.idempotency_key { dt { "Idempotency key" } dd { code { (key) } } }
            dt { "Attempts" } dd { (run.attempts) " of " (run.max_attempts) }
            dt { "Triggered" } dd { (when_long(run.created_at, now)) }
            @if run.available_at != run.created_at { dt { "Available" } dd { (when_long(run.available_at, now)) } }
            @if let Some(at) = run.started_at { dt { "Started" } dd { (when_long(at, now)) } }
            @if let Some(at) = run.finished_at { dt { "Finished" } dd { (when_long(at, now)) } }
            @if let Some(wait) = wait { dt { "Waited" } dd { (wait) } }
            @if let Some(d) = run_duration(run, now) { dt { "Duration" } dd { (d) } }
            @if let Some(at) = run.expires_at { dt { "Expires" } dd { (when_long(at, now)) } }
            @if let Some(parent) = run.parent_run_id { dt { "Parent" } dd { a href={ "/runs/" (parent) } { code { (parent) } } } }
            @if let Some(root) = run.root_run_id.filter(|r| Some(*r) != run.parent_run_id) {
                dt { "Root" } dd { a href={ "/runs/" (root) } { code { (root) } } }
            }
            @if let Some(original) = run.replay_of { dt { "Replay of" } dd { a href={ "/runs/" (original) } { code { (original) } } } }
            @if let Some(traceparent) = &run.traceparent { dt { "Trace context" } dd { code { (traceparent) } } }
        }
    }
}

fn actions(session: &Session, run: &Run) -> Markup {
    let payload = serde_json::to_string_pretty(&run.payload).unwrap_or_default();
    let default_at = (Utc::now() + chrono::Duration::minutes(5)).format("%Y-%m-%dT%H:%M");
    html! {
        div class="actions" {
            @if !run.status.is_final() {
                form method="post" action={ "/runs/" (run.id) "/cancel" } data-confirm="Cancel this run?" {
                    (csrf(session))
                    button type="submit" class="danger" { "Cancel run" }
                }
            }
            details class="replay" {
                summary { "Replay…" }
                form method="post" action={ "/runs/" (run.id) "/replay" } {
                    (csrf(session))
                    label for="replay-payload" { "Payload (JSON), edit before replaying" }
                    textarea id="replay-payload" name="payload" rows="8" spellcheck="false" { (payload) }
                    button type="submit" { "Replay with this payload" }
                }
            }
            @if run.status == RunStatus::Delayed || (run.status == RunStatus::Queued && run.started_at.is_none()) {
                details class="reschedule" {
                    summary { "Reschedule…" }
                    form method="post" action={ "/runs/" (run.id) "/reschedule" } {
                        (csrf(session))
                        label for="reschedule-at" { "Start at (UTC)" }
                        input id="reschedule-at" type="datetime-local" name="at" value=(default_at) required;
                        button type="submit" { "Reschedule" }
                    }
                }
            }
        }
    }
}

fn logs_section(lines: &[kiln_core::LogLine], live: bool) -> Markup {
    html! {
        @if lines.is_empty() {
            p class="empty" { @if live { "No log lines yet; new lines appear here as the run writes them." } @else { "This run wrote no log lines." } }
        } @else {
            table class="logs" {
                thead { tr { th { "#" } th { "Time" } th { "Level" } th { "Message" } th { "Fields" } } }
                tbody {
                    @for line in lines {
                        tr class={ "level-" (line.level.as_str()) } {
                            td { (line.attempt) "." (line.seq) }
                            td { time datetime=(line.at.to_rfc3339()) { (line.at.format("%H:%M:%S%.3f")) } }
                            td { (line.level.as_str()) }
                            td class="message" { (line.message) }
                            td { @if line.fields.as_object().is_some_and(|f| !f.is_empty()) { code { (line.fields.to_string()) } } }
                        }
                    }
                }
            }
            @if lines.len() as u32 >= LOG_LINES_SHOWN {
                p class="hint" { "The first " (LOG_LINES_SHOWN) " lines are shown; read all with " code { "kiln runs logs ID" } "." }
            }
        }
    }
}

fn children_table(children: &[Run], now: DateTime<Utc>) -> Markup {
    html! {
        table class="runs" {
            thead { tr { th { "Status" } th { "Run" } th { "Task" } th { "Key" } th { "Created" } } }
            tbody {
                @for child in children {
                    tr {
                        td { (status_badge(child)) }
                        td { a href={ "/runs/" (child.id) } { code { (short_id(child.id)) } } }
                        td { (child.task_id) }
                        td { @if let Some(key) = &child.concurrency_key { code { (key) } } }
                        td { (when(child.created_at, now)) }
                    }
                }
            }
        }
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{id:?} is not a run id (a UUID such as 0193a5c2-...)"),
        )
    })
}

/// `POST /runs/{id}/cancel`.
pub(super) async fn cancel(session: Session, Path(id): Path<String>, body: Bytes) -> Response {
    let result = async {
        let id = parse_id(&id)?;
        checked_form(&session, &body)?;
        session.client.runs().cancel_unfinished(id).await?;
        Ok::<_, ApiError>(Redirect::to(&format!("/runs/{id}")).into_response())
    };
    result.await.unwrap_or_else(error_page)
}

/// `POST /runs/{id}/replay`: a new run with the (possibly edited) payload; goes to it.
pub(super) async fn replay(session: Session, Path(id): Path<String>, body: Bytes) -> Response {
    let result = async {
        let id = parse_id(&id)?;
        let form = checked_form(&session, &body)?;
        let payload = match field(&form, "payload").map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(serde_json::from_str(text).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidPayload,
                    format!("the payload is not valid JSON: {e}; go back and correct it"),
                )
            })?),
        };
        let handle = session.client.runs().replay(id, payload).await?;
        Ok::<_, ApiError>(Redirect::to(&format!("/runs/{}", handle.id)).into_response())
    };
    result.await.unwrap_or_else(error_page)
}

/// `POST /runs/{id}/reschedule`.
pub(super) async fn reschedule(session: Session, Path(id): Path<String>, body: Bytes) -> Response {
    let result = async {
        let id = parse_id(&id)?;
        let form = checked_form(&session, &body)?;
        let at = parse_time("at", field(&form, "at").unwrap_or_default())?;
        session.client.runs().reschedule(id, at).await?;
        Ok::<_, ApiError>(Redirect::to(&format!("/runs/{id}")).into_response())
    };
    result.await.unwrap_or_else(error_page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_from_the_url_keep_every_field() {
        let filters = Filters::parse(Some(
            "status=failed&status=retrying&task=a&tag=x,y&key=ws_1&root=1&from=2026-12-01T10:00&queue=",
        ));
        let filter = filters.run_filter().unwrap();
        assert_eq!(filter.statuses, [RunStatus::Failed]);
        assert!(filter.retrying);
        assert_eq!(filter.task_ids, ["a"]);
        assert_eq!(filter.tags, ["x", "y"]);
        assert_eq!(filter.concurrency_key.as_deref(), Some("ws_1"));
        assert!(filter.root_only);
        assert_eq!(filter.queue, None);
        assert_eq!(
            filter.created_after.unwrap().to_rfc3339(),
            "2026-12-01T10:00:00+00:00"
        );
        let next = filters.with_page("cursor", Uuid::nil());
        assert!(next.contains("status=failed&status=retrying"), "{next}");
        assert!(
            next.ends_with("cursor=00000000-0000-0000-0000-000000000000"),
            "{next}"
        );
    }

    #[test]
    fn a_bad_filter_names_the_field() {
        let error = Filters::parse(Some("status=finished"))
            .run_filter()
            .unwrap_err();
        assert!(error.message.contains("\"finished\""), "{}", error.message);
        let error = Filters::parse(Some("from=yesterday"))
            .run_filter()
            .unwrap_err();
        assert!(
            error.message.starts_with("from \"yesterday\""),
            "{}",
            error.message
        );
    }
}
