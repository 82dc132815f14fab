//! The Tuturuuu tasks.

use std::time::Duration;

use chrono::{DateTime, Duration as Span, Timelike, Utc};
use kiln::{task, BatchItem, Context, Error, Result, ScheduleTick};
use serde::{Deserialize, Serialize};

use crate::provider::EventPage;
use crate::App;

/// The payload of the per-workspace tasks. Its JSON Schema is registered with each task
/// (`payload_schema: true`), so an HTTP or SQL caller sending `{"ws_id": 42}` is refused at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkspacePayload {
    /// The workspace.
    pub ws_id: String,
}

/// What every Tuturuuu task returns for a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceResult {
    /// The workspace.
    pub ws_id: String,
    /// Whether the work was done.
    pub success: bool,
    /// Why not.
    pub error: Option<String>,
    /// Events upserted (syncs) or tasks placed (scheduling).
    #[serde(default)]
    pub changed: u32,
    /// Events deleted (syncs).
    #[serde(default)]
    pub deleted: u32,
}

/// The full sync's report: one entry per workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullSyncReport {
    /// The tick the run is for.
    pub timestamp: DateTime<Utc>,
    /// One result per workspace, in workspace order.
    pub results: Vec<WorkspaceResult>,
    /// Workspaces whose sync failed.
    pub failed: Vec<String>,
}

/// Places a workspace's unscheduled tasks (or all of them, with `replan`) into free 15-minute
/// aligned slots of working hours (09:00–17:00 UTC) over the next two weeks, around its
/// calendar events and the tasks already placed. The result counts the tasks placed.
async fn plan(app: &App, ws_id: String, replan: bool) -> Result<WorkspaceResult> {
    let placed = place_tasks(app, &ws_id, replan).await?;
    Ok(WorkspaceResult {
        ws_id,
        success: true,
        error: None,
        changed: placed,
        deleted: 0,
    })
}

async fn place_tasks(app: &App, ws_id: &str, replan: bool) -> Result<u32> {
    let mut tx = app.pool.begin().await?;
    // One planner per workspace at a time, whatever the queue: the placement reads then writes.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tuturuuu.plan:' || $1))")
        .bind(ws_id)
        .execute(&mut *tx)
        .await?;
    if replan {
        sqlx::query("UPDATE tuturuuu.tasks SET scheduled_start = NULL, scheduled_end = NULL WHERE ws_id = $1")
            .bind(ws_id)
            .execute(&mut *tx)
            .await?;
    }
    let tasks: Vec<(uuid::Uuid, i32)> = sqlx::query_as(
        "SELECT id, duration_minutes FROM tuturuuu.tasks
          WHERE ws_id = $1 AND scheduled_start IS NULL ORDER BY priority DESC, title",
    )
    .bind(ws_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut busy: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT start_at, end_at FROM tuturuuu.calendar_events WHERE ws_id = $1
         UNION ALL
         SELECT scheduled_start, scheduled_end FROM tuturuuu.tasks
          WHERE ws_id = $1 AND scheduled_start IS NOT NULL",
    )
    .bind(ws_id)
    .fetch_all(&mut *tx)
    .await?;
    let now = Utc::now();
    let start = now
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now)
        + Span::minutes(15 - i64::from(now.minute() % 15));
    let horizon = start + Span::days(14);
    let mut placed = 0;
    for (id, minutes) in tasks {
        let length = Span::minutes(i64::from(minutes));
        let mut at = start;
        while at + length <= horizon {
            let end = at + length;
            let in_hours = at.hour() >= 9
                && (end.hour() < 17 || (end.hour() == 17 && end.minute() == 0))
                && at.date_naive() == end.date_naive();
            let free = busy.iter().all(|(s, e)| end <= *s || at >= *e);
            if in_hours && free {
                sqlx::query("UPDATE tuturuuu.tasks SET scheduled_start = $2, scheduled_end = $3 WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .bind(end)
                    .execute(&mut *tx)
                    .await?;
                busy.push((at, end));
                placed += 1;
                break;
            }
            at += Span::minutes(15);
        }
    }
    tx.commit().await?;
    Ok(placed)
}

task! {
    /// Auto-schedules one workspace's unscheduled tasks into free slots of its calendar.
    pub ScheduleTask {
        id: "schedule-task",
        payload_schema: true,
        queue: { concurrency_limit: 10 },
        retry: { max_attempts: 3, factor: 2.0, min_timeout: "1s", max_timeout: "60s" },
        max_duration: "5m",
        state: App,
        run: async |ctx: Context, payload: WorkspacePayload| -> Result<WorkspaceResult> {
            plan(ctx.state::<App>(), payload.ws_id, false).await
        }
    }
}

