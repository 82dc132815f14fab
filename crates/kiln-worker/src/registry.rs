//! Registered tasks, with their types erased so runs can be dispatched by task id.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kiln_core::{Context, Error, ErrorKind, Task, TaskDefinition};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A task the worker can run from a JSON payload.
pub(crate) trait ErasedTask: Send + Sync {
    fn definition(&self) -> &'static TaskDefinition;
    fn payload_schema(&self) -> Option<serde_json::Value>;
    fn state_types(&self) -> Vec<kiln_core::StateType>;
    fn call(
        &self,
        ctx: Context,
        payload: serde_json::Value,
    ) -> BoxFuture<Result<serde_json::Value, Error>>;
}

struct Registered<T: Task>(Arc<T>);

impl<T: Task> ErasedTask for Registered<T> {
    fn definition(&self) -> &'static TaskDefinition {
        &T::DEFINITION
    }

    fn payload_schema(&self) -> Option<serde_json::Value> {
        T::payload_schema()
    }

    fn state_types(&self) -> Vec<kiln_core::StateType> {
        T::state_types()
    }

    fn call(
        &self,
        ctx: Context,
        payload: serde_json::Value,
    ) -> BoxFuture<Result<serde_json::Value, Error>> {
        let task = Arc::clone(&self.0);
        Box::pin(async move {
            let payload = decode_payload::<T>(payload)?;
            let output = task.run(ctx, payload).await?;
            serde_json::to_value(output).map_err(|e| {
                Error::msg(format!(
                    "the output of task {:?} does not serialize to JSON: {e}",
                    T::ID
                ))
            })
        })
    }
}

/// Decodes a payload, naming the task, the field and what was expected when it does not fit.
pub(crate) fn decode_payload<T: Task>(payload: serde_json::Value) -> Result<T::Payload, Error> {
    serde_path_to_error::deserialize(payload).map_err(|e| {
        let path = e.path().to_string();
        let place = if path == "." {
            "the payload".to_owned()
        } else {
            format!("field `{path}`")
        };
        Error::with_kind(
            ErrorKind::Payload,
            format!(
                "payload of task {:?} does not match its type {}: {place}: {}",
                T::ID,
                std::any::type_name::<T::Payload>(),
                e.inner()
            ),
        )
    })
}

/// The tasks of one worker, by id.
#[derive(Default, Clone)]
pub(crate) struct Registry {
    tasks: HashMap<&'static str, Arc<dyn ErasedTask>>,
    /// The app state every body's context carries.
    states: Arc<kiln_core::States>,
}

impl Registry {
    pub(crate) fn insert<T: Task>(&mut self, task: T) -> Result<(), String> {
        T::DEFINITION
            .validate()
            .map_err(|e| format!("task {:?}: {e}", T::ID))?;
        if self
            .tasks
            .insert(T::ID, Arc::new(Registered(Arc::new(task))))
            .is_some()
        {
            return Err(format!(
                "task {:?} is registered twice on this worker",
                T::ID
            ));
        }
        Ok(())
    }

    /// The first state type a task declares that `states` lacks: (task id, type name).
    pub(crate) fn missing_state(
        &self,
        states: &kiln_core::States,
    ) -> Option<(&'static str, &'static str)> {
        let mut ids: Vec<&&'static str> = self.tasks.keys().collect();
        ids.sort();
        ids.into_iter().find_map(|id| {
            self.tasks[*id]
                .state_types()
                .into_iter()
                .find(|state| !states.has(*state))
                .map(|state| (*id, state.name))
        })
    }

    /// Sets the app state bodies read.
    pub(crate) fn set_states(&mut self, states: kiln_core::States) {
        self.states = Arc::new(states);
    }

    /// The app state bodies read.
    pub(crate) fn states(&self) -> Arc<kiln_core::States> {
        Arc::clone(&self.states)
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<dyn ErasedTask>> {
        self.tasks.get(id)
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.tasks.keys().map(|id| (*id).to_owned()).collect();
        ids.sort();
        ids
    }

    pub(crate) fn definitions(&self) -> impl Iterator<Item = &'static TaskDefinition> + '_ {
        self.tasks.values().map(|t| t.definition())
    }

    /// Each task's definition with its payload schema, as registered in the database.
    pub(crate) fn registrations(
        &self,
    ) -> impl Iterator<Item = (&'static TaskDefinition, Option<serde_json::Value>)> + '_ {
        self.tasks
            .values()
            .map(|t| (t.definition(), t.payload_schema()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use kiln_core::{task, Context, Result};
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct SyncPayload {
        ws_id: String,
        full: bool,
    }

    task! {
        SyncTask {
            id: "google-calendar-sync",
            run: async |_ctx: Context, payload: SyncPayload| -> Result<String> { Ok(payload.ws_id) }
        }
    }

    #[test]
    fn a_payload_that_does_not_decode_names_task_field_and_expected_type() {
        let error = decode_payload::<SyncTask>(serde_json::json!({"ws_id": 5, "full": true}))
            .err()
            .expect("an integer is not a string");
        let message = &error.record().message;
        assert!(error.is_abort());
        assert!(message.contains("\"google-calendar-sync\""), "{message}");
        assert!(message.contains("field `ws_id`"), "{message}");
        assert!(message.contains("expected a string"), "{message}");

        let error = decode_payload::<SyncTask>(serde_json::json!({"ws_id": "w1"}))
            .err()
            .expect("full is missing");
        assert!(
            error.record().message.contains("missing field `full`"),
            "{}",
            error.record().message
        );
    }
}
