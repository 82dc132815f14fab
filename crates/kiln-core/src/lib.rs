//! Kiln's vocabulary, shared by the client, the worker and the server: task definitions, run
//! statuses, trigger options, the retry policy and task errors. No I/O happens here.
//!
//! Most users depend on the `kiln` facade crate, which re-exports everything below.

#![forbid(unsafe_code)]

mod children;
mod clock;
mod context;
mod cron;
mod duration;
mod error;
pub mod json_schema;
mod limits;
mod listing;
mod macros;
mod options;
#[doc(hidden)]
pub mod payload_schema;
mod retry;
mod run;
mod run_log;
mod schedule;
mod state;
mod status;
mod task;
mod trace;

pub use children::{
    Awaited, BoxFuture, ChildError, ChildOutcome, ChildResult, ChildRun, ChildRuntime,
    ChildTrigger, Detached,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::{Context, RunInfo};
pub use cron::{parse_timezone, CronError, CronSchedule};
pub use duration::{parse_duration, DurationError};
pub use error::{Error, ErrorKind, ErrorRecord, Result, ResultExt};
pub use limits::{
    check_json, check_key, check_storable, LimitError, MAX_ATTEMPTS_LIMIT, MAX_KEY_BYTES,
    MAX_OPTION_DURATION, MAX_PAYLOAD_BYTES,
};
pub use listing::{
    parse_status_names, CancelOutcome, ChildCounts, KeyLoad, QueueRow, RunFilter, RunPage,
    DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};
pub use options::{
    BatchItem, Delay, TriggerOptions, DEFAULT_IDEMPOTENCY_KEY_TTL, MAX_BATCH_SIZE, MAX_TAGS,
};
pub use retry::{
    RetryPolicy, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_TIMEOUT, DEFAULT_MIN_TIMEOUT,
    DEFAULT_RETRY_FACTOR,
};
pub use run::{Attempt, Run};
pub use run_log::{LogLevel, LogLine, LogSink, RunLog};
pub use schedule::{Schedule, ScheduleTick, UPCOMING_TICKS};
/// `schemars`, for `#[derive(kiln::schemars::JsonSchema)]` on payload types.
#[cfg(feature = "schema")]
pub use schemars;
#[doc(hidden)]
pub use serde_json as __serde_json;
pub use state::{StateType, States};
pub use status::{AttemptOutcome, RunStatus, UnknownStatus};
pub use task::{
    validate_cron_shape, validate_task_id, CronDefinition, QueueDefinition, Task, TaskDefinition,
    TaskResult,
};
pub use tokio_util::sync::CancellationToken;
pub use trace::{
    attach_traceparent, current_traceparent, is_valid_traceparent, set_trace_propagator,
    TracePropagator,
};
/// The crates Kiln's public types are built on (`DateTime<Utc>`, `Tz`, `Uuid`, JSON values),
/// re-exported so that an app uses the very versions Kiln does without adding them by hand.
pub use {chrono, chrono_tz, serde_json, uuid};
