//! One month or day bucket of a cell, as buckets are kept on the heap
//! and on disk, and where an increment writes one.

use serde::{Deserialize, Serialize};

use crate::period::{Amount, Horizon};

/// The tag that sets month bucket keys apart from day bucket keys.
pub(super) const MONTH_TAG: u32 = 1 << 31;

/// One month or day bucket of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Bucket {
    /// A day number, or a month index with [`MONTH_TAG`] set.
    pub(super) key: u32,
    /// The latest event time counted in the bucket, Unix seconds (fits until 2106).
    pub(super) last_updated: u32,
    pub(super) amount: Amount,
}

pub(super) const NO_BUCKET: Bucket = Bucket {
    key: 0,
    last_updated: 0,
    amount: Amount { count: 0, value: 0 },
};

/// The position of `key` in buckets sorted descending, or where it would go.
#[inline]
pub(super) fn locate(buckets: &[Bucket], key: u32) -> Result<usize, usize> {
    let at = buckets.partition_point(|b| b.key > key);
    match buckets.get(at) {
        Some(b) if b.key == key => Ok(at),
        _ => Err(at),
    }
}

/// Where an increment writes one of its buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum BucketSpot {
    /// Nowhere: the bucket is out of retention.
    #[default]
    Skip,
    /// Into the existing bucket at this index.
    At(u32),
    /// Into a new bucket, inserted at this index.
    New(u32),
}

/// Writes one bucket of `buckets`; `true` if it had to be created.
#[inline]
pub(super) fn write(
    buckets: &mut Vec<Bucket>,
    spot: BucketSpot,
    key: u32,
    delta: Amount,
    secs: u32,
) -> bool {
    match spot {
        BucketSpot::Skip => false,
        BucketSpot::At(i) => {
            let bucket = &mut buckets[i as usize];
            bucket.amount = bucket.amount.wrapping_add(delta);
            bucket.last_updated = bucket.last_updated.max(secs);
            false
        }
        BucketSpot::New(i) => {
            let bucket = Bucket {
                key,
                last_updated: secs,
                amount: delta,
            };
            buckets.insert(i as usize, bucket);
            true
        }
    }
}

pub(super) fn is_retained(key: u32, (month, day): Horizon) -> bool {
    if key & MONTH_TAG != 0 {
        key & !MONTH_TAG >= month.0
    } else {
        key >= day.0
    }
}
