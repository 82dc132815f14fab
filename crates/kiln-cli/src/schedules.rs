//! `kiln schedules`: list, create, update, activate, deactivate, delete.

use clap::Subcommand;
use kiln::{CreateSchedule, Schedule, UpdateSchedule};
use uuid::Uuid;

use crate::ops::DbArgs;
use crate::{table, CliResult};

#[derive(Debug, Subcommand)]
pub(crate) enum SchedulesCommand {
    /// Show when a cron pattern fires, from any date, without a database:
    /// `kiln schedules preview "30 2 * * *" --tz Europe/Berlin --from 2026-03-28`.
    Preview {
        /// The five-field cron pattern.
        cron: String,
        /// IANA timezone the pattern is evaluated in (UTC when left out).
        #[arg(long)]
        tz: Option<String>,
        /// Start from this date (2026-03-28) or instant (2026-03-28T12:00:00Z); now when left out.
        #[arg(long)]
        from: Option<String>,
        /// How many fire times to show.
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List schedules with their pattern, timezone and next tick.
    List {
        #[command(flatten)]
        db: DbArgs,
        /// Only this task's schedules.
        #[arg(long)]
        task: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one schedule with its next five ticks.
    Show {
        #[command(flatten)]
        db: DbArgs,
        /// The schedule's id.
        id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a schedule (with --dedup-key, update the schedule that has the key).
    Create {
        #[command(flatten)]
        db: DbArgs,
        /// The task each tick triggers.
        #[arg(long)]
        task: String,
        /// Five-field cron pattern, e.g. "0 * * * *".
        #[arg(long)]
        cron: String,
        /// IANA timezone (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// Your id for what the schedule is for (e.g. a workspace id); passed to each run.
        #[arg(long)]
        external_id: Option<String>,
        /// Makes create an upsert.
        #[arg(long)]
        dedup_key: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a schedule's pattern, timezone, task or external id.
    Update {
        #[command(flatten)]
        db: DbArgs,
        /// The schedule's id.
        id: Uuid,
        /// New pattern.
        #[arg(long)]
        cron: Option<String>,
        /// New timezone.
        #[arg(long)]
        timezone: Option<String>,
        /// New task.
        #[arg(long)]
        task: Option<String>,
        /// New external id.
        #[arg(long)]
        external_id: Option<String>,
    },
    /// Start firing again from the next tick.
    Activate {
        #[command(flatten)]
        db: DbArgs,
        /// The schedule's id.
        id: Uuid,
    },
    /// Stop firing until activated.
    Deactivate {
        #[command(flatten)]
        db: DbArgs,
        /// The schedule's id.
        id: Uuid,
    },
    /// Delete a schedule (runs it triggered stay).
    Delete {
        #[command(flatten)]
        db: DbArgs,
        /// The schedule's id.
        id: Uuid,
    },
}

fn when(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

fn print_list(schedules: &[Schedule]) {
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.task_id.clone(),
                s.cron.clone(),
                s.timezone.clone(),
                s.external_id.clone().unwrap_or_else(|| "-".into()),
                if s.declarative { "code" } else { "api" }.into(),
                if s.active { "active" } else { "inactive" }.into(),
                when(s.next_run_at),
                when(s.last_run_at),
            ]
        })
        .collect();
    table::print(
        &[
            "ID",
            "TASK",
            "CRON",
            "TIMEZONE",
            "EXTERNAL ID",
            "FROM",
            "STATE",
            "NEXT",
            "LAST",
        ],
        &rows,
    );
}

fn print_one(schedule: &Schedule) {
    print_list(std::slice::from_ref(schedule));
    for tick in &schedule.upcoming {
        println!("  upcoming {}", when(Some(*tick)));
    }
}

pub(crate) async fn schedules(command: SchedulesCommand) -> CliResult {
    match command {
        SchedulesCommand::Preview {
            cron,
            tz,
            from,
            count,
            json,
        } => {
            let schedule =
                kiln::CronSchedule::parse(&cron, tz.as_deref()).map_err(crate::Failure::usage)?;
            let zone = schedule.timezone();
            let start = match from.as_deref() {
                None => chrono::Utc::now(),
                Some(text) => parse_from(text, zone).map_err(crate::Failure::usage)?,
            };
            let ticks = schedule.upcoming(start - chrono::Duration::seconds(1), count);
            if json {
                table::json(&ticks);
            } else {
                let rows: Vec<Vec<String>> = ticks
                    .iter()
                    .map(|t| {
                        vec![
                            t.with_timezone(&zone)
                                .format("%Y-%m-%d %H:%M %Z")
                                .to_string(),
                            t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                        ]
                    })
                    .collect();
                let local = format!("LOCAL ({})", zone.name());
                table::print(&[local.as_str(), "UTC"], &rows);
            }
        }
        SchedulesCommand::List { db, task, json } => {
            let schedules = db.client().await?.schedules().list(task.as_deref()).await?;
            if json {
                table::json(&schedules);
            } else {
                print_list(&schedules);
            }
        }
        SchedulesCommand::Show { db, id, json } => {
            let schedule = db.client().await?.schedules().retrieve(id).await?;
            if json {
                table::json(&schedule);
            } else {
                print_one(&schedule);
            }
        }
        SchedulesCommand::Create {
            db,
            task,
            cron,
            timezone,
            external_id,
            dedup_key,
            json,
        } => {
            let mut create = CreateSchedule::new(task, cron);
            create.timezone = timezone;
            create.external_id = external_id;
            create.dedup_key = dedup_key;
            let schedule = db.client().await?.schedules().create(create).await?;
            if json {
                table::json(&schedule);
            } else {
                print_one(&schedule);
            }
        }
        SchedulesCommand::Update {
            db,
            id,
            cron,
            timezone,
            task,
            external_id,
        } => {
            let changes = UpdateSchedule {
                task_id: task,
                cron,
                timezone,
                external_id: external_id.map(Some),
            };
            let schedule = db.client().await?.schedules().update(id, changes).await?;
            print_one(&schedule);
        }
        SchedulesCommand::Activate { db, id } => {
            let schedule = db.client().await?.schedules().activate(id).await?;
            print_one(&schedule);
        }
        SchedulesCommand::Deactivate { db, id } => {
            let schedule = db.client().await?.schedules().deactivate(id).await?;
            print_one(&schedule);
        }
        SchedulesCommand::Delete { db, id } => {
            db.client().await?.schedules().delete(id).await?;
            println!("deleted schedule {id}");
        }
    }
    Ok(())
}

/// A date (midnight in `zone`) or an RFC 3339 instant.
fn parse_from(
    text: &str,
    zone: kiln::chrono_tz::Tz,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::TimeZone;
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        format!(
            "--from {text:?} is neither a date (2026-03-28) nor an instant (2026-03-28T12:00:00Z)"
        )
    })?;
    zone.from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .earliest()
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok_or_else(|| format!("midnight of {date} does not exist in {}", zone.name()))
}
