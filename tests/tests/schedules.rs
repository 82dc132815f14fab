//! Cron schedules: declarative sync, the client's schedule API, refusals of bad patterns and
//! timezones, exactly one run per tick, one catch-up run after downtime, and the tick payload.
//! Time is driven by a manual clock; nothing here sleeps to wait for a tick.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kiln::{
    task, ClientError, Clock, Context, CreateSchedule, CronSchedule, ManualClock, Result,
    ScheduleTick, Scheduler, Task, UpdateSchedule,
};
use kiln_tests::tasks::{register_all, Ticker};
use kiln_tests::{registered, TestDb};

task! {
    /// The `ticker` task after its cron option was removed from the code.
    pub TickerWithoutCron {
        id: "ticker",
        run: async |_ctx: Context, _tick: ScheduleTick| -> Result<()> { Ok(()) }
    }
}

task! {
    /// A task whose schedule names a timezone that does not exist.
    pub BadTimezone {
        id: "bad-timezone",
        cron: { pattern: "0 * * * *", timezone: "Europe/Berln" },
        run: async |_ctx: Context, _tick: ScheduleTick| -> Result<()> { Ok(()) }
    }
}

async fn build(db: &TestDb, builder: kiln::WorkerBuilder) -> kiln::Worker {
    builder
        .database_url(&db.url)
        .configure(|c| c.run_maintenance = false)
        .build()
        .await
        .expect("build the worker")
}

fn scheduler(clock: &ManualClock) -> Scheduler {
    Scheduler {
        batch: 100,
        clock: Arc::new(clock.clone()),
    }
}

async fn tick_payloads(pool: &sqlx::PgPool, schedule_id: uuid::Uuid) -> Vec<ScheduleTick> {
    let payloads: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT r.payload FROM kiln.runs r JOIN kiln.schedule_ticks t ON t.run_id = r.id
          WHERE t.schedule_id = $1 ORDER BY t.tick",
    )
    .bind(schedule_id)
    .fetch_all(pool)
    .await
    .unwrap();
    payloads
        .into_iter()
        .map(|p| serde_json::from_value(p).expect("a tick payload"))
        .collect()
}

#[tokio::test]
async fn declarative_schedules_follow_the_code() {
    let (db, client) = registered().await;
    let schedules = client.schedules().list(Some("ticker")).await.unwrap();
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    let synced = &schedules[0];
    assert!(synced.declarative && synced.active);
    assert_eq!(synced.cron, "30 2 1 1 *");
    assert_eq!(synced.timezone, "Europe/Berlin");
    // The next 1 January, 02:30 in Berlin (01:30 UTC, winter time).
    let next = synced
        .next_run_at
        .expect("an active schedule has a next tick");
    assert_eq!(next.format("%m-%d %H:%M").to_string(), "01-01 01:30");
    assert!(next > Utc::now());
    assert_eq!(synced.upcoming.len(), 5);

    // A restart with the same code leaves the schedule (and its cadence) alone.
    build(&db, register_all(kiln::Worker::builder())).await;
    let again = client.schedules().retrieve(synced.id).await.unwrap();
    assert_eq!(again.next_run_at, synced.next_run_at);
    assert_eq!(again.updated_at, synced.updated_at);

    // The cron option removed from the code: deactivated at the next start.
    build(&db, kiln::Worker::builder().register(TickerWithoutCron)).await;
    let removed = client.schedules().retrieve(synced.id).await.unwrap();
    assert!(!removed.active);
    assert_eq!(removed.next_run_at, None);

    // Put back: active again, one schedule still.
    build(&db, kiln::Worker::builder().register(Ticker)).await;
    let schedules = client.schedules().list(Some("ticker")).await.unwrap();
    assert_eq!(schedules.len(), 1);
    assert!(schedules[0].active && schedules[0].next_run_at == Some(next));

    // A timezone that does not exist stops the worker before it starts, naming task and zone.
    let error = kiln::Worker::builder()
        .database_url(&db.url)
        .register(BadTimezone)
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("\"bad-timezone\"") && error.contains("unknown timezone \"Europe/Berln\""),
        "{error}"
    );
}

