//! Child runs triggered from inside a run: `ctx.trigger`, `ctx.batch_trigger`,
//! `ctx.trigger_and_wait` and `ctx.batch_trigger_and_wait`.
//!
//! Every child records its parent and the root of the tree. Unless the caller gives its own
//! idempotency key, each child gets one derived from the parent run and the order of the calls
//! that triggered it (`<parent run id>:<call>` or `<parent run id>:<call>:<item>`), so a parent
//! retried after a crash re-attaches to the children it had already started instead of starting
//! them again. A body that makes the same calls in the same order gets the same children.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{BatchItem, Context, Error, ErrorKind, ErrorRecord, RunStatus, Task, TaskDefinition};
use crate::{TriggerOptions, MAX_BATCH_SIZE};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A child run as triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRun {
    /// The child's run id.
    pub id: Uuid,
    /// True when the child already existed (a retried parent re-attached to it).
    pub is_cached: bool,
}

/// How a child run ended, as read back by a waiting parent.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildOutcome {
    /// The child's run id.
    pub run_id: Uuid,
    /// Its final status.
    pub status: RunStatus,
    /// Its output, when completed.
    pub output: Option<serde_json::Value>,
    /// Its error, when it did not complete.
    pub error: Option<ErrorRecord>,
}

/// A child run that did not complete: its id, final status and error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("child run {run_id} ended {status}: {}", error_message(.error))]
pub struct ChildError {
    /// The child's run id.
    pub run_id: Uuid,
    /// Its final status (failed, canceled, crashed, timed_out, expired, system_failure).
    pub status: RunStatus,
    /// The error it ended with.
    pub error: Option<ErrorRecord>,
}

fn error_message(error: &Option<ErrorRecord>) -> &str {
    error
        .as_ref()
        .map_or("no error recorded", |e| e.message.as_str())
}

/// A child's typed result: its output, or why it did not complete.
pub type ChildResult<O> = std::result::Result<O, ChildError>;

impl ChildOutcome {
    /// Decodes the outcome into the child task's typed result.
    pub fn into_result<O: serde::de::DeserializeOwned>(self) -> Result<ChildResult<O>, Error> {
        if self.status == RunStatus::Completed {
            let output = self.output.unwrap_or(serde_json::Value::Null);
            return serde_json::from_value(output).map(Ok).map_err(|e| {
                Error::msg(format!(
                    "child run {}'s output does not decode into the expected type: {e}",
                    self.run_id
                ))
            });
        }
        Ok(Err(ChildError {
            run_id: self.run_id,
            status: self.status,
            error: self.error,
        }))
    }
}

/// What a run may do to other runs. The worker provides it; a [`Context`] built without one
/// (a unit test of a body) refuses to trigger children.
pub trait ChildRuntime: Send + Sync + 'static {
    /// Inserts child runs of `task_id`, one per item, with parent, root and keys already set.
    fn trigger(
        &self,
        task_id: &'static str,
        definition: &'static TaskDefinition,
        items: Vec<(serde_json::Value, TriggerOptions)>,
    ) -> BoxFuture<'_, Result<Vec<ChildRun>, Error>>;

    /// Waits until every run in `runs` reached a final status, giving the parent's concurrency
    /// slot back meanwhile, and returns their outcomes in the same order.
    fn wait(&self, runs: Vec<Uuid>) -> BoxFuture<'_, Result<Vec<ChildOutcome>, Error>>;
}

/// Marker: the trigger returns the child's handle at once.
#[derive(Debug)]
pub struct Detached;

/// Marker: the trigger waits for the child and returns its typed result.
#[derive(Debug)]
pub struct Awaited;

/// One child trigger being prepared from a run: set options on it, then `.await` it.
///
/// `ctx.trigger::<T>(payload)` resolves to a [`ChildRun`]; `ctx.trigger_and_wait::<T>(payload)`
/// resolves to the child's [`ChildResult`].
#[must_use = "a trigger does nothing until it is awaited"]
pub struct ChildTrigger<'a, T: Task, Mode> {
    ctx: &'a Context,
    payload: T::Payload,
    options: TriggerOptions,
    mode: PhantomData<fn() -> Mode>,
}

impl<T: Task, Mode> std::fmt::Debug for ChildTrigger<'_, T, Mode> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildTrigger")
            .field("task_id", &T::ID)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<'a, T: Task, Mode> ChildTrigger<'a, T, Mode> {
    pub(crate) fn new(ctx: &'a Context, payload: T::Payload) -> Self {
        Self {
            ctx,
            payload,
            options: TriggerOptions::default(),
            mode: PhantomData,
        }
    }

    /// Replaces every option at once.
    pub fn options(mut self, options: TriggerOptions) -> Self {
        self.options = options;
        self
    }

    crate::__kiln_forward_trigger_options!();
}

