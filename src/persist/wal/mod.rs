//! The write-ahead log: accepted batches (or, under write-behind, the
//! states of the subjects they changed), registry changes and issued
//! regTokens, appended in order to numbered segment files.
//!
//! Appenders encode their record into one shared in-memory buffer (a short
//! critical section that also assigns the log sequence number). A
//! background thread makes the buffer durable: under
//! [`Durability::Always`] it is group commit ([`Wal::group_commit`]): the
//! thread writes and syncs everything buffered (one frame, or as many as
//! keep each within [`FRAME_BUDGET_BYTES`], the budget the reader
//! accepts: a frame is sealed before a record would take it past), wakes the
//! writers whose records that covered, and starts the next sync with what
//! arrived meanwhile. Under [`Durability::Interval`] it is write-behind
//! ([`Wal::sync_every`]): writers log nothing; the store marks the
//! subjects they change, and on a timer the thread logs those subjects'
//! states ([`Wal::write_back`]) and syncs. Without that thread (it is
//! stopped when the engine closes), a writer logs its batch and syncs it
//! itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};

use parking_lot::Mutex;

use super::Durability;
use super::format::{FRAME_BUDGET_BYTES, FRAME_OVERHEAD, start_log_frame};
use crate::error::{Error, Result};
use crate::period::EventTime;
use crate::store::{BatchLog, ResolvedEntry, Store};

mod buffer;
mod group_commit;
mod record;
#[cfg(test)]
mod tests;
mod write_behind;
mod writer;

use buffer::{Buffer, INITIAL_BUFFER_BYTES};
pub(crate) use record::{LogRecord, RecordRef, decode_log_frame};
#[cfg(test)]
pub(crate) use record::{LoggedEntry, RecordV2Ref};
use writer::Segment;
pub(crate) use writer::{segment_name, segment_number};

/// Buffered bytes past which the interval sync thread is asked to sync
/// early.
const EARLY_SYNC_BYTES: usize = 1 << 20;

/// Bytes appended but not yet synced past which appenders wait for a
/// sync, so that a writer faster than the disk cannot grow the buffer
/// without bound. (Frames need no such bound: each is sealed before a
/// record would take it past the budget, [`FRAME_BUDGET_BYTES`].)
const MAX_BACKLOG_BYTES: u64 = 16 << 20;

/// The write-ahead log of a data directory.
pub(crate) struct Wal {
    dir: PathBuf,
    durability: Durability,
    buffer: Mutex<Buffer>,
    segment: Mutex<Segment>,
    /// Logical position up to which everything is written and synced.
    durable: AtomicU64,
    /// Set (under the buffer's lock) once a write or sync failed.
    poisoned: AtomicBool,
    /// Why, once `poisoned` is set.
    poison_reason: Mutex<Option<String>>,
    /// The background sync thread, once started ([`Wal::start_syncer`]).
    syncer: OnceLock<Thread>,
    /// The background sync thread is told to stop, or has stopped.
    stopping: AtomicBool,
    /// Writers whose records are synced but who still sleep: each writer
    /// woken from here wakes [`WAKE_FAN_OUT`] more, so that waking many
    /// writers is spread over them rather than done one by one by the
    /// sync thread (see [`Wal::wake_some`]).
    to_wake: Mutex<Vec<Thread>>,
}

impl Wal {
    /// Starts a new segment `number` in `dir`; the next batch gets `next_lsn`.
    pub(crate) fn create(
        dir: &Path,
        number: u64,
        next_lsn: u64,
        durability: Durability,
    ) -> Result<Wal> {
        let segment = Segment::create(dir, number)?;
        let mut bytes = Vec::with_capacity(INITIAL_BUFFER_BYTES);
        start_log_frame(&mut bytes, next_lsn);
        Ok(Wal {
            dir: dir.to_owned(),
            durability,
            buffer: Mutex::new(Buffer {
                bytes,
                frame_start: 0,
                first_lsn: next_lsn,
                next_lsn,
                last_at: 0,
                end: 0,
                waiters: Vec::new(),
                wake_syncer_at: usize::MAX,
                early_requested: false,
            }),
            segment: Mutex::new(segment),
            durable: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(None),
            syncer: OnceLock::new(),
            stopping: AtomicBool::new(false),
            to_wake: Mutex::new(Vec::new()),
        })
    }

    fn poison_error(&self) -> Error {
        Error::Poisoned {
            reason: self
                .poison_reason
                .lock()
                .clone()
                .unwrap_or_else(|| "an earlier log write failed".into()),
        }
    }

