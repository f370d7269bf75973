//! One increment batch for one subject, as the batch script takes it:
//! every bucket it writes and, for each counter's count and value (every
//! bucket of a counter receives the same additions), the bounds a bucket's
//! current amount must lie within for no addition to overflow, and the
//! exact sum to add.
//!
//! Amounts travel as decimal strings, and the script compares and adds
//! them as decimal strings, exactly (Lua numbers are doubles).

use std::collections::HashMap;

use super::keys::{BucketName, write_field};
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

/// One entry's additions to one counter (to each of its buckets), in
/// batch order.
struct Touch {
    entry: usize,
    /// The counter's position in [`BatchPlan::counters`].
    position: usize,
    count: i64,
    value: i64,
}

/// What the batch adds to one amount of a counter (to each of its
/// buckets alike): the sum of its additions and the lowest and highest of
/// their prefix sums (the empty one, zero, included).
#[derive(Clone, Copy, Default)]
struct AmountChange {
    sum: i128,
    lowest: i128,
    highest: i128,
}

impl AmountChange {
    fn add(&mut self, delta: i64) {
        self.sum += i128::from(delta);
        self.lowest = self.lowest.min(self.sum);
        self.highest = self.highest.max(self.sum);
    }

    /// Whether every prefix sum fits 64 bits: whether the additions fit
    /// from zero (the whole sum is one of them).
    fn fits_from_zero(&self) -> bool {
        self.lowest >= i128::from(i64::MIN) && self.highest <= i128::from(i64::MAX)
    }
}

