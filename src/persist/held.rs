//! Which logged batches a snapshot holds, and so which of the log's
//! batches recovery replays on top of it.

use std::collections::HashMap;

use crate::store::{SHARDS, shard_under_seed};

/// Which logged batches a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeldBatches {
    /// The hash seed of the store the snapshot was taken from and, for
    /// each shard, the sequence number of the last logged batch applied to
    /// the shard when it was copied. A batch of a subject is in the
    /// snapshot exactly when its sequence number is at most that of the
    /// subject's shard there.
    ByShard { seed: u64, shard_lsns: Vec<u64> },
    /// A version-1 snapshot's: each subject's own last applied batch
    /// (subjects absent held none).
    BySubject(HashMap<String, u64>),
}

impl HeldBatches {
    /// The batches of a snapshot of a store seeded with `seed`, or `None`
    /// if `shard_lsns` does not have one number per shard.
    pub(crate) fn by_shard(seed: u64, shard_lsns: Vec<u64>) -> Option<HeldBatches> {
        (shard_lsns.len() == SHARDS).then_some(HeldBatches::ByShard { seed, shard_lsns })
    }

    /// The batches of a version-1 snapshot, by subject.
    pub(crate) fn by_subject(subject_lsns: HashMap<String, u64>) -> HeldBatches {
        HeldBatches::BySubject(subject_lsns)
    }

    /// Whether the snapshot holds the batch `lsn` of subject `uid`.
    pub(crate) fn holds(&self, uid: &str, lsn: u64) -> bool {
        match self {
            HeldBatches::ByShard { seed, shard_lsns } => {
                lsn <= shard_lsns[shard_under_seed(*seed, uid)]
            }
            HeldBatches::BySubject(lsns) => lsns.get(uid).is_some_and(|&held| lsn <= held),
        }
    }

    /// The highest sequence number the snapshot holds.
    pub(crate) fn max_lsn(&self) -> u64 {
        match self {
            HeldBatches::ByShard { shard_lsns, .. } => shard_lsns.iter().copied().max(),
            HeldBatches::BySubject(lsns) => lsns.values().copied().max(),
        }
        .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::period::{Amount, EventTime, Retention};
    use crate::store::{BatchLog, ResolvedEntry, Store};

    const AT: i64 = 1_795_737_600;

    fn at() -> EventTime {
        EventTime::new(
            AT,
            Retention {
                months: 24,
                days: 90,
            }
            .horizon(AT),
        )
    }

    fn entry(targets: &[u32], count: i64) -> ResolvedEntry<'_> {
        ResolvedEntry {
            targets,
            amount: Amount { count, value: 0 },
        }
    }

    /// A log that numbers every batch `.0`.
    struct Numbered(u64);

    impl BatchLog for Numbered {
        fn append_batch(
            &mut self,
            _: &str,
            _: &[ResolvedEntry<'_>],
            _: &EventTime,
        ) -> Result<u64, Error> {
            Ok(self.0)
        }
    }

    fn shard_lsns(store: &Store) -> Vec<u64> {
        (0..store.shard_count())
            .map(|shard| store.for_each_in_shard(shard, |_, _| {}))
            .collect()
    }

    #[test]
    fn each_shard_knows_the_last_batch_applied_to_it_and_a_snapshot_what_it_holds() {
        let store = Store::default();
        let uids: Vec<String> = (0..2000).map(|i| format!("u{i}")).collect();
        for (i, uid) in uids.iter().enumerate() {
            let lsn = i as u64 + 1;
            store
                .apply(uid, &[entry(&[0], 1)], &at(), &mut Numbered(lsn))
                .unwrap();
        }
        let held = HeldBatches::by_shard(store.seed(), shard_lsns(&store)).unwrap();
        assert_eq!(held.max_lsn(), 2000);
        // Every batch applied is held; a later batch of any subject is not.
        for (i, uid) in uids.iter().enumerate() {
            assert!(held.holds(uid, i as u64 + 1), "{uid}");
            assert!(!held.holds(uid, 2001));
        }
        // Per shard, not per store: an early subject's shard may end
        // before a late batch of another shard.
        let lsns = shard_lsns(&store);
        let first_shard_end = lsns.iter().copied().filter(|&l| l > 0).min();
        assert!(first_shard_end < Some(2000));
        assert!(HeldBatches::by_shard(store.seed(), vec![0; 3]).is_none());
        // A version-1 snapshot's, by subject.
        let by_subject = HeldBatches::by_subject(HashMap::from([("u".to_owned(), 7)]));
        assert!(by_subject.holds("u", 7) && !by_subject.holds("u", 8));
        assert!(!by_subject.holds("v", 1));
        assert_eq!(by_subject.max_lsn(), 7);
    }
}
