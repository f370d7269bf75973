//! The file side: segments, and writing and syncing the buffer out to
//! the current one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::thread::Thread;

use super::Wal;
use super::buffer::INITIAL_BUFFER_BYTES;
use super::group_commit::WAKE_FAN_OUT;
use crate::error::{Error, Result};
use crate::persist::format::{Header, LOG_MAGIC, seal_frame, start_log_frame};
use crate::persist::sync_dir;

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

/// A spare buffer larger than this is dropped rather than kept.
const MAX_SPARE_BYTES: usize = 8 << 20;

/// The file side, held by whoever writes the buffer out.
pub(super) struct Segment {
    pub(super) file: File,
    pub(super) number: u64,
    pub(super) path: PathBuf,
    /// An empty buffer to swap in for the full one, so that appenders
    /// reuse warm memory instead of faulting in a new buffer each time.
    pub(super) spare: Vec<u8>,
    /// Likewise for the waiters.
    pub(super) spare_waiters: Vec<Thread>,
}

impl Segment {
    pub(super) fn create(dir: &Path, number: u64) -> Result<Segment> {
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

impl Wal {
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

    /// Writes and syncs everything buffered.
    pub(crate) fn sync(&self) -> Result<()> {
        let mut segment = self.segment.lock();
        self.flush_locked(&mut segment)
    }

    /// Writes and syncs everything buffered, then wakes the waiters whose
    /// records that covered.
    pub(super) fn flush_locked(&self, segment: &mut Segment) -> Result<()> {
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
}