#[tokio::test]
async fn the_client_creates_upserts_updates_and_deletes_schedules() {
    let (_db, client) = registered().await;
    let schedules = client.schedules();
    let created = schedules
        .create(
            CreateSchedule::for_task::<Ticker>("0 * * * *")
                .timezone("America/New_York")
                .external_id("ws_1")
                .dedup_key("ws_1-hourly"),
        )
        .await
        .unwrap();
    assert!(created.active && !created.declarative);
    assert_eq!(created.external_id.as_deref(), Some("ws_1"));
    assert_eq!(created.timezone, "America/New_York");
    let next = created.next_run_at.unwrap();
    assert_eq!(next, created.upcoming[0]);
    assert!(created
        .upcoming
        .windows(2)
        .all(|w| w[1] - w[0] == Duration::hours(1)));

    // Same dedup key: the same schedule, updated in place.
    let upserted = schedules
        .create(
            CreateSchedule::new("ticker", "*/15 * * * *")
                .timezone("America/New_York")
                .external_id("ws_1")
                .dedup_key("ws_1-hourly"),
        )
        .await
        .unwrap();
    assert_eq!(upserted.id, created.id);
    assert_eq!(upserted.cron, "*/15 * * * *");
    assert_eq!(schedules.list(Some("ticker")).await.unwrap().len(), 2); // + the declarative one

    let updated = schedules
        .update(
            created.id,
            UpdateSchedule::default()
                .cron("30 2 * * *")
                .timezone("Europe/Berlin")
                .external_id(Some("ws_2".into())),
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.cron.as_str(), updated.timezone.as_str()),
        ("30 2 * * *", "Europe/Berlin")
    );
    assert_eq!(updated.external_id.as_deref(), Some("ws_2"));
    assert_eq!(
        updated.next_run_at,
        CronSchedule::parse("30 2 * * *", Some("Europe/Berlin"))
            .unwrap()
            .next_after(Utc::now())
    );

    let off = schedules.deactivate(created.id).await.unwrap();
    assert!(!off.active && off.next_run_at.is_none() && off.upcoming.is_empty());
    let on = schedules.activate(created.id).await.unwrap();
    assert!(on.active && on.next_run_at.is_some());

    schedules.delete(created.id).await.unwrap();
    assert!(matches!(
        schedules.retrieve(created.id).await,
        Err(ClientError::ScheduleNotFound(id)) if id == created.id
    ));
    assert!(matches!(
        schedules.delete(created.id).await,
        Err(ClientError::ScheduleNotFound(_))
    ));
}

#[tokio::test]
async fn bad_patterns_timezones_and_tasks_are_refused_and_nothing_is_stored() {
    let (_db, client) = registered().await;
    let schedules = client.schedules();
    let before = schedules.list(None).await.unwrap().len();

    let error = schedules
        .create(CreateSchedule::new("ticker", "61 * * * *"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ClientError::InvalidSchedule(_)));
    assert!(
        message.contains("\"61 * * * *\"")
            && message.contains("minute field \"61\": number out of bounds (allowed: 0-59)"),
        "{message}"
    );

    let message = schedules
        .create(CreateSchedule::new("ticker", "0 9 * * MON-FRI").timezone("Mars/Olympus_Mons"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("unknown timezone \"Mars/Olympus_Mons\""),
        "{message}"
    );

    let message = schedules
        .create(CreateSchedule::new("ticker", "0 0 * * * *"))
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("it has 6 fields"), "{message}");

    let error = schedules
        .create(CreateSchedule::new("no-such-task", "0 * * * *"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::UnregisteredTask { .. }),
        "{error}"
    );

    // An update with a bad pattern leaves the schedule as it was.
    let good = schedules
        .create(CreateSchedule::new("ticker", "0 * * * *"))
        .await
        .unwrap();
    assert!(schedules
        .update(good.id, UpdateSchedule::default().cron("0 0 30 2 *"))
        .await
        .is_err());
    assert_eq!(schedules.retrieve(good.id).await.unwrap().cron, "0 * * * *");
    // Nor can an update point the schedule at a task no worker registered (its runs would wait
    // forever).
    let error = schedules
        .update(good.id, UpdateSchedule::default().task_id("no-such-task"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::UnregisteredTask { .. }),
        "{error}"
    );
    assert_eq!(schedules.retrieve(good.id).await.unwrap().task_id, "ticker");
    assert_eq!(schedules.list(None).await.unwrap().len(), before + 1);
}

