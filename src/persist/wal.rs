//! The write-ahead log: accepted batches, registry changes and issued
//! regTokens, appended in order to numbered segment files.
//!
//! Appenders encode their record into one shared in-memory buffer (a short
//! critical section that also assigns the log sequence number). Making the
//! buffer durable is group commit: the first appender that needs its record
//! synced becomes the leader, writes everything buffered so far and syncs
//! once; appenders queued behind it find their record already durable.
//! Under [`Durability::Interval`] a background thread does the same on a timer.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use super::format::{
    FRAME_OVERHEAD, Header, LOG_MAGIC, seal_frame, write_increment_record, write_record,
};
use super::{Durability, sync_dir};
use crate::error::{Error, Result};
use crate::registry::{CounterId, RegistryChange};
use crate::store::ResolvedEntry;

/// One logged entry of a batch, as decoded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct LoggedEntry {
    pub targets: Vec<CounterId>,
    pub amount: crate::period::Amount,
}

/// A log record, as decoded. [`RecordRef`] encodes the same layout without copying.
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
}

/// A log record to encode, borrowing its parts.
#[derive(Serialize)]
pub(crate) enum RecordRef<'a> {
    /// See [`LogRecord::Registry`].
    Registry(&'a [RegistryChange]),
    /// See [`LogRecord::Token`].
    Token {
        token: &'a str,
        uid: &'a str,
        expires_at: i64,
    },
    /// See [`LogRecord::Increment`].
    Increment {
        lsn: u64,
        uid: &'a str,
        at: i64,
        entries: &'a [ResolvedEntry<'a>],
    },
}

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
const EARLY_SYNC_BYTES: usize = 4 << 20;

/// Bytes appended but not yet synced past which appenders wait for a
/// sync. Well under the 64 MiB frame limit, which one group commit's
/// frame must respect.
const MAX_BACKLOG_BYTES: u64 = 16 << 20;

/// An empty buffer: the reserved header of the frame its records will form.
fn frame_start(capacity: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(capacity.max(FRAME_OVERHEAD));
    bytes.extend_from_slice(&[0u8; FRAME_OVERHEAD]);
    bytes
}

/// What appenders share: the bytes not yet written, and the counters.
struct Buffer {
    bytes: Vec<u8>,
    next_lsn: u64,
    /// Logical position (bytes ever appended) at the end of `bytes`.
    end: u64,
}

/// The file side, held by the group-commit leader.
struct Segment {
    file: File,
    number: u64,
    path: PathBuf,
}

