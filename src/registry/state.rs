//! The registry's state behind its lock: classes, counters, and each
//! counter's roll-up targets, kept current as changes apply.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use super::{CounterId, RegistryChange, Targets};
use crate::counter::validate_class;
use crate::error::Error;
use crate::path::{ROOT, ancestors, validate_path};

pub(super) struct ClassDef {
    pub(super) name: Box<str>,
    pub(super) system: bool,
    /// Registered pairs of this class.
    pub(super) registrations: usize,
    pub(super) root: CounterId,
    /// Every counter of the class by path, in path order, so that a path's
    /// descendants are one range (those starting with the path and `/`).
    pub(super) paths: BTreeMap<Box<str>, CounterId>,
}

impl ClassDef {
    pub(super) fn is_known(&self) -> bool {
        self.system || self.registrations > 0
    }
}

pub(super) struct CounterDef {
    pub(super) class: u32,
    pub(super) path: Box<str>,
    pub(super) registered: bool,
    /// `Some` while the counter accepts increments.
    pub(super) targets: Option<Targets>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) classes: Vec<ClassDef>,
    pub(super) class_ids: HashMap<Box<str>, u32>,
    pub(super) counters: Vec<CounterDef>,
    pub(super) registered: usize,
    /// How many times a counter's targets were computed: for tests that
    /// pin the cost of a change.
    #[cfg(test)]
    pub(super) targets_computed: std::sync::atomic::AtomicUsize,
}

/// How a (class, path) pair stands for an increment.
pub(super) enum Lookup<'a> {
    Accepting(CounterId, &'a Targets),
    Rejected(Error),
    /// A path of a system class that has no counter yet.
    SystemPathMissing,
}

impl State {
    /// Applies changes planned against this state.
    pub(super) fn apply_all(&mut self, changes: &[RegistryChange]) {
        for change in changes {
            self.replay(change, usize::MAX)
                .expect("planned changes fit the registry");
        }
    }

    /// Applies one change; a change that does not fit is corrupt input.
    pub(super) fn replay(
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
                        self.insert_counter(class_id, path);
                    }
                    None if path == ROOT => {
                        self.insert_class(class);
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

    fn insert_class(&mut self, class: &str) {
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
            paths: BTreeMap::from([(Box::<str>::from(ROOT), root)]),
        });
        self.class_ids.insert(class.into(), class_id);
    }

    fn insert_counter(&mut self, class: u32, path: &str) {
        let id = self.counters.len() as CounterId;
        self.counters.push(CounterDef {
            class,
            path: path.into(),
            registered: false,
            targets: None,
        });
        self.classes[class as usize].paths.insert(path.into(), id);
    }

    pub(super) fn counter_id(&self, class: &str, path: &str) -> Option<CounterId> {
        let class = self.class_ids.get(class)?;
        self.classes[*class as usize].paths.get(path).copied()
    }

    pub(super) fn is_system(&self, class: &str) -> bool {
        self.class_ids
            .get(class)
            .is_some_and(|&id| self.classes[id as usize].system)
    }

    pub(super) fn is_registered(&self, class: &str, path: &str) -> bool {
        self.counter_id(class, path)
            .is_some_and(|id| self.counters[id as usize].registered)
    }

    pub(super) fn accepting(&self, class: &str, path: &str) -> Lookup<'_> {
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

    pub(super) fn rejection(&self, counter: &CounterDef) -> Error {
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

    /// The roll-up targets of a counter as the state stands: `None` if it
    /// does not accept increments, else itself, its accepting ancestors
    /// nearest first, and the class root.
    pub(super) fn targets_for(&self, id: CounterId) -> Option<Targets> {
        #[cfg(test)]
        self.targets_computed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let counter = &self.counters[id as usize];
        let class = &self.classes[counter.class as usize];
        let accepts = |id: CounterId| {
            let counter = &self.counters[id as usize];
            class.system || counter.registered || (id == class.root && class.is_known())
        };
        accepts(id).then(|| {
            let mut targets = vec![id];
            targets.extend(
                ancestors(&counter.path)
                    .filter_map(|a| class.paths.get(a).copied())
                    .filter(|&a| a == class.root || accepts(a)),
            );
            if id != class.root && !targets.contains(&class.root) {
                targets.push(class.root);
            }
            Targets::from(targets)
        })
    }

    /// Recomputes every counter's roll-up targets.
    pub(super) fn refresh_all(&mut self) {
        for id in 0..self.counters.len() as CounterId {
            self.counters[id as usize].targets = self.targets_for(id);
        }
    }

    /// Recomputes the roll-up targets that `changes` (just applied) can
    /// have changed, and no others: those of each changed counter, of its
    /// descendants (which roll up to it) and of its class root (whose
    /// acceptance follows whether the class is known). The cost grows with
    /// the changes and their descendants, not with the registry.
    pub(super) fn refresh_after(&mut self, changes: &[RegistryChange]) {
        let mut stale = HashSet::new();
        for change in changes {
            let id = match change {
                RegistryChange::Created { id, .. } | RegistryChange::Registered { id, .. } => *id,
            };
            let counter = &self.counters[id as usize];
            let class = &self.classes[counter.class as usize];
            stale.insert(id);
            stale.insert(class.root);
            stale.extend(descendants(&class.paths, &counter.path));
        }
        for id in stale {
            self.counters[id as usize].targets = self.targets_for(id);
        }
    }
}

/// The counters whose paths lie below `path`: every other path for the
/// root, else those starting with `path` and a `/` (`/a/` and `/a/b` for `/a`).
fn descendants<'a>(
    paths: &'a BTreeMap<Box<str>, CounterId>,
    path: &str,
) -> impl Iterator<Item = CounterId> + 'a {
    let prefix: Box<str> = if path == ROOT {
        ROOT.into()
    } else {
        format!("{path}/").into()
    };
    paths
        .range::<str, _>((Bound::Included(&*prefix), Bound::Unbounded))
        .take_while(move |(p, _)| p.starts_with(&*prefix))
        .filter(|(p, _)| &***p != ROOT)
        .map(|(_, &id)| id)
}
