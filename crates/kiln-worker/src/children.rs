//! Child runs from inside a run: the worker's side of `ctx.trigger` and `ctx.trigger_and_wait`.
//!
//! A parent that waits gives its concurrency slot back twice: in Postgres (its lease moves to
//! `kiln.waits`, so its queue's limits no longer count it) and in this process (its local slot
//! is released). It keeps its future here and its wait alive by heartbeat. When its children
//! have all finished (woken by `kiln_run_finished`, or by the poll), it takes a local slot and
//! then a queue slot again, under the queue's limits, and carries on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_core::{
    BoxFuture, ChildOutcome, ChildRun, ChildRuntime, Error, ErrorKind, TaskDefinition,
    TriggerOptions,
};
use kiln_store::run::{run_insert_many, RunSpec};
use kiln_store::wait::{wait_begin, wait_finished_children, wait_resume, Resume};
use kiln_store::Pool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{FIRST_RESUME_BACKOFF, MAX_RESUME_BACKOFF};
use crate::inflight::InFlight;
use kiln_client::backoff::Backoff;

/// Parents waiting in this process, woken when one of their children finishes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Waiters {
    parents: Arc<Mutex<HashMap<Uuid, Arc<Notify>>>>,
}

impl Waiters {
    fn register(&self, run_id: Uuid) -> Arc<Notify> {
        Arc::clone(
            self.parents
                .lock()
                .expect("waiters")
                .entry(run_id)
                .or_default(),
        )
    }

    fn unregister(&self, run_id: Uuid) {
        self.parents.lock().expect("waiters").remove(&run_id);
    }

    /// A child of `run_id` finished.
    pub(crate) fn wake(&self, run_id: Uuid) {
        if let Some(notify) = self.parents.lock().expect("waiters").get(&run_id) {
            notify.notify_one();
        }
    }

    /// Notifications may have been missed (the listener reconnected): every parent re-checks.
    pub(crate) fn wake_all(&self) {
        for notify in self.parents.lock().expect("waiters").values() {
            notify.notify_one();
        }
    }
}

/// One run's place among this process's concurrency slots, which it gives up while it waits.
#[derive(Debug)]
pub(crate) struct LocalSlot {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    slots: Arc<Semaphore>,
    freed: Arc<Notify>,
}

impl LocalSlot {
    pub(crate) fn new(
        permit: OwnedSemaphorePermit,
        slots: Arc<Semaphore>,
        freed: Arc<Notify>,
    ) -> Self {
        Self {
            permit: Mutex::new(Some(permit)),
            slots,
            freed,
        }
    }

    /// Gives the slot back (the run is waiting, or done).
    pub(crate) fn release(&self) {
        let permit = self.permit.lock().expect("slot").take();
        if permit.is_some() {
            drop(permit);
            self.freed.notify_one();
        }
    }

    async fn reacquire(&self) {
        if self.permit.lock().expect("slot").is_some() {
            return;
        }
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed");
        *self.permit.lock().expect("slot") = Some(permit);
    }
}

/// What one attempt uses to trigger and wait for children.
pub(crate) struct AttemptChildren {
    pub(crate) pool: Pool,
    pub(crate) run_id: Uuid,
    pub(crate) attempt: u32,
    pub(crate) worker_id: Arc<str>,
    pub(crate) lease: Duration,
    pub(crate) poll: Duration,
    pub(crate) waiters: Waiters,
    pub(crate) slot: Arc<LocalSlot>,
    pub(crate) token: CancellationToken,
    pub(crate) flight: Arc<InFlight>,
}

/// Unregisters a waiting parent however its wait ends.
struct Registered<'a>(&'a Waiters, Uuid);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.unregister(self.1);
    }
}

fn store_error(what: &str, error: kiln_store::StoreError) -> Error {
    Error::msg(format!("{what}: {error}"))
}

impl AttemptChildren {
    /// Reads which pending children finished; removes them from `pending`.
    async fn collect(
        &self,
        pending: &mut Vec<Uuid>,
        done: &mut HashMap<Uuid, ChildOutcome>,
    ) -> Result<(), Error> {
        let finished = wait_finished_children(&self.pool, pending)
            .await
            .map_err(|e| store_error("reading child runs", e))?;
        for outcome in finished {
            done.insert(outcome.run_id, outcome);
        }
        pending.retain(|id| !done.contains_key(id));
        Ok(())
    }

