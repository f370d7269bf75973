//! Registry changes planned before they are made: [`PlannedChanges`]
//! holds the write lock while the caller logs them, and [`Provisional`]
//! resolves a batch against counters it would create, creating none.

use std::collections::HashMap;

use parking_lot::RwLockWriteGuard;

use super::state::{Lookup, State};
use super::{CounterId, Registry, RegistryChange};
use crate::counter::CounterKey;
use crate::error::{Error, Result};
use crate::path::{ROOT, ancestors};

/// Counters to create, and the ids they get, planned against a state.
pub(super) struct Plan {
    pub(super) changes: Vec<RegistryChange>,
    first_new: CounterId,
    next_id: CounterId,
    planned: HashMap<(String, String), CounterId>,
    /// Classes that become system classes with this plan.
    system: Vec<String>,
}

impl Plan {
    pub(super) fn new(state: &State) -> Plan {
        let next_id = state.counters.len() as CounterId;
        Plan {
            changes: Vec::new(),
            first_new: next_id,
            next_id,
            planned: HashMap::new(),
            system: Vec::new(),
        }
    }

    /// How many counters the plan creates.
    pub(super) fn created(&self) -> usize {
        (self.next_id - self.first_new) as usize
    }

    fn is_system(&self, state: &State, class: &str) -> bool {
        state.is_system(class) || self.system.iter().any(|c| c == class)
    }

    /// The id of (class, path), planning its creation if it does not exist
    /// yet: after its class root's and, for a system class, after every
    /// ancestor's, so that its increments roll up to all of them.
    pub(super) fn counter(&mut self, state: &State, class: &str, path: &str) -> CounterId {
        if path != ROOT {
            if self.is_system(state, class) {
                let chain: Vec<&str> = ancestors(path).collect();
                for ancestor in chain.into_iter().rev() {
                    self.one_counter(state, class, ancestor);
                }
            } else {
                self.one_counter(state, class, ROOT);
            }
        }
        self.one_counter(state, class, path)
    }

    fn one_counter(&mut self, state: &State, class: &str, path: &str) -> CounterId {
        if let Some(id) = state.counter_id(class, path) {
            return id;
        }
        let key = (class.to_owned(), path.to_owned());
        if let Some(&id) = self.planned.get(&key) {
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.planned.insert(key, id);
        self.changes.push(RegistryChange::Created {
            id,
            class: class.to_owned(),
            path: path.to_owned(),
        });
        id
    }

    /// Fails once the plan would take the registry past `max` counters.
    pub(super) fn check_limit(
        &self,
        state: &State,
        max: usize,
        class: &str,
        path: &str,
    ) -> Result<()> {
        if state.counters.len() + self.created() > max {
            return Err(Error::TooManyCounters {
                class: class.to_owned(),
                path: path.to_owned(),
                max,
            });
        }
        Ok(())
    }

    pub(super) fn mark_system(&mut self, class: &str) {
        self.system.push(class.to_owned());
    }
}

/// Registry changes planned under the registry's write lock, which they
/// hold until [`PlannedChanges::commit`] (or until dropped, which cancels
/// them): the engine logs [`PlannedChanges::changes`] in between, so that
/// the log lists registry changes in the order they take effect, and waits
/// for the log to be durable only after the commit has released the lock.
#[must_use = "planned changes take effect only when committed"]
pub(crate) struct PlannedChanges<'a> {
    pub(super) registry: &'a Registry,
    pub(super) state: RwLockWriteGuard<'a, State>,
    pub(super) plan: Plan,
}

impl PlannedChanges<'_> {
    /// The changes to log, in order; empty when nothing changes.
    pub(crate) fn changes(&self) -> &[RegistryChange] {
        &self.plan.changes
    }

    /// Applies the changes and releases the registry's lock.
    pub(crate) fn commit(self) {
        let PlannedChanges {
            registry,
            mut state,
            plan,
        } = self;
        if plan.changes.is_empty() && plan.system.is_empty() {
            return;
        }
        state.apply_all(&plan.changes);
        if plan.system.is_empty() {
            state.refresh_after(&plan.changes);
        } else {
            for class in &plan.system {
                let id = state.class_ids[class.as_str()];
                state.classes[id as usize].system = true;
            }
            state.refresh_all();
        }
        registry.bump_generation();
    }
}

/// A batch resolved against the registry as it stands plus the counters
/// its new system-class paths would create, under the ids they would get.
/// Nothing is created: the batch can be checked whole first.
pub(crate) struct Provisional {
    /// The roll-up targets of each entry, in order, up to the first that
    /// does not resolve.
    pub(crate) targets: Vec<Vec<CounterId>>,
    /// The first entry that does not resolve, its error naming its index.
    pub(crate) failure: Option<Error>,
    /// The counters the batch would create, in order.
    created: Vec<RegistryChange>,
}

impl Provisional {
    /// The class and path of a counter the batch would create.
    pub(crate) fn names(&self, id: CounterId) -> Option<(&str, &str)> {
        self.created.iter().find_map(|change| match change {
            RegistryChange::Created {
                id: created,
                class,
                path,
            } if *created == id => Some((class.as_str(), path.as_str())),
            _ => None,
        })
    }

    /// The (class, path) pairs the batch would create.
    pub(crate) fn new_counters(&self) -> Vec<CounterKey> {
        self.created
            .iter()
            .filter_map(|change| match change {
                RegistryChange::Created { class, path, .. } => {
                    Some(CounterKey::new(class.as_str(), path.as_str()))
                }
                RegistryChange::Registered { .. } => None,
            })
            .collect()
    }
}

impl Registry {
    /// Resolves a batch's (class, path) names under one read lock, as
    /// [`Provisional`] describes.
    pub(crate) fn resolve_provisionally<'e>(
        &self,
        names: impl IntoIterator<Item = (&'e str, &'e str)>,
    ) -> Provisional {
        let state = self.state.read();
        let mut plan = Plan::new(&state);
        let mut targets = Vec::new();
        let mut failure = None;
        for (index, (class, path)) in names.into_iter().enumerate() {
            match self.provisional_targets(&state, &mut plan, class, path) {
                Ok(found) => targets.push(found),
                Err(error) => {
                    failure = Some(error.at_entry(index));
                    break;
                }
            }
        }
        Provisional {
            targets,
            failure,
            created: plan.changes,
        }
    }

    fn provisional_targets(
        &self,
        state: &State,
        plan: &mut Plan,
        class: &str,
        path: &str,
    ) -> Result<Vec<CounterId>> {
        self.validate_names(class, path)?;
        match state.accepting(class, path) {
            Lookup::Accepting(_, targets) => Ok(targets.to_vec()),
            Lookup::Rejected(error) => Err(error),
            Lookup::SystemPathMissing => {
                let id = plan.counter(state, class, path);
                plan.check_limit(state, self.max_counters, class, path)?;
                // Every ancestor of a system class's path exists or is
                // planned, and accepts: the root comes last.
                let mut targets = vec![id];
                targets.extend(ancestors(path).map(|a| plan.counter(state, class, a)));
                Ok(targets)
            }
        }
    }
}