task! {
    /// Re-plans all of a workspace's tasks from scratch.
    pub UnifiedSchedule {
        id: "unified-schedule",
        payload_schema: true,
        queue: { concurrency_limit: 5 },
        retry: { max_attempts: 3, factor: 2.0, min_timeout: "1s", max_timeout: "60s" },
        max_duration: "5m",
        state: App,
        run: async |ctx: Context, payload: WorkspacePayload| -> Result<WorkspaceResult> {
            plan(ctx.state::<App>(), payload.ws_id, true).await
        }
    }
}

/// Why one provider call failed.
enum CallError {
    /// 401: the access token expired.
    Unauthorized,
    /// 410: the sync token is no longer valid.
    SyncTokenGone,
    /// Anything else, with a message for the run's error.
    Other(String),
}

/// Requests attempted per page before the sync gives up (and the run's retry policy takes over).
const PAGE_ATTEMPTS: u32 = 4;

/// Fetches one page, retrying 429 and 5xx answers with a short backoff.
async fn fetch_page(
    app: &App,
    ws_id: &str,
    token: &str,
    query: &[(&str, String)],
) -> std::result::Result<EventPage, CallError> {
    let url = format!("{}/calendars/{ws_id}/events", app.provider_url);
    let mut backoff = Duration::from_millis(20);
    let mut last = String::new();
    for _ in 0..PAGE_ATTEMPTS {
        let response = app
            .http
            .get(&url)
            .bearer_auth(token)
            .query(query)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                return r
                    .json::<EventPage>()
                    .await
                    .map_err(|e| CallError::Other(format!("bad page from the provider: {e}")));
            }
            Ok(r) if r.status().as_u16() == 401 => return Err(CallError::Unauthorized),
            Ok(r) if r.status().as_u16() == 410 => return Err(CallError::SyncTokenGone),
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                last = format!(
                    "calendar provider answered {} for workspace {ws_id}",
                    r.status()
                );
                tokio::time::sleep(retry_after.unwrap_or(Duration::ZERO).max(backoff)).await;
                backoff *= 2;
            }
            Ok(r) => {
                return Err(CallError::Other(format!(
                    "calendar provider answered {} for workspace {ws_id}",
                    r.status()
                )))
            }
            Err(e) => {
                last = format!("calendar provider unreachable: {e}");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
    Err(CallError::Other(last))
}

/// Gets a new access token with the refresh token and stores it.
async fn refresh(app: &App, ws_id: &str, refresh_token: &str) -> Result<String> {
    let response = app
        .http
        .post(format!("{}/oauth/token", app.provider_url))
        .json(&serde_json::json!({ "ws_id": ws_id, "refresh_token": refresh_token }))
        .send()
        .await
        .map_err(|e| Error::msg(format!("token refresh failed: {e}")))?;
    if !response.status().is_success() {
        // A refused refresh token will not start working on a retry.
        return Err(Error::abort(format!(
            "the calendar connection of workspace {ws_id} was revoked (token refresh answered {}); reconnect it",
            response.status()
        )));
    }
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| Error::msg(e.to_string()))?;
    let token = body["access_token"].as_str().unwrap_or_default().to_owned();
    sqlx::query("UPDATE tuturuuu.calendar_connections SET access_token = $2 WHERE ws_id = $1")
        .bind(ws_id)
        .bind(&token)
        .execute(&app.pool)
        .await?;
    Ok(token)
}

/// Pulls a workspace's calendar into `tuturuuu.calendar_events`.
async fn sync_calendar(app: &App, ws_id: &str) -> Result<(u32, u32)> {
    let connection: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT access_token, refresh_token, sync_token FROM tuturuuu.calendar_connections WHERE ws_id = $1",
    )
    .bind(ws_id)
    .fetch_optional(&app.pool)
    .await?;
    let Some((mut token, refresh_token, mut sync_token)) = connection else {
        return Err(Error::abort(format!(
            "workspace {ws_id} has no calendar connection"
        )));
    };
    let (mut upserted, mut deleted) = (0u32, 0u32);
    let mut page_token: Option<String> = None;
    let mut refreshed = false;
    loop {
        let mut query = vec![("maxResults", "25".to_owned())];
        if let Some(p) = &page_token {
            query.push(("pageToken", p.clone()));
        }
        if let Some(s) = &sync_token {
            query.push(("syncToken", s.clone()));
        }
        let page = match fetch_page(app, ws_id, &token, &query).await {
            Ok(page) => page,
            Err(CallError::Unauthorized) if !refreshed => {
                token = refresh(app, ws_id, &refresh_token).await?;
                refreshed = true;
                continue;
            }
            Err(CallError::Unauthorized) => {
                return Err(Error::msg(format!(
                    "calendar provider refused a fresh token for workspace {ws_id}"
                )))
            }
            Err(CallError::SyncTokenGone) => {
                // Start over with a full sync.
                sync_token = None;
                page_token = None;
                continue;
            }
            Err(CallError::Other(message)) => return Err(Error::msg(message)),
        };
        refreshed = false;
        // Upserts keyed by (workspace, provider id): a retried or repeated sync writes the same rows.
        let mut tx = app.pool.begin().await?;
        for event in &page.items {
            if event.status == "cancelled" {
                let gone = sqlx::query("DELETE FROM tuturuuu.calendar_events WHERE ws_id = $1 AND provider_event_id = $2")
                    .bind(ws_id)
                    .bind(&event.id)
                    .execute(&mut *tx)
                    .await?;
                deleted += gone.rows_affected() as u32;
            } else {
                sqlx::query(
                    "INSERT INTO tuturuuu.calendar_events (ws_id, provider_event_id, title, start_at, end_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (ws_id, provider_event_id) DO UPDATE SET title = excluded.title,
                         start_at = excluded.start_at, end_at = excluded.end_at, updated_at = now()",
                )
                .bind(ws_id)
                .bind(&event.id)
                .bind(&event.summary)
                .bind(event.start)
                .bind(event.end)
                .execute(&mut *tx)
                .await?;
                upserted += 1;
            }
        }
        if let Some(next) = &page.next_sync_token {
            sqlx::query("UPDATE tuturuuu.calendar_connections SET sync_token = $2, last_synced_at = now() WHERE ws_id = $1")
                .bind(ws_id)
                .bind(next)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        match page.next_page_token {
            Some(next) => page_token = Some(next),
            None => return Ok((upserted, deleted)),
        }
    }
}

