//! Where things live in the cluster: key names (each with the hash tag
//! that picks its slot) and the field names of a subject's hash.
//!
//! - `NS:{UID}`: the subject's hash of cells. The UID is the hash tag, so
//!   one subject's cells and its batch markers share a slot. `%`, `{` and
//!   `}` in a UID are written `%25`, `%7B` and `%7D`, so that the tag is
//!   always the whole UID and two UIDs never share a key.
//! - `NS:{UID}:b:ID`: the marker of an applied batch, kept for the
//!   idempotency window.
//! - `NS:token:{TOKEN}`: a regToken, expiring with Redis.
//! - `NS:{registry}:log`: the registry's changes, one list element per
//!   change; its length is the registry's version.
//!
//! Field `ID:B` of a subject's hash is bucket `B` (`t` total, `mN` month
//! index N, `dN` day number N) of counter `ID`; it holds the bucket's
//! count, value and lastUpdated as `COUNT:VALUE:LASTUPDATED`.

use std::borrow::Cow;

use crate::counter::CounterId;
use crate::period::{DayKey, MonthKey};

/// A UID as it appears inside a key's hash tag.
fn tag(uid: &str) -> Cow<'_, str> {
    if !uid.contains(['%', '{', '}']) {
        return Cow::Borrowed(uid);
    }
    let mut escaped = String::with_capacity(uid.len() + 6);
    for c in uid.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '{' => escaped.push_str("%7B"),
            '}' => escaped.push_str("%7D"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// The key names of one namespace.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    namespace: String,
}

impl Keys {
    pub(super) fn new(namespace: &str) -> Keys {
        Keys {
            namespace: namespace.to_owned(),
        }
    }

    /// The subject's hash of cells.
    pub(super) fn cells(&self, uid: &str) -> String {
        format!("{}:{{{}}}", self.namespace, tag(uid))
    }

    /// The marker of batch `batch_id` of the subject.
    pub(super) fn batch_marker(&self, uid: &str, batch_id: &str) -> String {
        format!("{}:{{{}}}:b:{batch_id}", self.namespace, tag(uid))
    }

    /// A regToken's key.
    pub(super) fn token(&self, token: &str) -> String {
        format!("{}:token:{{{token}}}", self.namespace)
    }

    /// The registry's log of changes.
    pub(super) fn registry_log(&self) -> String {
        format!("{}:{{registry}}:log", self.namespace)
    }
}

/// A bucket of a cell, as field names spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum BucketName {
    Total,
    Month(MonthKey),
    Day(DayKey),
}

/// Writes the name `ID:B` of a bucket's field to `out`.
pub(super) fn write_field(out: &mut String, counter: CounterId, bucket: BucketName) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = match bucket {
        BucketName::Total => write!(out, "{counter}:t"),
        BucketName::Month(month) => write!(out, "{counter}:m{}", month.0),
        BucketName::Day(day) => write!(out, "{counter}:d{}", day.0),
    };
}

/// The field of a bucket.
#[cfg(test)]
fn field(counter: CounterId, bucket: BucketName) -> String {
    let mut name = String::new();
    write_field(&mut name, counter, bucket);
    name
}

/// The counter and bucket a field is of, if it is a bucket's field.
pub(super) fn parse_field(name: &str) -> Option<(CounterId, BucketName)> {
    let (counter, bucket) = name.split_once(':')?;
    let number = |text: &str| -> Option<u32> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    let counter = number(counter)?;
    let bucket = match bucket.as_bytes().first()? {
        b't' if bucket.len() == 1 => BucketName::Total,
        b'm' => BucketName::Month(MonthKey(number(&bucket[1..])?)),
        b'd' => BucketName::Day(DayKey(number(&bucket[1..])?)),
        _ => return None,
    };
    Some((counter, bucket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_in_a_uid_stay_inside_its_tag_and_keys_stay_distinct() {
        let keys = Keys::new("tally");
        assert_eq!(keys.cells("0123abcd"), "tally:{0123abcd}");
        assert_eq!(keys.cells("a}b"), "tally:{a%7Db}");
        assert_ne!(keys.cells("a%7Db"), keys.cells("a}b"));
        assert_ne!(keys.cells("{"), keys.cells("%7B"));
        let marker = keys.batch_marker("}x", "00ff");
        assert_eq!(marker, "tally:{%7Dx}:b:00ff");
    }

    #[test]
    fn field_names_read_back() {
        let buckets = [
            BucketName::Total,
            BucketName::Month(MonthKey(322)),
            BucketName::Day(DayKey(20_420)),
        ];
        for bucket in buckets {
            let name = field(7, bucket);
            assert_eq!(parse_field(&name), Some((7, bucket)), "{name}");
        }
        for junk in [
            "", "7", "7:", "7:x", "7:t:c", "a:t", "7:m", "7:d-1", "7:tt", ":t", "7:m1:",
        ] {
            assert_eq!(parse_field(junk), None, "{junk}");
        }
    }
}
