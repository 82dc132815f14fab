//! `client.schedules()`: cron schedules created from code at run time (one per workspace, say),
//! beside the declarative ones tasks carry.

use chrono::Utc;
use kiln_core::{parse_timezone, CronSchedule, Schedule, Task};
use kiln_store::schedule::{
    schedule_delete, schedule_get, schedule_list, schedule_update, schedule_upsert, ScheduleSpec,
};
use kiln_store::task::task_is_registered;
use uuid::Uuid;

use crate::audit::Ops;
use crate::ClientError;

/// A schedule to create: `CreateSchedule::new("google-calendar-full-sync", "0 * * * *")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSchedule {
    /// The task each tick triggers.
    pub task_id: String,
    /// The five-field pattern.
    pub cron: String,
    /// The IANA timezone (UTC when `None`).
    pub timezone: Option<String>,
    /// The caller's id for what the schedule is for (e.g. a workspace id), passed to each run.
    pub external_id: Option<String>,
    /// With a key already in use, create updates that schedule instead of adding another.
    pub dedup_key: Option<String>,
    /// Create it even if no worker has registered the task yet.
    pub allow_unregistered: bool,
}

impl CreateSchedule {
    /// A schedule of `task_id` on `cron`, in UTC.
    pub fn new(task_id: impl Into<String>, cron: impl Into<String>) -> Self {
        Self {
            task_id: task_id.into(),
            cron: cron.into(),
            timezone: None,
            external_id: None,
            dedup_key: None,
            allow_unregistered: false,
        }
    }

    /// A schedule of task `T`.
    pub fn for_task<T: Task>(cron: impl Into<String>) -> Self {
        Self::new(T::ID, cron)
    }

    /// Evaluates the pattern in this IANA timezone.
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = Some(timezone.into());
        self
    }

    /// Sets the external id.
    pub fn external_id(mut self, id: impl Into<String>) -> Self {
        self.external_id = Some(id.into());
        self
    }

    /// Sets the dedup key (create becomes an upsert).
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }

    /// Creates it even if no worker has registered the task yet.
    pub fn allow_unregistered(mut self) -> Self {
        self.allow_unregistered = true;
        self
    }
}

/// Changes to a schedule; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSchedule {
    /// A new task.
    pub task_id: Option<String>,
    /// A new pattern.
    pub cron: Option<String>,
    /// A new timezone.
    pub timezone: Option<String>,
    /// A new external id (`Some(None)` clears it).
    pub external_id: Option<Option<String>>,
}

impl UpdateSchedule {
    /// Changes the pattern.
    pub fn cron(mut self, cron: impl Into<String>) -> Self {
        self.cron = Some(cron.into());
        self
    }

    /// Changes the timezone.
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = Some(timezone.into());
        self
    }

    /// Changes the task.
    pub fn task_id(mut self, task_id: impl Into<String>) -> Self {
        self.task_id = Some(task_id.into());
        self
    }

    /// Changes the external id.
    pub fn external_id(mut self, id: Option<String>) -> Self {
        self.external_id = Some(id);
        self
    }
}

/// Creates, changes and lists schedules.
#[derive(Debug, Clone, Copy)]
pub struct Schedules<'a> {
    ops: Ops<'a>,
}

/// Parses the pattern in its timezone, or says what is wrong with either.
fn parse(cron: &str, timezone: &str) -> Result<CronSchedule, ClientError> {
    CronSchedule::parse(cron, Some(timezone)).map_err(ClientError::InvalidSchedule)
}

impl<'a> Schedules<'a> {
    pub(crate) fn new(ops: Ops<'a>) -> Self {
        Self { ops }
    }

    /// Creates a schedule (or, with a dedup key in use, updates that one). Refuses a pattern or
    /// timezone that does not parse, and a task no worker registered (unless allowed).
    pub async fn create(&self, schedule: CreateSchedule) -> Result<Schedule, ClientError> {
        let timezone = match &schedule.timezone {
            Some(tz) => parse_timezone(tz)
                .map_err(ClientError::InvalidSchedule)?
                .name()
                .to_owned(),
            None => "UTC".to_owned(),
        };
        let parsed = parse(&schedule.cron, &timezone)?;
        kiln_core::validate_task_id(&schedule.task_id).map_err(|e| {
            ClientError::InvalidTrigger {
                task_id: schedule.task_id.clone(),
                message: e.to_owned(),
            }
        })?;
        if !schedule.allow_unregistered
            && !task_is_registered(self.ops.pool, &schedule.task_id).await?
        {
            return Err(ClientError::UnregisteredTask {
                task_id: schedule.task_id,
            });
        }
        for (field, value) in [
            ("external_id", &schedule.external_id),
            ("dedup_key", &schedule.dedup_key),
        ] {
            if let Some(value) = value {
                kiln_core::check_key(field, value).map_err(|message| {
                    ClientError::InvalidTrigger {
                        task_id: schedule.task_id.clone(),
                        message,
                    }
                })?;
            }
        }
        if schedule.dedup_key.as_deref() == Some("") {
            return Err(ClientError::InvalidTrigger {
                task_id: schedule.task_id,
                message: "dedup_key is empty: leave it out, or pass a key such as a workspace id"
                    .into(),
            });
        }
        let spec = ScheduleSpec {
            task_id: schedule.task_id,
            cron: parsed.pattern().to_owned(),
            timezone,
            external_id: schedule.external_id,
            dedup_key: schedule.dedup_key,
            active: true,
        };
        let created = schedule_upsert(self.ops.pool, &spec, parsed.next_after(Utc::now())).await?;
        self.ops
            .audit(
                "schedule.create",
                &created.id.to_string(),
                serde_json::json!({ "task": created.task_id, "cron": created.cron,
                                    "timezone": created.timezone }),
            )
            .await;
        Ok(created)
    }

