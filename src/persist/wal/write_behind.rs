//! Write-behind ([`Durability::Interval`]): writers log nothing; on a
//! timer the sync thread logs the states of the subjects they changed.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Wal;
use super::buffer::LONE_RECORD_SLACK;
use super::record::RecordRef;
use crate::counter::CounterId;
use crate::error::Result;
use crate::persist::format::{FRAME_BUDGET_BYTES, encoded_len, runs};
use crate::store::{CellsView, StateLog, Store};

/// Buffered bytes past which a write-back writes and syncs what it has
/// logged so far, so that the buffer stays small.
const WRITE_BACK_SYNC_BYTES: usize = 8 << 20;

impl Wal {
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
    pub(super) fn sync_every(&self, interval: std::time::Duration, store: &Store) {
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

impl StateLog for &Wal {
    fn append_states(&mut self, subjects: &[(&str, CellsView<'_>)]) -> Result<u64> {
        Wal::append_states(self, subjects)
    }
}