impl<'a, T: Task> IntoFuture for ChildTrigger<'a, T, Detached> {
    type Output = Result<ChildRun, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut runs = self
                .ctx
                .trigger_children::<T>(vec![BatchItem::with_options(self.payload, self.options)])
                .await?;
            Ok(runs.remove(0))
        })
    }
}

impl<'a, T: Task> IntoFuture for ChildTrigger<'a, T, Awaited> {
    type Output = Result<ChildResult<T::Output>, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut results = self
                .ctx
                .wait_children::<T>(vec![BatchItem::with_options(self.payload, self.options)])
                .await?;
            Ok(results.remove(0))
        })
    }
}

impl Context {
    /// Triggers a child run of `T`; resolves to its handle once inserted.
    ///
    /// ```ignore
    /// let child = ctx.trigger::<SyncWorkspace>(payload).concurrency_key(&ws_id).await?;
    /// ```
    pub fn trigger<T: Task>(&self, payload: T::Payload) -> ChildTrigger<'_, T, Detached> {
        ChildTrigger::new(self, payload)
    }

    /// Triggers a child run of `T` and waits for it: resolves to `Ok(output)` or the child's
    /// [`ChildError`]. While waiting, this run is `waiting` and its concurrency slot is free.
    pub fn trigger_and_wait<T: Task>(&self, payload: T::Payload) -> ChildTrigger<'_, T, Awaited> {
        ChildTrigger::new(self, payload)
    }

    /// Triggers up to 1,000 child runs of `T` in one statement.
    pub async fn batch_trigger<T: Task>(
        &self,
        items: Vec<BatchItem<T::Payload>>,
    ) -> Result<Vec<ChildRun>, Error> {
        self.trigger_children::<T>(items).await
    }

    /// Triggers up to 1,000 child runs of `T` and waits for all of them: one typed result per
    /// item, in order. A failed child does not stop the others.
    pub async fn batch_trigger_and_wait<T: Task>(
        &self,
        items: Vec<BatchItem<T::Payload>>,
    ) -> Result<Vec<ChildResult<T::Output>>, Error> {
        self.wait_children::<T>(items).await
    }

    async fn trigger_children<T: Task>(
        &self,
        items: Vec<BatchItem<T::Payload>>,
    ) -> Result<Vec<ChildRun>, Error> {
        let runtime = self.runtime().ok_or_else(|| {
            Error::with_kind(
                ErrorKind::Abort,
                "this context has no worker behind it: child runs can only be triggered from \
                 a run a worker executes",
            )
        })?;
        if items.len() > MAX_BATCH_SIZE {
            return Err(Error::abort(format!(
                "a batch holds at most {MAX_BATCH_SIZE} runs, got {}: split it into several batches",
                items.len()
            )));
        }
        let call = self.next_call();
        let parent = self.run_id();
        let root = self.info().root_run_id.unwrap_or(parent);
        let single = items.len() == 1;
        let mut specs = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let payload = serde_json::to_value(&item.payload).map_err(|e| {
                Error::abort(format!(
                    "the payload of a child run of {:?} does not serialize to JSON: {e}",
                    T::ID
                ))
            })?;
            let mut options = item.options;
            options
                .validate()
                .map_err(|e| Error::abort(format!("child run of {:?}: {e}", T::ID)))?;
            options.parent_run_id = Some(parent);
            options.root_run_id = Some(root);
            if options.idempotency_key.is_none() {
                options.idempotency_key = Some(if single {
                    format!("{parent}:{call}")
                } else {
                    format!("{parent}:{call}:{i}")
                });
            }
            specs.push((payload, options));
        }
        runtime.trigger(T::ID, &T::DEFINITION, specs).await
    }

    async fn wait_children<T: Task>(
        &self,
        items: Vec<BatchItem<T::Payload>>,
    ) -> Result<Vec<ChildResult<T::Output>>, Error> {
        let runs = self.trigger_children::<T>(items).await?;
        let runtime = self.runtime().expect("checked by trigger_children");
        let outcomes = runtime.wait(runs.iter().map(|r| r.id).collect()).await?;
        outcomes
            .into_iter()
            .map(ChildOutcome::into_result::<T::Output>)
            .collect()
    }
}
