//! The runs this process executes now: their cancellation tokens and why a token fired.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
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
}

impl InFlight {
    pub(crate) fn new(attempt: u32) -> Self {
        Self {
            attempt,
            token: CancellationToken::new(),
            reason: AtomicU8::new(0),
        }
    }

    /// Fires the token for `reason`; the first reason given wins.
    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
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

    pub(crate) fn remove(&self, run_id: Uuid) {
        self.runs.lock().expect("in-flight map").remove(&run_id);
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

    pub(crate) fn stop_all(&self, reason: StopReason) {
        for run in self.runs.lock().expect("in-flight map").values() {
            run.stop(reason);
        }
    }
}
