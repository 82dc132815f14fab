//! The runs this process executes now: their cancellation tokens, why a token fired, and until
//! when this process knows their leases to be held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use kiln_core::CancellationToken;
use tokio::time::Instant;
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
    /// The lease may have expired before the body started (the process stalled): hand it back.
    Fenced = 5,
}

impl StopReason {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Canceled,
            2 => Self::LeaseLost,
            3 => Self::Shutdown,
            4 => Self::TimedOut,
            5 => Self::Fenced,
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
    /// Until when the lease is surely held: measured from when the statement that took or last
    /// extended it was sent, so never later than the database's own expiry.
    lease_until: Mutex<Instant>,
}

impl InFlight {
    pub(crate) fn new(attempt: u32, lease_until: Instant) -> Self {
        Self {
            attempt,
            token: CancellationToken::new(),
            reason: AtomicU8::new(0),
            finished: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            lease_until: Mutex::new(lease_until),
        }
    }

    /// Records that the lease is held until `until` (never moves it back).
    pub(crate) fn extend_lease(&self, until: Instant) {
        let mut held = self.lease_until.lock().expect("lease deadline");
        if until > *held {
            *held = until;
        }
    }

    /// True when the lease may expire within `margin` from now.
    pub(crate) fn lease_expiring(&self, margin: std::time::Duration) -> bool {
        *self.lease_until.lock().expect("lease deadline") <= Instant::now() + margin
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
    pub(crate) fn insert(&self, run_id: Uuid, attempt: u32, lease_until: Instant) -> Arc<InFlight> {
        let entry = Arc::new(InFlight::new(attempt, lease_until));
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

    /// Records that the lease of `(run_id, attempt)` is held until `until`.
    pub(crate) fn extend_lease(&self, run_id: Uuid, attempt: u32, until: Instant) {
        if let Some(run) = self.get(run_id).filter(|run| run.attempt == attempt) {
            run.extend_lease(until);
        }
    }

    /// Stops every unfinished run whose lease may expire within `margin`; returns how many.
    pub(crate) fn stop_expiring(&self, margin: std::time::Duration) -> usize {
        let runs = self.runs.lock().expect("in-flight map");
        let mut stopped = 0;
        for run in runs.values() {
            if !run.is_finished() && !run.token.is_cancelled() && run.lease_expiring(margin) {
                run.stop(StopReason::LeaseLost);
                stopped += 1;
            }
        }
        stopped
    }

    pub(crate) fn stop_all(&self, reason: StopReason) {
        for run in self.runs.lock().expect("in-flight map").values() {
            run.stop(reason);
        }
    }
}
