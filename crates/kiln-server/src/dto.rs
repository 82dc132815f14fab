//! The API's request and response bodies (camelCase JSON, shaped like Trigger.dev's management
//! API), converted from and to the operations layer's types. The OpenAPI document is generated
//! from these types.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_client::{ApiKey, AuditEntry, ClientError, QueueRow, RunHandle, Schedule, TaskRow};
use kiln_core::{Attempt, Delay, ErrorRecord, Run, TriggerOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A duration: a string such as `"30s"`, `"5m"`, `"1h30m"`, or a number of milliseconds.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DurationValue {
    /// Milliseconds (a whole number, 0 or more).
    Millis(f64),
    /// A duration string.
    Text(String),
}

impl DurationValue {
    /// The duration; its range is checked with the other limits by the database's validator.
    fn parse(&self, option: &str) -> Result<Duration, ClientError> {
        match self {
            Self::Millis(ms) if ms.is_finite() && *ms >= 0.0 && ms.fract() == 0.0 => {
                Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| {
                    ClientError::Invalid(format!("option {option}: {ms} ms is too long"))
                })
            }
            Self::Millis(ms) => Err(ClientError::Invalid(format!(
                "option {option}: {ms} is not a whole number of milliseconds, 0 or more"
            ))),
            Self::Text(text) => kiln_core::parse_duration(text).map_err(|e| {
                ClientError::Invalid(format!(
                    "option {option}: {text:?} is not a duration ({e}); write e.g. \"30s\", \"5m\" \
                     or a number of milliseconds"
                ))
            }),
        }
    }
}

/// Options of one trigger. Unset options take the task's defaults.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerOptionsBody {
    /// A queue the task may run in instead of its own.
    pub queue: Option<String>,
    /// A separate copy of the queue's limit per value (e.g. a workspace id).
    pub concurrency_key: Option<String>,
    /// Wait this long (a duration) or until this RFC 3339 time before the run may start.
    pub delay: Option<DurationValue>,
    /// Expire the run if it has not started this long after it was triggered.
    pub ttl: Option<DurationValue>,
    /// A second trigger with the same live key returns the existing run.
    pub idempotency_key: Option<String>,
    /// How long the idempotency key stays live (default 30 days).
    #[serde(rename = "idempotencyKeyTTL")]
    pub idempotency_key_ttl: Option<DurationValue>,
    /// Up to 10 tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Attempts in all, counting the first.
    pub max_attempts: Option<u32>,
    /// Head start in the queue's order (a duration).
    pub priority: Option<DurationValue>,
    /// Any JSON object.
    pub metadata: Option<Value>,
    /// Time limit of one attempt.
    pub max_duration: Option<DurationValue>,
    /// The W3C trace context the run links back to; the request's `traceparent` header when
    /// left out.
    pub traceparent: Option<String>,
}

impl TriggerOptionsBody {
    /// The operations layer's options; a value out of range names the option.
    pub fn into_options(self) -> Result<TriggerOptions, ClientError> {
        let delay = match self.delay {
            None => None,
            Some(DurationValue::Text(text)) if kiln_core::parse_duration(&text).is_err() => {
                let at = DateTime::parse_from_rfc3339(&text).map_err(|_| {
                    ClientError::Invalid(format!(
                        "option delay: {text:?} is neither a duration (\"30s\", \"5m\") nor an \
                         RFC 3339 time (\"2026-11-21T10:00:00Z\")"
                    ))
                })?;
                Some(Delay::Until(at.with_timezone(&Utc)))
            }
            Some(value) => Some(Delay::For(value.parse("delay")?)),
        };
        if self.max_attempts == Some(0) {
            return Err(ClientError::Invalid(
                "option maxAttempts: must be at least 1 (1 means no retry)".into(),
            ));
        }
        let parse =
            |value: Option<DurationValue>, name: &str| value.map(|v| v.parse(name)).transpose();
        Ok(TriggerOptions {
            queue: self.queue,
            concurrency_key: self.concurrency_key,
            delay,
            ttl: parse(self.ttl, "ttl")?,
            idempotency_key: self.idempotency_key,
            idempotency_key_ttl: parse(self.idempotency_key_ttl, "idempotencyKeyTTL")?,
            tags: self.tags,
            max_attempts: self.max_attempts,
            priority: parse(self.priority, "priority")?,
            metadata: self.metadata,
            max_duration: parse(self.max_duration, "maxDuration")?,
            traceparent: self.traceparent,
            ..TriggerOptions::default()
        })
    }
}

