//! The store's own tests: subjects found among many, across size classes
//! and restores; batches applied to every target, whole or not at all;
//! replay. The helpers here serve `write_back_tests` too.

use super::*;
use crate::period::Retention;

const AT: i64 = 1_795_737_600;

/// A batch log that runs `.0` on each batch.
pub(super) struct Batches<F>(F);

impl<F: FnMut(&[ResolvedEntry<'_>]) -> Result<u64, Error>> BatchLog for Batches<F> {
    fn append_batch(
        &mut self,
        _: &str,
        entries: &[ResolvedEntry<'_>],
        _: &EventTime,
    ) -> Result<u64, Error> {
        (self.0)(entries)
    }
}

/// A batch log running `log` on each batch.
pub(super) fn batches<F: FnMut(&[ResolvedEntry<'_>]) -> Result<u64, Error>>(log: F) -> Batches<F> {
    Batches(log)
}

pub(super) fn at() -> EventTime {
    EventTime::new(AT, horizon())
}

fn horizon() -> crate::period::Horizon {
    Retention {
        months: 24,
        days: 90,
    }
    .horizon(AT)
}

pub(super) fn entry(targets: &[CounterId], count: i64) -> ResolvedEntry<'_> {
    ResolvedEntry {
        targets,
        amount: Amount { count, value: 0 },
    }
}

pub(super) fn total(store: &Store, uid: &str, id: CounterId) -> Option<i64> {
    store
        .read(uid, |s| {
            s.cell(id).map(|c| {
                c.reading(crate::period::Period::Total, AT, horizon())
                    .unwrap()
                    .amount
                    .count
            })
        })
        .flatten()
}

#[test]
fn long_and_short_uids_round_trip_through_records() {
    let store = Store::default();
    let uids = [
        "",
        "a",
        "fifteen-bytes-x",
        "sixteen-bytes-xx",
        &"é".repeat(100),
    ];
    for (i, uid) in uids.iter().enumerate() {
        store
            .apply(uid, &[entry(&[0], i as i64 + 1)], &at(), &mut Unlogged)
            .unwrap();
    }
    for (i, uid) in uids.iter().enumerate() {
        assert_eq!(total(&store, uid, 0), Some(i as i64 + 1), "{uid:?}");
    }
    let mut seen: Vec<String> = Vec::new();
    store.for_each(|uid, _| seen.push(uid.to_owned()));
    seen.sort();
    let mut expected: Vec<String> = uids.iter().map(|u| u.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected);
    // A prefix or extension of a stored UID is another subject.
    assert_eq!(total(&store, "fifteen-bytes-", 0), None);
    assert_eq!(total(&store, "sixteen-bytes-xxx", 0), None);
}

#[test]
fn subjects_move_between_size_classes_and_the_rest_stay_found() {
    let store = Store::default();
    let uids: Vec<String> = (0..3000).map(|i| format!("subject-{i}")).collect();
    // Round r gives every third subject (shifted by r) cell r: subjects
    // grow from one cell to two, three and four at different times,
    // and each move takes a record out of the middle of its class.
    let mut expected = vec![Vec::new(); uids.len()];
    for round in 0..4u32 {
        for (i, uid) in uids.iter().enumerate() {
            if !(i + round as usize).is_multiple_of(3) {
                store
                    .apply(uid, &[entry(&[round], i as i64)], &at(), &mut Unlogged)
                    .unwrap();
                expected[i].push(round);
            }
        }
    }
    // A rejected batch that would add a cell leaves the subject as it was.
    let overflow = [entry(&[9], i64::MAX), entry(&[9], 1)];
    assert!(
        store
            .apply(&uids[1], &overflow, &at(), &mut Unlogged)
            .is_err()
    );
    assert_eq!(store.subject_count(), uids.len());
    for (i, uid) in uids.iter().enumerate() {
        for id in 0..10 {
            let want = expected[i].contains(&id).then_some(i as i64);
            assert_eq!(total(&store, uid, id), want, "{uid} counter {id}");
        }
    }
    let mut seen = 0;
    store.for_each(|uid, cells| {
        let i: usize = uid["subject-".len()..].parse().unwrap();
        assert_eq!(cells.cells().count(), expected[i].len(), "{uid}");
        seen += 1;
    });
    assert_eq!(seen, uids.len());
}

#[test]
fn many_subjects_are_all_found() {
    let store = Store::default();
    for i in 0..20_000 {
        let uid = format!("u{i}");
        store
            .apply(&uid, &[entry(&[0], i)], &at(), &mut Unlogged)
            .unwrap();
    }
    assert_eq!(store.subject_count(), 20_000);
    for i in (0..20_000).step_by(7) {
        assert_eq!(total(&store, &format!("u{i}"), 0), Some(i));
    }
    assert_eq!(total(&store, "u20000", 0), None);
    let long = "x".repeat(200);
    store
        .apply(&long, &[entry(&[0], 5)], &at(), &mut Unlogged)
        .unwrap();
    assert_eq!(total(&store, &long, 0), Some(5));
    let mut seen = 0;
    store.for_each(|uid, _| seen += usize::from(uid == long));
    assert_eq!(seen, 1);
}

#[test]
fn subjects_restored_together_are_all_found_and_a_repeated_one_is_named() {
    // Subjects of one, two and three cells, some with long UIDs, in
    // the order a snapshot lists them (shard by shard), into a store
    // that already holds one subject.
    let source = Store::default();
    for i in 0..6_000 {
        let uid = if i % 5 == 0 {
            format!("{i}-{}", "x".repeat(20))
        } else {
            format!("u{i}")
        };
        let targets: &[CounterId] = [&[0][..], &[0, 1], &[0, 1, 2]][i % 3];
        source
            .apply(&uid, &[entry(targets, i as i64)], &at(), &mut Unlogged)
            .unwrap();
    }
    let mut subjects = Vec::new();
    source.for_each(|uid, cells| {
        subjects.push((uid.to_owned(), SubjectCells::new(cells.0.to_vec())));
    });
    let target = Store::default();
    target
        .apply("already", &[entry(&[0], 1)], &at(), &mut Unlogged)
        .unwrap();
    target.restore_all(subjects.clone()).unwrap();
    assert_eq!(target.subject_count(), 6_001);
    for (uid, cells) in &subjects {
        let restored = target.read(uid, |c| c.0.to_vec()).expect("restored");
        assert_eq!(&restored, &cells.0, "{uid}");
    }
    assert_eq!(total(&target, "already", 0), Some(1));

    // A subject already there, and one listed twice.
    let mut again = vec![subjects[7].clone()];
    assert_eq!(
        target.restore_all(again.clone()),
        Err((0, subjects[7].0.clone()))
    );
    let fresh = Store::default();
    again.insert(0, subjects[3].clone());
    again.push(subjects[7].clone());
    assert_eq!(fresh.restore_all(again), Err((2, subjects[7].0.clone())));
}

#[test]
fn applies_to_every_target() {
    let store = Store::default();
    store
        .apply(
            "u",
            &[entry(&[2, 1, 0], 3), entry(&[0], 4)],
            &at(),
            &mut Unlogged,
        )
        .unwrap();
    assert_eq!(total(&store, "u", 0), Some(7));
    assert_eq!(total(&store, "u", 1), Some(3));
    assert_eq!(total(&store, "u", 2), Some(3));
}

#[test]
fn an_entry_naming_a_cell_twice_is_checked_as_two_additions() {
    // The registry never resolves a counter to repeated targets, but a
    // damaged log might; the check must not let the cell wrap.
    let store = Store::default();
    let half = i64::MAX / 2 + 1;
    assert!(
        store
            .replay("u", &[entry(&[0, 0], half)], &at(), 1)
            .is_err()
    );
    assert_eq!(store.subject_count(), 0);
    store.replay("u", &[entry(&[0, 0], 3)], &at(), 2).unwrap();
    assert_eq!(total(&store, "u", 0), Some(6));
}

#[test]
fn an_overflowing_batch_changes_nothing() {
    let store = Store::default();
    store
        .apply("u", &[entry(&[5, 0], i64::MAX - 1)], &at(), &mut Unlogged)
        .unwrap();
    let err = store
        .apply(
            "u",
            &[entry(&[1, 0], 1), entry(&[0], 1)],
            &at(),
            &mut Unlogged,
        )
        .unwrap_err();
    assert_eq!(
        match err {
            ApplyError::Overflow(at) => at,
            ApplyError::Log(e) => panic!("unexpected log error {e}"),
        },
        OverflowAt {
            index: 1,
            counter: 0,
            field: AmountField::Count
        }
    );
    assert_eq!(total(&store, "u", 0), Some(i64::MAX - 1));
    assert_eq!(total(&store, "u", 1), None);
    // A rejected batch of a new subject creates no subject.
    assert!(
        store
            .apply(
                "v",
                &[entry(&[0], i64::MAX), entry(&[0], 1)],
                &at(),
                &mut Unlogged
            )
            .is_err()
    );
    assert_eq!(store.subject_count(), 1);
}

#[test]
fn a_failing_log_applies_nothing() {
    let store = Store::default();
    let failing = |_: &[ResolvedEntry<'_>]| Err(Error::EmptyBatch);
    assert!(matches!(
        store.apply("u", &[entry(&[0], 1)], &at(), &mut batches(failing)),
        Err(ApplyError::Log(_))
    ));
    assert_eq!(store.subject_count(), 0);
    assert_eq!(shard_lsns(&store).iter().max(), Some(&0));
}

pub(super) fn shard_lsns(store: &Store) -> Vec<u64> {
    (0..store.shard_count())
        .map(|shard| store.for_each_in_shard(shard, |_, _| {}))
        .collect()
}

#[test]
fn replay_applies_and_moves_the_shard_on() {
    let store = Store::default();
    store.replay("u", &[entry(&[0], 1)], &at(), 7).unwrap();
    store.replay("u", &[entry(&[0], 1)], &at(), 8).unwrap();
    assert_eq!(total(&store, "u", 0), Some(2));
    assert_eq!(shard_lsns(&store).iter().max(), Some(&8));
    store.mark_applied_through(20);
    assert!(shard_lsns(&store).iter().all(|&lsn| lsn == 20));
}
