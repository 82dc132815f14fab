//! Task definitions: the [`Task`] trait and the options every task declares.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Context, Error, RetryPolicy};

/// A task's queue: its name (the task id unless set) and its concurrency limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueDefinition {
    /// Queue name; `None` means the task's own queue, named after the task id.
    pub name: Option<&'static str>,
    /// Runs of this queue executing at once, across all workers. With a concurrency key, the
    /// limit applies to each key's copy of the queue.
    pub concurrency_limit: Option<u32>,
    /// Runs executing at once across all keys of the queue.
    pub total_limit: Option<u32>,
}

impl QueueDefinition {
    /// The task's own queue with no limit.
    pub const fn new() -> Self {
        Self {
            name: None,
            concurrency_limit: None,
            total_limit: None,
        }
    }

    /// Names the queue (tasks sharing a name share the queue and its limits).
    pub const fn name(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }

    /// Sets the limit per queue, or per concurrency key.
    pub const fn concurrency_limit(mut self, limit: u32) -> Self {
        self.concurrency_limit = Some(limit);
        self
    }

    /// Sets the limit across all keys.
    pub const fn total_limit(mut self, limit: u32) -> Self {
        self.total_limit = Some(limit);
        self
    }
}

impl Default for QueueDefinition {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything a task declares besides its body. Built in `const` context by [`task!`](crate::task).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskDefinition {
    /// The task id runs are triggered with, e.g. `"schedule-task"`.
    pub id: &'static str,
    /// What the task does, for operators.
    pub description: Option<&'static str>,
    /// The queue and its limits.
    pub queue: QueueDefinition,
    /// The retry policy.
    pub retry: RetryPolicy,
    /// An attempt running longer is stopped and the run is `timed_out`.
    pub max_duration: Option<Duration>,
    /// A run not started within this time after it became available is `expired`.
    pub ttl: Option<Duration>,
    /// Head start in the queue order, in whole seconds.
    pub priority: Duration,
    /// A declarative cron schedule, synced to `kiln.schedules` when a worker starts.
    pub cron: Option<CronDefinition>,
}

/// A task's declarative cron schedule: a five-field pattern and an optional IANA timezone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronDefinition {
    /// The pattern, e.g. `"0 * * * *"`.
    pub pattern: &'static str,
    /// The timezone it is evaluated in; UTC when `None`.
    pub timezone: Option<&'static str>,
}

impl CronDefinition {
    /// Parses the pattern and timezone in full (the `const` check covers the pattern's shape;
    /// timezone names are checked here, when a worker registers the task).
    pub fn schedule(&self) -> Result<crate::CronSchedule, crate::CronError> {
        crate::CronSchedule::parse(self.pattern, self.timezone)
    }
}

impl TaskDefinition {
    /// A definition with no id yet and every default.
    pub const fn new() -> Self {
        Self {
            id: "",
            description: None,
            queue: QueueDefinition::new(),
            retry: RetryPolicy::DEFAULT,
            max_duration: None,
            ttl: None,
            priority: Duration::ZERO,
            cron: None,
        }
    }

    /// Sets the task id.
    pub const fn id(mut self, id: &'static str) -> Self {
        self.id = id;
        self
    }

    /// Sets the description.
    pub const fn description(mut self, text: &'static str) -> Self {
        self.description = Some(text);
        self
    }

    /// Sets the queue.
    pub const fn queue(mut self, queue: QueueDefinition) -> Self {
        self.queue = queue;
        self
    }

    /// Sets the retry policy.
    pub const fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the maximum duration of one attempt.
    pub const fn max_duration(mut self, limit: Duration) -> Self {
        self.max_duration = Some(limit);
        self
    }

    /// Sets the time-to-live of a run that has not started.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the declarative cron schedule.
    pub const fn cron(mut self, pattern: &'static str, timezone: Option<&'static str>) -> Self {
        self.cron = Some(CronDefinition { pattern, timezone });
        self
    }

    /// Sets the head start in the queue order.
    pub const fn priority(mut self, head_start: Duration) -> Self {
        self.priority = head_start;
        self
    }

    /// The queue's name: the declared name, or the task id.
    pub fn queue_name(&self) -> &'static str {
        match self.queue.name {
            Some(name) => name,
            None => self.id,
        }
    }

    /// The description without the leading spaces doc comments carry.
    pub fn description_text(&self) -> Option<String> {
        let text = self.description?;
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let joined = lines.join(" ").trim().to_owned();
        (!joined.is_empty()).then_some(joined)
    }

    /// Checks the definition, naming the first thing wrong with it.
    pub const fn validate(&self) -> Result<(), &'static str> {
        if let Err(msg) = validate_task_id(self.id) {
            return Err(msg);
        }
        if let Some(name) = self.queue.name {
            if let Err(msg) = validate_task_id(name) {
                return Err(msg);
            }
        }
        if let Some(0) = self.queue.concurrency_limit {
            return Err("queue.concurrency_limit must be at least 1 (leave it out for no limit)");
        }
        if let Some(0) = self.queue.total_limit {
            return Err("queue.total_limit must be at least 1 (leave it out for no limit)");
        }
        if let Some(d) = self.max_duration {
            if d.is_zero() {
                return Err("max_duration must be longer than zero");
            }
        }
        if let Some(d) = self.ttl {
            if d.is_zero() {
                return Err("ttl must be longer than zero");
            }
        }
        if let Some(cron) = self.cron {
            if let Err(msg) = validate_cron_shape(cron.pattern) {
                return Err(msg);
            }
        }
        self.retry.validate()
    }
}