/// A batch planned for the script.
///
/// Every counter the batch lands in is written in the same buckets, the
/// total first, then the month and the day where retention keeps them,
/// and each of its buckets receives the same additions.
pub(super) struct BatchPlan {
    buckets_of_cell: Vec<BucketName>,
    /// The counters written, in the order the batch first lands in them.
    counters: Vec<CounterId>,
    /// Count and value changes of each counter, in the same order.
    changes: Vec<[AmountChange; 2]>,
    touches: Vec<Touch>,
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
            buckets_of_cell,
            counters: Vec::new(),
            changes: Vec::new(),
            touches: Vec::new(),
        };
        let mut position_of: HashMap<CounterId, usize> = HashMap::new();
        for (entry, landing) in entries.iter().enumerate() {
            for &counter in landing.targets {
                let position = *position_of.entry(counter).or_insert_with(|| {
                    plan.counters.push(counter);
                    plan.changes.push(Default::default());
                    plan.counters.len() - 1
                });
                let [count, value] = &mut plan.changes[position];
                count.add(landing.count);
                value.add(landing.value);
                plan.touches.push(Touch {
                    entry,
                    position,
                    count: landing.count,
                    value: landing.value,
                });
            }
        }
        plan
    }

    /// The number of buckets the batch writes (the script checks each).
    pub(super) fn bucket_count(&self) -> usize {
        self.counters.len() * self.buckets_of_cell.len()
    }

    /// Appends the script's arguments after its fixed ones to `command`:
    /// the number of counters and of buckets per counter, then per counter
    /// what each of its buckets holds after the batch if it holds nothing
    /// yet (dated `at_secs`; "" when the batch overflows from zero); for
    /// its count and then its value, the lowest and highest amount a
    /// bucket may hold now and the sum of the additions; and the field
    /// names of its buckets, its total first.
    ///
    /// The bounds are exact: an amount may be `v` if `v + p` fits 64 bits
    /// for every prefix sum `p` of its additions (the empty one included,
    /// and the whole sum, so the new amount fits too). The sum itself may
    /// lie beyond 64 bits (`i64::MAX` added to `i64::MIN + 1`…); the
    /// script adds decimal strings of any length.
    pub(super) fn write_script_args(&self, command: &mut redis::Cmd, at_secs: i64) {
        use std::fmt::Write;
        let mut text = String::with_capacity(32);
        command
            .arg(self.counters.len())
            .arg(self.buckets_of_cell.len());
        for (&counter, change) in self.counters.iter().zip(&self.changes) {
            text.clear();
            if change.iter().all(AmountChange::fits_from_zero) {
                // Writing to a String cannot fail.
                let _ = write!(text, "{}:{}:{at_secs}", change[0].sum, change[1].sum);
            }
            command.arg(text.as_str());
            for amount in change {
                // A bound every 64-bit amount meets travels as "": the
                // script skips the comparison.
                let low = i128::from(i64::MIN) - amount.lowest;
                if low == i128::from(i64::MIN) {
                    command.arg("");
                } else {
                    command.arg(low);
                }
                let high = i128::from(i64::MAX) - amount.highest;
                if high == i128::from(i64::MAX) {
                    command.arg("");
                } else {
                    command.arg(high);
                }
                command.arg(amount.sum);
            }
            for &bucket in &self.buckets_of_cell {
                text.clear();
                write_field(&mut text, counter, bucket);
                command.arg(text.as_str());
            }
        }
    }

    /// The first entry that overflows, given the amounts the buckets held
    /// when the script checked them (count, then value, of each bucket in
    /// argument order): the batch replayed in order, each cell's additions
    /// checked as the embedded store checks them.
    pub(super) fn first_overflow(&self, current: &[i64]) -> Option<FirstOverflow> {
        let per_counter = self.buckets_of_cell.len();
        let mut running: Vec<i128> = current.iter().map(|&v| i128::from(v)).collect();
        running.resize(self.bucket_count() * 2, 0);
        for touch in &self.touches {
            let buckets = &mut running[touch.position * per_counter * 2..][..per_counter * 2];
            for bucket in buckets.chunks_mut(2) {
                for (slot, amount, delta) in [
                    (0, AmountField::Count, touch.count),
                    (1, AmountField::Value, touch.value),
                ] {
                    let next = bucket[slot] + i128::from(delta);
                    if i64::try_from(next).is_err() {
                        return Some(FirstOverflow {
                            index: touch.entry,
                            counter: self.counters[touch.position],
                            amount,
                        });
                    }
                    bucket[slot] = next;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NO_HORIZON: Horizon = (MonthKey(0), DayKey(0));
    const AT: i64 = 1_764_288_000;

    /// The arguments `write_script_args` appends, as text.
    fn script_args(plan: &BatchPlan) -> Vec<String> {
        let mut command = redis::Cmd::new();
        plan.write_script_args(&mut command, AT);
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
    fn each_counter_sends_its_additions_once_and_names_its_buckets() {
        let plan = plan(&[(&[3, 0], 2, 0), (&[3, 0], -1, 5)]);
        let args = script_args(&plan);
        // Total, month and day of counters 3 and 0.
        assert_eq!(plan.bucket_count(), 6);
        assert_eq!(&args[..2], ["2", "3"]);
        assert_eq!(
            &args[2..12],
            [
                // A new bucket holds the sums, dated.
                &format!("1:5:{AT}"),
                // Count: any amount meets the lower bound, sent as "".
                "",
                // The prefix sums are 2 and 1: the highest is 2.
                &(i64::MAX as i128 - 2).to_string(),
                // The sum.
                "1",
                // Value: one addition of 5.
                "",
                &(i64::MAX as i128 - 5).to_string(),
                "5",
                // The counter's buckets, its total first.
                "3:t",
                "3:m322",
                "3:d20420",
            ]
        );
        assert_eq!(&args[12..19], &args[2..9], "counter 0 receives the same");
        assert_eq!(&args[19..], ["0:t", "0:m322", "0:d20420"]);
    }

    #[test]
    fn an_amount_the_batch_leaves_alone_is_unbounded_and_adds_zero() {
        let plan = plan(&[(&[1], 1, 0)]);
        let args = script_args(&plan);
        assert_eq!(args[2], format!("1:0:{AT}"));
        assert_eq!(&args[6..9], ["", "", "0"]);
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
                "1",
                &format!("1:0:{AT}"),
                "",
                &(i64::MAX - 1).to_string(),
                "1",
                "",
                "",
                "0",
                "1:t",
            ]
        );
    }

    #[test]
    fn a_sum_beyond_64_bits_travels_whole() {
        let plan = plan(&[(&[2], i64::MAX, 0), (&[2], i64::MAX, 0)]);
        let args = script_args(&plan);
        // No fresh value (the batch overflows from zero), the count's
        // bounds, then its sum.
        assert_eq!(args[2], "");
        assert_eq!(args[5], (i128::from(i64::MAX) * 2).to_string());
        assert_eq!(args[9], "2:t");
    }

    #[test]
    fn the_first_overflow_names_entry_counter_and_amount() {
        let plan = plan(&[(&[4, 0], 1, 0), (&[4, 0], 0, 1), (&[4, 0], 0, i64::MAX)]);
        // Buckets 4:t, 4:m, 4:d, 0:t, 0:m, 0:d, each count then value.
        let mut current = [0; 12];
        assert_eq!(
            plan.first_overflow(&current),
            Some(FirstOverflow {
                index: 2,
                counter: 4,
                amount: AmountField::Value,
            })
        );
        current[6] = i64::MAX;
        assert_eq!(
            plan.first_overflow(&current),
            Some(FirstOverflow {
                index: 0,
                counter: 0,
                amount: AmountField::Count,
            })
        );
        current[6] = 0;
        for value in [1, 3, 5, 7, 9, 11] {
            current[value] = -1;
        }
        assert_eq!(plan.first_overflow(&current), None);
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
            let args = script_args(&plan);
            let bound = |arg: &str, unbounded: i64| -> i128 {
                if arg.is_empty() { i128::from(unbounded) } else { arg.parse().unwrap() }
            };
            // The count's bounds and sum follow the fresh value.
            let (lo, hi) = (bound(&args[3], i64::MIN), bound(&args[4], i64::MAX));
            let fits = (lo..=hi).contains(&i128::from(current));
            prop_assert_eq!(fits, plan.first_overflow(&[current, 0]).is_none());
            // A new bucket: its fresh value is there exactly when zero fits.
            let fits_from_zero = plan.first_overflow(&[0, 0]).is_none();
            prop_assert_eq!(!args[2].is_empty(), fits_from_zero);
            if fits_from_zero {
                let fresh_sum = deltas.iter().map(|&d| i128::from(d)).sum::<i128>();
                prop_assert_eq!(&args[2], &format!("{fresh_sum}:0:{AT}"));
            }
            if fits {
                let sum: i128 = args[5].parse().unwrap();
                let expected = deltas.iter().fold(i128::from(current), |v, &d| v + i128::from(d));
                prop_assert_eq!(i128::from(current) + sum, expected);
                prop_assert!(i64::try_from(expected).is_ok(), "the new value fits");
            }
        }
    }
}
