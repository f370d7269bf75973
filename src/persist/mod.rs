//! Durability: snapshots, the write-ahead log and recovery.
//!
//! A data directory holds `LOCK`, numbered log segments
//! (`log-NNNNNNNNNNNNNNNNNNNN.tlog`) and snapshots
//! (`snapshot-NNNNNNNNNNNNNNNNNNNN.tsnap`, numbered by the first segment to
//! replay after them). `docs/format.md` gives the byte layout.

mod format;
#[doc(hidden)]
pub mod fuzzing;
mod held;
pub mod inspect;
mod recovery;
mod snapshot;
mod wal;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// The record encoding, for other modules' tests of their stored forms
/// (bincode stays inside `persist`).
#[cfg(test)]
pub(crate) use format::{decode as decode_record, write_record};
pub use recovery::RecoveryReport;
pub(crate) use recovery::{Recovered, recover};
pub use snapshot::SnapshotSummary;
pub(crate) use wal::{RecordRef, Wal};

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::store::Store;
use crate::subject::TokenStore;

/// How acknowledged writes are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge a write only after the log is synced; concurrent writers
    /// share one sync (group commit).
    Always,
    /// Make a write durable at most this long after it is acknowledged.
    ///
    /// Write-behind: writers do not log their batches one by one. The
    /// store marks the subjects they change, and a background thread,
    /// once per interval, logs the whole state of each changed subject and
    /// syncs (log format version 3, `docs/format.md` §5). A subject
    /// incremented many times in an interval costs one record, and an
    /// increment costs about what it costs in memory. [`Tally::sync`]
    /// writes back at once.
    ///
    /// [`Tally::sync`]: crate::Tally::sync
    Interval(Duration),
    /// No log: only snapshots (explicit, periodic and on close) persist.
    Never,
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Interval(Duration::from_secs(1))
    }
}

/// Snapshots kept; the log is kept from the oldest one on, so a damaged
/// newest snapshot can fall back to the one before it.
const SNAPSHOTS_KEPT: usize = 2;

/// Syncs a directory, so that creations and renames in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// An open data directory: its lock, its log and its snapshot schedule.
pub(crate) struct Storage {
    dir: PathBuf,
    _lock: File,
    wal: Option<Arc<Wal>>,
    snapshot_lock: Mutex<()>,
    report: RecoveryReport,
    /// The log's background sync thread (group commit or timer).
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Storage {
    /// Locks `dir` (creating it if missing) and recovers its contents.
    pub(crate) fn open(
        dir: &Path,
        durability: Durability,
        now_secs: i64,
        horizon: crate::period::Horizon,
        fresh: &dyn Fn() -> (Registry, Store, TokenStore),
    ) -> Result<(Storage, Recovered)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: dir.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", lock_path.display()), e));
            }
        }
        remove_temporary_files(dir)?;
        let recovered = recover(dir, now_secs, horizon, fresh)?;
        let wal = match durability {
            Durability::Never => None,
            _ => Some(Arc::new(Wal::create(
                dir,
                recovered.next_segment,
                recovered.next_lsn,
                durability,
            )?)),
        };
        let syncer = match &wal {
            Some(wal) => Wal::start_syncer(wal, &recovered.store)?,
            None => None,
        };
        let storage = Storage {
            dir: dir.to_owned(),
            _lock: lock,
            wal,
            snapshot_lock: Mutex::new(()),
            report: recovered.report.clone(),
            syncer: Mutex::new(syncer),
        };
        Ok((storage, recovered))
    }

    pub(crate) fn report(&self) -> &RecoveryReport {
        &self.report
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log, unless durability is [`Durability::Never`].
    pub(crate) fn wal(&self) -> Option<&Wal> {
        self.wal.as_deref()
    }

    /// Appends a record and waits as [`Wal::settle`] says. Returns the
    /// record's sequence number.
    pub(crate) fn log<'r>(&self, record: impl FnOnce(u64) -> RecordRef<'r>) -> Result<u64> {
        let Some(wal) = &self.wal else { return Ok(0) };
        let (lsn, end) = wal.append(record)?;
        wal.settle(end)?;
        Ok(lsn)
    }

    /// Writes a snapshot now (one at a time), then drops the files it
    /// makes obsolete.
    pub(crate) fn snapshot(
        &self,
        now_millis: i64,
        registry: &Registry,
        store: &Store,
        tokens: &TokenStore,
    ) -> Result<SnapshotSummary> {
        let _one_at_a_time = self.snapshot_lock.lock();
        let replay_from = match &self.wal {
            Some(wal) => {
                // Under write-behind, the log gets what changed first, so
                // that the log from an older snapshot on holds all this one
                // holds (up to what changes while it is taken), should this
                // one be damaged and recovery fall back.
                wal.write_back(store)?;
                wal.rotate()?
            }
            // No log: number past every file, so that no leftover segment
            // is ever replayed on top of this snapshot.
            None => {
                let listing = recovery::list(&self.dir)?;
                let last = |files: &[(u64, PathBuf)]| files.last().map_or(0, |(n, _)| *n);
                last(&listing.snapshots).max(last(&listing.segments)) + 1
            }
        };
        let summary = snapshot::write(&self.dir, replay_from, now_millis, registry, store, tokens)?;
        // Only a snapshot that reads back counts as one that opens: one
        // that does not is removed, and the files before it stay.
        if let Err(error) = snapshot::verify(&summary.path) {
            let _ = std::fs::remove_file(&summary.path);
            return Err(error);
        }
        self.remove_obsolete()?;
        Ok(summary)
    }

    /// Removes the snapshots older than the [`SNAPSHOTS_KEPT`] newest
    /// valid ones, and the log segments only they needed. Every snapshot
    /// counted valid is known to open: the one recovery loaded, or one
    /// this engine wrote and read back ([`snapshot::verify`]); those
    /// recovery did not try are older than the one it loaded. A snapshot
    /// recovery found damaged does not count as kept (else, after a
    /// fallback, the next snapshot would delete the valid one recovery
    /// fell back to and keep the damaged one); it is left in place, never
    /// loaded while a newer valid one exists.
    fn remove_obsolete(&self) -> Result<()> {
        let listing = recovery::list(&self.dir)?;
        let damaged = |path: &PathBuf| {
            self.report
                .skipped_snapshots
                .iter()
                .any(|(skipped, _)| skipped == path)
        };
        let valid: Vec<&(u64, PathBuf)> = listing
            .snapshots
            .iter()
            .filter(|(_, path)| !damaged(path))
            .collect();
        let Some(&&(oldest_kept, _)) = valid.get(valid.len().saturating_sub(SNAPSHOTS_KEPT)) else {
            return Ok(());
        };
        let stale_snapshots = listing
            .snapshots
            .iter()
            .filter(|(n, path)| *n < oldest_kept && !damaged(path));
        let stale_segments = listing.segments.iter().filter(|(n, _)| *n < oldest_kept);
        for (_, path) in stale_snapshots.chain(stale_segments) {
            std::fs::remove_file(path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        }
        sync_dir(&self.dir)
    }

    /// Writes back what changed (under write-behind) and syncs the log.
    pub(crate) fn sync(&self, store: &Store) -> Result<()> {
        match &self.wal {
            Some(wal) => wal.write_back(store).and_then(|()| wal.sync()),
            None => Ok(()),
        }
    }

    /// Stops the background sync and syncs the log.
    pub(crate) fn close(&self) -> Result<()> {
        self.stop_syncer();
        match &self.wal {
            Some(wal) => wal.sync(),
            None => Ok(()),
        }
    }
}

