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

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::format::{
    FRAME_BUDGET_BYTES, FRAME_OVERHEAD, FormatError, FormatVersion, Header, LOG_MAGIC, TooLarge,
    decode_all, encoded_len, runs, seal_frame, split_first_lsn, start_log_frame,
    write_increment_record, write_record,
};
use super::{Durability, sync_dir};
use crate::counter::CounterId;
use crate::error::{Error, Result};
use crate::period::EventTime;
use crate::registry::RegistryChange;
use crate::store::{BatchLog, CellsView, ResolvedEntry, StateLog, Store, SubjectCells};

/// One logged entry of a batch, as decoded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct LoggedEntry {
    pub targets: Vec<CounterId>,
    pub amount: crate::period::Amount,
}

/// A log record, as decoded from either format version. It is also the
/// version-1 layout, which bincode decodes into it directly.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) enum LogRecord {
    /// Registry changes, in the order they applied.
    Registry(Vec<RegistryChange>),
    /// An issued regToken.
    Token {
        token: String,
        uid: String,
        expires_at: i64,
    },
    /// An accepted increment batch of one subject, with its event time and
    /// resolved roll-up targets (so replay lands in the same cells and buckets).
    Increment {
        lsn: u64,
        uid: String,
        at: i64,
        entries: Vec<LoggedEntry>,
    },
    /// The whole state of subjects changed since they were last written
    /// back (format version 3 on): replay sets each subject's cells to
    /// these. Not in the version-1 layout.
    Subjects {
        lsn: u64,
        subjects: Vec<(String, SubjectCells)>,
    },
    /// Part of the state of a subject written back whose state is too
    /// large for one record (format version 4 on): replay sets the
    /// subject's cells of the counters `from..until` (no upper bound if
    /// `None`) to these, and keeps its others. A subject's state takes
    /// consecutive records, whose ranges follow on from 0.
    Cells {
        lsn: u64,
        uid: String,
        from: CounterId,
        until: Option<CounterId>,
        cells: SubjectCells,
    },
}

/// A log record in format version 2 or 3, as decoded: an increment carries
/// neither its LSN (the frame's first LSN plus its position) nor its
/// absolute event time (the previous increment's in the frame, or 0,
/// plus `at_delta`).
#[derive(Deserialize)]
enum LogRecordV2 {
    Registry(Vec<RegistryChange>),
    Token {
        token: String,
        uid: String,
        expires_at: i64,
    },
    Increment {
        uid: String,
        at_delta: i64,
        entries: Vec<LoggedEntry>,
    },
    /// Version 3 on.
    Subjects(Vec<(String, SubjectCells)>),
    /// Version 4 on.
    Cells {
        uid: String,
        from: CounterId,
        until: Option<CounterId>,
        cells: SubjectCells,
    },
}

/// A log record in format version 4, to encode. The engine encodes
/// increments by hand (`write_increment_record`, pinned to this layout by
/// a test); the other records go through this.
#[derive(Serialize)]
pub(crate) enum RecordV2Ref<'a> {
    Registry(&'a [RegistryChange]),
    Token {
        token: &'a str,
        uid: &'a str,
        expires_at: i64,
    },
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "increments are encoded by hand; a test compares")
    )]
    Increment {
        uid: &'a str,
        at_delta: i64,
        entries: &'a [ResolvedEntry<'a>],
    },
    Subjects(&'a [(&'a str, CellsView<'a>)]),
    Cells {
        uid: &'a str,
        from: CounterId,
        until: Option<CounterId>,
        cells: CellsView<'a>,
    },
}

