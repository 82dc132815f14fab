//! The per-process buffer of run log lines: bodies append to it (no I/O on their path), and a
//! flusher writes what gathered in one statement every [`WorkerConfig::log_flush_interval`], or
//! sooner when lines pile up or the completer asks. The completer waits until every line written
//! before its batch of outcomes was stored (or its store was tried) before recording them, so a
//! finished run's lines are stored when its status says it finished; meanwhile the flusher
//! already writes the next lines, on its own connection. Each attempt keeps at most `log_max_lines` lines and
//! `log_max_bytes` bytes; past either, one marker line says the rest was dropped.
//!
//! [`WorkerConfig::log_flush_interval`]: crate::WorkerConfig::log_flush_interval

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use kiln_core::{LogLevel, LogSink};
use kiln_store::run_log::{run_log_insert_many, NewLogLine};
use kiln_store::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Lines waiting in the buffer at most; past it (the database is unreachable for long), the
/// oldest are dropped with a warning rather than growing without bound.
const MAX_BUFFERED_LINES: usize = 100_000;
/// A flush is started early once this many lines wait.
const FLUSH_EARLY_AT: usize = 1_000;
/// Lines stored per statement at most (a flush of more runs several statements).
const LINES_PER_STATEMENT: usize = 10_000;

/// Lines waiting, and how many lines were ever pushed: the line at the back is line `pushed`,
/// counted from 1 in the order lines were written.
struct Pending {
    lines: VecDeque<NewLogLine>,
    pushed: u64,
}

/// The process's buffer of lines not yet stored.
pub(crate) struct LogBuffer {
    pool: Pool,
    pending: Mutex<Pending>,
    /// Serializes flushes, so lines are stored in the order they were written.
    flushing: tokio::sync::Mutex<()>,
    /// Wakes the flusher early: lines piled up, or the completer waits for some.
    wake: Notify,
    /// The last line whose store was tried (stored, or failed and put back for the next
    /// flush): every line up to it was tried as well.
    tried: tokio::sync::watch::Sender<u64>,
    warned_full: AtomicBool,
}

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer").finish_non_exhaustive()
    }
}

impl LogBuffer {
    pub(crate) fn new(pool: Pool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            pending: Mutex::new(Pending {
                lines: VecDeque::new(),
                pushed: 0,
            }),
            flushing: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            tried: tokio::sync::watch::Sender::new(0),
            warned_full: AtomicBool::new(false),
        })
    }

    fn push(&self, line: NewLogLine) {
        let dropped = {
            let mut pending = self.pending.lock().expect("log buffer");
            let dropped = pending.lines.len() >= MAX_BUFFERED_LINES;
            if dropped {
                pending.lines.pop_front();
            }
            pending.lines.push_back(line);
            pending.pushed += 1;
            if pending.lines.len() == FLUSH_EARLY_AT {
                self.wake.notify_one();
            }
            dropped
        };
        // Warned once, and outside the lock: inside a body, the log layer would route this very
        // event back into the buffer.
        if dropped && !self.warned_full.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "run log buffer full (the database is slow or unreachable); dropping the oldest lines"
            );
        }
    }

    /// Stores every buffered line, in statements of at most [`LINES_PER_STATEMENT`] lines, and
    /// goes on while lines keep arriving. On failure the unstored lines go back to the front of
    /// the buffer, for the next flush.
    pub(crate) async fn flush(&self) {
        let _turn = self.flushing.lock().await;
        loop {
            let (batch, last): (Vec<NewLogLine>, u64) = {
                let mut pending = self.pending.lock().expect("log buffer");
                let n = pending.lines.len().min(LINES_PER_STATEMENT);
                let batch = pending.lines.drain(..n).collect();
                (batch, pending.pushed - pending.lines.len() as u64)
            };
            if batch.is_empty() {
                return;
            }
            let stored = run_log_insert_many(&self.pool, &batch).await;
            if let Err(error) = &stored {
                tracing::warn!(%error, lines = batch.len(), "storing run log lines failed; will retry");
                let mut pending = self.pending.lock().expect("log buffer");
                for line in batch.into_iter().rev() {
                    pending.lines.push_front(line);
                }
            }
            self.tried.send_if_modified(|tried| {
                let moved = last > *tried;
                *tried = (*tried).max(last);
                moved
            });
            if stored.is_err() {
                return;
            }
        }
    }

    /// How many lines were ever pushed: the number of the latest line.
    pub(crate) fn pushed(&self) -> u64 {
        self.pending.lock().expect("log buffer").pushed
    }

    /// Waits until the store of every line up to line `through` was tried, waking the flusher
    /// for them. A store that failed counts as tried: the lines wait in the buffer for the next
    /// flush, and what waits here (the completer) is not held up by a database that refuses them.
    pub(crate) async fn tried_through(&self, through: u64) {
        let mut tried = self.tried.subscribe();
        if *tried.borrow() >= through {
            return;
        }
        self.wake.notify_one();
        // The sender lives as long as `self`.
        let _ = tried.wait_for(|tried| *tried >= through).await;
    }

    /// The log of one attempt, with its caps.
    pub(crate) fn attempt(
        self: &Arc<Self>,
        run_id: Uuid,
        attempt: u32,
        max_lines: u32,
        max_bytes: usize,
    ) -> Arc<AttemptLog> {
        Arc::new(AttemptLog {
            buffer: Arc::clone(self),
            run_id,
            attempt,
            max_lines,
            max_bytes,
            seq: AtomicU32::new(0),
            bytes: AtomicUsize::new(0),
            truncated: AtomicBool::new(false),
        })
    }
}