impl Storage {
    /// Stops the log's sync thread, once; writers sync their own records
    /// from then on.
    fn stop_syncer(&self) {
        if let Some(thread) = self.syncer.lock().take() {
            if let Some(wal) = &self.wal {
                wal.stop_syncer();
            }
            let _ = thread.join();
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        // The sync thread holds the log; without this it would outlive us.
        self.stop_syncer();
    }
}

fn remove_temporary_files(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(".tmp"))
        {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io(format!("removing {}", entry.path().display()), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_780_800;

    fn open(dir: &Path) -> (Storage, Recovered) {
        let fresh = || {
            (
                Registry::new(2, 10_000),
                Store::default(),
                TokenStore::new(Duration::from_secs(3600)),
            )
        };
        let horizon = crate::period::Retention {
            months: 24,
            days: 90,
        }
        .horizon(NOW);
        Storage::open(dir, Durability::Never, NOW, horizon, &fresh).unwrap()
    }

    #[test]
    fn fault_a_retention_keeps_the_newest_snapshot_that_opens_when_newer_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let token = {
            let (storage, engine) = open(dir.path());
            let token = engine.tokens.issue("u", NOW, |_, _| Ok(())).unwrap();
            let snapshot = |storage: &Storage| {
                storage.snapshot(0, &engine.registry, &engine.store, &engine.tokens)
            };
            snapshot(&storage).unwrap();
            // Two snapshots written wrong: they do not read back.
            snapshot::WRITE_UNREADABLE.set(true);
            let unreadable = [snapshot(&storage), snapshot(&storage)];
            snapshot::WRITE_UNREADABLE.set(false);
            for written in unreadable {
                assert!(matches!(written, Err(Error::Corrupt { .. })), "{written:?}");
            }
            token
        };
        // The first snapshot is still there, and opens.
        let (_, engine) = open(dir.path());
        assert_eq!(
            engine
                .tokens
                .lookup(token.as_str(), NOW)
                .unwrap()
                .as_deref(),
            Some("u")
        );
    }
}