/// Checks a cron pattern's shape in `const` context: five fields (or an `@` shorthand), made of
/// numbers in each field's range, names, `*`, `?`, `-`, `/` and `,`. The full parse
/// ([`CronSchedule::parse`](crate::CronSchedule::parse)) runs when a worker registers the task.
pub const fn validate_cron_shape(pattern: &str) -> Result<(), &'static str> {
    const LIMITS: [(u32, u32); 5] = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    const OUT_OF_RANGE: [&str; 5] = [
        "cron: a minute is out of range 0-59",
        "cron: an hour is out of range 0-23",
        "cron: a day-of-month is out of range 1-31",
        "cron: a month is out of range 1-12",
        "cron: a day-of-week is out of range 0-7",
    ];
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    if i < bytes.len() && bytes[i] == b'@' {
        return Ok(());
    }
    let mut field = 0usize;
    let mut in_field = false;
    let mut number: Option<u32> = None;
    let mut after_slash = false;
    while i <= bytes.len() {
        let b = if i < bytes.len() { bytes[i] } else { b' ' };
        if b.is_ascii_digit() {
            let n = match number {
                Some(n) => n,
                None => 0,
            };
            if n > 1000 {
                return Err("cron: a number is far out of range");
            }
            number = Some(n * 10 + (b - b'0') as u32);
        } else {
            if let Some(n) = number {
                if field >= 5 {
                    return Err("cron: a pattern has five fields: minute hour day-of-month month day-of-week (no seconds field)");
                }
                if !after_slash && (n < LIMITS[field].0 || n > LIMITS[field].1) {
                    return Err(OUT_OF_RANGE[field]);
                }
                if after_slash && n == 0 {
                    return Err("cron: a step must be at least 1");
                }
                number = None;
            }
            after_slash = b == b'/';
            if b == b' ' || b == b'\t' {
                if in_field {
                    field += 1;
                    in_field = false;
                }
                i += 1;
                continue;
            }
            if !(b.is_ascii_alphabetic() || matches!(b, b'*' | b'?' | b'-' | b'/' | b',')) {
                return Err("cron: a field may hold numbers, names, *, ?, -, / and , only");
            }
        }
        in_field = true;
        i += 1;
    }
    if field != 5 {
        return Err("cron: a pattern has five fields: minute hour day-of-month month day-of-week (no seconds field)");
    }
    Ok(())
}

impl Default for TaskDefinition {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks a task id or queue name: 1–128 characters of letters, digits, `-`, `_`, `.`, `:`, `/`.
pub const fn validate_task_id(id: &str) -> Result<(), &'static str> {
    let bytes = id.as_bytes();
    if bytes.is_empty() {
        return Err("the task id is missing: add `id: \"my-task\"`");
    }
    if bytes.len() > 128 {
        return Err("task ids and queue names are at most 128 characters");
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/')) {
            return Err("task ids and queue names use letters, digits and - _ . : / only");
        }
        i += 1;
    }
    Ok(())
}

/// A task: a typed payload, a typed output, a definition and an async body.
///
/// Define one with [`task!`](crate::task); the worker registers it and the client triggers it,
/// type-checked, through the same type.
pub trait Task: Send + Sync + 'static {
    /// The task id runs are triggered with.
    const ID: &'static str;
    /// Queue, retry policy, limits and durations.
    const DEFINITION: TaskDefinition;
    /// What a run is triggered with.
    type Payload: Serialize + DeserializeOwned + Send + 'static;
    /// What a successful run returns, stored as JSON.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The JSON Schema of [`Task::Payload`], when the task declares `payload_schema: true`:
    /// registered with the task, and every untyped trigger is checked against it.
    fn payload_schema() -> Option<serde_json::Value> {
        None
    }

    /// The app state types the body reads with [`Context::state`] (`state: App` in
    /// [`task!`](crate::task)): a worker without one of them refuses to start.
    fn state_types() -> Vec<crate::StateType> {
        Vec::new()
    }

    /// The body of one attempt.
    fn run(
        &self,
        ctx: Context,
        payload: Self::Payload,
    ) -> impl Future<Output = Result<Self::Output, Error>> + Send;
}

/// The result type of a task body: `Result<T, E>` for any `E` that converts into [`Error`].
pub trait TaskResult {
    /// The success type.
    type Output;
    /// Converts into Kiln's result.
    fn into_task_result(self) -> Result<Self::Output, Error>;
}

impl<T, E: Into<Error>> TaskResult for Result<T, E> {
    type Output = T;

    fn into_task_result(self) -> Result<T, Error> {
        self.map_err(Into::into)
    }
}