    /// Fails with [`Error::Poisoned`] once a write or sync of the log failed.
    pub(crate) fn check_poison(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(self.poison_error())
        } else {
            Ok(())
        }
    }

    /// Refuses every later append and wakes every waiter, who will find
    /// the log poisoned.
    fn poison(&self, reason: String) {
        self.poison_reason.lock().get_or_insert(reason);
        let waiters = {
            let mut buffer = self.buffer.lock();
            self.poisoned.store(true, Ordering::Release);
            std::mem::take(&mut buffer.waiters)
        };
        waiters.iter().for_each(Thread::unpark);
    }

    /// Appends a record; returns its log sequence number (for increments)
    /// and the logical position to wait for with [`Wal::settle`].
    pub(crate) fn append<'r>(
        &self,
        record: impl FnOnce(u64) -> RecordRef<'r>,
    ) -> Result<(u64, u64)> {
        let mut buffer = self.buffer.lock();
        // Checked under the lock: poisoning drains the waiters under it,
        // so no waiter can be added to a poisoned log and sleep forever.
        if self.poisoned.load(Ordering::Acquire) {
            drop(buffer);
            return Err(self.poison_error());
        }
        let lsn = buffer.next_lsn;
        buffer.next_lsn += 1;
        let before = buffer.bytes.len();
        let record = record(lsn);
        let last_at = buffer.last_at;
        buffer.encode(lsn, record);
        if buffer.bytes.len() - buffer.frame_start > FRAME_OVERHEAD + FRAME_BUDGET_BYTES
            && let Err(too_large) = buffer.refit(before, lsn, last_at, record)
        {
            drop(buffer);
            return Err(too_large.into());
        }
        buffer.end += (buffer.bytes.len() - before) as u64;
        let end = buffer.end;
        let wake_syncer = match self.durability {
            Durability::Always => {
                buffer.waiters.push(std::thread::current());
                buffer.waiters.len() == buffer.wake_syncer_at
            }
            _ if buffer.bytes.len() >= EARLY_SYNC_BYTES && !buffer.early_requested => {
                buffer.early_requested = true;
                true
            }
            _ => false,
        };
        drop(buffer);
        if wake_syncer && let Some(syncer) = self.syncer.get() {
            syncer.unpark();
        }
        Ok((lsn, end))
    }

    /// What an appender waits for after appending up to `end`: under
    /// [`Durability::Always`], its record synced; otherwise nothing, unless
    /// more than [`MAX_BACKLOG_BYTES`] are waiting to be written, in which
    /// case it syncs too (backpressure: a writer faster than the disk
    /// cannot grow the buffer without bound), or the sync thread has
    /// stopped (after `close`), in which case it syncs its own record.
    pub(crate) fn settle(&self, end: u64) -> Result<()> {
        if self.durability == Durability::Always {
            return self.await_group_commit(end);
        }
        let backlog = end.saturating_sub(self.durable.load(Ordering::Acquire));
        // Once the sync thread is gone (after `close`), nothing else would
        // sync this record within the interval: the writer does.
        let unattended = self.syncer.get().is_none() || self.stopping.load(Ordering::SeqCst);
        if backlog > MAX_BACKLOG_BYTES || unattended {
            self.wait_durable(end)
        } else {
            Ok(())
        }
    }

    /// Holds every write and sync of the log until the guard is dropped:
    /// for tests that need a sync to be slow.
    #[cfg(test)]
    pub(crate) fn hold_syncs(&self) -> impl Drop + '_ {
        self.segment.lock()
    }

    /// The logical position up to which records have been appended: for
    /// tests that wait for an append.
    #[cfg(test)]
    pub(crate) fn appended_end(&self) -> u64 {
        self.buffer.lock().end
    }

    /// Starts the background sync thread: group commit under
    /// [`Durability::Always`], the timer under [`Durability::Interval`],
    /// which also turns write-behind on for `store` and writes its changed
    /// subjects back before each sync ([`Wal::write_back`]).
    /// [`Wal::stop_syncer`] stops it; at most one runs.
    pub(crate) fn start_syncer(
        wal: &Arc<Wal>,
        store: &Arc<Store>,
    ) -> Result<Option<JoinHandle<()>>> {
        let running = Arc::clone(wal);
        let body: Box<dyn FnOnce() + Send> = match wal.durability {
            Durability::Always => Box::new(move || running.group_commit()),
            Durability::Interval(interval) => {
                // On from the start: the thread writes back what is marked
                // before it first runs.
                store.set_write_behind(true);
                let store = Arc::clone(store);
                Box::new(move || running.sync_every(interval, &store))
            }
            Durability::Never => return Ok(None),
        };
        let thread = std::thread::Builder::new()
            .name("tally-log-sync".into())
            .spawn(body)
            .map_err(|e| {
                store.set_write_behind(false);
                Error::io("starting the log sync thread", e)
            })?;
        if wal.syncer.set(thread.thread().clone()).is_err() {
            return Err(Error::Config("the log sync thread runs already".into()));
        }
        thread.thread().unpark();
        Ok(Some(thread))
    }

    /// Tells the background sync thread to stop; join its handle after.
    /// Under [`Durability::Always`] it flushes what is buffered first;
    /// writers then sync their own records.
    pub(crate) fn stop_syncer(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(syncer) = self.syncer.get() {
            syncer.unpark();
        }
    }

    /// Parks the sync thread until it was started properly or told to stop.
    fn await_start(&self) -> bool {
        while self.syncer.get().is_none() {
            if self.stopping.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::park();
        }
        true
    }
}

/// A batch's way into the log: [`Store::apply`] appends it under the
/// subject's shard lock (so the log holds each subject's batches in
/// order), and [`LoggedBatch::settle`] then waits for it as the
/// durability asks, once the lock is released.
pub(crate) struct LoggedBatch<'w> {
    wal: &'w Wal,
    /// Where the batch's record ends in the log, once appended.
    end: Option<u64>,
}

impl Wal {
    /// The way in for one batch, to hand to [`Store::apply`].
    pub(crate) fn batch_log(&self) -> LoggedBatch<'_> {
        LoggedBatch {
            wal: self,
            end: None,
        }
    }
}

impl BatchLog for LoggedBatch<'_> {
    /// Appends the batch; out of line, so that the store's path stays
    /// short.
    #[inline(never)]
    fn append_batch(
        &mut self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
    ) -> Result<u64> {
        let (lsn, end) = self.wal.append(|lsn| RecordRef::Increment {
            lsn,
            uid,
            at: at.secs(),
            entries,
        })?;
        self.end = Some(end);
        Ok(lsn)
    }
}

impl LoggedBatch<'_> {
    /// Waits as [`Wal::settle`] says for the batch appended, if it was
    /// (not under write-behind).
    pub(crate) fn settle(self) -> Result<()> {
        match self.end {
            Some(end) => self.wal.settle(end),
            None => Ok(()),
        }
    }
}
