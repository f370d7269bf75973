//! The registry of counters: which (class, path) pairs accept
//! increments, and which cells each accepted increment rolls up to.
//!
//! Every counter that ever existed keeps a numeric [`CounterId`]; cells are
//! stored under that id, so data stays readable after an unregistration and
//! a re-registration resumes counting on top of it. Roll-up targets are
//! computed once per registration change, never per increment, and the
//! registry's generation number lets a [`CounterHandle`] skip the lock
//! entirely while nothing has changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::counter::{CounterKey, validate_class};
use crate::error::{Error, Result};
use crate::path::MAX_PATH_DEPTH;
use crate::path::{ROOT, validate_path};

mod plan;
mod state;

use plan::Plan;
pub(crate) use plan::{PlannedChanges, Provisional};
use state::{Lookup, State};

pub(crate) use crate::counter::CounterId;

/// The cells an increment of one counter lands in: the counter itself, its
/// registered ancestors, and the class root, in that order.
pub(crate) type Targets = Arc<[CounterId]>;

/// A counter resolved once, so that increments through it do no string work.
///
/// Obtain one with [`Tally::counter`](crate::Tally::counter). A handle stays
/// valid across registration changes: while the registry is unchanged it is
/// used as is, afterwards the engine looks its roll-up targets up again (and
/// rejects it if its counter was unregistered). Cloning is cheap.
#[derive(Clone, Debug)]
pub struct CounterHandle {
    pub(crate) engine: u64,
    pub(crate) id: CounterId,
    pub(crate) generation: u64,
    pub(crate) targets: Targets,
}

impl CounterHandle {
    /// The counter's engine-wide number.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// The registry: shared by all threads of one engine.
pub(crate) struct Registry {
    generation: AtomicU64,
    state: RwLock<State>,
    max_depth: usize,
    max_registrations: usize,
    max_counters: usize,
}

/// A read-locked view of the registry, for mapping ids back to names.
///
/// Holding it blocks registration changes; drop it promptly.
pub(crate) struct RegistryView<'a>(RwLockReadGuard<'a, State>);

impl RegistryView<'_> {
    /// The class and path of a counter id.
    pub(crate) fn names(&self, id: CounterId) -> (&str, &str) {
        let counter = &self.0.counters[id as usize];
        (&self.0.classes[counter.class as usize].name, &counter.path)
    }
}

/// One change to the registry, as logged and replayed: replaying the
/// changes in order rebuilds the registry with the same counter ids.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum RegistryChange {
    /// A counter came into existence with this id (the next free one).
    Created {
        /// Its id.
        id: CounterId,
        /// Its class.
        class: String,
        /// Its path.
        path: String,
    },
    /// A counter was registered or unregistered.
    Registered {
        /// Its id.
        id: CounterId,
        /// Whether it is now registered.
        registered: bool,
    },
}

impl Registry {
    /// An empty registry without a counter limit; plan
    /// [`Registry::plan_system_classes`] once any persisted state has been
    /// restored.
    pub(crate) fn new(max_depth: usize, max_registrations: usize) -> Self {
        Registry {
            generation: AtomicU64::new(0),
            state: RwLock::new(State::default()),
            max_depth,
            max_registrations,
            max_counters: usize::MAX,
        }
    }

    /// Limits the counters that registrations and system classes may
    /// create (those that exist already stay).
    pub(crate) fn with_max_counters(mut self, max: usize) -> Self {
        self.max_counters = max;
        self
    }

