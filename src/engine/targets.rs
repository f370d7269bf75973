//! The roll-up targets of one entry, copied onto the stack: what the
//! per-thread memo of names holds and a batch resolves into.

use crate::registry::CounterId;

/// The most cells one entry can land in: itself, 15 ancestors and the root.
const MAX_TARGETS: usize = 17;

/// A copy of an entry's roll-up targets, on the stack.
#[derive(Clone, Copy)]
pub(super) struct TargetBuf {
    len: usize,
    ids: [CounterId; MAX_TARGETS],
}

impl TargetBuf {
    /// No targets: a slot yet to be filled.
    pub(super) const EMPTY: TargetBuf = TargetBuf {
        len: 0,
        ids: [0; MAX_TARGETS],
    };

    pub(super) fn copy_of(targets: &[CounterId]) -> Self {
        let mut buf = TargetBuf {
            len: targets.len(),
            ids: [0; MAX_TARGETS],
        };
        buf.ids[..targets.len()].copy_from_slice(targets);
        buf
    }

    pub(super) fn as_slice(&self) -> &[CounterId] {
        &self.ids[..self.len]
    }
}