/// Trigger one run.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// The payload, any JSON (checked against the task's schema when it declares one).
    #[serde(default)]
    pub payload: Value,
    /// Options.
    #[serde(default)]
    pub options: TriggerOptionsBody,
}

/// A triggered run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerResponse {
    /// The run's id.
    pub id: Uuid,
    /// True when a live idempotency key returned an existing run.
    pub is_cached: bool,
}

impl From<RunHandle> for TriggerResponse {
    fn from(handle: RunHandle) -> Self {
        Self {
            id: handle.id,
            is_cached: handle.is_cached,
        }
    }
}

/// Trigger up to 1,000 runs of one task in one statement.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The runs to trigger.
    pub items: Vec<TriggerRequest>,
}

/// The runs of a batch, in item order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One entry per item.
    pub data: Vec<TriggerResponse>,
}

/// An error as stored with a run or an attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunError {
    /// `error`, `abort`, `panic`, `payload`, `timed_out`, `canceled`, `crashed`, `interrupted`,
    /// `expired`, `system_failure` or `unstorable`.
    pub kind: String,
    /// The message.
    pub message: String,
    /// Messages of the causes, outermost first.
    pub chain: Vec<String>,
}

impl From<&ErrorRecord> for RunError {
    fn from(e: &ErrorRecord) -> Self {
        Self {
            kind: serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            message: e.message.clone(),
            chain: e.chain.clone(),
        }
    }
}

/// One attempt of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptBody {
    /// 1 for the first attempt.
    pub number: u32,
    /// The worker that ran it.
    pub worker_id: String,
    /// How it ended: completed, failed, timed_out, canceled, crashed, interrupted.
    pub status: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its error.
    pub error: Option<RunError>,
}

impl From<&Attempt> for AttemptBody {
    fn from(a: &Attempt) -> Self {
        Self {
            number: a.number,
            worker_id: a.worker_id.clone(),
            status: a.status.clone(),
            started_at: a.started_at,
            finished_at: a.finished_at,
            error: a.error.as_ref().map(RunError::from),
        }
    }
}

/// A run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunBody {
    /// Its id.
    pub id: Uuid,
    /// Its task.
    pub task_id: String,
    /// delayed, queued, executing, waiting, completed, failed, canceled, crashed, timed_out,
    /// expired or system_failure.
    pub status: String,
    /// True when it waits in `queued` for a retry.
    pub is_retrying: bool,
    /// Its queue.
    pub queue: String,
    /// Its concurrency key.
    pub concurrency_key: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its payload.
    pub payload: Value,
    /// Its output, once completed.
    pub output: Option<Value>,
    /// Its error, once failed.
    pub error: Option<RunError>,
    /// Attempts started so far.
    pub attempt_count: u32,
    /// Attempts it may use in all.
    pub max_attempts: u32,
    /// Its metadata.
    pub metadata: Value,
    /// Its idempotency key (while live).
    pub idempotency_key: Option<String>,
    /// The run that triggered it.
    pub parent_run_id: Option<Uuid>,
    /// The root of its tree of runs.
    pub root_run_id: Option<Uuid>,
    /// The run it replays.
    pub replay_of: Option<Uuid>,
    /// The W3C trace context of its trigger.
    pub traceparent: Option<String>,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// When it may start.
    pub available_at: DateTime<Utc>,
    /// When it expires unless started.
    pub expires_at: Option<DateTime<Utc>>,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its attempts (in `GET /runs/{id}` only; empty in lists).
    pub attempts: Vec<AttemptBody>,
    /// How many child runs it triggered (in `GET /runs/{id}` only).
    pub children_count: Option<i64>,
}

