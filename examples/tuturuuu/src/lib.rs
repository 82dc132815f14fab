//! Tuturuuu on Kiln: the seed platform's calendar and scheduling tasks, run end to end.
//!
//! A small workspace schema (`tuturuuu`: workspaces, calendar connections, calendar events,
//! tasks), a local calendar provider that speaks HTTP like Google Calendar ([`provider`]), and
//! four tasks ([`tasks`]):
//!
//! - `schedule-task` (limit 10): places one workspace's unscheduled tasks into free calendar
//!   slots;
//! - `unified-schedule` (limit 5): re-plans all of a workspace's tasks;
//! - `google-calendar-sync` (one per workspace at a time, `concurrency_key = ws_id`): pulls the
//!   workspace's calendar page by page (incrementally with a sync token once it has one),
//!   refreshing an expired token and retrying rate limits and server errors, and upserts events
//!   idempotently;
//! - `google-calendar-full-sync`: an hourly cron orchestrator that triggers one sync per
//!   workspace and returns a `{ ws_id, success, error }` report; a failing workspace does not
//!   stop the others.
//!
//! Every task returns `{ ws_id, success, error }` (plus counts). `kiln dev` runs all of this.

#![forbid(unsafe_code)]

pub mod provider;
pub mod tasks;

use std::time::Duration;

use kiln::{Client, CreateSchedule};
use sqlx::PgPool;

pub use tasks::{
    FullSyncReport, GoogleCalendarFullSync, GoogleCalendarSync, ScheduleTask, UnifiedSchedule,
    WorkspacePayload, WorkspaceResult,
};

/// What the task bodies reach: the app's database and the calendar provider.
#[derive(Debug, Clone)]
pub struct App {
    /// The app's database (the same Postgres as Kiln's, schema `tuturuuu`).
    pub pool: PgPool,
    /// Base URL of the calendar provider.
    pub provider_url: String,
    /// The HTTP client the sync uses.
    pub http: reqwest::Client,
}

impl App {
    /// The app over `pool`, syncing from the calendar provider at `provider_url`.
    pub fn new(pool: PgPool, provider_url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client without TLS builds");
        Self {
            pool,
            provider_url: provider_url.into(),
            http,
        }
    }
}

/// Registers the four Tuturuuu tasks on a worker, with the app state their bodies read
/// (`ctx.state::<App>()`).
pub fn register(builder: kiln::WorkerBuilder, app: App) -> kiln::WorkerBuilder {
    builder
        .state(app)
        .register(ScheduleTask)
        .register(UnifiedSchedule)
        .register(GoogleCalendarSync)
        .register(GoogleCalendarFullSync)
}

/// The app's schema: workspaces, their calendar connections and events, their tasks, and a log
/// of syncs (start and end of each sync attempt, to check that a workspace never had two at once).
pub const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS tuturuuu;
CREATE TABLE IF NOT EXISTS tuturuuu.workspaces (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tuturuuu.calendar_connections (
    ws_id         text PRIMARY KEY REFERENCES tuturuuu.workspaces (id) ON DELETE CASCADE,
    access_token  text NOT NULL,
    refresh_token text NOT NULL,
    sync_token    text,
    last_synced_at timestamptz
);
CREATE TABLE IF NOT EXISTS tuturuuu.calendar_events (
    ws_id             text NOT NULL REFERENCES tuturuuu.workspaces (id) ON DELETE CASCADE,
    provider_event_id text NOT NULL,
    title             text NOT NULL,
    start_at          timestamptz NOT NULL,
    end_at            timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ws_id, provider_event_id)
);
CREATE TABLE IF NOT EXISTS tuturuuu.tasks (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ws_id            text NOT NULL REFERENCES tuturuuu.workspaces (id) ON DELETE CASCADE,
    title            text NOT NULL,
    duration_minutes integer NOT NULL CHECK (duration_minutes > 0),
    priority         integer NOT NULL DEFAULT 0,
    scheduled_start  timestamptz,
    scheduled_end    timestamptz
);
CREATE TABLE IF NOT EXISTS tuturuuu.sync_log (
    ws_id       text NOT NULL,
    run_id      uuid NOT NULL,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    PRIMARY KEY (run_id, attempt)
);
";

