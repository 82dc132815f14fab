//! Self-fencing: a worker that cannot show its leases are still held stops acting on them. A
//! process that froze (a long GC-like pause, SIGSTOP, a VM migration) past its leases finds, when
//! it resumes, that other workers may already run those runs: it cancels its bodies at once,
//! starts no body whose lease may have expired, and claims nothing until a heartbeat succeeds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::inflight::InFlightRuns;

/// A run's body is stopped when its lease is within `lease / SELF_FENCE_DIVISOR` of expiring
/// (measured from when the statement that last extended it was sent): with a 30 s lease, 24 s
/// after its last successful extension.
pub const SELF_FENCE_DIVISOR: u32 = 5;

/// The safety margin for `lease`.
pub(crate) fn fence_margin(lease: Duration) -> Duration {
    lease / SELF_FENCE_DIVISOR
}

/// Whether the worker is fenced: set when it stopped runs whose leases were expiring, cleared
/// when a database call of the heartbeat succeeds.
#[derive(Debug, Default)]
pub(crate) struct Fence {
    raised: AtomicBool,
    lowered: Notify,
}

impl Fence {
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
    }

    pub(crate) fn lower(&self) {
        if self.raised.swap(false, Ordering::AcqRel) {
            tracing::info!("a heartbeat succeeded again; claiming resumes");
            self.lowered.notify_waiters();
        }
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves when the fence is lowered (or at once if it is not raised).
    pub(crate) async fn lowered(&self) {
        let lowered = self.lowered.notified();
        if self.is_raised() {
            lowered.await;
        }
    }
}

/// Checks the in-flight runs' leases often, and stops (and fences the worker) when one may be
/// about to expire.
pub(crate) async fn watch_leases(
    inflight: InFlightRuns,
    fence: std::sync::Arc<Fence>,
    lease: Duration,
    stop: CancellationToken,
) {
    let margin = fence_margin(lease);
    let tick = (lease / 20).clamp(Duration::from_millis(10), Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let stopped = inflight.stop_expiring(margin);
        if stopped > 0 {
            tracing::warn!(
                runs = stopped,
                "self-fencing: no heartbeat extended these leases in time (the process stalled \
                 or lost the database); stopping their bodies and claiming nothing until a \
                 heartbeat succeeds"
            );
            fence.raise();
        }
    }
}