/// Decodes the records of a log frame's payload written in `version`.
pub(crate) fn decode_log_frame(
    version: FormatVersion,
    payload: &[u8],
) -> std::result::Result<Vec<LogRecord>, FormatError> {
    let states_unknown = || {
        FormatError::Corrupt(format!(
            "subject states in a version-{} log",
            version as u32
        ))
    };
    if version == FormatVersion::V1 {
        let records: Vec<LogRecord> = decode_all(payload)?;
        if records
            .iter()
            .any(|r| matches!(r, LogRecord::Subjects { .. }))
        {
            return Err(states_unknown());
        }
        return Ok(records);
    }
    let (first_lsn, records) = split_first_lsn(payload)?;
    let mut at = 0i64;
    let mut decoded = Vec::new();
    for (position, record) in decode_all::<LogRecordV2>(records)?.into_iter().enumerate() {
        let lsn = || {
            first_lsn
                .checked_add(position as u64)
                .ok_or_else(|| FormatError::Corrupt("LSN overflow".into()))
        };
        decoded.push(match record {
            LogRecordV2::Registry(changes) => LogRecord::Registry(changes),
            LogRecordV2::Token {
                token,
                uid,
                expires_at,
            } => LogRecord::Token {
                token,
                uid,
                expires_at,
            },
            LogRecordV2::Increment {
                uid,
                at_delta,
                entries,
            } => {
                let lsn = lsn()?;
                at = at
                    .checked_add(at_delta)
                    .ok_or_else(|| FormatError::Corrupt("event time overflow".into()))?;
                LogRecord::Increment {
                    lsn,
                    uid,
                    at,
                    entries,
                }
            }
            LogRecordV2::Subjects(_) if version == FormatVersion::V2 => {
                return Err(states_unknown());
            }
            LogRecordV2::Subjects(subjects) => LogRecord::Subjects {
                lsn: lsn()?,
                subjects,
            },
            LogRecordV2::Cells { .. } if version < FormatVersion::V4 => {
                return Err(FormatError::Corrupt(format!(
                    "a part of a subject's state in a version-{} log",
                    version as u32
                )));
            }
            LogRecordV2::Cells {
                uid,
                from,
                until,
                cells,
            } => LogRecord::Cells {
                lsn: lsn()?,
                uid,
                from,
                until,
                cells,
            },
        });
    }
    Ok(decoded)
}

/// A log record to append, borrowing its parts. Its layout on disk is
/// [`RecordV2Ref`]'s.
#[derive(Clone, Copy)]
pub(crate) enum RecordRef<'a> {
    /// See [`LogRecord::Registry`].
    Registry(&'a [RegistryChange]),
    /// See [`LogRecord::Token`].
    Token {
        token: &'a str,
        uid: &'a str,
        expires_at: i64,
    },
    /// See [`LogRecord::Increment`]. `lsn` must be the one
    /// [`Wal::append`] handed out for this record.
    Increment {
        lsn: u64,
        uid: &'a str,
        at: i64,
        entries: &'a [ResolvedEntry<'a>],
    },
    /// See [`LogRecord::Subjects`]; its LSN is the one [`Wal::append`]
    /// returns.
    Subjects(&'a [(&'a str, CellsView<'a>)]),
    /// See [`LogRecord::Cells`]; its LSN is the one [`Wal::append`]
    /// returns.
    Cells {
        uid: &'a str,
        from: CounterId,
        until: Option<CounterId>,
        cells: CellsView<'a>,
    },
}

/// Room a frame keeps beside a record that must fit it alone: the frame's
/// first LSN (up to 9 bytes), and an increment's event time, which a new
/// frame writes from 0 rather than as a difference (up to 9 more).
const LONE_RECORD_SLACK: usize = 32;

/// The file name of log segment `number`.
pub(crate) fn segment_name(number: u64) -> String {
    format!("log-{number:020}.tlog")
}

/// The segment number in a file name, if it is a segment's.
pub(crate) fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("log-")?
        .strip_suffix(".tlog")?
        .parse()
        .ok()
}

/// Buffered bytes past which the interval sync thread is asked to sync
/// early.
const EARLY_SYNC_BYTES: usize = 1 << 20;

/// Bytes appended but not yet synced past which appenders wait for a
/// sync, so that a writer faster than the disk cannot grow the buffer
/// without bound. (Frames need no such bound: each is sealed before a
/// record would take it past the budget, [`FRAME_BUDGET_BYTES`].)
const MAX_BACKLOG_BYTES: u64 = 16 << 20;

/// Buffered bytes past which a write-back writes and syncs what it has
/// logged so far, so that the buffer stays small.
const WRITE_BACK_SYNC_BYTES: usize = 8 << 20;

/// A spare buffer larger than this is dropped rather than kept.
const MAX_SPARE_BYTES: usize = 8 << 20;

/// How many writers each woken writer wakes in turn.
const WAKE_FAN_OUT: usize = 2;

/// An empty buffer's capacity.
const INITIAL_BUFFER_BYTES: usize = 1 << 16;

