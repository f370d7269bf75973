//! Snapshots, sync and close: what makes an engine's state durable on demand.

use super::Tally;
use crate::error::{Error, Result};
use crate::persist::{RecoveryReport, SnapshotSummary, Storage};

impl Tally {
    /// Writes a snapshot of the whole engine now, while writers keep
    /// running, and drops the log and snapshots it makes obsolete.
    ///
    /// Fails with [`Error::Config`] on an in-memory engine.
    pub fn snapshot(&self) -> Result<SnapshotSummary> {
        let storage = self.storage()?;
        storage.snapshot(
            self.now_millis(),
            &self.inner.registry,
            &self.inner.store,
            &self.inner.tokens,
        )
    }

    /// Makes every write acknowledged so far durable now, without waiting
    /// for the [`Durability::Interval`] timer: writes back the subjects
    /// changed since the last write-back and syncs the log. (Under
    /// [`Durability::Always`] there is nothing to wait for; under
    /// [`Durability::Never`] use [`Tally::snapshot`].)
    ///
    /// Fails with [`Error::Config`] on an in-memory engine.
    ///
    /// [`Durability::Interval`]: crate::Durability::Interval
    /// [`Durability::Always`]: crate::Durability::Always
    /// [`Durability::Never`]: crate::Durability::Never
    pub fn sync(&self) -> Result<()> {
        self.storage()?.sync(&self.inner.store)
    }

    /// Syncs the log and writes a final snapshot. Dropping the last clone
    /// of a durable engine does the same, ignoring errors.
    pub fn close(&self) -> Result<()> {
        let storage = self.storage()?;
        storage.close()?;
        self.snapshot().map(drop)
    }

    /// What recovery loaded, replayed and cut when the engine opened;
    /// `None` for an in-memory engine.
    pub fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.inner.storage.as_ref().map(Storage::report)
    }

    /// The data directory, if the engine is durable.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.inner.storage.as_ref().map(Storage::dir)
    }

    fn storage(&self) -> Result<&Storage> {
        self.inner
            .storage
            .as_ref()
            .ok_or_else(|| Error::Config("the engine has no data directory".into()))
    }
}