/// Flushes the buffer every `interval` (sooner when it fills) until `stop`, then once more.
pub(crate) async fn flush_logs(
    buffer: Arc<LogBuffer>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
            _ = buffer.wake.notified() => {}
        }
        buffer.flush().await;
    }
    buffer.flush().await;
}

/// One attempt's log: numbers its lines and applies the caps.
pub(crate) struct AttemptLog {
    buffer: Arc<LogBuffer>,
    run_id: Uuid,
    attempt: u32,
    max_lines: u32,
    max_bytes: usize,
    seq: AtomicU32,
    bytes: AtomicUsize,
    truncated: AtomicBool,
}

impl AttemptLog {
    fn keep(&self, level: LogLevel, message: String, fields: String) {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        self.buffer.push(NewLogLine {
            run_id: self.run_id,
            attempt: self.attempt,
            seq,
            at: Utc::now(),
            level,
            message,
            fields,
        });
    }
}

impl LogSink for AttemptLog {
    fn write(&self, level: LogLevel, mut message: String, fields: serde_json::Value) {
        if self.truncated.load(Ordering::Acquire) {
            return;
        }
        // Postgres cannot store \u0000 in text or jsonb.
        if message.contains('\0') {
            message = message.replace('\0', "\u{FFFD}");
        }
        // Serialized once, here: the size cap counts it and the store writes it as it is.
        let mut fields = fields.to_string();
        if fields.contains("\\u0000") {
            fields = r#"{"fields_error":"the fields held \\u0000 and were dropped"}"#.to_owned();
        }
        let size = message.len() + fields.len();
        let bytes = self.bytes.fetch_add(size, Ordering::AcqRel) + size;
        let lines = self.seq.load(Ordering::Acquire);
        if lines >= self.max_lines || bytes > self.max_bytes {
            if !self.truncated.swap(true, Ordering::AcqRel) {
                self.keep(
                    LogLevel::Warn,
                    format!(
                        "log truncated: this attempt reached its cap of {} lines or {} bytes; \
                         later lines were dropped",
                        self.max_lines, self.max_bytes
                    ),
                    r#"{"kiln":"truncated"}"#.to_owned(),
                );
            }
            return;
        }
        self.keep(level, message, fields);
    }
}
