//! One increment batch for one subject, as the batch script takes it:
//! every field it changes with the bounds its current value must lie
//! within for no addition to overflow, and the exact sum to add.
//!
//! Amounts travel as decimal strings, and the script compares and adds
//! them as decimal strings, exactly (Lua numbers are doubles).

use std::collections::{HashMap, HashSet};

use super::keys::{BucketName, FieldKind, write_bucket_prefix, write_field};
use crate::counter::CounterId;
use crate::error::AmountField;
use crate::period::{DayKey, Horizon, MonthKey};

/// One entry resolved to the counters it lands in (itself, its registered
/// ancestors, the class root) and what it adds.
pub(super) struct Landing<'a> {
    pub targets: &'a [CounterId],
    pub count: i64,
    pub value: i64,
}

/// One addition of the batch to one field, in batch order.
struct Touch {
    entry: usize,
    field: usize,
    delta: i64,
    counter: CounterId,
    amount: AmountField,
}

/// A field the batch changes: the sum of its additions and the lowest and
/// highest of their prefix sums (the empty one, zero, included).
struct FieldChange {
    counter: CounterId,
    bucket: BucketName,
    kind: FieldKind,
    sum: i128,
    lowest: i128,
    highest: i128,
}

/// A batch planned for the script.
pub(super) struct BatchPlan {
    fields: Vec<FieldChange>,
    touches: Vec<Touch>,
    /// The buckets written, each once: their `lastUpdated` is set.
    buckets: Vec<(CounterId, BucketName)>,
}

/// Where the overflow check of a batch failed: entry `index` would
/// overflow `amount` of the cell of `counter`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct FirstOverflow {
    pub index: usize,
    pub counter: CounterId,
    pub amount: AmountField,
}