#[tokio::test]
async fn each_tick_fires_once_and_downtime_fires_one_catch_up() {
    let (db, client) = registered().await;
    let schedule = client
        .schedules()
        .create(
            CreateSchedule::for_task::<Ticker>("*/10 * * * *")
                .timezone("Europe/Berlin")
                .external_id("ws_42"),
        )
        .await
        .unwrap();
    let first = schedule.next_run_at.unwrap();
    let clock = ManualClock::new(first - Duration::seconds(1));
    let scheduler = scheduler(&clock);

    // Not due yet.
    assert!(scheduler
        .fire_due_schedules(&db.pool)
        .await
        .unwrap()
        .is_empty());
    // Due: one run; a second pass (or a second scheduler) at the same time fires nothing.
    clock.set(first + Duration::milliseconds(300));
    let fired = scheduler.fire_due_schedules(&db.pool).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].tick, first);
    assert!(!fired[0].skipped_missed);
    assert!(scheduler
        .fire_due_schedules(&db.pool)
        .await
        .unwrap()
        .is_empty());

    // The next tick.
    clock.advance(Duration::minutes(10));
    assert_eq!(
        scheduler.fire_due_schedules(&db.pool).await.unwrap().len(),
        1
    );

    // Three hours and four minutes of downtime (18 ticks missed): one late run, for the most
    // recent missed tick, then the normal cadence.
    clock.advance(Duration::minutes(184));
    let late = scheduler.fire_due_schedules(&db.pool).await.unwrap();
    assert_eq!(late.len(), 1, "{late:?}");
    assert!(late[0].skipped_missed);
    let latest = first + Duration::minutes(190);
    assert_eq!(late[0].tick, latest);
    assert!(scheduler
        .fire_due_schedules(&db.pool)
        .await
        .unwrap()
        .is_empty());
    clock.advance(Duration::minutes(5));
    assert_eq!(
        scheduler.fire_due_schedules(&db.pool).await.unwrap().len(),
        0
    );
    clock.advance(Duration::minutes(1)); // now latest + 10 min 0.3 s
    assert_eq!(
        scheduler.fire_due_schedules(&db.pool).await.unwrap().len(),
        1
    );

    let ticks = tick_payloads(&db.pool, schedule.id).await;
    let timestamps: Vec<DateTime<Utc>> = ticks.iter().map(|t| t.timestamp).collect();
    assert_eq!(
        timestamps,
        vec![
            first,
            first + Duration::minutes(10),
            latest,
            latest + Duration::minutes(10)
        ]
    );
    // The payload: nominal tick, previous tick, timezone, schedule, external id, next five.
    let caught_up = &ticks[2];
    assert_eq!(
        caught_up.last_timestamp,
        Some(first + Duration::minutes(10))
    );
    assert_eq!(ticks[0].last_timestamp, None);
    // The late catch-up says so; the runs on time do not.
    assert_eq!(
        ticks.iter().map(|t| t.caught_up).collect::<Vec<_>>(),
        [false, false, true, false]
    );
    assert_eq!(caught_up.timezone, "Europe/Berlin");
    assert_eq!(caught_up.schedule_id, schedule.id);
    assert_eq!(caught_up.external_id.as_deref(), Some("ws_42"));
    assert_eq!(
        caught_up.upcoming,
        (1..=5)
            .map(|i| latest + Duration::minutes(10 * i))
            .collect::<Vec<_>>()
    );

    let stored = client.schedules().retrieve(schedule.id).await.unwrap();
    assert_eq!(stored.last_run_at, Some(latest + Duration::minutes(10)));
    assert_eq!(stored.next_run_at, Some(latest + Duration::minutes(20)));
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.runs WHERE task_id = 'ticker'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 4);
}

