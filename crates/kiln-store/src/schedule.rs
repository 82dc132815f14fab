//! `kiln.schedules` and `kiln.schedule_ticks`: cron schedules and the ticks they fired.

use chrono::{DateTime, Utc};
use kiln_core::{CronSchedule, Schedule, ScheduleTick, TriggerOptions, UPCOMING_TICKS};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::db;
use crate::run::{run_insert_many, RunSpec};
use crate::{Pool, Result, StoreError};

const SCHEDULE_COLUMNS: &str = "id, task_id, cron, timezone, external_id, dedup_key, declarative,
    active, next_run_at, last_run_at, last_run_id, created_at, updated_at";

fn schedule_from_row(
    row: &PgRow,
    now: DateTime<Utc>,
) -> std::result::Result<Schedule, sqlx::Error> {
    let cron: String = row.try_get("cron")?;
    let timezone: String = row.try_get("timezone")?;
    let active: bool = row.try_get("active")?;
    let upcoming = match (active, CronSchedule::parse(&cron, Some(&timezone))) {
        (true, Ok(parsed)) => parsed.upcoming(now, UPCOMING_TICKS),
        _ => Vec::new(),
    };
    Ok(Schedule {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        cron,
        timezone,
        external_id: row.try_get("external_id")?,
        dedup_key: row.try_get("dedup_key")?,
        declarative: row.try_get("declarative")?,
        active,
        next_run_at: row.try_get("next_run_at")?,
        last_run_at: row.try_get("last_run_at")?,
        last_run_id: row.try_get("last_run_id")?,
        upcoming,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The fields of a schedule a caller sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// The task each tick triggers.
    pub task_id: String,
    /// The five-field pattern.
    pub cron: String,
    /// The IANA timezone.
    pub timezone: String,
    /// The caller's id for what the schedule is for.
    pub external_id: Option<String>,
    /// Makes a second create with the same key an update.
    pub dedup_key: Option<String>,
    /// Fires only while active.
    pub active: bool,
}

/// Creates a schedule, or with a `dedup_key` already in use updates that schedule in place.
/// `next_run_at` is the first tick after now (the caller parsed the pattern). The next tick is
/// kept when an upsert changes neither pattern nor timezone.
pub async fn schedule_upsert(
    pool: &Pool,
    spec: &ScheduleSpec,
    next_run_at: Option<DateTime<Utc>>,
) -> Result<Schedule> {
    let row = sqlx::query(&format!(
        "INSERT INTO kiln.schedules AS s (task_id, cron, timezone, external_id, dedup_key, active,
                                          next_run_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO UPDATE SET
             task_id = excluded.task_id, cron = excluded.cron, timezone = excluded.timezone,
             external_id = excluded.external_id, active = excluded.active,
             next_run_at = CASE WHEN s.cron = excluded.cron AND s.timezone = excluded.timezone
                                     AND s.active AND excluded.active
                                THEN s.next_run_at ELSE excluded.next_run_at END,
             updated_at = now()
         RETURNING {SCHEDULE_COLUMNS}"
    ))
    .bind(&spec.task_id)
    .bind(&spec.cron)
    .bind(&spec.timezone)
    .bind(&spec.external_id)
    .bind(&spec.dedup_key)
    .bind(spec.active)
    .bind(next_run_at.filter(|_| spec.active))
    .fetch_one(pool)
    .await
    .map_err(db("saving a schedule"))?;
    schedule_from_row(&row, Utc::now()).map_err(db("saving a schedule"))
}

/// Rewrites a schedule's editable fields. Returns `None` when no schedule has this id.
pub async fn schedule_update(
    pool: &Pool,
    id: Uuid,
    spec: &ScheduleSpec,
    next_run_at: Option<DateTime<Utc>>,
) -> Result<Option<Schedule>> {
    let row = sqlx::query(&format!(
        "UPDATE kiln.schedules s SET task_id = $2, cron = $3, timezone = $4, external_id = $5,
                dedup_key = $6, active = $7,
                next_run_at = CASE WHEN NOT $7 THEN NULL
                                   WHEN s.cron = $3 AND s.timezone = $4 AND s.active
                                        AND s.next_run_at IS NOT NULL THEN s.next_run_at
                                   ELSE $8 END,
                updated_at = now()
          WHERE id = $1
         RETURNING {SCHEDULE_COLUMNS}"
    ))
    .bind(id)
    .bind(&spec.task_id)
    .bind(&spec.cron)
    .bind(&spec.timezone)
    .bind(&spec.external_id)
    .bind(&spec.dedup_key)
    .bind(spec.active)
    .bind(next_run_at)
    .fetch_optional(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(format!(
            "another schedule already has dedup key {:?}: pick another key, or update that schedule",
            spec.dedup_key.as_deref().unwrap_or_default()
        )),
        _ => db("updating a schedule")(e),
    })?;
    row.map(|r| schedule_from_row(&r, Utc::now()))
        .transpose()
        .map_err(db("updating a schedule"))
}

/// Reads one schedule.
pub async fn schedule_get(pool: &Pool, id: Uuid) -> Result<Option<Schedule>> {
    let row = sqlx::query(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM kiln.schedules WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db("reading a schedule"))?;
    row.map(|r| schedule_from_row(&r, Utc::now()))
        .transpose()
        .map_err(db("reading a schedule"))
}

/// Lists schedules, optionally of one task, oldest first.
pub async fn schedule_list(pool: &Pool, task_id: Option<&str>) -> Result<Vec<Schedule>> {
    let rows = sqlx::query(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM kiln.schedules
          WHERE $1::text IS NULL OR task_id = $1 ORDER BY created_at, id"
    ))
    .bind(task_id)
    .fetch_all(pool)
    .await
    .map_err(db("listing schedules"))?;
    let now = Utc::now();
    rows.iter()
        .map(|r| schedule_from_row(r, now))
        .collect::<std::result::Result<_, _>>()
        .map_err(db("listing schedules"))
}

