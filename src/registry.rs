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

impl Registry {
    pub(crate) fn new(
        max_depth: usize,
        max_registrations: usize,
        system_classes: &[String],
    ) -> Result<Self> {
        let mut state = State::default();
        for class in system_classes {
            validate_class(class)?;
            let id = state.class_id_or_insert(class);
            state.classes[id as usize].system = true;
            state.refresh_targets(id);
        }
        Ok(Registry {
            generation: AtomicU64::new(0),
            state: RwLock::new(state),
            max_depth,
            max_registrations,
        })
    }

    pub(crate) fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The current generation; it changes whenever any roll-up target may have.
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

    /// Registers every pair, or none if any is invalid or the limit would be exceeded.
    pub(crate) fn register(&self, keys: &[CounterKey]) -> Result<()> {
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
        let mut touched = Vec::new();
        for key in new_pairs {
            let class = state.class_id_or_insert(&key.class);
            let id = state.counter_id_or_insert(class, &key.path);
            state.counters[id as usize].registered = true;
            state.classes[class as usize].registrations += 1;
            state.registered += 1;
            touched.push(class);
        }
        self.refresh(&mut state, touched);
        Ok(())
    }

    /// Unregisters every pair (pairs not registered are ignored), or none if any is invalid.
    pub(crate) fn unregister(&self, keys: &[CounterKey]) -> Result<()> {
        for (index, key) in keys.iter().enumerate() {
            self.validate(key).map_err(|e| e.at_entry(index))?;
        }
        let mut state = self.state.write();
        let mut touched = Vec::new();
        for key in keys {
            let Some(id) = state.counter_id(&key.class, &key.path) else {
                continue;
            };
            let counter = &mut state.counters[id as usize];
            if !counter.registered {
                continue;
            }
            counter.registered = false;
            let class = counter.class;
            state.classes[class as usize].registrations -= 1;
            state.registered -= 1;
            touched.push(class);
        }
        self.refresh(&mut state, touched);
        Ok(())
    }

    fn refresh(&self, state: &mut State, mut classes: Vec<u32>) {
        if classes.is_empty() {
            return;
        }
        classes.sort_unstable();
        classes.dedup();
        for class in classes {
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
        let class_id = state.class_ids[class];
        state.counter_id_or_insert(class_id, path);
        for ancestor in ancestors(path) {
            state.counter_id_or_insert(class_id, ancestor);
        }
        state.refresh_targets(class_id);
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        match state.accepting(class, path) {
            Lookup::Accepting(id, targets) => Ok(found(id, targets, generation)),
            Lookup::Rejected(error) => Err(error),
            Lookup::SystemPathMissing => unreachable!("system path was just created"),
        }
    }

    /// [`Registry::resolve_with`], keeping a clone of the targets.
    pub(crate) fn resolve(&self, class: &str, path: &str) -> Result<(CounterId, Targets, u64)> {
        self.resolve_with(class, path, |id, targets, generation| {
            (id, targets.clone(), generation)
        })
    }

    /// The roll-up targets of a handle's counter: `None` means the handle's
    /// own are current (the registry is unchanged since it was made, and no
    /// lock was taken); otherwise the registry's present ones.
    pub(crate) fn targets_of(&self, handle: &CounterHandle) -> Result<Option<Targets>> {
        if self.generation() == handle.generation {
            return Ok(None);
        }
        let state = self.state.read();
        let counter = &state.counters[handle.id as usize];
        match &counter.targets {
            Some(targets) => Ok(Some(targets.clone())),
            None => Err(state.rejection(counter)),
        }
    }
}

enum Lookup<'a> {
    Accepting(CounterId, &'a Targets),
    Rejected(Error),
    SystemPathMissing,
}

impl State {
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
        let registry = Registry::new(2, 100, &[]).unwrap();
        registry
            .register(&keys(&[("c", "/a"), ("c", "/a/b")]))
            .unwrap();
        let (_, targets, _) = registry.resolve("c", "/a/b").unwrap();
        assert_eq!(names(&registry, &targets), ["/a/b", "/a", "/"]);
        registry.unregister(&keys(&[("c", "/a")])).unwrap();
        let (_, targets, _) = registry.resolve("c", "/a/b").unwrap();
        assert_eq!(names(&registry, &targets), ["/a/b", "/"]);
        assert!(matches!(
            registry.resolve("c", "/a"),
            Err(Error::NotRegistered { .. })
        ));
        let (_, root, _) = registry.resolve("c", "/").unwrap();
        assert_eq!(names(&registry, &root), ["/"]);
    }

    #[test]
    fn unknown_classes_and_unregistered_paths_are_rejected() {
        let registry = Registry::new(2, 100, &[]).unwrap();
        assert!(matches!(
            registry.resolve("c", "/"),
            Err(Error::UnknownClass { .. })
        ));
        registry.register(&keys(&[("c", "/a")])).unwrap();
        assert!(matches!(
            registry.resolve("c", "/b"),
            Err(Error::NotRegistered { .. })
        ));
        registry.unregister(&keys(&[("c", "/a")])).unwrap();
        assert!(matches!(
            registry.resolve("c", "/"),
            Err(Error::UnknownClass { .. })
        ));
    }

    #[test]
    fn system_classes_accept_every_path_and_roll_up_fully() {
        let registry = Registry::new(2, 100, &["_logins".to_owned()]).unwrap();
        let (_, targets, _) = registry.resolve("_logins", "/web/eu").unwrap();
        assert_eq!(names(&registry, &targets), ["/web/eu", "/web", "/"]);
        assert!(registry.registered().is_empty());
    }

    #[test]
    fn registration_is_all_or_nothing_and_limited() {
        let registry = Registry::new(2, 2, &[]).unwrap();
        let err = registry
            .register(&keys(&[("c", "/a"), ("c", "/a/b/c")]))
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 1, .. }));
        assert!(registry.registered().is_empty());
        registry
            .register(&keys(&[("c", "/a"), ("c", "/a"), ("c", "/b")]))
            .unwrap();
        assert!(matches!(
            registry.register(&keys(&[("c", "/z")])),
            Err(Error::TooManyRegistrations { max: 2 })
        ));
        registry.register(&keys(&[("c", "/a")])).unwrap();
        assert_eq!(registry.registered(), keys(&[("c", "/a"), ("c", "/b")]));
    }

    #[test]
    fn generation_moves_only_on_change() {
        let registry = Registry::new(2, 100, &[]).unwrap();
        let before = registry.generation();
        registry.unregister(&keys(&[("c", "/a")])).unwrap();
        assert_eq!(registry.generation(), before);
        registry.register(&keys(&[("c", "/a")])).unwrap();
        assert_ne!(registry.generation(), before);
    }
}
