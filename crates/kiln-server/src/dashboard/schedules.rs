//! The schedules page: every schedule with its pattern, timezone, next fire times and last run;
//! activate and deactivate; create and edit imperative schedules, with the cron expression
//! checked by the server as it is typed and the next five fire times shown.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use kiln_client::{CreateSchedule, ErrorCode, UpdateSchedule};
use kiln_core::{CronSchedule, Schedule};
use maud::{html, Markup};
use uuid::Uuid;

use super::layout::{absolute, csrf, fragment, page, relative, segment, short_id, when, Nav};
use super::session::Session;
use super::{checked_form, error_page, field};
use crate::ApiError;

/// Fire times shown for a pattern being typed.
const PREVIEW_TIMES: usize = 5;

/// What the create or edit form holds, to show it again with its problem.
#[derive(Debug, Default)]
struct Draft {
    task_id: String,
    cron: String,
    timezone: String,
    external_id: String,
}

impl Draft {
    fn from_form(form: &[(String, String)]) -> Self {
        let text = |name| field(form, name).unwrap_or_default().trim().to_owned();
        Self {
            task_id: text("task"),
            cron: text("cron"),
            timezone: text("timezone"),
            external_id: text("external_id"),
        }
    }
}

/// `GET /schedules`.
pub(super) async fn list(session: Session) -> Response {
    render_list(&session, None, &Draft::default()).await
}

