//! Registering and unregistering counters, and resolving counter handles:
//! each registry change is planned under the registry's lock, logged,
//! committed, and only then waited for.

use super::Tally;
use crate::counter::CounterKey;
use crate::error::Result;
use crate::persist::{RecordRef, Storage};
use crate::registry::{CounterHandle, PlannedChanges};

use super::increment::not_registered;

impl Tally {
    /// Makes planned registry changes: logs them, applies them (which
    /// releases the registry's lock), and only then waits for the log as
    /// the durability asks, so that no reader or writer waits on the
    /// registry through a disk sync. If the log refuses the record the
    /// changes are dropped; if the sync then fails the call fails and the
    /// engine refuses further writes, though readers may have seen them.
    pub(super) fn commit_registry(&self, planned: PlannedChanges<'_>) -> Result<()> {
        let wal = self.inner.storage.as_ref().and_then(Storage::wal);
        let logged_end = match wal {
            Some(wal) if !planned.changes().is_empty() => {
                Some(wal.append(|_| RecordRef::Registry(planned.changes()))?.1)
            }
            _ => None,
        };
        planned.commit();
        match (wal, logged_end) {
            (Some(wal), Some(end)) => wal.settle(end),
            _ => Ok(()),
        }
    }

    /// Registers (class, path) pairs: all of them, or none if any is invalid
    /// (the error names the index) or the registration limit would be
    /// exceeded. Registering a registered pair again is not an error.
    pub fn register<I>(&self, counters: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<CounterKey>,
    {
        let keys: Vec<CounterKey> = counters.into_iter().map(Into::into).collect();
        self.commit_registry(self.inner.registry.plan_register(&keys)?)
    }

    /// Unregisters (class, path) pairs: they stop accepting increments and
    /// receiving roll-ups; their data stays readable. Pairs that are not
    /// registered are ignored; an invalid pair rejects the whole call.
    pub fn unregister<I>(&self, counters: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<CounterKey>,
    {
        let keys: Vec<CounterKey> = counters.into_iter().map(Into::into).collect();
        self.commit_registry(self.inner.registry.plan_unregister(&keys)?)
    }

    /// The registered pairs, sorted by class then path.
    pub fn registered(&self) -> Vec<CounterKey> {
        self.inner.registry.registered()
    }

    /// Resolves (class, path) once into a handle for
    /// [`Tally::increment_counter`], which then does no string work.
    ///
    /// For a path of a system class this creates its counter (and its
    /// ancestors') if new, within [`Config::max_counters`](crate::Config::max_counters).
    pub fn counter(&self, class: &str, path: &str) -> Result<CounterHandle> {
        let registry = &self.inner.registry;
        let found = match registry.resolve(class, path)? {
            Some(found) => Some(found),
            None => {
                self.commit_registry(registry.plan_new_counters(&[CounterKey::new(class, path)])?)?;
                registry.resolve(class, path)?
            }
        };
        let (id, targets, generation) = found.ok_or_else(|| not_registered(class, path))?;
        Ok(CounterHandle {
            engine: self.inner.id,
            id,
            generation,
            targets,
        })
    }
}
