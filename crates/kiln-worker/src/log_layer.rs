//! `kiln::log_layer()`: a `tracing` layer that keeps the events a task body emits (with
//! `tracing::info!` and friends) in the run's log, beside the lines of `ctx.log()`.
//!
//! A library cannot add a layer to a global subscriber the app already installed, so the app
//! adds this one to its own: `tracing_subscriber::registry().with(fmt::layer()).with(kiln::log_layer())`.
//! `kiln dev` does. Events are kept when they happen in the task a worker runs the body in (not
//! in tasks the body spawns), at `info` and above by default; statement logs of `sqlx` are left
//! out (they would repeat every query the body makes).

use std::fmt::Write as _;
use std::sync::Arc;

use kiln_core::{LogLevel, LogSink};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::logs::AttemptLog;

tokio::task_local! {
    /// The log of the attempt whose body runs in the current task.
    pub(crate) static CURRENT_RUN_LOG: Arc<AttemptLog>;
}

/// The layer returned by [`log_layer`].
#[derive(Debug, Clone)]
pub struct RunLogLayer {
    min_level: Level,
}

/// A `tracing` layer that keeps events emitted inside a task body in the run's log. Add it to
/// your subscriber once, next to your own output layer.
pub fn log_layer() -> RunLogLayer {
    RunLogLayer {
        min_level: Level::INFO,
    }
}

impl RunLogLayer {
    /// Keeps events at `level` and above (default `INFO`).
    pub fn with_min_level(mut self, level: Level) -> Self {
        self.min_level = level;
        self
    }
}

fn level_of(level: &Level) -> LogLevel {
    match *level {
        Level::TRACE => LogLevel::Trace,
        Level::DEBUG => LogLevel::Debug,
        Level::INFO => LogLevel::Info,
        Level::WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}

/// Gathers an event's message and fields.
#[derive(Default)]
struct Fields {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.insert(field.name().to_owned(), value.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_owned(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .insert(field.name().to_owned(), format!("{value:?}").into());
        }
    }
}

impl<S: Subscriber> Layer<S> for RunLogLayer {
    // Events below the layer's level stay disabled at their callsites, so installing the layer
    // costs nothing for them (the worker's own debug events among them).
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if *metadata.level() <= self.min_level && !metadata.target().starts_with("sqlx") {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        *metadata.level() <= self.min_level && !metadata.target().starts_with("sqlx")
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if *metadata.level() > self.min_level || metadata.target().starts_with("sqlx") {
            return;
        }
        let _ = CURRENT_RUN_LOG.try_with(|log| {
            let mut fields = Fields::default();
            event.record(&mut fields);
            log.write(
                level_of(metadata.level()),
                fields.message,
                serde_json::Value::Object(fields.fields),
            );
        });
    }
}
