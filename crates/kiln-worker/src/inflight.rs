//! The runs this process executes now: their cancellation tokens and why a token fired.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use kiln_core::CancellationToken;
use uuid::Uuid;

/// Why a run's token fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum StopReason {
    None = 0,
    Canceled = 1,
    LeaseLost = 2,
    Shutdown = 3,
    TimedOut = 4,
}

impl StopReason {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Canceled,
            2 => Self::LeaseLost,
            3 => Self::Shutdown,
            4 => Self::TimedOut,
            _ => Self::None,
        }
    }
}

/// One executing run.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) attempt: u32,
    pub(crate) token: CancellationToken,
    reason: AtomicU8,
    /// The body has ended; its outcome waits for the completer.
    finished: AtomicBool,
    /// The body waits on child runs (its slot given back).
    waiting: AtomicBool,
}

impl InFlight {
    pub(crate) fn new(attempt: u32) -> Self {
        Self {
            attempt,
            token: CancellationToken::new(),
            reason: AtomicU8::new(0),
            finished: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
        }
    }

    /// Fires the token for `reason`; the first reason given wins.
    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// Records that the body ended (its outcome is on its way to the completer).
    pub(crate) fn mark_finished(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// True once the body ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Records whether the body waits on child runs.
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Release);
    }

    pub(crate) fn reason(&self) -> StopReason {
        StopReason::from_u8(self.reason.load(Ordering::Acquire))
    }
}

/// Shared map of executing runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct InFlightRuns {
    runs: Arc<Mutex<HashMap<Uuid, Arc<InFlight>>>>,
}

impl InFlightRuns {
    pub(crate) fn insert(&self, run_id: Uuid, attempt: u32) -> Arc<InFlight> {
        let entry = Arc::new(InFlight::new(attempt));
        self.runs
            .lock()
            .expect("in-flight map")
            .insert(run_id, Arc::clone(&entry));
        entry
    }

    /// Forgets a run once its outcome is recorded, unless the entry is a newer attempt (a retry
    /// this worker already claimed again).
    pub(crate) fn remove_attempt(&self, run_id: Uuid, attempt: u32) {
        let mut runs = self.runs.lock().expect("in-flight map");
        if runs.get(&run_id).is_some_and(|run| run.attempt == attempt) {
            runs.remove(&run_id);
        }
    }

    pub(crate) fn get(&self, run_id: Uuid) -> Option<Arc<InFlight>> {
        self.runs
            .lock()
            .expect("in-flight map")
            .get(&run_id)
            .cloned()
    }

    pub(crate) fn held(&self) -> Vec<(Uuid, u32)> {
        self.runs
            .lock()
            .expect("in-flight map")
            .iter()
            .map(|(id, r)| (*id, r.attempt))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.runs.lock().expect("in-flight map").len()
    }

    /// Stops the runs that wait on children (a draining worker hands them back at once: they
    /// may wait far longer than the shutdown grace, and re-attach to their children when retried).
    pub(crate) fn stop_waiting(&self, reason: StopReason) -> usize {
        let runs = self.runs.lock().expect("in-flight map");
        let waiting: Vec<_> = runs
            .values()
            .filter(|r| r.waiting.load(Ordering::Acquire))
            .collect();
        for run in &waiting {
            run.stop(reason);
        }
        waiting.len()
    }

    pub(crate) fn stop_all(&self, reason: StopReason) {
        for run in self.runs.lock().expect("in-flight map").values() {
            run.stop(reason);
        }
    }
}
