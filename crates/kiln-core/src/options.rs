//! Options a caller may set when triggering a run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Most tags a run may carry, by default (`kiln.limits.max_tags`).
pub const MAX_TAGS: usize = 10;
/// Most runs one batch trigger may insert.
pub const MAX_BATCH_SIZE: usize = 1_000;
/// How long an idempotency key dedupes when no ttl is given: 30 days.
pub const DEFAULT_IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// When a delayed run becomes available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// This long after the trigger.
    For(Duration),
    /// At this instant.
    Until(DateTime<Utc>),
}

/// Options for one triggered run (Trigger.dev's semantics). Unset options take the task's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerOptions {
    /// Gives the run its own copy of the queue (and its limit) per key value, e.g. a workspace id.
    pub concurrency_key: Option<String>,
    /// A second trigger with a live key returns the existing run instead of a new one.
    pub idempotency_key: Option<String>,
    /// How long the idempotency key dedupes; 30 days by default. A run that ends failed,
    /// timed_out, crashed, expired or system_failure releases its key at once; a completed or
    /// canceled run keeps it until the ttl.
    pub idempotency_key_ttl: Option<Duration>,
    /// Start no earlier than this.
    pub delay: Option<Delay>,
    /// Expire the run if it has not started this long after it became available.
    pub ttl: Option<Duration>,
    /// Head start in the queue order (whole seconds are used).
    pub priority: Option<Duration>,
    /// Up to 10 tags for finding the run later.
    pub tags: Vec<String>,
    /// Free-form JSON kept with the run.
    pub metadata: Option<serde_json::Value>,
    /// Attempts in all, overriding the task's retry policy.
    pub max_attempts: Option<u32>,
    /// Maximum duration of one attempt, overriding the task's.
    pub max_duration: Option<Duration>,
    /// Run in this queue instead of the task's.
    pub queue: Option<String>,
    /// Trigger even if no worker has ever registered the task id.
    pub allow_unregistered: bool,
    /// The run that triggers this one (set by the worker for child runs).
    pub parent_run_id: Option<Uuid>,
    /// The root of the run tree (set by the worker for child runs).
    pub root_run_id: Option<Uuid>,
    /// The run this one replays (set by `runs.replay`).
    pub replay_of: Option<Uuid>,
    /// The W3C trace context of the trigger, stored with the run so that its span links back to
    /// it. Unset, a trigger from Rust takes the current span's, through the installed
    /// [`TracePropagator`](crate::TracePropagator).
    pub traceparent: Option<String>,
}

impl TriggerOptions {
    /// No options: the task's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the concurrency key.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets how long the idempotency key dedupes.
    pub fn idempotency_key_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_key_ttl = Some(ttl);
        self
    }

    /// Delays the run by this long.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(Delay::For(delay));
        self
    }

    /// Delays the run until this instant.
    pub fn delay_until(mut self, at: DateTime<Utc>) -> Self {
        self.delay = Some(Delay::Until(at));
        self
    }

    /// Sets the ttl.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the head start in the queue order.
    pub fn priority(mut self, head_start: Duration) -> Self {
        self.priority = Some(head_start);
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the metadata.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets the trace context (a W3C `traceparent`) the run links back to.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Sets the attempts in all.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Sets the maximum duration of one attempt.
    pub fn max_duration(mut self, limit: Duration) -> Self {
        self.max_duration = Some(limit);
        self
    }

    /// Runs in this queue instead of the task's.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Allows triggering a task id no worker has registered yet.
    pub fn allow_unregistered(mut self) -> Self {
        self.allow_unregistered = true;
        self
    }

    /// Checks what must be checked before the options are sent: strings Postgres cannot store
    /// (`\u0000`). Everything else (ranges, sizes, tag counts, queue names) is checked by the
    /// one validator every trigger path goes through, `kiln.trigger_runs`, against `kiln.limits`.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("concurrency_key", &self.concurrency_key),
            ("idempotency_key", &self.idempotency_key),
            ("queue", &self.queue),
        ] {
            if let Some(value) = value {
                crate::check_storable(name, value)?;
            }
        }
        for (i, tag) in self.tags.iter().enumerate() {
            crate::check_storable(&format!("tags[{i}]"), tag)?;
        }
        if let Some(metadata) = &self.metadata {
            crate::check_json("metadata", metadata, usize::MAX).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// One item of a batch trigger: a payload and its options.
#[derive(Debug, Clone)]
pub struct BatchItem<P> {
    /// The payload.
    pub payload: P,
    /// Its options.
    pub options: TriggerOptions,
}

impl<P> BatchItem<P> {
    /// An item with default options.
    pub fn new(payload: P) -> Self {
        Self {
            payload,
            options: TriggerOptions::default(),
        }
    }

    /// An item with these options.
    pub fn with_options(payload: P, options: TriggerOptions) -> Self {
        Self { payload, options }
    }

    // Options chain on the item: `BatchItem::new(payload).concurrency_key("ws_1")`.
    crate::__kiln_forward_trigger_options!();
}

/// Setters on a trigger builder (any struct with an `options: TriggerOptions` field) that forward
/// to [`TriggerOptions`]'s, so options chain on the trigger itself. Used by the client's and the
/// context's trigger builders.
#[doc(hidden)]
#[macro_export]
macro_rules! __kiln_forward_trigger_options {
    () => {
        $crate::__kiln_forward_trigger_options! {
            /// Gives the run its own copy of the queue's limit for this key (e.g. a workspace id).
            concurrency_key(key: impl Into<String>);
            /// A second trigger with this live key returns the existing run.
            idempotency_key(key: impl Into<String>);
            /// How long the idempotency key dedupes (30 days by default).
            idempotency_key_ttl(ttl: ::std::time::Duration);
            /// Starts the run no earlier than this long from now.
            delay(delay: ::std::time::Duration);
            /// Starts the run no earlier than this instant.
            delay_until(at: ::chrono::DateTime<::chrono::Utc>);
            /// Expires the run if it has not started this long after it became available.
            ttl(ttl: ::std::time::Duration);
            /// Head start in the queue order (whole seconds).
            priority(head_start: ::std::time::Duration);
            /// Adds a tag (at most 10).
            tag(tag: impl Into<String>);
            /// Free-form JSON kept with the run.
            metadata(metadata: ::serde_json::Value);
            /// Attempts in all, overriding the task's retry policy.
            max_attempts(attempts: u32);
            /// Maximum duration of one attempt, overriding the task's.
            max_duration(limit: ::std::time::Duration);
            /// Runs in this queue instead of the task's.
            queue(queue: impl Into<String>);
            /// The trace context (a W3C `traceparent`) the run links back to.
            traceparent(traceparent: impl Into<String>);
        }
    };
    ($($(#[$doc:meta])* $name:ident($arg:ident: $ty:ty);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $arg: $ty) -> Self {
                self.options = self.options.$name($arg);
                self
            }
        )*
    };
}
