//! The buffer appenders share: log frames not yet written, each sealed
//! before a record would take it past the frame budget.

use std::thread::Thread;

use super::record::{RecordRef, RecordV2Ref};
use crate::error::Result;
use crate::persist::format::{
    FRAME_BUDGET_BYTES, FRAME_OVERHEAD, TooLarge, encoded_len, runs, seal_frame, start_log_frame,
    write_increment_record, write_record,
};

/// Room a frame keeps beside a record that must fit it alone: the frame's
/// first LSN (up to 9 bytes), and an increment's event time, which a new
/// frame writes from 0 rather than as a difference (up to 9 more).
pub(super) const LONE_RECORD_SLACK: usize = 32;

/// An empty buffer's capacity.
pub(super) const INITIAL_BUFFER_BYTES: usize = 1 << 16;

/// What appenders share: the bytes not yet written, and the counters.
pub(super) struct Buffer {
    /// Log frames: sealed ones ([`seal_frame`]), each within
    /// [`FRAME_BUDGET_BYTES`], then, from `frame_start` on, the one being
    /// filled ([`start_log_frame`]): reserved header bytes, the LSN of its
    /// first record, then records.
    pub(super) bytes: Vec<u8>,
    /// Where the frame being filled starts in `bytes`.
    pub(super) frame_start: usize,
    /// The LSN of the first record in `bytes`.
    pub(super) first_lsn: u64,
    pub(super) next_lsn: u64,
    /// The event time of the last increment in `bytes`, or 0: the next
    /// one is written as a difference from it.
    pub(super) last_at: i64,
    /// Logical position (bytes ever appended) at the end of `bytes`.
    pub(super) end: u64,
    /// Under [`Durability::Always`], the threads whose records are in
    /// `bytes`: the flush that writes `bytes` wakes exactly them.
    pub(super) waiters: Vec<Thread>,
    /// The group-commit thread sleeps until `waiters` reaches this length.
    pub(super) wake_syncer_at: usize,
    /// The interval sync thread has been asked to write `bytes` early.
    pub(super) early_requested: bool,
}

impl Buffer {
    /// Appends `record`, numbered `lsn`, to the frame being filled.
    #[inline(always)]
    pub(super) fn encode(&mut self, lsn: u64, record: RecordRef<'_>) {
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
    pub(super) fn refit(
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
