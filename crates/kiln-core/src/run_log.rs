//! `ctx.log()`: log lines a task body writes, kept with its run and attempt, shown by `kiln runs
//! logs`, the API and the dashboard.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How severe a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the body survived.
    Warn,
    /// A failure.
    Error,
}

impl LogLevel {
    /// The level's name as stored (`info`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "trace" => Ok(Self::Trace),
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            other => Err(format!(
                "unknown log level {other:?}: use trace, debug, info, warn or error"
            )),
        }
    }
}

/// Where a run's log lines go: the worker's buffer, which writes them in batches.
pub trait LogSink: Send + Sync + 'static {
    /// Keeps one line of the current attempt (or drops it past the attempt's cap).
    fn write(&self, level: LogLevel, message: String, fields: serde_json::Value);
}

/// Writes log lines kept with the run: `ctx.log().info("synced")`,
/// `ctx.log().info_with("synced", json!({"events": 12}))`. Outside a worker (a body called
/// directly in a test) the lines go nowhere.
#[derive(Clone, Default)]
pub struct RunLog {
    sink: Option<Arc<dyn LogSink>>,
}

impl std::fmt::Debug for RunLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLog")
            .field("kept", &self.sink.is_some())
            .finish()
    }
}

impl RunLog {
    pub(crate) fn new(sink: Option<Arc<dyn LogSink>>) -> Self {
        Self { sink }
    }

    /// A line at `level` with structured `fields` (anything that serializes to a JSON object;
    /// other values are kept under `"value"`).
    pub fn line(&self, level: LogLevel, message: impl Into<String>, fields: impl Serialize) {
        let Some(sink) = &self.sink else { return };
        let fields = match serde_json::to_value(fields) {
            Ok(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
            Ok(object @ serde_json::Value::Object(_)) => object,
            Ok(other) => serde_json::json!({ "value": other }),
            Err(e) => serde_json::json!({ "fields_error": e.to_string() }),
        };
        sink.write(level, message.into(), fields);
    }

    /// A debug line.
    pub fn debug(&self, message: impl Into<String>) {
        self.line(LogLevel::Debug, message, ());
    }

    /// An info line.
    pub fn info(&self, message: impl Into<String>) {
        self.line(LogLevel::Info, message, ());
    }

    /// A warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.line(LogLevel::Warn, message, ());
    }

    /// An error line.
    pub fn error(&self, message: impl Into<String>) {
        self.line(LogLevel::Error, message, ());
    }

    /// An info line with fields.
    pub fn info_with(&self, message: impl Into<String>, fields: impl Serialize) {
        self.line(LogLevel::Info, message, fields);
    }

    /// A warning with fields.
    pub fn warn_with(&self, message: impl Into<String>, fields: impl Serialize) {
        self.line(LogLevel::Warn, message, fields);
    }

    /// An error line with fields.
    pub fn error_with(&self, message: impl Into<String>, fields: impl Serialize) {
        self.line(LogLevel::Error, message, fields);
    }
}

/// One stored log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// The attempt that wrote it.
    pub attempt: u32,
    /// Its position within the attempt, from 1.
    pub seq: u32,
    /// When it was written.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Its level.
    pub level: LogLevel,
    /// Its message.
    pub message: String,
    /// Its structured fields (a JSON object).
    pub fields: serde_json::Value,
}