task! {
    /// Syncs one workspace's Google Calendar into its events. Triggered with
    /// `concurrency_key = ws_id`: one sync per workspace at a time, and no workspace waits behind
    /// another's backlog.
    pub GoogleCalendarSync {
        id: "google-calendar-sync",
        payload_schema: true,
        queue: { concurrency_limit: 1 },
        retry: { max_attempts: 3, factor: 2.0, min_timeout: "200ms", max_timeout: "2s" },
        max_duration: "10m",
        state: App,
        run: async |ctx: Context, payload: WorkspacePayload| -> Result<WorkspaceResult> {
            let app = ctx.state::<App>();
            sqlx::query("INSERT INTO tuturuuu.sync_log (ws_id, run_id, attempt) VALUES ($1, $2, $3)")
                .bind(&payload.ws_id).bind(ctx.run_id()).bind(ctx.attempt() as i32)
                .execute(&app.pool).await?;
            let result = sync_calendar(app, &payload.ws_id).await;
            sqlx::query("UPDATE tuturuuu.sync_log SET finished_at = clock_timestamp() WHERE run_id = $1 AND attempt = $2")
                .bind(ctx.run_id()).bind(ctx.attempt() as i32)
                .execute(&app.pool).await?;
            let (upserted, deleted) = result?;
            tracing::info!(ws_id = %payload.ws_id, upserted, deleted, "calendar synced");
            Ok(WorkspaceResult { ws_id: payload.ws_id, success: true, error: None, changed: upserted, deleted })
        }
    }
}

task! {
    /// Every hour: one `google-calendar-sync` per connected workspace (keyed by workspace), then
    /// a report of which workspaces synced and why the others did not.
    pub GoogleCalendarFullSync {
        id: "google-calendar-full-sync",
        queue: { concurrency_limit: 1 },
        cron: "0 * * * *",
        max_duration: "1h",
        state: App,
        run: async |ctx: Context, tick: ScheduleTick| -> Result<FullSyncReport> {
            let app = ctx.state::<App>();
            let workspaces: Vec<String> = sqlx::query_scalar(
                "SELECT ws_id FROM tuturuuu.calendar_connections ORDER BY ws_id")
                .fetch_all(&app.pool).await?;
            let mut results = Vec::with_capacity(workspaces.len());
            for chunk in workspaces.chunks(kiln::MAX_BATCH_SIZE) {
                let items = chunk
                    .iter()
                    .map(|ws_id| BatchItem::with_options(
                        WorkspacePayload { ws_id: ws_id.clone() },
                        kiln::TriggerOptions::new().concurrency_key(ws_id.clone()),
                    ))
                    .collect();
                let outcomes = ctx.batch_trigger_and_wait::<GoogleCalendarSync>(items).await?;
                for (ws_id, outcome) in chunk.iter().zip(outcomes) {
                    results.push(match outcome {
                        Ok(result) => result,
                        Err(failure) => WorkspaceResult {
                            ws_id: ws_id.clone(),
                            success: false,
                            error: Some(failure.error.map_or_else(|| failure.status.to_string(), |e| e.message)),
                            changed: 0,
                            deleted: 0,
                        },
                    });
                }
            }
            let failed: Vec<String> = results.iter().filter(|r| !r.success).map(|r| r.ws_id.clone()).collect();
            tracing::info!(workspaces = results.len(), failed = failed.len(), "full calendar sync finished");
            Ok(FullSyncReport { timestamp: tick.timestamp, results, failed })
        }
    }
}
