//! The registry of counters (SPEC §4): which (class, path) pairs accept
//! increments, and which cells each accepted increment rolls up to.
//!
//! Every counter that ever existed keeps a numeric [`CounterId`]; cells are
//! stored under that id, so data stays readable after an unregistration and
//! a re-registration resumes counting on top of it. Roll-up targets are
//! computed once per registration change, never per increment, and the
//! registry's generation number lets a [`CounterHandle`] skip the lock
//! entirely while nothing has changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{RwLock, RwLockReadGuard};

use crate::counter::{CounterKey, validate_class};
use crate::error::{Error, Result};
use crate::path::{ROOT, ancestors, validate_path};

/// The engine-wide number of a counter; cells are stored under it.
pub(crate) type CounterId = u32;

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

struct ClassDef {
    name: Box<str>,
    system: bool,
    /// Registered pairs of this class.
    registrations: usize,
    root: CounterId,
    paths: HashMap<Box<str>, CounterId>,
}

impl ClassDef {
    fn is_known(&self) -> bool {
        self.system || self.registrations > 0
    }
}

struct CounterDef {
    class: u32,
    path: Box<str>,
    registered: bool,
    /// `Some` while the counter accepts increments.
    targets: Option<Targets>,
}

#[derive(Default)]
struct State {
    classes: Vec<ClassDef>,
    class_ids: HashMap<Box<str>, u32>,
    counters: Vec<CounterDef>,
    registered: usize,
}

/// The registry: shared by all threads of one engine.
pub(crate) struct Registry {
    generation: AtomicU64,
    state: RwLock<State>,
    max_depth: usize,
    max_registrations: usize,
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

/// Records registry changes durably before they take effect; an error
/// cancels the change.
pub(crate) type ChangeLog<'a> = &'a dyn Fn(&[RegistryChange]) -> Result<()>;

/// A [`ChangeLog`] that records nothing.
#[cfg(test)]
pub(crate) fn no_change_log(_: &[RegistryChange]) -> Result<()> {
    Ok(())
}

impl Registry {
    /// An empty registry; call [`Registry::ensure_system_classes`] once any
    /// persisted state has been restored.
    pub(crate) fn new(max_depth: usize, max_registrations: usize) -> Self {
        Registry {
            generation: AtomicU64::new(0),
            state: RwLock::new(State::default()),
            max_depth,
            max_registrations,
        }
    }

    /// Marks the configured system classes, creating (and logging) their roots if new.
    pub(crate) fn ensure_system_classes(
        &self,
        classes: &[String],
        log: ChangeLog<'_>,
    ) -> Result<()> {
        for class in classes {
            validate_class(class)?;
        }
        let mut state = self.state.write();
        let mut plan = Plan::new(&state);
        for class in classes {
            plan.counter(&state, class, ROOT);
        }
        if !plan.changes.is_empty() {
            log(&plan.changes)?;
            state.apply_all(&plan.changes);
        }
        for class in classes {
            let id = state.class_ids[class.as_str()];
            state.classes[id as usize].system = true;
        }
        self.refresh_all(&mut state);
        Ok(())
    }

    pub(crate) fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The current generation; it changes whenever any roll-up target may have.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn view(&self) -> RegistryView<'_> {
        RegistryView(self.state.read())
    }

    fn validate(&self, key: &CounterKey) -> Result<()> {
        validate_class(&key.class)?;
        validate_path(&key.path, self.max_depth)?;
        Ok(())
    }