    /// One schedule.
    pub async fn retrieve(&self, id: Uuid) -> Result<Schedule, ClientError> {
        schedule_get(self.ops.pool, id)
            .await?
            .ok_or(ClientError::ScheduleNotFound(id))
    }

    /// Every schedule, or those of one task.
    pub async fn list(&self, task_id: Option<&str>) -> Result<Vec<Schedule>, ClientError> {
        Ok(schedule_list(self.ops.pool, task_id).await?)
    }

    /// Changes a schedule. A changed pattern or timezone restarts its cadence from now.
    pub async fn update(&self, id: Uuid, changes: UpdateSchedule) -> Result<Schedule, ClientError> {
        let current = self.editable(id).await?;
        if let Some(Some(external_id)) = &changes.external_id {
            kiln_core::check_key("external_id", external_id).map_err(ClientError::Invalid)?;
        }
        if let Some(task_id) = &changes.task_id {
            if *task_id != current.task_id && !task_is_registered(self.ops.pool, task_id).await? {
                return Err(ClientError::UnregisteredTask {
                    task_id: task_id.clone(),
                });
            }
        }
        let timezone = match &changes.timezone {
            Some(tz) => parse_timezone(tz)
                .map_err(ClientError::InvalidSchedule)?
                .name()
                .to_owned(),
            None => current.timezone.clone(),
        };
        let cron = changes.cron.unwrap_or(current.cron);
        let parsed = parse(&cron, &timezone)?;
        let spec = ScheduleSpec {
            task_id: changes.task_id.unwrap_or(current.task_id),
            cron: parsed.pattern().to_owned(),
            timezone,
            external_id: changes.external_id.unwrap_or(current.external_id),
            dedup_key: current.dedup_key,
            active: current.active,
        };
        let saved = self.save(id, &spec, &parsed).await?;
        self.ops
            .audit(
                "schedule.update",
                &id.to_string(),
                serde_json::json!({ "task": saved.task_id, "cron": saved.cron,
                                    "timezone": saved.timezone }),
            )
            .await;
        Ok(saved)
    }

    /// Starts firing again, from the next tick after now (missed ticks are not fired).
    pub async fn activate(&self, id: Uuid) -> Result<Schedule, ClientError> {
        self.set_active(id, true).await
    }

    /// Stops firing until activated again.
    pub async fn deactivate(&self, id: Uuid) -> Result<Schedule, ClientError> {
        self.set_active(id, false).await
    }

    /// Deletes a schedule and its tick history; runs it triggered stay.
    pub async fn delete(&self, id: Uuid) -> Result<(), ClientError> {
        self.editable(id).await?;
        if !schedule_delete(self.ops.pool, id).await? {
            return Err(ClientError::ScheduleNotFound(id));
        }
        self.ops
            .audit("schedule.delete", &id.to_string(), serde_json::Value::Null)
            .await;
        Ok(())
    }

    /// The schedule, if an operator may change it: a declarative schedule belongs to its task's
    /// `cron` option and is changed in code (the next worker start would undo an edit).
    async fn editable(&self, id: Uuid) -> Result<Schedule, ClientError> {
        let current = self.retrieve(id).await?;
        if current.declarative {
            return Err(ClientError::Conflict(format!(
                "schedule {id} is declared by task {:?}'s `cron` option: change it in the task's \
                 code (a worker start would undo an edit here)",
                current.task_id
            )));
        }
        Ok(current)
    }

    async fn set_active(&self, id: Uuid, active: bool) -> Result<Schedule, ClientError> {
        let current = self.editable(id).await?;
        let parsed = parse(&current.cron, &current.timezone)?;
        let spec = ScheduleSpec {
            task_id: current.task_id,
            cron: current.cron,
            timezone: current.timezone,
            external_id: current.external_id,
            dedup_key: current.dedup_key,
            active,
        };
        let saved = self.save(id, &spec, &parsed).await?;
        let action = if active {
            "schedule.activate"
        } else {
            "schedule.deactivate"
        };
        self.ops
            .audit(action, &id.to_string(), serde_json::Value::Null)
            .await;
        Ok(saved)
    }

    async fn save(
        &self,
        id: Uuid,
        spec: &ScheduleSpec,
        parsed: &CronSchedule,
    ) -> Result<Schedule, ClientError> {
        schedule_update(self.ops.pool, id, spec, parsed.next_after(Utc::now()))
            .await?
            .ok_or(ClientError::ScheduleNotFound(id))
    }
}
