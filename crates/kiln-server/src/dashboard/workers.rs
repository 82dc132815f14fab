//! The workers page: worker processes alive (running or draining) with their host, pid, tasks,
//! runs in flight and when they were last seen.

use axum::response::Response;
use chrono::Utc;
use maud::html;

use super::error_page;
use super::layout::{page, when, Nav};
use super::session::Session;

/// `GET /workers`.
pub(super) async fn list(session: Session) -> Response {
    let workers = match session.client.workers().list(false).await {
        Ok(workers) => workers,
        Err(error) => return error_page(error.into()),
    };
    let now = Utc::now();
    let body = html! {
        h1 { "Workers" }
        @if workers.is_empty() {
            p class="empty" { "No worker is alive. Start one with your app's worker binary, or " code { "kiln dev" } "." }
        } @else {
            table class="workers" {
                thead { tr {
                    th { "Worker" } th { "State" } th { "Host" } th { "PID" } th { "Version" }
                    th { "In flight" } th { "Tasks" } th { "Started" } th { "Last seen" }
                } }
                tbody {
                    @for w in &workers {
                        tr {
                            td { code { (w.id) } }
                            td { span class={ "status status-" (w.state) } { (w.state) } }
                            td { (w.hostname) }
                            td { (w.pid) }
                            td { (w.version) }
                            td { (w.in_flight) " / " (w.concurrency) }
                            td { @for t in &w.tasks { span class="tag" { (t) } " " } }
                            td { (when(w.started_at, now)) }
                            td { (when(w.last_seen_at, now)) }
                        }
                    }
                }
            }
        }
    };
    page(&session, "Workers", Nav::Workers, body)
}