async fn render_list(session: &Session, problem: Option<&str>, draft: &Draft) -> Response {
    let result = async {
        let schedules = session.client.schedules().list(None).await?;
        let tasks = session.client.tasks().list().await?;
        Ok::<_, ApiError>((schedules, tasks))
    };
    let (schedules, tasks) = match result.await {
        Ok(found) => found,
        Err(error) => return error_page(error),
    };
    let now = Utc::now();
    let body = html! {
        h1 { "Schedules" }
        @if schedules.is_empty() {
            p class="empty" { "No schedules yet: declare one with " code { "cron:" } " in " code { "task!" } ", or create one below." }
        } @else {
            table class="schedules" {
                thead { tr {
                    th { "Task" } th { "Pattern" } th { "Next" } th { "Last run" } th { "State" } th { "Actions" }
                } }
                tbody {
                    @for s in &schedules {
                        tr id={ "schedule-" (s.id) } {
                            td {
                                a href={ "/tasks/" (segment(&s.task_id)) } { (s.task_id) }
                                @if let Some(external) = &s.external_id { div class="muted" { "for " code { (external) } } }
                                @if s.declarative { div class="muted" { "declared in code" } }
                            }
                            td { code { (s.cron) } " " span class="muted" { (s.timezone) } }
                            td { (next_times(s, now)) }
                            td {
                                @match (s.last_run_id, s.last_run_at) {
                                    (Some(id), Some(at)) => { a href={ "/runs/" (id) } { (short_id(id)) } " " (when(at, now)) }
                                    _ => { span class="muted" { "never" } }
                                }
                            }
                            td { @if s.active { span class="status status-active" { "active" } } @else { span class="status status-paused" { "inactive" } } }
                            td class="row-actions" {
                                form method="post" action={ "/schedules/" (s.id) (if s.active { "/deactivate" } else { "/activate" }) } class="inline" {
                                    (csrf(session))
                                    button type="submit" class="secondary" { @if s.active { "Deactivate" } @else { "Activate" } }
                                }
                                @if !s.declarative { a href={ "/schedules/" (s.id) } { "Edit" } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "New schedule" }
        (schedule_form(session, "/schedules", "Create schedule", problem, draft, &tasks))
    };
    page(session, "Schedules", Nav::Schedules, body)
}

fn next_times(s: &Schedule, now: chrono::DateTime<Utc>) -> Markup {
    html! {
        @if !s.active {
            span class="muted" { "—" }
        } @else if let Some(first) = s.upcoming.first().copied().or(s.next_run_at) {
            time datetime=(first.to_rfc3339()) title=(absolute(first)) { (relative(first, now)) }
            @if s.upcoming.len() > 1 {
                details class="upcoming" {
                    summary { "more" }
                    ul { @for at in &s.upcoming { li { (absolute(at.with_timezone(&Utc))) } } }
                }
            }
        }
    }
}

fn schedule_form(
    session: &Session,
    action: &str,
    submit: &str,
    problem: Option<&str>,
    draft: &Draft,
    tasks: &[kiln_client::TaskRow],
) -> Markup {
    let preview = (!draft.cron.is_empty()).then(|| preview(&draft.cron, &draft.timezone));
    html! {
        form class="schedule-form" method="post" action=(action) {
            (csrf(session))
            @if let Some(problem) = problem {
                p class="flash error" role="alert" { (problem) }
            }
            div class="fields" {
                label { "Task "
                    select name="task" required {
                        @for t in tasks {
                            option value=(t.id) selected[t.id == draft.task_id] { (t.id) }
                        }
                    }
                }
                label { "Cron " input type="text" name="cron" id="cron" value=(draft.cron) required
                    placeholder="*/15 * * * *" autocomplete="off" spellcheck="false"
                    data-check="/schedules/check" data-check-target="cron-preview"; }
                label { "Timezone " input type="text" name="timezone" id="timezone" value=(draft.timezone)
                    placeholder="UTC" data-check="/schedules/check" data-check-target="cron-preview"; }
                label { "External id " input type="text" name="external_id" value=(draft.external_id) placeholder="optional, e.g. ws_1"; }
                button type="submit" { (submit) }
            }
            div id="cron-preview" class="cron-preview" aria-live="polite" {
                @if let Some(preview) = preview { (preview) }
            }
        }
    }
}

/// The next fire times of a pattern, or what is wrong with it.
fn preview(cron: &str, timezone: &str) -> Markup {
    let timezone = Some(timezone.trim()).filter(|t| !t.is_empty());
    match CronSchedule::parse(cron, timezone) {
        Ok(schedule) => {
            let times = schedule.upcoming(Utc::now(), PREVIEW_TIMES);
            let zone = timezone.and_then(|tz| kiln_core::parse_timezone(tz).ok());
            html! {
                p class="ok" { "Next " (times.len()) " fire times (" (timezone.unwrap_or("UTC")) "):" }
                ol class="fire-times" {
                    @for at in &times {
                        li {
                            @if let Some(zone) = zone {
                                (at.with_timezone(&zone).format("%Y-%m-%d %H:%M %Z")) " "
                                span class="muted" { "(" (absolute(*at)) ")" }
                            } @else {
                                (absolute(*at))
                            }
                        }
                    }
                }
            }
        }
        Err(error) => html! { p class="flash error" role="alert" { (error.to_string()) } },
    }
}

/// `GET /schedules/check?cron=..&timezone=..`: the preview, for the form's script.
pub(super) async fn check(_session: Session, RawQuery(query): RawQuery) -> Response {
    let pairs: Vec<(String, String)> = query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let cron = field(&pairs, "cron").unwrap_or_default();
    if cron.trim().is_empty() {
        return fragment(html! {});
    }
    fragment(preview(cron, field(&pairs, "timezone").unwrap_or_default()))
}

/// `POST /schedules`: creates an imperative schedule; a bad pattern shows the form again.
pub(super) async fn create(session: Session, body: Bytes) -> Response {
    let form = match checked_form(&session, &body) {
        Ok(form) => form,
        Err(error) => return error_page(error),
    };
    let draft = Draft::from_form(&form);
    let mut schedule = CreateSchedule::new(&draft.task_id, &draft.cron);
    if !draft.timezone.is_empty() {
        schedule = schedule.timezone(&draft.timezone);
    }
    if !draft.external_id.is_empty() {
        schedule = schedule.external_id(&draft.external_id);
    }
    match session.client.schedules().create(schedule).await {
        Ok(_) => Redirect::to("/schedules").into_response(),
        Err(error) => {
            let error = ApiError::from(error);
            if error.code == ErrorCode::Internal || error.code == ErrorCode::Unavailable {
                return error_page(error);
            }
            let mut response = render_list(&session, Some(&error.message), &draft).await;
            *response.status_mut() = crate::status_of(error.code);
            response
        }
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{id:?} is not a schedule id (a UUID)"),
        )
    })
}

/// `GET /schedules/{id}`: the edit form of an imperative schedule.
pub(super) async fn edit_page(session: Session, Path(id): Path<String>) -> Response {
    let result = async {
        let schedule = session.client.schedules().retrieve(parse_id(&id)?).await?;
        let tasks = session.client.tasks().list().await?;
        Ok::<_, ApiError>((schedule, tasks))
    };
    match result.await {
        Ok((schedule, tasks)) => render_edit(&session, &schedule, None, None, &tasks),
        Err(error) => error_page(error),
    }
}

fn render_edit(
    session: &Session,
    schedule: &Schedule,
    problem: Option<&str>,
    draft: Option<Draft>,
    tasks: &[kiln_client::TaskRow],
) -> Response {
    let draft = draft.unwrap_or_else(|| Draft {
        task_id: schedule.task_id.clone(),
        cron: schedule.cron.clone(),
        timezone: schedule.timezone.clone(),
        external_id: schedule.external_id.clone().unwrap_or_default(),
    });
    let action = format!("/schedules/{}/edit", schedule.id);
    let body = html! {
        p class="crumbs" { a href="/schedules" { "Schedules" } " / " code { (schedule.id) } }
        h1 { "Edit schedule" }
        @if schedule.declarative {
            p class="flash error" { "This schedule is declared in code (cron: in task!): change it there." }
        } @else {
            (schedule_form(session, &action, "Save", problem, &draft, tasks))
            form method="post" action={ "/schedules/" (schedule.id) "/delete" } data-confirm="Delete this schedule?" {
                (csrf(session))
                button type="submit" class="danger" { "Delete schedule" }
            }
        }
    };
    page(session, "Edit schedule", Nav::Schedules, body)
}

/// `POST /schedules/{id}/{activate|deactivate|edit|delete}`.
pub(super) async fn act(
    session: Session,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let result = async {
        let id = parse_id(&id)?;
        let form = checked_form(&session, &body)?;
        let schedules = session.client.schedules();
        match action.as_str() {
            "activate" => drop(schedules.activate(id).await?),
            "deactivate" => drop(schedules.deactivate(id).await?),
            "delete" => schedules.delete(id).await?,
            "edit" => {
                let draft = Draft::from_form(&form);
                let changes = UpdateSchedule {
                    task_id: Some(draft.task_id.clone()),
                    cron: Some(draft.cron.clone()),
                    timezone: Some(if draft.timezone.is_empty() {
                        "UTC".to_owned()
                    } else {
                        draft.timezone.clone()
                    }),
                    external_id: Some(Some(draft.external_id.clone()).filter(|e| !e.is_empty())),
                };
                if let Err(error) = schedules.update(id, changes).await {
                    let error = ApiError::from(error);
                    if matches!(
                        error.code,
                        ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::NotFound
                    ) {
                        return Err(error);
                    }
                    let schedule = schedules.retrieve(id).await?;
                    let tasks = session.client.tasks().list().await?;
                    let mut response = render_edit(
                        &session,
                        &schedule,
                        Some(&error.message),
                        Some(draft),
                        &tasks,
                    );
                    *response.status_mut() = crate::status_of(error.code);
                    return Ok(response);
                }
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!(
                        "no schedule action {action:?}: use activate, deactivate, edit or delete"
                    ),
                ))
            }
        }
        Ok(Redirect::to("/schedules").into_response())
    };
    result.await.unwrap_or_else(error_page)
}