impl RunBody {
    /// The API's view of a run.
    pub fn new(run: &Run, children_count: Option<i64>) -> Self {
        Self {
            id: run.id,
            task_id: run.task_id.clone(),
            status: run.status.as_str().to_owned(),
            is_retrying: run.is_retrying(),
            queue: run.queue.clone(),
            concurrency_key: run.concurrency_key.clone(),
            tags: run.tags.clone(),
            payload: run.payload.clone(),
            output: run.output.clone(),
            error: run.error.as_ref().map(RunError::from),
            attempt_count: run.attempts,
            max_attempts: run.max_attempts,
            metadata: run.metadata.clone(),
            idempotency_key: run.idempotency_key.clone(),
            parent_run_id: run.parent_run_id,
            root_run_id: run.root_run_id,
            replay_of: run.replay_of,
            traceparent: run.traceparent.clone(),
            created_at: run.created_at,
            available_at: run.available_at,
            expires_at: run.expires_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            attempts: run.attempt_list.iter().map(AttemptBody::from).collect(),
            children_count,
        }
    }
}

/// Cursors of a page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pagination {
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next: Option<Uuid>,
    /// Pass as `before` for the previous (newer) page; null on the first page.
    pub previous: Option<Uuid>,
}

/// A page of runs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunPageBody {
    /// The runs.
    pub data: Vec<RunBody>,
    /// Where the neighbouring pages start.
    pub pagination: Pagination,
}

/// What a cancel did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelResponse {
    /// The run.
    pub id: Uuid,
    /// Its status before the cancel.
    pub previous_status: String,
}

/// Replay a run, optionally with another payload.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The new run's payload (the original's when left out).
    pub payload: Option<Value>,
}

/// Which runs a bulk action takes: `ids`, or every run matching `filter`; at most `limit` runs
/// (100,000 unless given; 1,000,000 at most).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// These runs.
    pub ids: Option<Vec<Uuid>>,
    /// Every run matching this filter.
    pub filter: Option<BulkFilter>,
    /// The most runs to take.
    pub limit: Option<u64>,
}

/// The runs filter of a bulk action, with the names of `GET /api/v1/runs`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkFilter {
    /// Statuses (`failed`, `queued`, ..., and `retrying`).
    #[serde(default)]
    pub status: Vec<String>,
    /// Tasks.
    #[serde(default)]
    pub task: Vec<String>,
    /// Runs carrying every one of these tags.
    #[serde(default)]
    pub tag: Vec<String>,
    /// A queue.
    pub queue: Option<String>,
    /// A concurrency key.
    pub concurrency_key: Option<String>,
    /// Triggered at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Triggered before this time.
    pub to: Option<DateTime<Utc>>,
    /// Children of this run.
    pub parent: Option<Uuid>,
    /// Only runs with no parent.
    #[serde(default)]
    pub root_only: bool,
}

/// What a bulk action did.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResponse {
    /// `cancel` or `replay`.
    pub action: String,
    /// Runs selected.
    pub matched: u64,
    /// Runs canceled, or new runs a replay triggered.
    pub done: u64,
    /// Runs left as they were (already finished, not found, or a payload its task's schema now
    /// refuses).
    pub skipped: u64,
    /// True when the action stopped at its limit with more runs matching.
    pub capped: bool,
}

/// Move a run that has not started: `delay` from now, or `at` an RFC 3339 time.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    /// How long from now.
    pub delay: Option<DurationValue>,
    /// When.
    pub at: Option<DateTime<Utc>>,
}

/// A queue with its limits and live counts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueBody {
    /// Its name.
    pub name: String,
    /// The limit declared in code (per concurrency key).
    pub concurrency_limit: Option<i32>,
    /// The operator's override, which wins.
    pub limit_override: Option<i32>,
    /// The limit the claim applies now.
    pub effective_limit: Option<i32>,
    /// The limit across all keys.
    pub total_limit: Option<i32>,
    /// Paused queues start no run.
    pub paused: bool,
    /// Runs waiting to start (delayed and retries included).
    pub queued: i64,
    /// Runs executing.
    pub executing: i64,
    /// Parents waiting on children.
    pub waiting: i64,
    /// How long the oldest run ready to start has waited, in milliseconds.
    pub oldest_queued_age_ms: Option<i64>,
}

