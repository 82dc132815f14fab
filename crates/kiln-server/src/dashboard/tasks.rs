//! The tasks page (each registered task with its definition, its runs by status, and whether a
//! live worker serves it) and a task's page with **Test**: a payload editor pre-filled from the
//! task's last run, options, and a trigger that opens the new run.

use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use kiln_client::{ErrorCode, TaskRow};
use kiln_core::{RunFilter, TriggerOptions};
use maud::{html, Markup};

use super::layout::{csrf, duration, json_block, page, query, segment, short_id, when, Nav};
use super::session::Session;
use super::{checked_form, error_page, field};
use crate::ApiError;

/// `GET /tasks`.
pub(super) async fn list(session: Session) -> Response {
    let tasks = match session.client.tasks().list().await {
        Ok(tasks) => tasks,
        Err(error) => return error_page(error.into()),
    };
    let now = Utc::now();
    let body = html! {
        h1 { "Tasks" }
        @if tasks.is_empty() {
            p class="empty" { "No task is registered yet: a worker registers its tasks when it starts." }
        } @else {
            table class="tasks" {
                thead { tr {
                    th { "Task" } th { "Queue" } th { "Limit" } th { "Attempts" } th { "Max duration" }
                    th { "Schedule" } th { "Served" } th { "Registered" }
                } }
                tbody {
                    @for task in &tasks {
                        tr {
                            td {
                                a href={ "/tasks/" (segment(&task.id)) } { strong { (task.id) } }
                                @if let Some(description) = &task.description { div class="muted" { (description) } }
                            }
                            td { (task.queue) }
                            td { (task.concurrency_limit.map_or("none".to_owned(), |l| l.to_string())) }
                            td { (task.max_attempts) }
                            td { (task.max_duration_ms.map_or("none".to_owned(), |ms| duration(chrono::Duration::milliseconds(ms)))) }
                            td { @if let Some(cron) = &task.cron { code { (cron) } " " span class="muted" { (task.timezone.as_deref().unwrap_or("UTC")) } } }
                            td { (served_badge(task.served)) }
                            td { (when(task.last_seen_at, now)) }
                        }
                    }
                }
            }
        }
    };
    page(&session, "Tasks", Nav::Tasks, body)
}

fn served_badge(served: bool) -> Markup {
    html! {
        @if served {
            span class="status status-active" { "worker alive" }
        } @else {
            span class="status status-stopped" title="No running worker registers this task: its runs wait until one starts" { "no worker" }
        }
    }
}

/// `GET /tasks/{id}`: the definition and the Test form.
pub(super) async fn detail(session: Session, Path(task_id): Path<String>) -> Response {
    let result = async {
        let task = session.client.tasks().retrieve(&task_id).await?;
        let last = session
            .client
            .runs()
            .list(&RunFilter {
                task_ids: vec![task.id.clone()],
                limit: Some(1),
                ..RunFilter::default()
            })
            .await?
            .runs
            .into_iter()
            .next();
        Ok::<_, ApiError>((task, last))
    };
    let (task, last) = match result.await {
        Ok(found) => found,
        Err(error) => return error_page(error),
    };
    let payload = last
        .as_ref()
        .map(|run| serde_json::to_string_pretty(&run.payload).unwrap_or_default())
        .unwrap_or_else(|| "{}".to_owned());
    let body = html! {
        p class="crumbs" { a href="/tasks" { "Tasks" } " / " (task.id) }
        h1 { (task.id) " " (served_badge(task.served)) }
        @if let Some(description) = &task.description { p { (description) } }
        (definition(&task))
        h2 { "Test" }
        form class="test" method="post" action={ "/tasks/" (segment(&task.id)) "/test" } {
            (csrf(&session))
            label for="test-payload" {
                "Payload (JSON)"
                @if let Some(run) = &last { span class="muted" { " — from the last run, " a href={ "/runs/" (run.id) } { (short_id(run.id)) } } }
            }
            textarea id="test-payload" name="payload" rows="10" spellcheck="false" { (payload) }
            div class="fields" {
                label { "Queue " input type="text" name="queue" placeholder=(task.queue); }
                label { "Concurrency key " input type="text" name="key"; }
                label { "Delay " input type="text" name="delay" placeholder="e.g. 30s, 5m" size="8"; }
                label { "Tags " input type="text" name="tags" placeholder="comma-separated"; }
            }
            button type="submit" { "Trigger test run" }
        }
        @if let Some(run) = &last {
            p { a href={ "/runs?" (query(&[("task", &task.id)])) } { "Runs of this task" } " · last run " a href={ "/runs/" (run.id) } { code { (run.id) } } }
        }
    };
    page(&session, &task.id, Nav::Tasks, body)
}

fn definition(task: &TaskRow) -> Markup {
    let ms = |ms: Option<i64>| {
        ms.map_or("none".to_owned(), |ms| {
            duration(chrono::Duration::milliseconds(ms))
        })
    };
    html! {
        dl class="facts" {
            dt { "Queue" } dd { (task.queue) }
            dt { "Concurrency limit" } dd { (task.concurrency_limit.map_or("none".to_owned(), |l| l.to_string())) }
            @if let Some(total) = task.total_limit { dt { "Total limit" } dd { (total) } }
            dt { "Max attempts" } dd { (task.max_attempts) }
            dt { "Retry" } dd { code { (task.retry.to_string()) } }
            dt { "Max duration" } dd { (ms(task.max_duration_ms)) }
            dt { "TTL" } dd { (ms(task.ttl_ms)) }
            @if task.priority_s != 0 { dt { "Priority" } dd { (task.priority_s) " s head start" } }
            @if let Some(cron) = &task.cron { dt { "Schedule" } dd { code { (cron) } " (" (task.timezone.as_deref().unwrap_or("UTC")) ")" } }
        }
        @if let Some(schema) = &task.payload_schema { (json_block("Payload schema", schema)) }
    }
}

/// `POST /tasks/{id}/test`: triggers a run with the form's payload and options, then opens it.
pub(super) async fn test(session: Session, Path(task_id): Path<String>, body: Bytes) -> Response {
    let result = async {
        let form = checked_form(&session, &body)?;
        let text = field(&form, "payload").map_or("", str::trim);
        let payload: serde_json::Value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(text).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidPayload,
                    format!("the payload is not valid JSON: {e}; go back and correct it"),
                )
            })?
        };
        let options = test_options(&form)?;
        let run = session
            .client
            .trigger_by_id(&task_id, payload)
            .options(options)
            .await?;
        Ok::<_, ApiError>(Redirect::to(&format!("/runs/{}", run.id)).into_response())
    };
    result.await.unwrap_or_else(error_page)
}

fn test_options(form: &[(String, String)]) -> Result<TriggerOptions, ApiError> {
    let text = |name| field(form, name).map(str::trim).filter(|v| !v.is_empty());
    let mut options = TriggerOptions::new().tag("test");
    if let Some(queue) = text("queue") {
        options = options.queue(queue);
    }
    if let Some(key) = text("key") {
        options = options.concurrency_key(key);
    }
    if let Some(delay) = text("delay") {
        let delay = kiln_core::parse_duration(delay).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidOption,
                format!("delay {delay:?} is not a duration ({e}): write e.g. 30s, 5m, 1h30m"),
            )
        })?;
        options = options.delay(delay);
    }
    for tag in text("tags").unwrap_or_default().split(',').map(str::trim) {
        if !tag.is_empty() && tag != "test" {
            options = options.tag(tag);
        }
    }
    Ok(options)
}