    /// Registers every pair, or none if any is invalid, the limit would be
    /// exceeded, or the change cannot be logged.
    pub(crate) fn register(&self, keys: &[CounterKey], log: ChangeLog<'_>) -> Result<()> {
        for (index, key) in keys.iter().enumerate() {
            self.validate(key).map_err(|e| e.at_entry(index))?;
        }
        let mut state = self.state.write();
        let mut new_pairs: Vec<&CounterKey> = keys
            .iter()
            .filter(|key| !state.is_registered(key))
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
            plan.changes.push(RegistryChange::Registered {
                id,
                registered: true,
            });
        }
        self.commit(&mut state, plan, log)
    }

    /// Unregisters every pair (pairs not registered are ignored), or none
    /// if any is invalid or the change cannot be logged.
    pub(crate) fn unregister(&self, keys: &[CounterKey], log: ChangeLog<'_>) -> Result<()> {
        for (index, key) in keys.iter().enumerate() {
            self.validate(key).map_err(|e| e.at_entry(index))?;
        }
        let mut state = self.state.write();
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
        self.commit(&mut state, plan, log)
    }

    fn commit(&self, state: &mut State, plan: Plan, log: ChangeLog<'_>) -> Result<()> {
        if plan.changes.is_empty() {
            return Ok(());
        }
        log(&plan.changes)?;
        state.apply_all(&plan.changes);
        self.refresh_all(state);
        Ok(())
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
            state.replay(change, crate::config::MAX_PATH_DEPTH)?;
        }
        self.refresh_all(&mut state);
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

    fn refresh_all(&self, state: &mut State) {
        for class in 0..state.classes.len() as u32 {
            state.refresh_targets(class);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
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
    /// the pair does not accept increments.
    pub(crate) fn resolve_with<R>(
        &self,
        class: &str,
        path: &str,
        log: ChangeLog<'_>,
        found: impl FnOnce(CounterId, &Targets, u64) -> R,
    ) -> Result<R> {
        validate_class(class)?;
        validate_path(path, self.max_depth)?;
        {
            let state = self.state.read();
            match state.accepting(class, path) {
                Lookup::Accepting(id, targets) => return Ok(found(id, targets, self.generation())),
                Lookup::Rejected(error) => return Err(error),
                Lookup::SystemPathMissing => {}
            }
        }
        // A system class accepts every valid path: create the counter and its
        // ancestors on first use.
        let mut state = self.state.write();
        let mut plan = Plan::new(&state);
        for ancestor in ancestors(path).collect::<Vec<_>>().into_iter().rev() {
            plan.counter(&state, class, ancestor);
        }
        plan.counter(&state, class, path);
        self.commit(&mut state, plan, log)?;
        match state.accepting(class, path) {
            Lookup::Accepting(id, targets) => Ok(found(id, targets, self.generation())),
            Lookup::Rejected(error) => Err(error),
            Lookup::SystemPathMissing => Err(Error::NotRegistered {
                class: class.to_owned(),
                path: path.to_owned(),
            }),
        }
    }

    /// [`Registry::resolve_with`], keeping a clone of the targets.
    pub(crate) fn resolve(
        &self,
        class: &str,
        path: &str,
        log: ChangeLog<'_>,
    ) -> Result<(CounterId, Targets, u64)> {
        self.resolve_with(class, path, log, |id, targets, generation| {
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

/// Changes planned under the write lock, before they are logged and applied.
struct Plan {
    changes: Vec<RegistryChange>,
    next_id: CounterId,
    planned: HashMap<(String, String), CounterId>,
}

impl Plan {
    fn new(state: &State) -> Plan {
        Plan {
            changes: Vec::new(),
            next_id: state.counters.len() as CounterId,
            planned: HashMap::new(),
        }
    }

    /// The id of (class, path), planning its creation (and its class
    /// root's, first) if it does not exist yet.
    fn counter(&mut self, state: &State, class: &str, path: &str) -> CounterId {
        if path != ROOT {
            self.counter(state, class, ROOT);
        }
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
}

enum Lookup<'a> {
    Accepting(CounterId, &'a Targets),
    Rejected(Error),
    SystemPathMissing,
}

impl State {
    fn apply_all(&mut self, changes: &[RegistryChange]) {
        for change in changes {
            self.replay(change, usize::MAX)
                .expect("planned changes fit the registry");
        }
    }

    /// Applies one change; a change that does not fit is corrupt input.
    fn replay(
        &mut self,
        change: &RegistryChange,
        max_depth: usize,
    ) -> std::result::Result<(), String> {
        match change {
            RegistryChange::Created { id, class, path } => {
                if let Some(existing) = self.counter_id(class, path) {
                    return if existing == *id {
                        Ok(())
                    } else {
                        Err(format!(
                            "counter ({class}, {path}) recreated with id {id}, it has {existing}"
                        ))
                    };
                }
                if *id as usize != self.counters.len() {
                    return Err(format!(
                        "counter id {id} out of sequence (next is {})",
                        self.counters.len()
                    ));
                }
                validate_class(class).map_err(|e| e.to_string())?;
                validate_path(path, max_depth).map_err(|e| e.to_string())?;
                match self.class_ids.get(class.as_str()) {
                    Some(&class_id) => {
                        self.counter_id_or_insert(class_id, path);
                    }
                    None if path == ROOT => {
                        self.class_id_or_insert(class);
                    }
                    None => {
                        return Err(format!(
                            "counter ({class}, {path}) created before its class root"
                        ));
                    }
                }
                Ok(())
            }
            RegistryChange::Registered { id, registered } => {
                let counter = self
                    .counters
                    .get_mut(*id as usize)
                    .ok_or_else(|| format!("registration of unknown counter id {id}"))?;
                if counter.registered == *registered {
                    return Ok(());
                }
                counter.registered = *registered;
                let class = &mut self.classes[counter.class as usize];
                if *registered {
                    class.registrations += 1;
                    self.registered += 1;
                } else {
                    class.registrations -= 1;
                    self.registered -= 1;
                }
                Ok(())
            }
        }
    }

    fn class_id_or_insert(&mut self, class: &str) -> u32 {
        if let Some(&id) = self.class_ids.get(class) {
            return id;
        }
        let class_id = self.classes.len() as u32;
        let root = self.counters.len() as CounterId;
        self.counters.push(CounterDef {
            class: class_id,
            path: ROOT.into(),
            registered: false,
            targets: None,
        });
        self.classes.push(ClassDef {
            name: class.into(),
            system: false,
            registrations: 0,
            root,
            paths: HashMap::from([(Box::<str>::from(ROOT), root)]),
        });
        self.class_ids.insert(class.into(), class_id);
        class_id
    }

    fn counter_id_or_insert(&mut self, class: u32, path: &str) -> CounterId {
        if let Some(&id) = self.classes[class as usize].paths.get(path) {
            return id;
        }
        let id = self.counters.len() as CounterId;
        self.counters.push(CounterDef {
            class,
            path: path.into(),
            registered: false,
            targets: None,
        });
        self.classes[class as usize].paths.insert(path.into(), id);
        id
    }

    fn counter_id(&self, class: &str, path: &str) -> Option<CounterId> {
        let class = self.class_ids.get(class)?;
        self.classes[*class as usize].paths.get(path).copied()
    }

    fn is_registered(&self, key: &CounterKey) -> bool {
        self.counter_id(&key.class, &key.path)
            .is_some_and(|id| self.counters[id as usize].registered)
    }

    fn accepting(&self, class: &str, path: &str) -> Lookup<'_> {
        let Some(&class_id) = self.class_ids.get(class) else {
            return Lookup::Rejected(Error::UnknownClass {
                class: class.to_owned(),
            });
        };
        let def = &self.classes[class_id as usize];
        match def.paths.get(path) {
            Some(&id) => match &self.counters[id as usize].targets {
                Some(targets) => Lookup::Accepting(id, targets),
                None => Lookup::Rejected(self.rejection(&self.counters[id as usize])),
            },
            None if def.system => Lookup::SystemPathMissing,
            None if !def.is_known() => Lookup::Rejected(Error::UnknownClass {
                class: class.to_owned(),
            }),
            None => Lookup::Rejected(Error::NotRegistered {
                class: class.to_owned(),
                path: path.to_owned(),
            }),
        }
    }

    fn rejection(&self, counter: &CounterDef) -> Error {
        let class = &self.classes[counter.class as usize];
        if class.is_known() {
            Error::NotRegistered {
                class: class.name.to_string(),
                path: counter.path.to_string(),
            }
        } else {
            Error::UnknownClass {
                class: class.name.to_string(),
            }
        }
    }

    /// Recomputes the roll-up targets of every counter of a class.
    fn refresh_targets(&mut self, class_id: u32) {
        let class = &self.classes[class_id as usize];
        let accepts = |id: CounterId| {
            let counter = &self.counters[id as usize];
            class.system || counter.registered || (id == class.root && class.is_known())
        };
        let mut updates = Vec::with_capacity(class.paths.len());
        for (path, &id) in &class.paths {
            let targets = accepts(id).then(|| {
                let mut targets = vec![id];
                targets.extend(
                    ancestors(path)
                        .filter_map(|a| class.paths.get(a).copied())
                        .filter(|&a| a == class.root || accepts(a)),
                );
                if id != class.root && !targets.contains(&class.root) {
                    targets.push(class.root);
                }
                Targets::from(targets)
            });
            updates.push((id, targets));
        }
        for (id, targets) in updates {
            self.counters[id as usize].targets = targets;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            .register(&keys(&[("c", "/a"), ("c", "/a/b")]), &no_change_log)
            .unwrap();
        let (_, targets, _) = registry.resolve("c", "/a/b", &no_change_log).unwrap();
        assert_eq!(names(&registry, &targets), ["/a/b", "/a", "/"]);
        registry
            .unregister(&keys(&[("c", "/a")]), &no_change_log)
            .unwrap();
        let (_, targets, _) = registry.resolve("c", "/a/b", &no_change_log).unwrap();
        assert_eq!(names(&registry, &targets), ["/a/b", "/"]);
        assert!(matches!(
            registry.resolve("c", "/a", &no_change_log),
            Err(Error::NotRegistered { .. })
        ));
        let (_, root, _) = registry.resolve("c", "/", &no_change_log).unwrap();
        assert_eq!(names(&registry, &root), ["/"]);
    }

    #[test]
    fn unknown_classes_and_unregistered_paths_are_rejected() {
        let registry = Registry::new(2, 100);
        assert!(matches!(
            registry.resolve("c", "/", &no_change_log),
            Err(Error::UnknownClass { .. })
        ));
        registry
            .register(&keys(&[("c", "/a")]), &no_change_log)
            .unwrap();
        assert!(matches!(
            registry.resolve("c", "/b", &no_change_log),
            Err(Error::NotRegistered { .. })
        ));
        registry
            .unregister(&keys(&[("c", "/a")]), &no_change_log)
            .unwrap();
        assert!(matches!(
            registry.resolve("c", "/", &no_change_log),
            Err(Error::UnknownClass { .. })
        ));
    }

    #[test]
    fn system_classes_accept_every_path_and_roll_up_fully() {
        let registry = Registry::new(2, 100);
        registry
            .ensure_system_classes(&["_logins".to_owned()], &no_change_log)
            .unwrap();
        let (_, targets, _) = registry
            .resolve("_logins", "/web/eu", &no_change_log)
            .unwrap();
        assert_eq!(names(&registry, &targets), ["/web/eu", "/web", "/"]);
        assert!(registry.registered().is_empty());
    }

    #[test]
    fn registration_is_all_or_nothing_and_limited() {
        let registry = Registry::new(2, 2);
        let err = registry
            .register(&keys(&[("c", "/a"), ("c", "/a/b/c")]), &no_change_log)
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 1, .. }));
        assert!(registry.registered().is_empty());
        registry
            .register(
                &keys(&[("c", "/a"), ("c", "/a"), ("c", "/b")]),
                &no_change_log,
            )
            .unwrap();
        assert!(matches!(
            registry.register(&keys(&[("c", "/z")]), &no_change_log),
            Err(Error::TooManyRegistrations { max: 2 })
        ));
        registry
            .register(&keys(&[("c", "/a")]), &no_change_log)
            .unwrap();
        assert_eq!(registry.registered(), keys(&[("c", "/a"), ("c", "/b")]));
    }

    #[test]
    fn the_image_rebuilds_the_same_ids() {
        let registry = Registry::new(2, 100);
        registry
            .ensure_system_classes(&["_s".to_owned()], &no_change_log)
            .unwrap();
        registry
            .register(&keys(&[("c", "/a/b"), ("d", "/x")]), &no_change_log)
            .unwrap();
        registry.resolve("_s", "/p/q", &no_change_log).unwrap();
        registry
            .unregister(&keys(&[("d", "/x")]), &no_change_log)
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
    fn changes_are_logged_before_they_apply() {
        let registry = Registry::new(2, 100);
        let seen = std::cell::RefCell::new(Vec::new());
        let log = |changes: &[RegistryChange]| {
            seen.borrow_mut().extend_from_slice(changes);
            Ok(())
        };
        registry.register(&keys(&[("c", "/a")]), &log).unwrap();
        let replayed = Registry::new(2, 100);
        replayed.replay(&seen.borrow()).unwrap();
        assert_eq!(replayed.registered(), keys(&[("c", "/a")]));
        let failing = |_: &[RegistryChange]| Err(Error::EmptyBatch);
        assert!(registry.register(&keys(&[("c", "/b")]), &failing).is_err());
        assert_eq!(registry.registered(), keys(&[("c", "/a")]));
    }

    #[test]
    fn generation_moves_only_on_change() {
        let registry = Registry::new(2, 100);
        let before = registry.generation();
        registry
            .unregister(&keys(&[("c", "/a")]), &no_change_log)
            .unwrap();
        assert_eq!(registry.generation(), before);
        registry
            .register(&keys(&[("c", "/a")]), &no_change_log)
            .unwrap();
        assert_ne!(registry.generation(), before);
    }
}
