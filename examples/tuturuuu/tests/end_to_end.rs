//! Tuturuuu end to end: 50 workspaces, a calendar provider that rate-limits, fails, expires
//! tokens and has five broken accounts; the full sync's cron tick (driven by a manual clock)
//! fans out one keyed sync per workspace. Afterwards every healthy workspace's events match the
//! provider's, no workspace ever had two syncs at once, and the report names the failures.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln::{Client, ManualClock, RunStatus, Task, Worker};
use kiln_tuturuuu::provider::{Faults, Provider};
use kiln_tuturuuu::{
    FullSyncReport, GoogleCalendarFullSync, GoogleCalendarSync, ScheduleTask, UnifiedSchedule,
    WorkspacePayload, WorkspaceResult,
};
use sqlx::PgPool;

const WORKSPACES: usize = 50;

async fn database() -> String {
    let fallback =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kiln-test-postgres");
    let server = kiln_devdb::server_for_tests(&fallback)
        .await
        .unwrap_or_else(|e| panic!("no PostgreSQL for tests: {e}"));
    kiln_devdb::create_test_database(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"))
}

async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !condition().await {
        assert!(start.elapsed() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type EventRow = (String, String, DateTime<Utc>, DateTime<Utc>);

async fn stored_events(pool: &PgPool, ws_id: &str) -> BTreeSet<EventRow> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT provider_event_id, title, start_at, end_at FROM tuturuuu.calendar_events WHERE ws_id = $1",
    )
    .bind(ws_id)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

fn provider_events(provider: &Provider, ws_id: &str) -> BTreeSet<EventRow> {
    provider
        .events(ws_id)
        .into_iter()
        .map(|e| (e.id, e.summary, e.start, e.end))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_sync_tick_syncs_every_workspace_and_reports_failures() {
    let url = database().await;
    let client = Client::connect(&url).await.unwrap();
    client.migrate().await.unwrap();
    let pool = client.pool().clone();
    kiln_tuturuuu::create_schema(&pool).await.unwrap();

    let broken: HashSet<String> = [7, 19, 23, 38, 44]
        .iter()
        .map(|i| format!("ws_{i:02}"))
        .collect();
    let provider = Provider::new(Faults {
        rate_limit_every: 5,
        server_error_every: 9,
        token_uses: 4,
        broken: broken.clone(),
    });
    let provider_url = provider.serve().await.unwrap();
    let app = kiln_tuturuuu::App::new(pool.clone(), provider_url);
    for i in 1..=WORKSPACES {
        let ws_id = format!("ws_{i:02}");
        let credentials = provider.seed_calendar(&ws_id, (i * 7) % 90 + 1);
        kiln_tuturuuu::add_workspace(&pool, &ws_id, &credentials, 4)
            .await
            .unwrap();
    }

    // The worker's scheduler reads a manual clock: the hourly tick fires when the test says so.
    let clock = ManualClock::new("2026-06-01T09:59:00Z".parse().unwrap());
    let worker = kiln_tuturuuu::register(Worker::builder().pool(pool.clone()), app)
        .configure(|c| {
            c.concurrency = 20;
            c.clock = Arc::new(clock.clone());
            c.maintenance_interval = Duration::from_millis(100);
            c.poll_interval = Duration::from_millis(200);
        })
        .build()
        .await
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = {
        let (worker, shutdown) = (worker.clone(), shutdown.clone());
        tokio::spawn(async move { worker.run_until(shutdown).await })
    };

    // Apps trigger syncs of their own meanwhile: with the tick's syncs, several runs of one
    // workspace are queued at once, and the concurrency key keeps them one at a time.
    for i in (1..=WORKSPACES).step_by(3) {
        let ws_id = format!("ws_{i:02}");
        client
            .trigger::<GoogleCalendarSync>(WorkspacePayload {
                ws_id: ws_id.clone(),
            })
            .concurrency_key(ws_id)
            .await
            .unwrap();
    }
    let schedule = client
        .schedules()
        .list(Some(GoogleCalendarFullSync::ID))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        schedule.next_run_at,
        Some("2026-06-01T10:00:00Z".parse().unwrap())
    );
    clock.set("2026-06-01T10:00:00.5Z".parse().unwrap());

    wait_until(
        "the tick triggered the full sync",
        Duration::from_secs(20),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM kiln.runs WHERE task_id = 'google-calendar-full-sync'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            n == 1
        },
    )
    .await;
    let orchestrator: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM kiln.runs WHERE task_id = 'google-calendar-full-sync'")
            .fetch_one(&pool)
            .await
            .unwrap();
    wait_until(
        "the full sync finished",
        Duration::from_secs(120),
        || async {
            let run = client.runs().retrieve(orchestrator).await.unwrap();
            assert!(
                !run.status.is_final() || run.status == RunStatus::Completed,
                "{run:?}"
            );
            run.status == RunStatus::Completed
        },
    )
    .await;
    let run = client.runs().retrieve(orchestrator).await.unwrap();
    let report: FullSyncReport = serde_json::from_value(run.output.unwrap()).unwrap();
    assert_eq!(
        report.timestamp,
        "2026-06-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert_eq!(report.results.len(), WORKSPACES);

    // The report names exactly the broken workspaces, with the provider's answer.
    let failed: HashSet<String> = report.failed.iter().cloned().collect();
    assert_eq!(failed, broken);
    for result in &report.results {
        if broken.contains(&result.ws_id) {
            let error = result.error.as_deref().unwrap();
            assert!(!result.success);
            assert!(
                error.contains("500") && error.contains(&result.ws_id),
                "{error}"
            );
        } else {
            assert_eq!(
                result,
                &WorkspaceResult {
                    ws_id: result.ws_id.clone(),
                    success: true,
                    error: None,
                    changed: result.changed,
                    deleted: 0,
                }
            );
            assert_eq!(
                stored_events(&pool, &result.ws_id).await,
                provider_events(&provider, &result.ws_id)
            );
        }
    }

    // The calendars change; an incremental sync (sync token) brings the changes over.
    for ws_id in ["ws_01", "ws_02", "ws_30"] {
        provider.edit_calendar(ws_id);
        let run = client
            .trigger::<GoogleCalendarSync>(WorkspacePayload {
                ws_id: ws_id.into(),
            })
            .concurrency_key(ws_id)
            .await
            .unwrap();
        wait_until(
            "the incremental sync finished",
            Duration::from_secs(30),
            || async {
                client.runs().retrieve(run.id).await.unwrap().status == RunStatus::Completed
            },
        )
        .await;
        let out: WorkspaceResult = serde_json::from_value(
            client
                .runs()
                .retrieve(run.id)
                .await
                .unwrap()
                .output
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (out.changed, out.deleted),
            (2, 1),
            "{ws_id}: only the changes are pulled"
        );
        assert_eq!(
            stored_events(&pool, ws_id).await,
            provider_events(&provider, ws_id)
        );
    }

    // Every sync has finished, and no workspace ever had two at once.
    wait_until("every sync finished", Duration::from_secs(60), || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM kiln.runs WHERE task_id = 'google-calendar-sync'
              AND status NOT IN ('completed', 'failed')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        open == 0
    })
    .await;
    let overlaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tuturuuu.sync_log a JOIN tuturuuu.sync_log b
           ON a.ws_id = b.ws_id AND (a.run_id, a.attempt) < (b.run_id, b.attempt)
          AND a.started_at < coalesce(b.finished_at, 'infinity')
          AND b.started_at < coalesce(a.finished_at, 'infinity')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(overlaps, 0, "a workspace had two syncs at once");
    let syncs: i64 = sqlx::query_scalar("SELECT count(*) FROM tuturuuu.sync_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    let served = provider.served();
    eprintln!("sync attempts: {syncs}; provider answered: {served:?}");
    // The faults were met and handled: rate limits, server errors and expired tokens.
    assert!(
        served.rate_limited > 0 && served.server_errors > 0 && served.refreshes > 0,
        "{served:?}"
    );
    assert!(syncs as usize > WORKSPACES + WORKSPACES / 3);

    // Scheduling: schedule-task places each workspace's tasks around its events; unified-schedule
    // re-plans from scratch.
    let placed = client
        .trigger::<ScheduleTask>(WorkspacePayload {
            ws_id: "ws_03".into(),
        })
        .await
        .unwrap();
    let replanned = client
        .trigger::<UnifiedSchedule>(WorkspacePayload {
            ws_id: "ws_04".into(),
        })
        .await
        .unwrap();
    for id in [placed.id, replanned.id] {
        wait_until(
            "the scheduling run finished",
            Duration::from_secs(30),
            || async { client.runs().retrieve(id).await.unwrap().status == RunStatus::Completed },
        )
        .await;
        let out: WorkspaceResult =
            serde_json::from_value(client.runs().retrieve(id).await.unwrap().output.unwrap())
                .unwrap();
        assert!(out.success && out.changed == 4, "{out:?}");
    }
    let clashes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tuturuuu.tasks t JOIN tuturuuu.calendar_events e
           ON e.ws_id = t.ws_id AND t.scheduled_start < e.end_at AND e.start_at < t.scheduled_end
          WHERE t.ws_id IN ('ws_03', 'ws_04')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(clashes, 0, "a task was placed over a calendar event");

    shutdown.cancel();
    running.await.unwrap().unwrap();
    let _ = ScheduleTask::ID;
}
