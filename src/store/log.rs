//! The store's side of durability, kept without knowing the log.
//!
//! A log plugs in through two traits defined here, which the write-ahead
//! log (in `persist`) implements: a [`BatchLog`] records a batch under its
//! subject's shard lock, after the batch is checked and before it is
//! applied ([`Store::apply`]); a [`StateLog`] records the states of
//! subjects changed under write-behind ([`Store::write_back`]). In memory,
//! [`Unlogged`] records nothing, and inlines away.
//!
//! What the store keeps for the log is per shard, in each shard's
//! [`ShardLog`] (the last logged change applied to it), and per subject,
//! in the write-behind marks the shard's tables keep beside their records
//! (they move with them). Recovery puts logged changes back through
//! [`Store::replay`] and [`Store::replace`].

use std::sync::atomic::Ordering;

use super::{CellsView, OverflowAt, ResolvedEntry, Store, SubjectCells};
use crate::error::Error;
use crate::period::EventTime;

/// The most subjects one write-back record holds (and one write-back
/// holds a shard's lock for), so that a record of a shard holding
/// millions of changed subjects stays well under the log's frame limit,
/// and its writers wait well under a millisecond. (Smaller in unit tests,
/// so that they reach several chunks a shard.)
pub(super) const WRITE_BACK_CHUNK: usize = if cfg!(test) { 64 } else { 4096 };

/// Where the store records an increment batch before applying it.
pub(crate) trait BatchLog {
    /// Records the batch `entries` of subject `uid`, at `at`, and returns
    /// its log sequence number (0 when nothing is logged). Called under
    /// the subject's shard lock, after the batch is checked: the log holds
    /// each subject's batches in the order they apply. An error refuses
    /// the batch, which then changes nothing.
    fn append_batch(
        &mut self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
    ) -> Result<u64, Error>;
}

/// Where [`Store::write_back`] records the states of changed subjects.
pub(crate) trait StateLog {
    /// Records the whole state of each of `subjects` and returns the
    /// sequence number of the last record, which the shard then holds.
    /// Called under the subjects' shard lock.
    fn append_states(&mut self, subjects: &[(&str, CellsView<'_>)]) -> Result<u64, Error>;
}

/// No log: the store in memory, or a log that records nothing now.
pub(crate) struct Unlogged;

impl BatchLog for Unlogged {
    #[inline(always)]
    fn append_batch(
        &mut self,
        _: &str,
        _: &[ResolvedEntry<'_>],
        _: &EventTime,
    ) -> Result<u64, Error> {
        Ok(0)
    }
}

/// `log`, unless write-behind is on (`behind`): then nothing is logged,
/// as the subject is marked changed instead.
pub(super) struct UnlessBehind<'l, L> {
    pub(super) behind: bool,
    pub(super) log: &'l mut L,
}

impl<L: BatchLog> BatchLog for UnlessBehind<'_, L> {
    #[inline(always)]
    fn append_batch(
        &mut self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
    ) -> Result<u64, Error> {
        if self.behind {
            Ok(0)
        } else {
            self.log.append_batch(uid, entries, at)
        }
    }
}

/// What a shard keeps for the log: the log sequence number of the last
/// logged change (batch or written-back state) applied to a subject of
/// the shard (0: none). Changes are logged and applied under the shard's
/// lock, so the shard holds exactly the logged changes of its subjects up
/// to this one: a snapshot records it per shard, rather than each subject
/// carrying its own.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ShardLog {
    last_lsn: u64,
}

impl ShardLog {
    /// Records that the change logged as `lsn` is applied.
    #[inline(always)]
    pub(super) fn applied(&mut self, lsn: u64) {
        self.last_lsn = self.last_lsn.max(lsn);
    }

    /// The sequence number of the last logged change applied.
    pub(super) fn last_lsn(&self) -> u64 {
        self.last_lsn
    }
}

impl Store {
    /// Turns write-behind on or off (see [`Store::write_back`]). Whoever
    /// turns it off must then write back every shard.
    pub(crate) fn set_write_behind(&self, on: bool) {
        self.write_behind.store(on, Ordering::Relaxed);
    }

    /// Writes back the subjects of shard `shard` changed since it was
    /// last written back, [`WRITE_BACK_CHUNK`] at a time, each chunk under
    /// the shard's write lock (taken again for the next, so that writers
    /// wait for one chunk at most): `log` records the chunk's states and
    /// returns the record's sequence number, which the shard then holds.
    /// Returns how many subjects were written. If `log` fails, the
    /// chunk's subjects stay marked.
    ///
    /// It takes as many chunks as the subjects marked at the start fill,
    /// and no more: a subject marked again meanwhile (by a writer hitting
    /// the shard between two chunks) waits for the next write-back,
    /// rather than keep this one going for as long as the writer does.
    pub(crate) fn write_back(&self, shard: usize, mut log: impl StateLog) -> Result<usize, Error> {
        let mut written = 0;
        let mut chunks_left = None;
        loop {
            let mut shard = self.shards[shard].write();
            let chunks_left =
                chunks_left.get_or_insert_with(|| shard.changed_count().div_ceil(WRITE_BACK_CHUNK));
            let places = shard.changed_places(WRITE_BACK_CHUNK);
            if places.is_empty() || *chunks_left == 0 {
                return Ok(written);
            }
            *chunks_left -= 1;
            let states: Vec<_> = places.iter().map(|&at| shard.subject_in(at)).collect();
            let lsn = log.append_states(&states)?;
            drop(states);
            shard.unmark(&places);
            shard.log.applied(lsn);
            written += places.len();
        }
    }

    /// Sets a subject's cells to a state written back (replacing what it
    /// had, or creating it), as logged with sequence number `lsn`.
    pub(crate) fn replace(&self, uid: &str, cells: SubjectCells, lsn: u64) {
        let (shard, hash) = self.slot(uid);
        let mut shard = shard.write();
        match shard.find(hash, uid) {
            Some(place) => {
                let (_, replaced): (_, Result<(), std::convert::Infallible>) =
                    shard.regrow(&self.hasher, hash, place, |old| {
                        *old = cells;
                        Ok(())
                    });
                let Ok(()) = replaced;
            }
            None => {
                shard.insert(&self.hasher, hash, uid, cells);
            }
        }
        shard.log.applied(lsn);
    }

    /// Replays logged batch `lsn`, which the snapshot loaded (if any) does
    /// not hold.
    pub(crate) fn replay(
        &self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        lsn: u64,
    ) -> Result<(), OverflowAt> {
        let (shard, hash) = self.slot(uid);
        let mut shard = shard.write();
        let apply = |cells: &mut SubjectCells| {
            cells.check(entries, at)?;
            cells.apply(entries, at);
            Ok(())
        };
        match shard.find(hash, uid) {
            Some(place) => shard.regrow(&self.hasher, hash, place, apply).1?,
            None => {
                let mut cells = SubjectCells::default();
                apply(&mut cells)?;
                shard.insert(&self.hasher, hash, uid, cells);
            }
        }
        shard.log.applied(lsn);
        Ok(())
    }

    /// Records that every logged change up to `lsn` is applied, in every
    /// shard: what recovery knows once the snapshot and the log are in.
    pub(crate) fn mark_applied_through(&self, lsn: u64) {
        for shard in self.shards.iter() {
            shard.write().log.applied(lsn);
        }
    }
}
