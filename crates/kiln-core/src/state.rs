//! App state for task bodies: values the app hands its worker once (a database pool, an HTTP
//! client, settings), read in any body with [`Context::state`](crate::Context::state), so that
//! tasks need no globals.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// A state type a task declares (`state: App` in [`task!`](crate::task)): its id and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateType {
    /// The type's id.
    pub id: TypeId,
    /// The type's name, for errors.
    pub name: &'static str,
}

impl StateType {
    /// The state type `T`.
    pub fn of<T: Send + Sync + 'static>() -> Self {
        Self {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
        }
    }
}

/// The values of a worker's app state, one per type.
#[derive(Default, Clone)]
pub struct States {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    names: Vec<&'static str>,
}

impl std::fmt::Debug for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("States").field(&self.names).finish()
    }
}

impl States {
    /// Adds `value` as the state of type `T` (replacing an earlier one of that type).
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        if self
            .values
            .insert(TypeId::of::<T>(), Arc::new(value))
            .is_none()
        {
            self.names.push(std::any::type_name::<T>());
        }
    }

    /// The state of type `T`, if there is one.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|value| value.downcast_ref::<T>())
    }

    /// Whether a state of this type is there.
    pub fn has(&self, state: StateType) -> bool {
        self.values.contains_key(&state.id)
    }

    /// The names of the types held, in the order they were added.
    pub fn type_names(&self) -> &[&'static str] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct App {
        name: &'static str,
    }

    #[test]
    fn each_type_has_its_own_value() {
        let mut states = States::default();
        states.insert(App { name: "kiln" });
        states.insert(42_u32);
        assert_eq!(states.get::<App>(), Some(&App { name: "kiln" }));
        assert_eq!(states.get::<u32>(), Some(&42));
        assert_eq!(states.get::<String>(), None);
        assert!(states.has(StateType::of::<App>()));
        assert!(!states.has(StateType::of::<String>()));
        states.insert(7_u32);
        assert_eq!(states.get::<u32>(), Some(&7));
        assert_eq!(states.type_names().len(), 2);
    }
}