impl BatchPlan {
    /// Plans `entries` dated in `month` and `day`, of which buckets older
    /// than `horizon` are not written (their amounts go to `total` only).
    pub(super) fn new(
        entries: &[Landing<'_>],
        month: MonthKey,
        day: DayKey,
        horizon: Horizon,
    ) -> BatchPlan {
        let mut buckets_of_cell = vec![BucketName::Total];
        if month >= horizon.0 {
            buckets_of_cell.push(BucketName::Month(month));
        }
        if day >= horizon.1 {
            buckets_of_cell.push(BucketName::Day(day));
        }
        let mut plan = BatchPlan {
            fields: Vec::new(),
            touches: Vec::new(),
            buckets: Vec::new(),
        };
        let mut field_index: HashMap<(CounterId, BucketName, FieldKind), usize> = HashMap::new();
        let mut buckets_seen: HashSet<(CounterId, BucketName)> = HashSet::new();
        for (entry, landing) in entries.iter().enumerate() {
            for &counter in landing.targets {
                for &bucket in &buckets_of_cell {
                    if buckets_seen.insert((counter, bucket)) {
                        plan.buckets.push((counter, bucket));
                    }
                    for (kind, amount, delta) in [
                        (FieldKind::Count, AmountField::Count, landing.count),
                        (FieldKind::Value, AmountField::Value, landing.value),
                    ] {
                        // An addition of zero changes nothing and cannot
                        // overflow; an absent field reads as zero.
                        if delta == 0 {
                            continue;
                        }
                        let next = plan.fields.len();
                        let index = *field_index.entry((counter, bucket, kind)).or_insert(next);
                        if index == next {
                            plan.fields.push(FieldChange {
                                counter,
                                bucket,
                                kind,
                                sum: 0,
                                lowest: 0,
                                highest: 0,
                            });
                        }
                        let change = &mut plan.fields[index];
                        change.sum += i128::from(delta);
                        change.lowest = change.lowest.min(change.sum);
                        change.highest = change.highest.max(change.sum);
                        plan.touches.push(Touch {
                            entry,
                            field: index,
                            delta,
                            counter,
                            amount,
                        });
                    }
                }
            }
        }
        plan
    }

    /// The number of fields the batch changes (the script checks each).
    #[cfg(test)]
    pub(super) fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Appends the script's arguments after its fixed ones to `command`:
    /// the field count, then per field its name, the lowest and highest
    /// value it may hold now and the sum of its additions; then the bucket
    /// count and the buckets (`ID:B`).
    ///
    /// The bounds are exact: a field may hold `v` if `v + p` fits 64 bits
    /// for every prefix sum `p` of its additions (the empty one included,
    /// and the whole sum, so the new value fits too). The sum itself may
    /// lie beyond 64 bits (`i64::MAX` added to `i64::MIN + 1`…); the
    /// script adds decimal strings of any length.
    pub(super) fn write_script_args(&self, command: &mut redis::Cmd) {
        let mut name = String::with_capacity(24);
        command.arg(self.fields.len());
        for change in &self.fields {
            name.clear();
            write_field(&mut name, change.counter, change.bucket, change.kind);
            command.arg(name.as_str());
            // A bound every 64-bit value meets travels as "": the script
            // skips the comparison.
            let low = i128::from(i64::MIN) - change.lowest;
            if low == i128::from(i64::MIN) {
                command.arg("");
            } else {
                command.arg(low);
            }
            let high = i128::from(i64::MAX) - change.highest;
            if high == i128::from(i64::MAX) {
                command.arg("");
            } else {
                command.arg(high);
            }
            command.arg(change.sum);
        }
        command.arg(self.buckets.len());
        for &(counter, bucket) in &self.buckets {
            name.clear();
            write_bucket_prefix(&mut name, counter, bucket);
            command.arg(name.as_str());
        }
    }

    /// The first entry that overflows, given the values the fields held
    /// when the script checked them (in field order): the batch replayed
    /// in order, each cell's additions checked as the embedded store
    /// checks them.
    pub(super) fn first_overflow(&self, current: &[i64]) -> Option<FirstOverflow> {
        let mut running: Vec<i128> = current.iter().map(|&v| i128::from(v)).collect();
        running.resize(self.fields.len(), 0);
        for touch in &self.touches {
            let next = running[touch.field] + i128::from(touch.delta);
            if i64::try_from(next).is_err() {
                return Some(FirstOverflow {
                    index: touch.entry,
                    counter: touch.counter,
                    amount: touch.amount,
                });
            }
            running[touch.field] = next;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NO_HORIZON: Horizon = (MonthKey(0), DayKey(0));

    /// The arguments `write_script_args` appends, as text.
    fn script_args(plan: &BatchPlan) -> Vec<String> {
        let mut command = redis::Cmd::new();
        plan.write_script_args(&mut command);
        command
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
                _ => panic!("only simple arguments are written"),
            })
            .collect()
    }

    fn plan(entries: &[(&[CounterId], i64, i64)]) -> BatchPlan {
        let landings: Vec<Landing<'_>> = entries
            .iter()
            .map(|&(targets, count, value)| Landing {
                targets,
                count,
                value,
            })
            .collect();
        BatchPlan::new(&landings, MonthKey(322), DayKey(20_420), NO_HORIZON)
    }

    #[test]
    fn each_field_is_checked_once_with_its_additions_in_order() {
        let plan = plan(&[(&[3, 0], 2, 0), (&[3, 0], -1, 5)]);
        let args = script_args(&plan);
        // Count and value of total, month and day of counters 3 and 0.
        assert_eq!(plan.field_count(), 12);
        assert_eq!(args[0], "12");
        assert_eq!(
            &args[1..5],
            [
                "3:t:c",
                // Any value meets the lower bound: sent as "".
                "",
                // The prefix sums are 2 and 1: the highest is 2.
                &(i64::MAX as i128 - 2).to_string(),
                // The sum.
                "1"
            ]
        );
        assert_eq!(args.last().map(String::as_str), Some("0:d20420"));
    }

    #[test]
    fn out_of_retention_buckets_are_not_written() {
        let landings = [Landing {
            targets: &[1],
            count: 1,
            value: 0,
        }];
        let plan = BatchPlan::new(
            &landings,
            MonthKey(300),
            DayKey(19_000),
            (MonthKey(301), DayKey(19_500)),
        );
        assert_eq!(
            script_args(&plan),
            [
                "1",
                "1:t:c",
                "",
                &(i64::MAX - 1).to_string(),
                "1",
                "1",
                "1:t"
            ]
        );
    }

    #[test]
    fn a_sum_beyond_64_bits_travels_whole() {
        let plan = plan(&[(&[2], i64::MAX, 0), (&[2], i64::MAX, 0)]);
        let args = script_args(&plan);
        // 2:t:c, its bounds, then its sum.
        assert_eq!(args[1], "2:t:c");
        assert_eq!(args[4], (i128::from(i64::MAX) * 2).to_string());
    }

    #[test]
    fn the_first_overflow_names_entry_counter_and_amount() {
        let plan = plan(&[(&[4], 1, 0), (&[4], 0, 1), (&[4], 0, i64::MAX)]);
        // Fields in order: 4:t:c, 4:m:c, 4:d:c, then 4:t:v, 4:m:v, 4:d:v.
        let current = [0, 0, 0, 0, 0, 0];
        assert_eq!(
            plan.first_overflow(&current),
            Some(FirstOverflow {
                index: 2,
                counter: 4,
                amount: AmountField::Value,
            })
        );
        assert_eq!(
            plan.first_overflow(&[i64::MAX, 0, 0, 0, 0, 0])
                .map(|o| o.index),
            Some(0)
        );
        assert_eq!(plan.first_overflow(&[0, 0, 0, -1, -1, -1]), None);
    }

    proptest! {
        /// The bounds the script checks agree with replaying the batch:
        /// a current value passes them exactly when no addition overflows.
        #[test]
        fn bounds_agree_with_replaying_the_batch(
            deltas in prop::collection::vec(any::<i64>(), 1..6),
            current in any::<i64>(),
        ) {
            let entries: Vec<(&[CounterId], i64, i64)> =
                deltas.iter().map(|&d| (&[9][..], d, 0)).collect();
            let landings: Vec<Landing<'_>> = entries
                .iter()
                .map(|&(targets, count, value)| Landing { targets, count, value })
                .collect();
            let plan = BatchPlan::new(&landings, MonthKey(1), DayKey(1), (MonthKey(2), DayKey(2)));
            if plan.field_count() == 0 {
                return Ok(());
            }
            let args = script_args(&plan);
            let bound = |arg: &str, unbounded: i64| -> i128 {
                if arg.is_empty() { i128::from(unbounded) } else { arg.parse().unwrap() }
            };
            let (lo, hi) = (bound(&args[2], i64::MIN), bound(&args[3], i64::MAX));
            let fits = (lo..=hi).contains(&i128::from(current));
            prop_assert_eq!(fits, plan.first_overflow(&[current]).is_none());
            if fits {
                let sum: i128 = args[4].parse().unwrap();
                let expected = deltas.iter().fold(i128::from(current), |v, &d| v + i128::from(d));
                prop_assert_eq!(i128::from(current) + sum, expected);
                prop_assert!(i64::try_from(expected).is_ok(), "the new value fits");
            }
        }
    }
}