/// What appenders share: the bytes not yet written, and the counters.
struct Buffer {
    /// Log frames: sealed ones ([`seal_frame`]), each within
    /// [`FRAME_BUDGET_BYTES`], then, from `frame_start` on, the one being
    /// filled ([`start_log_frame`]): reserved header bytes, the LSN of its
    /// first record, then records.
    bytes: Vec<u8>,
    /// Where the frame being filled starts in `bytes`.
    frame_start: usize,
    /// The LSN of the first record in `bytes`.
    first_lsn: u64,
    next_lsn: u64,
    /// The event time of the last increment in `bytes`, or 0: the next
    /// one is written as a difference from it.
    last_at: i64,
    /// Logical position (bytes ever appended) at the end of `bytes`.
    end: u64,
    /// Under [`Durability::Always`], the threads whose records are in
    /// `bytes`: the flush that writes `bytes` wakes exactly them.
    waiters: Vec<Thread>,
    /// The group-commit thread sleeps until `waiters` reaches this length.
    wake_syncer_at: usize,
    /// The interval sync thread has been asked to write `bytes` early.
    early_requested: bool,
}

impl Buffer {
    /// Appends `record`, numbered `lsn`, to the frame being filled.
    #[inline(always)]
    fn encode(&mut self, lsn: u64, record: RecordRef<'_>) {
        match record {
            RecordRef::Increment {
                lsn: record_lsn,
                uid,
                at,
                entries,
            } => {
                // Version 2 stores no LSN: it is implied by the position.
                debug_assert_eq!(record_lsn, lsn, "an increment logged with another LSN");
                let at_delta = at.wrapping_sub(self.last_at);
                self.last_at = at;
                write_increment_record(&mut self.bytes, uid, at_delta, entries);
            }
            RecordRef::Registry(changes) => {
                write_record(&mut self.bytes, &RecordV2Ref::Registry(changes));
            }
            RecordRef::Subjects(subjects) => {
                write_record(&mut self.bytes, &RecordV2Ref::Subjects(subjects));
            }
            RecordRef::Cells {
                uid,
                from,
                until,
                cells,
            } => write_record(
                &mut self.bytes,
                &RecordV2Ref::Cells {
                    uid,
                    from,
                    until,
                    cells,
                },
            ),
            RecordRef::Token {
                token,
                uid,
                expires_at,
            } => write_record(
                &mut self.bytes,
                &RecordV2Ref::Token {
                    token,
                    uid,
                    expires_at,
                },
            ),
        }
    }

    /// `record` (numbered `lsn`, encoded from `before` on) took the frame
    /// being filled past [`FRAME_BUDGET_BYTES`]: seals the frame without
    /// it and encodes it again at the start of a new one. Registry changes
    /// too many for one frame become as many `Registry` records as they
    /// fill, numbered on from `lsn`. Another record too large for a frame
    /// of its own is taken back (its LSN and the previous event time with
    /// it) and refused.
    #[cold]
    #[inline(never)]
    fn refit(
        &mut self,
        before: usize,
        lsn: u64,
        last_at: i64,
        record: RecordRef<'_>,
    ) -> Result<(), TooLarge> {
        let bytes = self.bytes.len() - before;
        self.bytes.truncate(before);
        if bytes + LONE_RECORD_SLACK <= FRAME_BUDGET_BYTES {
            return self.push_in_new_frame(lsn, record);
        }
        let RecordRef::Registry(changes) = record else {
            self.last_at = last_at;
            self.next_lsn = lsn;
            return Err(TooLarge { bytes });
        };
        let runs = match runs(
            changes,
            FRAME_BUDGET_BYTES - 2 * LONE_RECORD_SLACK,
            encoded_len,
        ) {
            Ok(runs) => runs,
            Err(too_large) => {
                self.next_lsn = lsn;
                return Err(too_large);
            }
        };
        self.next_lsn = lsn + runs.len() as u64;
        for (i, run) in runs.into_iter().enumerate() {
            let lsn = lsn + i as u64;
            let record = RecordRef::Registry(&changes[run]);
            let start = self.bytes.len();
            self.encode(lsn, record);
            if self.bytes.len() - self.frame_start > FRAME_OVERHEAD + FRAME_BUDGET_BYTES {
                self.bytes.truncate(start);
                self.push_in_new_frame(lsn, record)?;
            }
        }
        Ok(())
    }

    /// Seals the frame being filled, which holds records within the
    /// budget, and encodes `record`, which fits a frame of its own, at the
    /// start of a new one.
    fn push_in_new_frame(&mut self, lsn: u64, record: RecordRef<'_>) -> Result<(), TooLarge> {
        seal_frame(&mut self.bytes[self.frame_start..])?;
        self.frame_start = self.bytes.len();
        start_log_frame(&mut self.bytes, lsn);
        self.last_at = 0;
        self.encode(lsn, record);
        Ok(())
    }
}