/// Creates the app's schema if missing.
pub async fn create_schema(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(SCHEMA).execute(pool).await.map(|_| ())
}

/// Adds workspace `ws_id` with a calendar connection and a few tasks to schedule.
pub async fn add_workspace(
    pool: &PgPool,
    ws_id: &str,
    credentials: &provider::Credentials,
    tasks: usize,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO tuturuuu.workspaces (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(ws_id)
    .bind(format!("Workspace {ws_id}"))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO tuturuuu.calendar_connections (ws_id, access_token, refresh_token)
         VALUES ($1, $2, $3)
         ON CONFLICT (ws_id) DO UPDATE SET access_token = excluded.access_token,
             refresh_token = excluded.refresh_token, sync_token = NULL",
    )
    .bind(ws_id)
    .bind(&credentials.access_token)
    .bind(&credentials.refresh_token)
    .execute(&mut *tx)
    .await?;
    for i in 0..tasks {
        sqlx::query(
            "INSERT INTO tuturuuu.tasks (ws_id, title, duration_minutes, priority)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(ws_id)
        .bind(format!("Task {i}"))
        .bind(30 + 15 * (i as i32 % 4))
        .bind(i as i32 % 3)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Everything `kiln dev` shows: the schema, a provider on loopback with a few workspaces (with
/// occasional 429s, 503s and expiring tokens), the full sync every minute, and a first round of
/// scheduling runs. Returns the provider, whose server runs until the process ends, and the app
/// state to hand the worker.
pub async fn start_demo(
    client: &Client,
    workspaces: usize,
) -> Result<(provider::Provider, App), String> {
    let pool = client.pool().clone();
    create_schema(&pool)
        .await
        .map_err(|e| format!("cannot create the example schema: {e}"))?;
    let provider = provider::Provider::new(provider::Faults {
        rate_limit_every: 7,
        server_error_every: 11,
        token_uses: 5,
        broken: Default::default(),
    });
    let url = provider
        .serve()
        .await
        .map_err(|e| format!("cannot start the calendar provider: {e}"))?;
    let app = App::new(pool.clone(), url.clone());
    for i in 1..=workspaces {
        let ws_id = format!("ws_{i}");
        let credentials = provider.seed_calendar(&ws_id, 10 + 15 * i);
        add_workspace(&pool, &ws_id, &credentials, 3 + i)
            .await
            .map_err(|e| format!("cannot seed workspace {ws_id}: {e}"))?;
    }
    println!("Calendar provider: {url} ({workspaces} workspaces seeded)");
    Ok((provider, app))
}

/// After the worker registered the tasks: the full sync every minute (and one right now, so the
/// fan-out shows at once), and one scheduling run per workspace.
pub async fn kick_off(client: &Client) -> Result<(), String> {
    let schedule = client
        .schedules()
        .create(
            CreateSchedule::for_task::<GoogleCalendarFullSync>("* * * * *")
                .dedup_key("dev-full-sync-every-minute"),
        )
        .await
        .map_err(|e| e.to_string())?;
    let now = chrono::Utc::now();
    client
        .trigger::<GoogleCalendarFullSync>(kiln::ScheduleTick {
            timestamp: now,
            last_timestamp: None,
            timezone: schedule.timezone.clone(),
            schedule_id: schedule.id,
            external_id: None,
            upcoming: schedule.upcoming.clone(),
            caught_up: false,
        })
        .await
        .map_err(|e| e.to_string())?;
    let workspaces: Vec<String> =
        sqlx::query_scalar("SELECT id FROM tuturuuu.workspaces ORDER BY id")
            .fetch_all(client.pool())
            .await
            .map_err(|e| format!("cannot list workspaces: {e}"))?;
    for ws_id in workspaces {
        client
            .trigger::<ScheduleTask>(WorkspacePayload {
                ws_id: ws_id.clone(),
            })
            .concurrency_key(ws_id)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
