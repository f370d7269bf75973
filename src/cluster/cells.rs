//! A subject's hash read back into cells.

use std::collections::BTreeMap;

use super::keys::{BucketName, parse_field};
use crate::counter::CounterId;
use crate::error::{Error, Result};
use crate::period::{Amount, Cell, Period, StoredBucket};

/// What the hash holds of one bucket.
struct BucketParts {
    amount: Amount,
    last_updated: i64,
}

/// Reads a bucket's `COUNT:VALUE:LASTUPDATED`.
fn parse_bucket(text: &str) -> Option<BucketParts> {
    let mut parts = text.split(':');
    let (count, value, last_updated) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(BucketParts {
        amount: Amount {
            count: count.parse().ok()?,
            value: value.parse().ok()?,
        },
        last_updated: last_updated.parse().ok()?,
    })
}

/// Rebuilds the cells of a subject's hash, by counter id. Fields this
/// engine never writes are ignored.
pub(super) fn decode(key: &str, fields: &[(String, String)]) -> Result<BTreeMap<CounterId, Cell>> {
    let corrupt = |reason: String| Error::StoreCorrupt {
        key: key.to_owned(),
        reason,
    };
    let mut parts: BTreeMap<CounterId, BTreeMap<BucketName, BucketParts>> = BTreeMap::new();
    for (name, text) in fields {
        let Some((counter, bucket)) = parse_field(name) else {
            continue;
        };
        let bucket_parts = parse_bucket(text).ok_or_else(|| {
            corrupt(format!(
                "field {name} holds {text:?}, not COUNT:VALUE:LASTUPDATED"
            ))
        })?;
        parts
            .entry(counter)
            .or_default()
            .insert(bucket, bucket_parts);
    }
    let mut cells = BTreeMap::new();
    for (counter, buckets) in parts {
        let mut total = None;
        let mut stored = Vec::new();
        for (bucket, part) in buckets {
            let last_updated = part.last_updated;
            let period = match bucket {
                BucketName::Total => {
                    total = Some((part.amount, last_updated));
                    continue;
                }
                BucketName::Month(month) => Period::Month(month),
                BucketName::Day(day) => Period::Day(day),
            };
            stored.push(StoredBucket {
                period,
                amount: part.amount,
                last_updated,
            });
        }
        let (total, last_updated) =
            total.ok_or_else(|| corrupt(format!("counter {counter} has buckets but no total")))?;
        let cell = Cell::from_parts(counter, total, last_updated, stored)
            .map_err(|reason| corrupt(format!("counter {counter}: {reason}")))?;
        cells.insert(counter, cell);
    }
    Ok(cells)
}