/// The file side, held by whoever writes the buffer out.
struct Segment {
    file: File,
    number: u64,
    path: PathBuf,
    /// An empty buffer to swap in for the full one, so that appenders
    /// reuse warm memory instead of faulting in a new buffer each time.
    spare: Vec<u8>,
    /// Likewise for the waiters.
    spare_waiters: Vec<Thread>,
}

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

    /// Under [`Durability::Always`], after [`Wal::append`] registered this
    /// thread as a waiter: sleeps until the flush that covers `end` wakes
    /// it. Without a running sync thread, leads a flush instead.
    fn await_group_commit(&self, end: u64) -> Result<()> {
        loop {
            if self.durable.load(Ordering::Acquire) >= end {
                self.wake_some(WAKE_FAN_OUT);
                return Ok(());
            }
            self.check_poison()?;
            // Once `stopping` is seen false, the sync thread's last flush,
            // which follows its reading `stopping` as true, covers this
            // thread's record and wakes it.
            if self.syncer.get().is_none() || self.stopping.load(Ordering::SeqCst) {
                let synced = self.wait_durable(end);
                if synced.is_ok() {
                    self.wake_some(WAKE_FAN_OUT);
                }
                return synced;
            }
            std::thread::park();
        }
    }

    /// Wakes up to `n` writers whose records are synced.
    ///
    /// Every writer in [`Wal::to_wake`] is woken: a writer that returns
    /// wakes `n` more (whether it was woken or found its record synced
    /// by itself), so while sleepers remain, someone wakes them.
    fn wake_some(&self, n: usize) {
        let mut woken = [None, None, None, None];
        {
            let mut to_wake = self.to_wake.lock();
            for slot in woken.iter_mut().take(n) {
                *slot = to_wake.pop();
            }
        }
        woken.iter().flatten().for_each(Thread::unpark);
    }

    /// Returns once everything up to logical position `end` is synced,
    /// writing and syncing the buffer itself if need be.
    pub(crate) fn wait_durable(&self, end: u64) -> Result<()> {
        loop {
            if self.durable.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            self.check_poison()?;
            let mut segment = self.segment.lock();
            if self.durable.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            self.flush_locked(&mut segment)?;
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

    /// Writes and syncs everything buffered.
    pub(crate) fn sync(&self) -> Result<()> {
        let mut segment = self.segment.lock();
        self.flush_locked(&mut segment)
    }

    /// Writes and syncs everything buffered, then wakes the waiters whose
    /// records that covered.
    fn flush_locked(&self, segment: &mut Segment) -> Result<()> {
        self.check_poison()?;
        let (mut bytes, end, waiters, frame_start) = {
            let mut fresh = std::mem::take(&mut segment.spare);
            if fresh.capacity() == 0 {
                fresh.reserve(INITIAL_BUFFER_BYTES);
            }
            let mut fresh_waiters = std::mem::take(&mut segment.spare_waiters);
            let mut buffer = self.buffer.lock();
            if buffer.next_lsn == buffer.first_lsn {
                segment.spare = fresh;
                segment.spare_waiters = fresh_waiters;
                drop(buffer);
                return Ok(());
            }
            start_log_frame(&mut fresh, buffer.next_lsn);
            std::mem::swap(&mut buffer.bytes, &mut fresh);
            std::mem::swap(&mut buffer.waiters, &mut fresh_waiters);
            let frame_start = std::mem::replace(&mut buffer.frame_start, 0);
            buffer.first_lsn = buffer.next_lsn;
            buffer.last_at = 0;
            buffer.early_requested = false;
            (fresh, buffer.end, fresh_waiters, frame_start)
        };
        // Within the budget: every append keeps the frame being filled so.
        let written = seal_frame(&mut bytes[frame_start..])
            .map_err(|too_large| std::io::Error::other(Error::from(too_large)))
            .and_then(|()| segment.file.write_all(&bytes))
            .and_then(|()| segment.file.sync_data());
        let result = match written {
            Ok(()) => {
                self.durable.fetch_max(end, Ordering::AcqRel);
                Ok(())
            }
            Err(source) => {
                let reason = format!("writing {}: {source}", segment.path.display());
                self.poison(reason);
                Err(Error::io(
                    format!("writing {}", segment.path.display()),
                    source,
                ))
            }
        };
        let mut waiters = waiters;
        if result.is_ok() {
            // Those whose records are synced wake one another.
            self.to_wake.lock().append(&mut waiters);
            self.wake_some(WAKE_FAN_OUT);
        } else {
            waiters.drain(..).for_each(|waiter| waiter.unpark());
        }
        segment.spare_waiters = waiters;
        if bytes.capacity() <= MAX_SPARE_BYTES {
            bytes.clear();
            segment.spare = bytes;
        }
        result
    }

    /// Syncs what is buffered, then starts a new segment; returns its
    /// number. Every record appended before the call is in older segments.
    pub(crate) fn rotate(&self) -> Result<u64> {
        let mut segment = self.segment.lock();
        self.flush_locked(&mut segment)?;
        let next = Segment::create(&self.dir, segment.number + 1)?;
        let old = std::mem::replace(&mut *segment, next);
        segment.spare = old.spare;
        segment.spare_waiters = old.spare_waiters;
        Ok(segment.number)
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

    /// The body of the [`Durability::Always`] sync thread: group commit.
    ///
    /// As soon as a sync is done and a record is waiting, it writes and
    /// syncs everything buffered (what arrived during the last sync), so
    /// the disk never idles while a writer waits. Waking many writers one
    /// by one would take this thread longer than a sync (a few microseconds
    /// each, on two cores), so it wakes [`WAKE_FAN_OUT`] of the writers a
    /// sync covered, and they wake the others, while the next sync runs.
    /// (Waiting after a sync for the woken writers' next records, to sync
    /// more at once, measured slower: 116,000–121,000 acknowledged
    /// increments a second from 64 writers, against 141,000–146,000.)
    fn group_commit(&self) {
        if !self.await_start() {
            return;
        }
        loop {
            {
                let mut buffer = self.buffer.lock();
                if self.stopping.load(Ordering::SeqCst) {
                    buffer.wake_syncer_at = usize::MAX;
                    drop(buffer);
                    // The last flush: it covers every writer that saw
                    // `stopping` false. A failure poisons the log.
                    let _ = self.sync();
                    return;
                }
                if buffer.waiters.is_empty() {
                    buffer.wake_syncer_at = 1;
                    drop(buffer);
                    std::thread::park();
                    continue;
                }
                buffer.wake_syncer_at = usize::MAX;
            }
            // A failure poisons the log and wakes every waiter; appends are
            // refused from then on, so none will come.
            let _ = self.sync();
        }
    }

    /// The body of the [`Durability::Interval`] sync thread: write-behind.
    ///
    /// While it runs, writers do not log their batches: the store marks
    /// the subjects they change ([`Store::set_write_behind`]), and once
    /// per interval this thread logs the whole state of each changed
    /// subject and syncs. A hot subject costs one record per interval,
    /// however often it is incremented, and a writer no lock but its
    /// shard's. When told to stop, it turns write-behind off (writers log
    /// their batches again, and sync them themselves), writes back what
    /// was marked before, and syncs.
    ///
    /// Registry and regToken records are still appended as they happen
    /// and synced here too; it syncs early when they have buffered
    /// [`EARLY_SYNC_BYTES`].
    fn sync_every(&self, interval: std::time::Duration, store: &Store) {
        let started = self.await_start();
        let mut next = Instant::now() + interval;
        loop {
            if !started || self.stopping.load(Ordering::SeqCst) {
                store.set_write_behind(false);
                // A failure poisons the log; `close` reports it.
                let _ = self.write_back(store).and_then(|()| self.sync());
                return;
            }
            let now = Instant::now();
            let early = self.buffer.lock().early_requested;
            if early || now >= next {
                // A failure poisons the log; writers report it.
                let _ = self.write_back(store).and_then(|()| self.sync());
                next = Instant::now() + interval;
                continue;
            }
            std::thread::park_timeout(next - now);
        }
    }

    /// Logs the state of every subject of `store` changed since it was
    /// last written back, shard by shard ([`Store::write_back`]); each
    /// record's sequence number is allocated under the shard's lock, so
    /// a snapshot's per-shard numbers say which records it holds. Writes
    /// (and syncs) every [`WRITE_BACK_SYNC_BYTES`], so that no frame grows
    /// too large.
    pub(crate) fn write_back(&self, store: &Store) -> Result<()> {
        self.check_poison()?;
        for shard in 0..store.shard_count() {
            store.write_back(shard, self)?;
            if self.buffer.lock().bytes.len() >= WRITE_BACK_SYNC_BYTES {
                self.sync()?;
            }
        }
        Ok(())
    }
}

impl Wal {
    /// Appends the states of `subjects` as `Subjects` records, as many as
    /// keep each within the frame budget; a subject too large for one
    /// record alone takes `Cells` records of runs of its cells. Returns
    /// the last record's LSN.
    fn append_states(&self, subjects: &[(&str, CellsView<'_>)]) -> Result<u64> {
        let budget = FRAME_BUDGET_BYTES - 2 * LONE_RECORD_SLACK;
        let mut lsn = 0;
        let mut run = 0..0;
        let mut used = 0;
        let append_run = |run: std::ops::Range<usize>| -> Result<u64> {
            if run.is_empty() {
                return Ok(0);
            }
            let subjects = &subjects[run];
            self.append(|_| RecordRef::Subjects(subjects))
                .map(|(lsn, _)| lsn)
        };
        for (i, subject) in subjects.iter().enumerate() {
            let bytes = encoded_len(subject);
            if bytes > budget {
                lsn = lsn.max(append_run(std::mem::replace(&mut run, i + 1..i + 1))?);
                used = 0;
                lsn = lsn.max(self.append_large_state(subject.0, subject.1, budget)?);
                continue;
            }
            if used + bytes > budget {
                lsn = lsn.max(append_run(std::mem::replace(&mut run, i..i))?);
                used = 0;
            }
            used += bytes;
            run.end = i + 1;
        }
        Ok(lsn.max(append_run(run)?))
    }

    /// Appends the state of one subject as `Cells` records of runs of its
    /// cells, each within `budget`; returns the last record's LSN.
    fn append_large_state(&self, uid: &str, cells: CellsView<'_>, budget: usize) -> Result<u64> {
        let all: Vec<(CounterId, &crate::period::Cell)> = cells.cells().collect();
        let runs = runs(&all, budget - encoded_len(uid), encoded_len)?;
        let mut lsn = 0;
        for (i, run) in runs.iter().enumerate() {
            let from = if i == 0 { 0 } else { all[run.start].0 };
            let until = runs.get(i + 1).map(|next| all[next.start].0);
            let part = cells.slice(run.clone());
            let (appended, _) = self.append(|_| RecordRef::Cells {
                uid,
                from,
                until,
                cells: part,
            })?;
            lsn = appended;
        }
        Ok(lsn)
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

impl StateLog for &Wal {
    fn append_states(&mut self, subjects: &[(&str, CellsView<'_>)]) -> Result<u64> {
        Wal::append_states(self, subjects)
    }
}

impl Segment {
    fn create(dir: &Path, number: u64) -> Result<Segment> {
        let path = dir.join(segment_name(number));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        file.write_all(&Header::new(LOG_MAGIC, 0, 0).encode())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        sync_dir(dir)?;
        Ok(Segment {
            file,
            number,
            path,
            spare: Vec::new(),
            spare_waiters: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::period::Amount;

    fn increment<'a>(entries: &'a [ResolvedEntry<'a>]) -> impl FnOnce(u64) -> RecordRef<'a> {
        move |lsn| RecordRef::Increment {
            lsn,
            uid: "u",
            at: 1_795_780_800,
            entries,
        }
    }

    #[test]
    fn a_failed_write_poisons_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::create(dir.path(), 1, 1, Durability::Always).unwrap();
        let entries = [ResolvedEntry {
            targets: &[0],
            amount: Amount { count: 1, value: 0 },
        }];
        let (_, end) = wal.append(increment(&entries)).unwrap();
        wal.wait_durable(end).unwrap();
        // Swap the segment for a read-only handle: the next write fails.
        let path = dir.path().join(segment_name(1));
        wal.segment.lock().file = File::open(&path).unwrap();
        let (_, end) = wal.append(increment(&entries)).unwrap();
        assert!(matches!(wal.wait_durable(end), Err(Error::Io { .. })));
        // From then on, nothing more is accepted or acknowledged.
        assert!(matches!(
            wal.append(increment(&entries)),
            Err(Error::Poisoned { .. })
        ));
        assert!(matches!(wal.wait_durable(end), Err(Error::Poisoned { .. })));
        assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    }

    /// The log of a batch under write-behind, which is never called.
    struct MustNotLog;

    impl BatchLog for MustNotLog {
        fn append_batch(&mut self, _: &str, _: &[ResolvedEntry<'_>], _: &EventTime) -> Result<u64> {
            panic!("logged under write-behind")
        }
    }

    #[test]
    fn a_write_back_logs_states_and_a_failed_one_poisons_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Durability::Interval(std::time::Duration::from_secs(3600));
        let wal = Wal::create(dir.path(), 1, 1, interval).unwrap();
        let store = Store::default();
        store.set_write_behind(true);
        let at = crate::period::EventTime::new(
            1_795_780_800,
            crate::period::Retention {
                months: 24,
                days: 90,
            }
            .horizon(1_795_780_800),
        );
        for uid in ["a", "b"] {
            store
                .apply(uid, &one_entry(), &at, &mut MustNotLog)
                .unwrap();
        }
        wal.write_back(&store).unwrap();
        wal.sync().unwrap();
        let mut written: Vec<String> = records_in(dir.path(), 1)
            .into_iter()
            .flat_map(|record| match record {
                LogRecord::Subjects { subjects, .. } => subjects.into_iter().map(|(uid, _)| uid),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        written.sort();
        assert_eq!(written, ["a", "b"]);

        // Swap the segment for a read-only handle: the next write fails.
        let path = dir.path().join(segment_name(1));
        wal.segment.lock().file = File::open(&path).unwrap();
        store
            .apply("a", &one_entry(), &at, &mut MustNotLog)
            .unwrap();
        wal.write_back(&store).unwrap();
        assert!(matches!(wal.sync(), Err(Error::Io { .. })));
        assert!(matches!(wal.check_poison(), Err(Error::Poisoned { .. })));
        assert!(matches!(
            wal.write_back(&store),
            Err(Error::Poisoned { .. })
        ));
    }

    /// The payload lengths of the frames of segment 1.
    fn frame_lengths(dir: &Path) -> Vec<usize> {
        let bytes = std::fs::read(dir.join(segment_name(1))).unwrap();
        let mut offset = super::super::format::HEADER_BYTES;
        let mut lengths = Vec::new();
        while offset < bytes.len() {
            let (payload, used) = super::super::format::read_frame(&bytes[offset..]).unwrap();
            lengths.push(payload.len());
            offset += used;
        }
        lengths
    }

    #[test]
    fn fault_a_log_frames_stay_within_the_budget_however_much_is_buffered() {
        // More increments buffered than one frame may hold (no sync in
        // between), and registry changes too many for one record.
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::create(
            dir.path(),
            1,
            1,
            Durability::Interval(Duration::from_secs(3600)),
        )
        .unwrap();
        let entries = one_entry();
        let increments = 2 * FRAME_BUDGET_BYTES / 10;
        for _ in 0..increments {
            wal.append(increment(&entries)).unwrap();
        }
        let changes: Vec<RegistryChange> = (0..40_000)
            .map(|id| RegistryChange::Created {
                id,
                class: "c".into(),
                path: format!("/{id:0>499}"),
            })
            .collect();
        let (registry_lsn, _) = wal.append(|_| RecordRef::Registry(&changes)).unwrap();
        let (after, _) = wal.append(increment(&entries)).unwrap();
        wal.sync().unwrap();
        let lengths = frame_lengths(dir.path());
        assert!(lengths.len() >= 5, "{lengths:?}");
        assert!(
            lengths.iter().all(|&len| len <= FRAME_BUDGET_BYTES),
            "{lengths:?}"
        );
        let records = records_in(dir.path(), 1);
        let replayed: Vec<RegistryChange> = records
            .iter()
            .filter_map(|record| match record {
                LogRecord::Registry(changes) => Some(changes.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(replayed, changes);
        let registry_records = records.len() - increments - 1;
        assert!(registry_records >= 3, "{registry_records}");
        // Every record took the next LSN, the registry's as many as it took.
        assert_eq!(registry_lsn, increments as u64 + 1);
        assert_eq!(after, registry_lsn + registry_records as u64);
        let lsns: Vec<u64> = records
            .iter()
            .filter_map(|record| match record {
                LogRecord::Increment { lsn, .. } => Some(*lsn),
                _ => None,
            })
            .collect();
        let expected: Vec<u64> = (1..=increments as u64).chain([after]).collect();
        assert_eq!(lsns, expected);
    }

    #[test]
    fn fault_a_a_record_too_large_for_a_frame_is_refused_and_its_lsn_reused() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::create(dir.path(), 1, 1, Durability::Always).unwrap();
        let uid = "u".repeat(FRAME_BUDGET_BYTES);
        let entries = one_entry();
        let huge = wal.append(|lsn| RecordRef::Increment {
            lsn,
            uid: &uid,
            at: 1_795_780_800,
            entries: &entries,
        });
        assert!(
            matches!(huge, Err(Error::RecordTooLarge { .. })),
            "{huge:?}"
        );
        let (lsn, end) = wal.append(increment(&entries)).unwrap();
        assert_eq!(lsn, 1);
        wal.wait_durable(end).unwrap();
        assert_eq!(records_in(dir.path(), 1).len(), 1);
    }

    /// Records in segments `1..=last`, decoded.
    fn records_in(dir: &Path, last: u64) -> Vec<LogRecord> {
        let mut records = Vec::new();
        for number in 1..=last {
            let bytes = std::fs::read(dir.join(segment_name(number))).unwrap();
            let mut offset = super::super::format::HEADER_BYTES;
            while offset < bytes.len() {
                let (payload, used) = super::super::format::read_frame(&bytes[offset..]).unwrap();
                records.extend(decode_log_frame(FormatVersion::CURRENT, payload).unwrap());
                offset += used;
            }
        }
        records
    }

    /// Eight writers append 50 records each while segments rotate, with
    /// or without the group-commit thread; each returns only once its
    /// record is durable, and every record reaches a segment.
    fn writers_and_rotations(with_syncer: bool) {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Wal::create(dir.path(), 1, 1, Durability::Always).unwrap());
        let syncer =
            with_syncer.then(|| Wal::start_syncer(&wal, &Arc::default()).unwrap().unwrap());
        let entries = [ResolvedEntry {
            targets: &[0],
            amount: Amount { count: 1, value: 0 },
        }];
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        let (_, end) = wal.append(increment(&entries)).unwrap();
                        wal.settle(end).unwrap();
                        assert!(wal.durable.load(Ordering::Acquire) >= end);
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..5 {
                    wal.rotate().unwrap();
                }
            });
        });
        if let Some(thread) = syncer {
            wal.stop_syncer();
            thread.join().unwrap();
        }
        // Every record reached a segment: 400 across 6 segments, with
        // every LSN once.
        let mut lsns: Vec<u64> = records_in(dir.path(), 6)
            .into_iter()
            .map(|record| match record {
                LogRecord::Increment { lsn, .. } => lsn,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        lsns.sort_unstable();
        assert_eq!(lsns, (1..=400).collect::<Vec<u64>>());
    }

    #[test]
    fn concurrent_writers_share_syncs_and_rotation_wakes_them() {
        writers_and_rotations(false);
    }

    #[test]
    fn the_group_commit_thread_acknowledges_every_writer() {
        writers_and_rotations(true);
    }

    /// A log under `Always` in `dir`, with its group-commit thread running.
    fn group_committed(dir: &Path) -> (Arc<Wal>, JoinHandle<()>) {
        let wal = Arc::new(Wal::create(dir, 1, 1, Durability::Always).unwrap());
        let syncer = Wal::start_syncer(&wal, &Arc::default()).unwrap().unwrap();
        (wal, syncer)
    }

    /// One entry adding 1 to counter 0.
    fn one_entry() -> [ResolvedEntry<'static>; 1] {
        [ResolvedEntry {
            targets: &[0],
            amount: Amount { count: 1, value: 0 },
        }]
    }

    #[test]
    fn writers_after_the_sync_thread_stops_sync_their_own_records() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, syncer) = group_committed(dir.path());
        let entries = one_entry();
        let (_, end) = wal.append(increment(&entries)).unwrap();
        wal.settle(end).unwrap();
        wal.stop_syncer();
        syncer.join().unwrap();
        let (_, end) = wal.append(increment(&entries)).unwrap();
        wal.settle(end).unwrap();
        assert!(wal.durable.load(Ordering::Acquire) >= end);
        assert_eq!(records_in(dir.path(), 1).len(), 2);
    }

    #[test]
    fn a_failed_group_commit_fails_its_writers_and_poisons_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, syncer) = group_committed(dir.path());
        let entries = one_entry();
        let (_, end) = wal.append(increment(&entries)).unwrap();
        wal.settle(end).unwrap();
        // Swap the segment for a read-only handle: the next write fails.
        let path = dir.path().join(segment_name(1));
        wal.segment.lock().file = File::open(&path).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    // Either the append finds the log poisoned already, or
                    // the write covering it fails: never acknowledged.
                    let result = wal.append(increment(&entries)).and_then(|(_, end)| {
                        wal.settle(end)?;
                        Ok(end)
                    });
                    assert!(
                        matches!(result, Err(Error::Poisoned { ref reason }) if reason.contains("writing")),
                        "{result:?}"
                    );
                });
            }
        });
        assert!(matches!(
            wal.append(increment(&entries)),
            Err(Error::Poisoned { .. })
        ));
        wal.stop_syncer();
        syncer.join().unwrap();
        assert_eq!(records_in(dir.path(), 1).len(), 1);
    }
}