/// Deletes a schedule and its tick history. False when no schedule has this id.
pub async fn schedule_delete(pool: &Pool, id: Uuid) -> Result<bool> {
    let deleted: i64 = sqlx::query_scalar(
        "WITH gone AS (DELETE FROM kiln.schedules WHERE id = $1 RETURNING id),
              ticks AS (DELETE FROM kiln.schedule_ticks WHERE schedule_id IN (SELECT id FROM gone))
         SELECT count(*) FROM gone",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .map_err(db("deleting a schedule"))?;
    Ok(deleted > 0)
}

/// Makes a task's declarative schedule match its code: `Some((pattern, timezone, next tick))`
/// creates or updates it (a changed pattern or timezone restarts its cadence), `None` (the cron
/// option was removed) deactivates it.
pub async fn schedule_sync_declarative(
    pool: &Pool,
    task_id: &str,
    cron: Option<(&str, &str, Option<DateTime<Utc>>)>,
) -> Result<()> {
    let result =
        match cron {
            Some((pattern, timezone, next_run_at)) => {
                sqlx::query(
                    "INSERT INTO kiln.schedules AS s (task_id, cron, timezone, declarative, active,
                                                  next_run_at)
                 VALUES ($1, $2, $3, true, true, $4)
                 ON CONFLICT (task_id) WHERE declarative DO UPDATE SET
                     cron = excluded.cron, timezone = excluded.timezone, active = true,
                     next_run_at = CASE WHEN s.cron = excluded.cron
                                             AND s.timezone = excluded.timezone AND s.active
                                             AND s.next_run_at IS NOT NULL
                                        THEN s.next_run_at ELSE excluded.next_run_at END,
                     updated_at = CASE WHEN s.cron = excluded.cron
                                            AND s.timezone = excluded.timezone AND s.active
                                       THEN s.updated_at ELSE now() END",
                )
                .bind(task_id)
                .bind(pattern)
                .bind(timezone)
                .bind(next_run_at)
                .execute(pool)
                .await
            }
            None => sqlx::query(
                "UPDATE kiln.schedules SET active = false, next_run_at = NULL, updated_at = now()
                  WHERE task_id = $1 AND declarative AND active",
            )
            .bind(task_id)
            .execute(pool)
            .await,
        };
    result.map_err(db("syncing a declarative schedule"))?;
    Ok(())
}

/// A due schedule as read for firing: id, task, pattern, timezone, external id, due tick, last tick.
type DueSchedule = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// One tick a scheduler fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTick {
    /// The schedule.
    pub schedule_id: Uuid,
    /// Its task.
    pub task_id: String,
    /// The nominal tick.
    pub tick: DateTime<Utc>,
    /// The run it triggered.
    pub run_id: Uuid,
    /// True when the tick fired after the next one was already due (a catch-up after downtime:
    /// earlier missed ticks were skipped).
    pub skipped_missed: bool,
}

/// When the next active schedule is due (its `next_run_at`), if any schedule is active. One
/// probe of the `schedules_due` index.
pub async fn schedule_next_due(pool: &Pool) -> Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT min(next_run_at) FROM kiln.schedules WHERE active")
        .fetch_one(pool)
        .await
        .map_err(db("reading when the next schedule is due"))
}

