//! A subject's hash read back into cells.

use std::collections::BTreeMap;

use super::keys::{BucketName, FieldKind, parse_field};
use crate::counter::CounterId;
use crate::error::{Error, Result};
use crate::period::{Amount, Cell, Period, StoredBucket};

/// What the hash holds of one bucket.
#[derive(Default)]
struct BucketParts {
    amount: Amount,
    last_updated: Option<i64>,
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
        let Some((counter, bucket, kind)) = parse_field(name) else {
            continue;
        };
        let number: i64 = text
            .parse()
            .map_err(|_| corrupt(format!("field {name} holds {text:?}, not an integer")))?;
        let bucket = parts.entry(counter).or_default().entry(bucket).or_default();
        match kind {
            FieldKind::Count => bucket.amount.count = number,
            FieldKind::Value => bucket.amount.value = number,
            FieldKind::LastUpdated => bucket.last_updated = Some(number),
        }
    }
    let mut cells = BTreeMap::new();
    for (counter, buckets) in parts {
        let mut total = None;
        let mut stored = Vec::new();
        for (bucket, part) in buckets {
            let last_updated = part.last_updated.ok_or_else(|| {
                corrupt(format!(
                    "counter {counter}'s bucket {bucket:?} has no lastUpdated"
                ))
            })?;
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