impl From<&QueueRow> for QueueBody {
    fn from(q: &QueueRow) -> Self {
        Self {
            name: q.name.clone(),
            concurrency_limit: q.concurrency_limit,
            limit_override: q.limit_override,
            effective_limit: q.effective_limit(),
            total_limit: q.total_limit,
            paused: q.paused,
            queued: q.queued,
            executing: q.running,
            waiting: q.waiting,
            oldest_queued_age_ms: q
                .oldest_available_at
                .map(|at| (Utc::now() - at).num_milliseconds().max(0)),
        }
    }
}

/// Every queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    /// The queues, by name.
    pub data: Vec<QueueBody>,
}

/// A new limit for a queue.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// Runs at once (per concurrency key), at least 1 (to stop new runs, pause the queue).
    pub limit: i32,
}

/// A queue to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQueueRequest {
    /// Letters, digits and - _ . : / (at most 128).
    pub name: String,
    /// Runs at once (per concurrency key), at least 1; no limit when left out.
    #[serde(default)]
    pub limit: Option<i32>,
}

/// A registered task and its definition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskBody {
    /// Its id.
    pub id: String,
    /// Its description.
    pub description: Option<String>,
    /// Its queue.
    pub queue: String,
    /// Its queue's limit (per concurrency key).
    pub concurrency_limit: Option<i32>,
    /// Its queue's limit across keys.
    pub total_limit: Option<i32>,
    /// Attempts in all.
    pub max_attempts: i32,
    /// Its retry policy.
    pub retry: Value,
    /// Time limit of an attempt, in milliseconds.
    pub max_duration_ms: Option<i64>,
    /// Its ttl, in milliseconds.
    pub ttl_ms: Option<i64>,
    /// Its default priority, in seconds of head start.
    pub priority_s: i32,
    /// The JSON Schema its payload is checked against (tasks declaring `payload_schema: true`).
    pub payload_schema: Option<Value>,
    /// Its declarative cron schedule.
    pub cron: Option<String>,
    /// That schedule's timezone.
    pub timezone: Option<String>,
    /// When a worker last registered it.
    pub last_seen_at: DateTime<Utc>,
    /// Whether a running worker registers it now (runs of a task no worker serves wait).
    pub served: bool,
    /// Its runs waiting to start now.
    pub waiting_runs: i64,
}

impl From<&TaskRow> for TaskBody {
    fn from(t: &TaskRow) -> Self {
        Self {
            id: t.id.clone(),
            description: t.description.clone(),
            queue: t.queue.clone(),
            concurrency_limit: t.concurrency_limit,
            total_limit: t.total_limit,
            max_attempts: t.max_attempts,
            retry: t.retry.clone(),
            max_duration_ms: t.max_duration_ms,
            ttl_ms: t.ttl_ms,
            priority_s: t.priority_s,
            payload_schema: t.payload_schema.clone(),
            cron: t.cron.clone(),
            timezone: t.timezone.clone(),
            last_seen_at: t.last_seen_at,
            served: t.served,
            waiting_runs: t.waiting,
        }
    }
}

/// Every registered task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    /// The tasks, by id.
    pub data: Vec<TaskBody>,
}

/// A cron schedule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleBody {
    /// Its id.
    pub id: Uuid,
    /// The task it triggers.
    pub task: String,
    /// Five-field cron pattern.
    pub cron: String,
    /// IANA timezone.
    pub timezone: String,
    /// The caller's id for it (e.g. a workspace id), passed to each run.
    pub external_id: Option<String>,
    /// Its deduplication key (create with the same key updates this schedule).
    pub deduplication_key: Option<String>,
    /// Declared by the task's code: listed, not editable.
    pub declarative: bool,
    /// Inactive schedules do not fire.
    pub active: bool,
    /// When it fires next.
    pub next_run_at: Option<DateTime<Utc>>,
    /// When it last fired.
    pub last_run_at: Option<DateTime<Utc>>,
    /// Its next fire times.
    pub upcoming: Vec<DateTime<Utc>>,
}

impl From<&Schedule> for ScheduleBody {
    fn from(s: &Schedule) -> Self {
        Self {
            id: s.id,
            task: s.task_id.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            external_id: s.external_id.clone(),
            deduplication_key: s.dedup_key.clone(),
            declarative: s.declarative,
            active: s.active,
            next_run_at: s.next_run_at,
            last_run_at: s.last_run_at,
            upcoming: s.upcoming.clone(),
        }
    }
}