/// Fires up to `limit` schedules due at `now`, each in its own transaction: the schedule's row
/// is locked with SKIP LOCKED (so concurrent schedulers take different schedules), the tick is
/// recorded under the primary key (schedule, tick) before its run is inserted (so a tick never
/// fires twice), and the next tick is set. After downtime only the most recent missed tick
/// fires, then the normal cadence resumes.
pub async fn schedule_fire_due(
    pool: &Pool,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<FiredTick>> {
    let mut fired = Vec::new();
    for _ in 0..limit {
        let mut tx = pool.begin().await.map_err(db("firing schedules"))?;
        let due: Option<DueSchedule> = sqlx::query_as(
            "SELECT id, task_id, cron, timezone, external_id, next_run_at, last_run_at
                   FROM kiln.schedules
                  WHERE active AND next_run_at <= $1
                  ORDER BY next_run_at
                  LIMIT 1
                    FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("finding due schedules"))?;
        let Some((id, task_id, cron, timezone, external_id, due_at, last_run_at)) = due else {
            break;
        };
        let parsed = match CronSchedule::parse(&cron, Some(&timezone)) {
            Ok(parsed) => parsed,
            Err(error) => {
                // Only a pattern written straight into the table can fail here: stop firing it.
                tracing::warn!(schedule_id = %id, %error, "deactivating a schedule whose pattern does not parse");
                sqlx::query(
                    "UPDATE kiln.schedules SET active = false, next_run_at = NULL WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db("deactivating a schedule"))?;
                tx.commit().await.map_err(db("firing schedules"))?;
                continue;
            }
        };
        // The most recent tick in [due_at, now]; earlier missed ticks are skipped.
        let tick = parsed
            .last_at_or_before(now, due_at - chrono::Duration::microseconds(1))
            .unwrap_or(due_at);
        // `tick` is the latest tick at or before now, so this is the one after it.
        let next_run_at = parsed.next_after(now);
        let payload = ScheduleTick {
            timestamp: tick,
            last_timestamp: last_run_at,
            timezone: timezone.clone(),
            schedule_id: id,
            external_id: external_id.clone(),
            upcoming: parsed.upcoming(tick, UPCOMING_TICKS),
            caught_up: tick > due_at,
        };
        let claimed: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO kiln.schedule_ticks (schedule_id, tick) VALUES ($1, $2)
             ON CONFLICT DO NOTHING RETURNING tick",
        )
        .bind(id)
        .bind(tick)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("recording a schedule tick"))?;
        let mut run_id = None;
        if claimed.is_some() {
            let spec = RunSpec {
                payload: serde_json::to_value(&payload).expect("a tick serializes"),
                options: TriggerOptions::default(),
            };
            let run = run_insert_many(&mut *tx, &task_id, None, &[spec], true).await?;
            let id_of_run = run[0].id;
            sqlx::query(
                "UPDATE kiln.schedule_ticks SET run_id = $3 WHERE schedule_id = $1 AND tick = $2",
            )
            .bind(id)
            .bind(tick)
            .bind(id_of_run)
            .execute(&mut *tx)
            .await
            .map_err(db("recording a schedule tick"))?;
            run_id = Some(id_of_run);
        }
        sqlx::query(
            "UPDATE kiln.schedules SET next_run_at = $2,
                    last_run_at = CASE WHEN $3::uuid IS NULL THEN last_run_at ELSE $4 END,
                    last_run_id = coalesce($3, last_run_id), updated_at = now()
              WHERE id = $1",
        )
        .bind(id)
        .bind(next_run_at)
        .bind(run_id)
        .bind(tick)
        .execute(&mut *tx)
        .await
        .map_err(db("advancing a schedule"))?;
        tx.commit().await.map_err(db("firing schedules"))?;
        if let Some(run_id) = run_id {
            fired.push(FiredTick {
                schedule_id: id,
                task_id,
                tick,
                run_id,
                skipped_missed: tick > due_at,
            });
        }
    }
    Ok(fired)
}

/// Deletes tick history recorded before `cutoff` (the cleaner's retention).
pub async fn schedule_tick_delete_before(pool: &Pool, cutoff: DateTime<Utc>) -> Result<u64> {
    let done = sqlx::query("DELETE FROM kiln.schedule_ticks WHERE fired_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await
        .map_err(db("deleting old schedule ticks"))?;
    Ok(done.rows_affected())
}