#[tokio::test]
async fn a_0230_schedule_fires_once_on_both_dst_change_days() {
    let (db, client) = registered().await;
    let mut ids = Vec::new();
    for tz in ["Europe/Berlin", "America/New_York"] {
        let schedule = client
            .schedules()
            .create(CreateSchedule::for_task::<Ticker>("30 2 * * *").timezone(tz))
            .await
            .unwrap();
        ids.push((tz, schedule.id));
    }
    // Start each schedule's cadence on a chosen day, then walk the clock minute by minute over
    // the spring-forward and fall-back days of 2026.
    for (start, end) in [
        ("2026-03-06T00:00:00Z", "2026-03-31T12:00:00Z"),
        ("2026-10-23T00:00:00Z", "2026-11-03T12:00:00Z"),
    ] {
        let start = DateTime::parse_from_rfc3339(start).unwrap().to_utc();
        let end = DateTime::parse_from_rfc3339(end).unwrap().to_utc();
        for (tz, id) in &ids {
            let next = CronSchedule::parse("30 2 * * *", Some(tz))
                .unwrap()
                .next_after(start);
            sqlx::query("UPDATE kiln.schedules SET next_run_at = $2 WHERE id = $1")
                .bind(id)
                .bind(next)
                .execute(&db.pool)
                .await
                .unwrap();
        }
        let clock = ManualClock::new(start);
        let scheduler = scheduler(&clock);
        while clock.now() < end {
            scheduler.fire_due_schedules(&db.pool).await.unwrap();
            clock.advance(Duration::minutes(15));
        }
    }
    for (tz, id) in &ids {
        let ticks = tick_payloads(&db.pool, *id).await;
        let zone: chrono_tz::Tz = tz.parse().unwrap();
        let mut per_day = std::collections::BTreeMap::new();
        for tick in &ticks {
            *per_day
                .entry(tick.timestamp.with_timezone(&zone).date_naive())
                .or_insert(0) += 1;
        }
        // One run on every day, change days included.
        assert!(per_day.values().all(|&n| n == 1), "{tz}: {per_day:?}");
        for day in ["2026-03-08", "2026-03-29", "2026-10-25", "2026-11-01"] {
            let day: chrono::NaiveDate = day.parse().unwrap();
            assert_eq!(per_day.get(&day), Some(&1), "{tz} on {day}");
        }
        let local = |t: &ScheduleTick| t.timestamp.with_timezone(&zone).format("%H:%M").to_string();
        // 02:30 where it exists; 03:00, right after the change, on the spring-forward day.
        let spring = if *tz == "Europe/Berlin" {
            "2026-03-29"
        } else {
            "2026-03-08"
        };
        for tick in &ticks {
            let day = tick.timestamp.with_timezone(&zone).date_naive().to_string();
            let expected = if day == spring { "03:00" } else { "02:30" };
            assert_eq!(local(tick), expected, "{tz} on {day}");
        }
    }
}