/// Every schedule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    /// The schedules.
    pub data: Vec<ScheduleBody>,
}

/// A new imperative schedule.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateScheduleRequest {
    /// The task to trigger.
    pub task: String,
    /// Five-field cron pattern.
    pub cron: String,
    /// IANA timezone (UTC when left out).
    pub timezone: Option<String>,
    /// The caller's id for it.
    pub external_id: Option<String>,
    /// Makes create an upsert: a second create with the same key updates that schedule.
    pub deduplication_key: Option<String>,
}

/// Changes to a schedule; what is left out stays.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateScheduleRequest {
    /// The task to trigger.
    pub task: Option<String>,
    /// Five-field cron pattern.
    pub cron: Option<String>,
    /// IANA timezone.
    pub timezone: Option<String>,
    /// The caller's id for it.
    pub external_id: Option<String>,
}

/// An API key, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyBody {
    /// Its name.
    pub name: String,
    /// The start of its secret.
    pub prefix: String,
    /// trigger, read or admin.
    pub scope: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used (about once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&ApiKey> for KeyBody {
    fn from(k: &ApiKey) -> Self {
        Self {
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scope: k.scope.as_str().to_owned(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// Every API key, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// The keys (never their secrets).
    pub data: Vec<KeyBody>,
}

/// One recorded operator action.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditBody {
    /// Its id (pass as `before` for older entries).
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who: `key:<name>`, `cli:<user>` or `client`.
    pub actor: String,
    /// What, e.g. `run.cancel`.
    pub action: String,
    /// On what: a run or schedule id, a queue or key name.
    pub target: String,
    /// Details of the change.
    pub detail: Value,
}

impl From<&AuditEntry> for AuditBody {
    fn from(e: &AuditEntry) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// Recent operator actions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// The entries.
    pub data: Vec<AuditBody>,
}

/// Health of the process or of its database.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// One log line a run's body wrote.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogLineBody {
    /// The attempt that wrote it.
    pub attempt: u32,
    /// Its position within the attempt, from 1.
    pub seq: u32,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// trace, debug, info, warn or error.
    pub level: String,
    /// The message.
    pub message: String,
    /// Structured fields.
    pub fields: Value,
}

impl From<&kiln_core::LogLine> for LogLineBody {
    fn from(l: &kiln_core::LogLine) -> Self {
        Self {
            attempt: l.attempt,
            seq: l.seq,
            at: l.at,
            level: l.level.as_str().to_owned(),
            message: l.message.clone(),
            fields: l.fields.clone(),
        }
    }
}

/// A page of a run's log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    /// The lines.
    pub data: Vec<LogLineBody>,
    /// Pass as `after` for the lines that follow (null when this page is not full).
    pub next: Option<String>,
}

/// A worker process.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerBody {
    /// Its id (as in attempts).
    pub id: String,
    /// The machine.
    pub hostname: String,
    /// Its process id.
    pub pid: i32,
    /// Kiln's version.
    pub version: String,
    /// The tasks it runs.
    pub tasks: Vec<String>,
    /// Runs it executes at once.
    pub concurrency: i32,
    /// running, draining, stopped, or dead (missed three heartbeats).
    pub state: String,
    /// Runs it held at its last heartbeat.
    pub in_flight: i32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When its heartbeat last reached the database.
    pub last_seen_at: DateTime<Utc>,
}

impl From<&kiln_client::WorkerRow> for WorkerBody {
    fn from(w: &kiln_client::WorkerRow) -> Self {
        Self {
            id: w.id.clone(),
            hostname: w.hostname.clone(),
            pid: w.pid,
            version: w.version.clone(),
            tasks: w.tasks.clone(),
            concurrency: w.concurrency,
            state: w.state.clone(),
            in_flight: w.in_flight,
            started_at: w.started_at,
            last_seen_at: w.last_seen_at,
        }
    }
}

/// Worker processes, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    /// The workers.
    pub data: Vec<WorkerBody>,
}
