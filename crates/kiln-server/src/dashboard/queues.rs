//! The queues page: each queue's limit (and override), whether it is paused, its runs by state
//! and the age of its oldest queued run; pause, resume, override and reset the limit.

use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use kiln_client::ErrorCode;
use maud::html;

use super::layout::{csrf, duration, page, query, segment, Nav};
use super::session::Session;
use super::{checked_form, error_page, field};
use crate::ApiError;

/// `GET /queues`.
pub(super) async fn list(session: Session) -> Response {
    let queues = match session.client.queues().list().await {
        Ok(queues) => queues,
        Err(error) => return error_page(error.into()),
    };
    let now = Utc::now();
    let body = html! {
        h1 { "Queues" }
        @if queues.is_empty() {
            p class="empty" { "No queues yet: a queue appears when a worker registers a task or a run is triggered." }
        } @else {
            table class="queues" {
                thead { tr {
                    th { "Queue" } th { "Limit" } th { "State" } th { "Executing" } th { "Queued" }
                    th { "Waiting" } th { "Oldest queued" } th { "Actions" }
                } }
                tbody {
                    @for q in &queues {
                        tr id={ "queue-" (q.name) } {
                            td { a href={ "/queues/" (segment(&q.name)) } { strong { (q.name) } } }
                            td {
                                @match (q.effective_limit(), q.limit_override) {
                                    (None, _) => { "none" }
                                    (Some(limit), Some(_)) => { (limit) " " span class="muted" { "(override; task limit " (q.concurrency_limit.map_or("none".to_owned(), |l| l.to_string())) ")" } }
                                    (Some(limit), None) => { (limit) }
                                }
                            }
                            td { @if q.paused { span class="status status-paused" { "paused" } } @else { span class="status status-active" { "active" } } }
                            td { (q.running) }
                            td { (q.queued) }
                            td { (q.waiting) }
                            td { @if let Some(at) = q.oldest_available_at { (duration(now - at)) } @else { "—" } }
                            td class="row-actions" {
                                form method="post" action={ "/queues/" (segment(&q.name)) (if q.paused { "/resume" } else { "/pause" }) } class="inline" {
                                    (csrf(&session))
                                    button type="submit" class="secondary" { @if q.paused { "Resume" } @else { "Pause" } }
                                }
                                form method="post" action={ "/queues/" (segment(&q.name)) "/limit" } class="inline" {
                                    (csrf(&session))
                                    label class="visually-hidden" for={ "limit-" (q.name) } { "New limit for " (q.name) }
                                    input id={ "limit-" (q.name) } type="number" name="limit" min="1" required size="4"
                                        value=[q.effective_limit()];
                                    button type="submit" class="secondary" { "Set limit" }
                                }
                                @if q.limit_override.is_some() {
                                    form method="post" action={ "/queues/" (segment(&q.name)) "/reset" } class="inline" {
                                        (csrf(&session))
                                        button type="submit" class="link" { "Reset limit" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&session, "Queues", Nav::Queues, body)
}

/// Concurrency keys listed on a queue's page.
const BUSIEST_SHOWN: u32 = 20;

/// `GET /queues/{name}`: one queue and its busiest concurrency keys.
pub(super) async fn detail(session: Session, Path(name): Path<String>) -> Response {
    let result = async {
        let queues = session.client.queues();
        let queue = queues.retrieve(&name).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound, format!("no queue is named {name:?}"))
        })?;
        let keys = queues.busiest_keys(&name, BUSIEST_SHOWN).await?;
        Ok::<_, ApiError>((queue, keys))
    };
    let (queue, keys) = match result.await {
        Ok(found) => found,
        Err(error) => return error_page(error),
    };
    let per_key = queue.effective_limit();
    let body = html! {
        p class="crumbs" { a href="/queues" { "Queues" } " / " (queue.name) }
        h1 { (queue.name) " " @if queue.paused { span class="status status-paused" { "paused" } } }
        dl class="facts" {
            dt { "Limit" } dd { (per_key.map_or("none".to_owned(), |l| l.to_string())) " "
                span class="muted" { "(per concurrency key, for keyed runs)" } }
            dt { "Executing" } dd { (queue.running) }
            dt { "Queued" } dd { (queue.queued) }
            dt { "Waiting on children" } dd { (queue.waiting) }
        }
        h2 { "Busiest concurrency keys" }
        @if keys.is_empty() {
            p class="empty" { "No keyed run is executing or ready in this queue." }
        } @else {
            table class="keys" {
                thead { tr { th { "Concurrency key" } th { "Executing" } th { "Ready" } th { "Runs" } } }
                tbody {
                    @for key in &keys {
                        tr {
                            td { code { (key.concurrency_key) } }
                            td {
                                (key.executing)
                                @if let Some(limit) = per_key { span class="muted" { " / " (limit) } }
                            }
                            td { (key.queued) }
                            td { a href={ "/runs?" (query(&[("queue", &queue.name), ("key", &key.concurrency_key)])) } { "runs" } }
                        }
                    }
                }
            }
        }
    };
    page(&session, &queue.name, Nav::Queues, body)
}

/// `POST /queues/{name}/{pause|resume|limit|reset}`.
pub(super) async fn act(
    session: Session,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let result = async {
        let form = checked_form(&session, &body)?;
        let queues = session.client.queues();
        let done = match action.as_str() {
            "pause" => queues.pause(&name).await,
            "resume" => queues.resume(&name).await,
            "reset" => queues.set_limit(&name, None).await,
            "limit" => {
                let limit = field(&form, "limit")
                    .and_then(|v| v.trim().parse::<i32>().ok())
                    .filter(|l| *l >= 1)
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::InvalidOption,
                            "the limit must be a whole number of at least 1",
                        )
                    })?;
                queues.set_limit(&name, Some(limit)).await
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no queue action {action:?}: use pause, resume, limit or reset"),
                ))
            }
        };
        done?;
        Ok::<_, ApiError>(Redirect::to("/queues").into_response())
    };
    result.await.unwrap_or_else(error_page)
}