    /// Takes the lease back regardless of limits, so the attempt's end can be recorded.
    async fn give_back(&self) {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        for _ in 0..3 {
            match wait_resume(&self.pool, self.run_id, self.attempt, self.lease, true).await {
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(%error, "taking a waiting run's lease back failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    fn stopped(&self) -> Error {
        Error::with_kind(
            ErrorKind::Canceled,
            "the run was stopped while it waited for its children",
        )
    }

    async fn wait_for(&self, runs: Vec<Uuid>) -> Result<Vec<ChildOutcome>, Error> {
        let notify = self.waiters.register(self.run_id);
        let _registered = Registered(&self.waiters, self.run_id);
        let mut pending = runs.clone();
        pending.sort_unstable();
        pending.dedup();
        let mut done = HashMap::with_capacity(pending.len());
        self.collect(&mut pending, &mut done).await?;

        if !pending.is_empty() {
            let began = wait_begin(&self.pool, self.run_id, self.attempt, &self.worker_id)
                .await
                .map_err(|e| store_error("starting to wait", e))?;
            if !began {
                return Err(Error::with_kind(
                    ErrorKind::Crashed,
                    "the run's lease was lost before it could wait for its children",
                ));
            }
            self.slot.release();
            self.flight.set_waiting(true);
            tracing::debug!(children = pending.len(), "waiting for child runs");
            while !pending.is_empty() {
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep(self.poll) => {}
                    _ = self.token.cancelled() => {
                        self.give_back().await;
                        self.flight.set_waiting(false);
                        return Err(self.stopped());
                    }
                }
                if let Err(error) = self.collect(&mut pending, &mut done).await {
                    tracing::warn!(%error, "checking child runs failed; will retry");
                }
            }
            self.resume().await?;
            tracing::debug!("child runs finished; resumed");
        }
        Ok(runs
            .iter()
            .map(|id| done.get(id).cloned().expect("every child finished"))
            .collect())
    }

    /// Takes a local slot, then a slot of the queue (within its limits), again.
    async fn resume(&self) -> Result<(), Error> {
        let result = self.take_slots_again().await;
        self.flight.set_waiting(false);
        result
    }

    async fn take_slots_again(&self) -> Result<(), Error> {
        tokio::select! {
            _ = self.slot.reacquire() => {}
            _ = self.token.cancelled() => {
                self.give_back().await;
                return Err(self.stopped());
            }
        }
        let mut backoff = Backoff::capped(FIRST_RESUME_BACKOFF, MAX_RESUME_BACKOFF);
        loop {
            let sent = tokio::time::Instant::now();
            match wait_resume(&self.pool, self.run_id, self.attempt, self.lease, false).await {
                Ok(Resume::Resumed) => {
                    self.flight.extend_lease(sent + self.lease);
                    return Ok(());
                }
                Ok(Resume::Lost) => {
                    return Err(Error::with_kind(
                        ErrorKind::Crashed,
                        "the run's wait expired (its worker stalled) and was rescued",
                    ))
                }
                Ok(Resume::Full) => {}
                Err(error) => {
                    tracing::warn!(%error, "resuming after the children failed; retrying")
                }
            }
            if !backoff.wait(&self.token).await {
                self.give_back().await;
                return Err(self.stopped());
            }
        }
    }
}

impl ChildRuntime for AttemptChildren {
    fn trigger(
        &self,
        task_id: &'static str,
        definition: &'static TaskDefinition,
        items: Vec<(serde_json::Value, TriggerOptions)>,
    ) -> BoxFuture<'_, Result<Vec<ChildRun>, Error>> {
        Box::pin(async move {
            let allow = items.iter().any(|(_, o)| o.allow_unregistered);
            let specs: Vec<RunSpec> = items
                .into_iter()
                .map(|(payload, options)| RunSpec { payload, options })
                .collect();
            let runs = run_insert_many(&self.pool, task_id, Some(definition), &specs, allow)
                .await
                .map_err(|e| store_error("triggering child runs", e))?;
            Ok(runs
                .into_iter()
                .map(|r| ChildRun {
                    id: r.id,
                    is_cached: r.is_cached,
                })
                .collect())
        })
    }

    fn wait(&self, runs: Vec<Uuid>) -> BoxFuture<'_, Result<Vec<ChildOutcome>, Error>> {
        Box::pin(self.wait_for(runs))
    }
}
