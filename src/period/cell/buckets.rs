//! A cell's buckets: packed beside the cell while they fit one of
//! [`Packed`]'s shapes, on the heap otherwise.

use super::bucket::{Bucket, NO_BUCKET};
use super::packed::Packed;

/// A cell's buckets, sorted by key, strictly descending: up to two
/// packed beside the cell, in the shapes [`Packed`] holds; others, and
/// more, on the heap.
#[derive(Clone, Debug)]
pub(super) enum Buckets {
    Packed(Packed),
    Heap(Vec<Bucket>),
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets::Packed(Packed::EMPTY)
    }
}

impl PartialEq for Buckets {
    fn eq(&self, other: &Self) -> bool {
        *self.view() == *other.view()
    }
}

impl Eq for Buckets {}

/// A cell's buckets to read: unpacked, or borrowed from the heap.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) unpacked: [Bucket; 2],
    pub(super) len: usize,
    pub(super) heap: Option<&'a [Bucket]>,
}

impl std::ops::Deref for View<'_> {
    type Target = [Bucket];

    fn deref(&self) -> &[Bucket] {
        match self.heap {
            Some(buckets) => buckets,
            None => &self.unpacked[..self.len],
        }
    }
}

impl Buckets {
    pub(super) fn from_vec(buckets: Vec<Bucket>) -> Buckets {
        match Packed::pack(&buckets) {
            Some(packed) => Buckets::Packed(packed),
            None => Buckets::Heap(buckets),
        }
    }

    /// The buckets, to read.
    #[inline]
    pub(super) fn view(&self) -> View<'_> {
        match self {
            Buckets::Packed(packed) => {
                let (unpacked, len) = packed.unpack();
                View {
                    unpacked,
                    len,
                    heap: None,
                }
            }
            Buckets::Heap(buckets) => View {
                unpacked: [NO_BUCKET; 2],
                len: 0,
                heap: Some(buckets),
            },
        }
    }

    /// Changes the buckets with `change` (on a vector of them, for packed
    /// ones, which are packed again if their shape allows).
    pub(super) fn change(&mut self, change: impl FnOnce(&mut Vec<Bucket>)) {
        match self {
            Buckets::Heap(buckets) => {
                change(buckets);
                if buckets.len() <= 2
                    && let Some(packed) = Packed::pack(buckets)
                {
                    *self = Buckets::Packed(packed);
                }
            }
            Buckets::Packed(_) => {
                let mut buckets = Vec::with_capacity(4);
                buckets.extend_from_slice(&self.view());
                change(&mut buckets);
                *self = Buckets::from_vec(buckets);
            }
        }
    }
}