    /// Plans marking the configured system classes: their roots, and the
    /// ancestors of every path they already have, are created if missing.
    /// Opening a directory does not count against the counter limit.
    pub(crate) fn plan_system_classes(&self, classes: &[String]) -> Result<PlannedChanges<'_>> {
        for class in classes {
            validate_class(class)?;
        }
        let state = self.state.write();
        let mut plan = Plan::new(&state);
        for class in classes {
            plan.mark_system(class);
        }
        for class in classes {
            plan.counter(&state, class, ROOT);
            let existing: Vec<&str> = state
                .class_ids
                .get(class.as_str())
                .map(|&id| {
                    state.classes[id as usize]
                        .paths
                        .keys()
                        .map(|p| &**p)
                        .collect()
                })
                .unwrap_or_default();
            for path in existing {
                plan.counter(&state, class, path);
            }
        }
        Ok(self.planned(state, plan))
    }

    pub(crate) fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The current generation; it changes whenever any roll-up target may have.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn view(&self) -> RegistryView<'_> {
        RegistryView(self.state.read())
    }

    fn planned<'a>(&'a self, state: RwLockWriteGuard<'a, State>, plan: Plan) -> PlannedChanges<'a> {
        PlannedChanges {
            registry: self,
            state,
            plan,
        }
    }

    fn validate_names(&self, class: &str, path: &str) -> Result<()> {
        validate_class(class)?;
        validate_path(path, self.max_depth)?;
        Ok(())
    }

    /// Plans registering every pair, or fails, planning nothing, if any
    /// is invalid (the error names its index) or a limit would be exceeded.
    pub(crate) fn plan_register(&self, keys: &[CounterKey]) -> Result<PlannedChanges<'_>> {
        for (index, key) in keys.iter().enumerate() {
            self.validate_names(&key.class, &key.path)
                .map_err(|e| e.at_entry(index))?;
        }
        let state = self.state.write();
        let mut new_pairs: Vec<&CounterKey> = keys
            .iter()
            .filter(|key| !state.is_registered(&key.class, &key.path))
            .collect();
        new_pairs.sort();
        new_pairs.dedup();
        if state.registered + new_pairs.len() > self.max_registrations {
            return Err(Error::TooManyRegistrations {
                max: self.max_registrations,
            });
        }
        let mut plan = Plan::new(&state);
        for key in new_pairs {
            let id = plan.counter(&state, &key.class, &key.path);
            plan.check_limit(&state, self.max_counters, &key.class, &key.path)?;
            plan.changes.push(RegistryChange::Registered {
                id,
                registered: true,
            });
        }
        Ok(self.planned(state, plan))
    }

    /// Plans unregistering every pair (pairs not registered are ignored),
    /// or fails if any is invalid. A path deeper than this engine's depth
    /// is invalid unless its counter exists: one registered under a larger
    /// `max_path_depth` can be unregistered after a reopen with a smaller one.
    pub(crate) fn plan_unregister(&self, keys: &[CounterKey]) -> Result<PlannedChanges<'_>> {
        let state = self.state.write();
        for (index, key) in keys.iter().enumerate() {
            let valid = match self.validate_names(&key.class, &key.path) {
                Err(Error::PathTooDeep { .. })
                    if state.counter_id(&key.class, &key.path).is_some() =>
                {
                    Ok(())
                }
                other => other,
            };
            valid.map_err(|e| e.at_entry(index))?;
        }
        let mut ids: Vec<CounterId> = keys
            .iter()
            .filter_map(|key| state.counter_id(&key.class, &key.path))
            .filter(|&id| state.counters[id as usize].registered)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut plan = Plan::new(&state);
        plan.changes
            .extend(ids.into_iter().map(|id| RegistryChange::Registered {
                id,
                registered: false,
            }));
        Ok(self.planned(state, plan))
    }

    /// Plans creating counters of system classes (each with its ancestors),
    /// or fails if that would exceed the counter limit. Pairs that exist
    /// by then are left as they are.
    pub(crate) fn plan_new_counters(&self, keys: &[CounterKey]) -> Result<PlannedChanges<'_>> {
        let state = self.state.write();
        let mut plan = Plan::new(&state);
        for key in keys {
            plan.counter(&state, &key.class, &key.path);
            plan.check_limit(&state, self.max_counters, &key.class, &key.path)?;
        }
        Ok(self.planned(state, plan))
    }

    /// Replays logged or snapshotted changes; they must fit the registry
    /// as it stands (ids in sequence), else the input is corrupt. Paths are
    /// checked against the deepest depth any configuration allows, not
    /// this engine's: counters created under a larger `max_path_depth` stay
    /// readable after a reopen with a smaller one (new registrations and
    /// increments are held to the smaller one), rather than make the
    /// directory look corrupt.
    pub(crate) fn replay(&self, changes: &[RegistryChange]) -> std::result::Result<(), String> {
        let mut state = self.state.write();
        for change in changes {
            state.replay(change, MAX_PATH_DEPTH)?;
        }
        state.refresh_after(changes);
        self.bump_generation();
        Ok(())
    }

    /// The whole registry as changes that rebuild it: for snapshots.
    pub(crate) fn image(&self) -> Vec<RegistryChange> {
        let state = self.state.read();
        let mut changes = Vec::with_capacity(state.counters.len() * 2);
        for (id, counter) in state.counters.iter().enumerate() {
            let id = id as CounterId;
            changes.push(RegistryChange::Created {
                id,
                class: state.classes[counter.class as usize].name.to_string(),
                path: counter.path.to_string(),
            });
            if counter.registered {
                changes.push(RegistryChange::Registered {
                    id,
                    registered: true,
                });
            }
        }
        changes
    }

    /// The number of counters that exist (registered or not).
    pub(crate) fn counter_count(&self) -> usize {
        self.state.read().counters.len()
    }

    /// The registered pairs, sorted by class then path.
    pub(crate) fn registered(&self) -> Vec<CounterKey> {
        let state = self.state.read();
        let mut keys: Vec<CounterKey> = state
            .counters
            .iter()
            .filter(|c| c.registered)
            .map(|c| CounterKey::new(&*state.classes[c.class as usize].name, &*c.path))
            .collect();
        keys.sort();
        keys
    }

    /// Resolves a (class, path) pair and hands its id, roll-up targets and
    /// the registry generation to `found` (run under the read lock, so it
    /// can copy the targets without touching the shared `Arc`), or says why
    /// the pair does not accept increments. `Ok(None)` is a path of a
    /// system class without a counter yet: nothing is created here (see
    /// [`Registry::plan_new_counters`]).
    pub(crate) fn resolve_with<R>(
        &self,
        class: &str,
        path: &str,
        found: impl FnOnce(CounterId, &Targets, u64) -> R,
    ) -> Result<Option<R>> {
        self.validate_names(class, path)?;
        let state = self.state.read();
        match state.accepting(class, path) {
            Lookup::Accepting(id, targets) => Ok(Some(found(id, targets, self.generation()))),
            Lookup::Rejected(error) => Err(error),
            Lookup::SystemPathMissing => Ok(None),
        }
    }

    /// [`Registry::resolve_with`], keeping a clone of the targets.
    pub(crate) fn resolve(
        &self,
        class: &str,
        path: &str,
    ) -> Result<Option<(CounterId, Targets, u64)>> {
        self.resolve_with(class, path, |id, targets, generation| {
            (id, targets.clone(), generation)
        })
    }

    /// The roll-up targets of a handle's counter: `None` means the handle's
    /// own are current (the registry is unchanged since it was made, and no
    /// lock was taken); otherwise the registry's present ones.
    #[inline(always)]
    pub(crate) fn targets_of(&self, handle: &CounterHandle) -> Result<Option<Targets>> {
        if self.generation() == handle.generation {
            return Ok(None);
        }
        self.current_targets_of(handle).map(Some)
    }

    /// The registry's present roll-up targets of a handle made before a
    /// registration change: the rare case of [`Registry::targets_of`].
    #[cold]
    #[inline(never)]
    fn current_targets_of(&self, handle: &CounterHandle) -> Result<Targets> {
        let state = self.state.read();
        let counter = &state.counters[handle.id as usize];
        match &counter.targets {
            Some(targets) => Ok(targets.clone()),
            None => Err(state.rejection(counter)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves like an increment: creating a system class's new path first.
    fn resolve(registry: &Registry, class: &str, path: &str) -> Result<(CounterId, Targets, u64)> {
        if let Some(found) = registry.resolve(class, path)? {
            return Ok(found);
        }
        registry
            .plan_new_counters(&[CounterKey::new(class, path)])?
            .commit();
        Ok(registry.resolve(class, path)?.expect("created"))
    }

    fn keys(pairs: &[(&str, &str)]) -> Vec<CounterKey> {
        pairs.iter().map(|&p| CounterKey::from(p)).collect()
    }

    fn names(registry: &Registry, targets: &[CounterId]) -> Vec<String> {
        let view = registry.view();
        targets
            .iter()
            .map(|&id| view.names(id).1.to_owned())
            .collect()
    }

    #[test]
    fn roll_up_targets_follow_registrations() {
        let registry = Registry::new(2, 100);
        registry
            .plan_register(&keys(&[("c", "/a"), ("c", "/a/b")]))
            .map(PlannedChanges::commit)
            .unwrap();
        let (_, targets, _) = resolve(&registry, "c", "/a/b").unwrap();
        assert_eq!(names(&registry, &targets), ["/a/b", "/a", "/"]);
        registry
            .plan_unregister(&keys(&[("c", "/a")]))
            .map(PlannedChanges::commit)
            .unwrap();
        let (_, targets, _) = resolve(&registry, "c", "/a/b").unwrap();
        assert_eq!(names(&registry, &targets), ["/a/b", "/"]);
        assert!(matches!(
            resolve(&registry, "c", "/a"),
            Err(Error::NotRegistered { .. })
        ));
        let (_, root, _) = resolve(&registry, "c", "/").unwrap();
        assert_eq!(names(&registry, &root), ["/"]);
    }

    #[test]
    fn unknown_classes_and_unregistered_paths_are_rejected() {
        let registry = Registry::new(2, 100);
        assert!(matches!(
            resolve(&registry, "c", "/"),
            Err(Error::UnknownClass { .. })
        ));
        registry
            .plan_register(&keys(&[("c", "/a")]))
            .map(PlannedChanges::commit)
            .unwrap();
        assert!(matches!(
            resolve(&registry, "c", "/b"),
            Err(Error::NotRegistered { .. })
        ));
        registry
            .plan_unregister(&keys(&[("c", "/a")]))
            .map(PlannedChanges::commit)
            .unwrap();
        assert!(matches!(
            resolve(&registry, "c", "/"),
            Err(Error::UnknownClass { .. })
        ));
    }

    #[test]
    fn system_classes_accept_every_path_and_roll_up_fully() {
        let registry = Registry::new(2, 100);
        registry
            .plan_system_classes(&["_logins".to_owned()])
            .map(PlannedChanges::commit)
            .unwrap();
        let (_, targets, _) = resolve(&registry, "_logins", "/web/eu").unwrap();
        assert_eq!(names(&registry, &targets), ["/web/eu", "/web", "/"]);
        assert!(registry.registered().is_empty());
    }

    #[test]
    fn registration_is_all_or_nothing_and_limited() {
        let registry = Registry::new(2, 2);
        let err = registry
            .plan_register(&keys(&[("c", "/a"), ("c", "/a/b/c")]))
            .map(PlannedChanges::commit)
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 1, .. }));
        assert!(registry.registered().is_empty());
        registry
            .plan_register(&keys(&[("c", "/a"), ("c", "/a"), ("c", "/b")]))
            .map(PlannedChanges::commit)
            .unwrap();
        assert!(matches!(
            registry
                .plan_register(&keys(&[("c", "/z")]))
                .map(PlannedChanges::commit),
            Err(Error::TooManyRegistrations { max: 2 })
        ));
        registry
            .plan_register(&keys(&[("c", "/a")]))
            .map(PlannedChanges::commit)
            .unwrap();
        assert_eq!(registry.registered(), keys(&[("c", "/a"), ("c", "/b")]));
    }

    #[test]
    fn the_image_rebuilds_the_same_ids() {
        let registry = Registry::new(2, 100);
        registry
            .plan_system_classes(&["_s".to_owned()])
            .map(PlannedChanges::commit)
            .unwrap();
        registry
            .plan_register(&keys(&[("c", "/a/b"), ("d", "/x")]))
            .map(PlannedChanges::commit)
            .unwrap();
        resolve(&registry, "_s", "/p/q").unwrap();
        registry
            .plan_unregister(&keys(&[("d", "/x")]))
            .map(PlannedChanges::commit)
            .unwrap();
        let copy = Registry::new(2, 100);
        copy.replay(&registry.image()).unwrap();
        assert_eq!(copy.image(), registry.image());
        assert_eq!(copy.registered(), registry.registered());
        // Out-of-sequence or orphaned changes are corrupt input.
        let orphan = RegistryChange::Created {
            id: 99,
            class: "c".into(),
            path: "/z".into(),
        };
        assert!(copy.replay(&[orphan]).is_err());
    }

    #[test]
    fn planned_changes_rebuild_the_registry_and_a_dropped_plan_changes_nothing() {
        let registry = Registry::new(2, 100);
        let planned = registry.plan_register(&keys(&[("c", "/a")])).unwrap();
        let logged = planned.changes().to_vec();
        planned.commit();
        let replayed = Registry::new(2, 100);
        replayed.replay(&logged).unwrap();
        assert_eq!(replayed.registered(), keys(&[("c", "/a")]));
        // A plan dropped unlogged (the log failed) leaves the registry as it was.
        drop(registry.plan_register(&keys(&[("c", "/b")])).unwrap());
        assert_eq!(registry.registered(), keys(&[("c", "/a")]));
        assert_eq!(registry.image(), replayed.image());
    }

    #[test]
    fn generation_moves_only_on_change() {
        let registry = Registry::new(2, 100);
        let before = registry.generation();
        registry
            .plan_unregister(&keys(&[("c", "/a")]))
            .map(PlannedChanges::commit)
            .unwrap();
        assert_eq!(registry.generation(), before);
        registry
            .plan_register(&keys(&[("c", "/a")]))
            .map(PlannedChanges::commit)
            .unwrap();
        assert_ne!(registry.generation(), before);
    }

    /// Pins the cost of a system class's new path: every new counter used
    /// to recompute the targets of every counter, so that creating n paths
    /// one at a time cost n² target computations.
    #[test]
    fn a_new_path_recomputes_only_the_targets_it_changes() {
        let registry = Registry::new(2, 100);
        registry
            .plan_system_classes(&["_s".to_owned()])
            .map(PlannedChanges::commit)
            .unwrap();
        let paths: Vec<String> = (0..500).map(|i| format!("/p{i}/q")).collect();
        let before = registry
            .state
            .read()
            .targets_computed
            .load(Ordering::Relaxed);
        for path in &paths {
            resolve(&registry, "_s", path).unwrap();
        }
        let computed = registry
            .state
            .read()
            .targets_computed
            .load(Ordering::Relaxed)
            - before;
        // Each path creates two counters (`/pN` and `/pN/q`); each change
        // recomputes the new counters and the class root.
        assert!(computed <= paths.len() * 4, "{computed} computations");
    }

    proptest::proptest! {
        /// Targets kept current change by change are the targets computed
        /// afresh from the whole registry.
        #[test]
        fn incremental_targets_match_a_full_recompute(
            ops in proptest::collection::vec((0..4u8, 0..3usize, 0..6usize), 1..40),
        ) {
            const CLASSES: [&str; 3] = ["_s", "c", "d"];
            const PATHS: [&str; 6] = ["/", "/a", "/a/b", "/a/", "/b", "/b/c"];
            let registry = Registry::new(2, 100);
            registry
                .plan_system_classes(&["_s".to_owned()])
                .map(PlannedChanges::commit)
                .unwrap();
            for (op, class, path) in ops {
                let key = [CounterKey::new(CLASSES[class], PATHS[path])];
                let _ = match op {
                    0 | 1 => registry.plan_register(&key).map(PlannedChanges::commit),
                    2 => registry.plan_unregister(&key).map(PlannedChanges::commit),
                    _ => registry.plan_new_counters(&key).map(PlannedChanges::commit),
                };
                let state = registry.state.read();
                let kept: Vec<Option<Targets>> =
                    state.counters.iter().map(|c| c.targets.clone()).collect();
                let fresh: Vec<Option<Targets>> = (0..state.counters.len() as CounterId)
                    .map(|id| state.targets_for(id))
                    .collect();
                proptest::prop_assert_eq!(kept, fresh);
            }
        }
    }
}