#[tokio::test]
async fn three_scheduler_processes_fire_every_tick_exactly_once() {
    let (db, client) = registered().await;
    let patterns = [
        ("* * * * *", "UTC"),
        ("*/2 * * * *", "Europe/Berlin"),
        ("*/5 * * * *", "America/New_York"),
        ("7 * * * *", "Asia/Kolkata"),
    ];
    let mut schedules = Vec::new();
    for (cron, tz) in patterns {
        schedules.push(
            client
                .schedules()
                .create(CreateSchedule::for_task::<Ticker>(cron).timezone(tz))
                .await
                .unwrap(),
        );
    }
    // Every schedule's cadence starts at the same simulated instant.
    let start = DateTime::parse_from_rfc3339("2026-06-01T00:00:30Z")
        .unwrap()
        .to_utc();
    for s in &schedules {
        let parsed = CronSchedule::parse(&s.cron, Some(&s.timezone)).unwrap();
        sqlx::query("UPDATE kiln.schedules SET next_run_at = $2 WHERE id = $1")
            .bind(s.id)
            .bind(parsed.next_after(start))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    // Three processes run the scheduler on one simulated clock, kept in a table: it moves in
    // 20-second steps over three hours, and moves on only once every process has made a pass at
    // the current step, so all three race on every tick.
    sqlx::raw_sql(
        "CREATE TABLE sim_clock (at timestamptz NOT NULL, done boolean NOT NULL DEFAULT false);
         CREATE TABLE sim_seen (process text PRIMARY KEY, at timestamptz NOT NULL);",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO sim_clock (at) VALUES ($1)")
        .bind(start)
        .execute(&db.pool)
        .await
        .unwrap();
    let steps = 3 * 60 * 3;
    let end = start + Duration::seconds(20 * (steps - 1));
    let mut children = Vec::new();
    for i in 0..3 {
        children.push(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln-test-worker"))
                .env("DATABASE_URL", &db.url)
                .env("KILN_SIM_SCHEDULER", format!("scheduler-{i}"))
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn a scheduler process"),
        );
    }
    for step in 0..steps {
        let at = start + Duration::seconds(20 * step);
        sqlx::query("UPDATE sim_clock SET at = $1")
            .bind(at)
            .execute(&db.pool)
            .await
            .unwrap();
        kiln_tests::wait_until(
            "every scheduler process made a pass at this step",
            std::time::Duration::from_secs(30),
            || async {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sim_seen WHERE at = $1")
                    .bind(at)
                    .fetch_one(&db.pool)
                    .await
                    .unwrap();
                n == 3
            },
        )
        .await;
    }
    sqlx::query("UPDATE sim_clock SET done = true")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut fired_per_process = Vec::new();
    for child in children {
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let n: usize = text.trim().trim_start_matches("fired ").parse().unwrap();
        fired_per_process.push(n);
    }
    let mut expected_total = 0;
    for s in &schedules {
        let parsed = CronSchedule::parse(&s.cron, Some(&s.timezone)).unwrap();
        let mut expected = Vec::new();
        let mut at = start;
        while let Some(next) = parsed.next_after(at) {
            if next > end {
                break;
            }
            expected.push(next);
            at = next;
        }
        let fired: Vec<DateTime<Utc>> = tick_payloads(&db.pool, s.id)
            .await
            .into_iter()
            .map(|t| t.timestamp)
            .collect();
        assert_eq!(fired, expected, "{} in {}", s.cron, s.timezone);
        expected_total += expected.len();
    }
    // 180 + 90 + 36 + 3 ticks, each with exactly one run, however the processes split them.
    assert_eq!(expected_total, 309);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln.runs WHERE task_id = 'ticker'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(runs as usize, expected_total);
    assert_eq!(fired_per_process.iter().sum::<usize>(), expected_total);
    eprintln!("ticks fired per process: {fired_per_process:?}");
}

#[test]
fn ticker_is_declared_with_its_schedule() {
    let cron = Ticker::DEFINITION.cron.expect("ticker has a cron option");
    assert_eq!(cron.pattern, "30 2 1 1 *");
    assert_eq!(cron.timezone, Some("Europe/Berlin"));
}