/// The write-ahead log of a data directory.
pub(crate) struct Wal {
    dir: PathBuf,
    durability: Durability,
    buffer: Mutex<Buffer>,
    segment: Mutex<Segment>,
    /// Logical position up to which everything is written and synced.
    durable: AtomicU64,
    poisoned: Mutex<Option<String>>,
    /// Where waiters sleep while another caller's sync runs.
    sync_done: (Mutex<()>, Condvar),
    /// Asks the interval sync thread to sync now (the buffer is large).
    early_sync: (
        crossbeam::channel::Sender<()>,
        crossbeam::channel::Receiver<()>,
    ),
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
        Ok(Wal {
            dir: dir.to_owned(),
            durability,
            buffer: Mutex::new(Buffer {
                bytes: frame_start(1 << 16),
                next_lsn,
                end: 0,
            }),
            segment: Mutex::new(segment),
            durable: AtomicU64::new(0),
            poisoned: Mutex::new(None),
            sync_done: (Mutex::new(()), Condvar::new()),
            early_sync: crossbeam::channel::bounded(1),
        })
    }

    fn check_poison(&self) -> Result<()> {
        match &*self.poisoned.lock() {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Appends a record; returns its log sequence number (for increments)
    /// and the logical position to wait for with [`Wal::wait_durable`].
    pub(crate) fn append<'r>(
        &self,
        record: impl FnOnce(u64) -> RecordRef<'r>,
    ) -> Result<(u64, u64)> {
        self.check_poison()?;
        let mut buffer = self.buffer.lock();
        let lsn = buffer.next_lsn;
        buffer.next_lsn += 1;
        let before = buffer.bytes.len();
        match record(lsn) {
            RecordRef::Increment {
                lsn,
                uid,
                at,
                entries,
            } => write_increment_record(&mut buffer.bytes, lsn, uid, at, entries),
            other => write_record(&mut buffer.bytes, &other),
        }
        buffer.end += (buffer.bytes.len() - before) as u64;
        if buffer.bytes.len() >= EARLY_SYNC_BYTES {
            // Full means a request is already pending.
            let _ = self.early_sync.0.try_send(());
        }
        Ok((lsn, buffer.end))
    }

    /// What an appender waits for after appending up to `end`: under
    /// [`Durability::Always`], its record synced; otherwise nothing, unless
    /// more than [`MAX_BACKLOG_BYTES`] are waiting to be written, in which
    /// case it syncs too (backpressure: a writer faster than the disk
    /// cannot grow the buffer without bound).
    pub(crate) fn settle(&self, end: u64) -> Result<()> {
        let backlog = end.saturating_sub(self.durable.load(Ordering::Acquire));
        if self.durability == Durability::Always || backlog > MAX_BACKLOG_BYTES {
            self.wait_durable(end)
        } else {
            Ok(())
        }
    }

    /// Returns once everything up to logical position `end` is synced.
    ///
    /// Group commit: if no sync is running, this caller leads one, covering
    /// everything buffered so far; otherwise it sleeps until the running
    /// sync ends and all its waiters wake together, so that the next
    /// leader's sync carries every record appended meanwhile.
    pub(crate) fn wait_durable(&self, end: u64) -> Result<()> {
        let mut waiting = self.sync_done.0.lock();
        loop {
            if self.durable.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            self.check_poison()?;
            if let Some(mut segment) = self.segment.try_lock() {
                drop(waiting);
                let flushed = self.flush_locked(&mut segment);
                self.release(segment);
                flushed?;
                waiting = self.sync_done.0.lock();
            } else {
                self.sync_done.1.wait(&mut waiting);
            }
        }
    }

    /// Writes and syncs everything buffered.
    pub(crate) fn sync(&self) -> Result<()> {
        let mut segment = self.segment.lock();
        let flushed = self.flush_locked(&mut segment);
        self.release(segment);
        flushed
    }

    /// Releases the segment, then wakes every waiter: one that found the
    /// segment busy went to sleep holding the waiters' lock, so taking that
    /// lock here orders this wake-up after its sleep.
    fn release(&self, segment: MutexGuard<'_, Segment>) {
        drop(segment);
        drop(self.sync_done.0.lock());
        self.sync_done.1.notify_all();
    }

    /// Writes and syncs everything buffered. Call [`Wal::release`] after.
    fn flush_locked(&self, segment: &mut Segment) -> Result<()> {
        self.check_poison()?;
        let (mut bytes, end) = {
            let mut buffer = self.buffer.lock();
            let fresh = frame_start(buffer.bytes.capacity().min(1 << 20));
            (std::mem::replace(&mut buffer.bytes, fresh), buffer.end)
        };
        if bytes.len() == FRAME_OVERHEAD {
            self.durable.fetch_max(end, Ordering::AcqRel);
            return Ok(());
        }
        seal_frame(&mut bytes);
        let written = segment
            .file
            .write_all(&bytes)
            .and_then(|()| segment.file.sync_data());
        if let Err(source) = written {
            let reason = format!("writing {}: {source}", segment.path.display());
            *self.poisoned.lock() = Some(reason);
            return Err(Error::io(
                format!("writing {}", segment.path.display()),
                source,
            ));
        }
        self.durable.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// Syncs what is buffered, then starts a new segment; returns its
    /// number. Every record appended before the call is in older segments.
    pub(crate) fn rotate(&self) -> Result<u64> {
        let mut segment = self.segment.lock();
        let rotated = self.flush_locked(&mut segment).and_then(|()| {
            *segment = Segment::create(&self.dir, segment.number + 1)?;
            Ok(segment.number)
        });
        self.release(segment);
        rotated
    }

    /// Waits `interval` between syncs until `stop` says so; the body of
    /// the [`Durability::Interval`] background thread.
    ///
    /// It also syncs early when appenders have buffered
    /// [`EARLY_SYNC_BYTES`], so that a fast writer cannot grow the buffer
    /// by a whole interval's worth of records.
    pub(crate) fn sync_every(&self, interval: Duration, stop: &crossbeam::channel::Receiver<()>) {
        loop {
            crossbeam::channel::select! {
                recv(stop) -> _ => return,
                // A failure poisons the log; appenders report it.
                recv(self.early_sync.1) -> _ => { let _ = self.sync(); }
                default(interval) => { let _ = self.sync(); }
            }
        }
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
        Ok(Segment { file, number, path })
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn concurrent_writers_share_syncs_and_rotation_wakes_them() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::create(dir.path(), 1, 1, Durability::Always).unwrap();
        let entries = [ResolvedEntry {
            targets: &[0],
            amount: Amount { count: 1, value: 0 },
        }];
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        let (_, end) = wal.append(increment(&entries)).unwrap();
                        wal.wait_durable(end).unwrap();
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..5 {
                    wal.rotate().unwrap();
                }
            });
        });
        // Every record reached a segment: 400 across 6 segments.
        let mut records = 0;
        for number in 1..=6 {
            let bytes = std::fs::read(dir.path().join(segment_name(number))).unwrap();
            let mut offset = super::super::format::HEADER_BYTES;
            while offset < bytes.len() {
                let (payload, used) = super::super::format::read_frame(&bytes[offset..]).unwrap();
                let frame: Vec<LogRecord> = super::super::format::decode_all(payload).unwrap();
                records += frame.len();
                offset += used;
            }
        }
        assert_eq!(records, 400);
    }
}
