use super::log::WRITE_BACK_CHUNK;
use super::*;
use crate::period::Retention;

const AT: i64 = 1_795_737_600;

/// A batch log that runs `.0` on each batch.
struct Batches<F>(F);

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
fn batches<F: FnMut(&[ResolvedEntry<'_>]) -> Result<u64, Error>>(log: F) -> Batches<F> {
    Batches(log)
}

/// A state log that runs `.0` on each chunk of states.
struct States<F>(F);

impl<F: FnMut(&[(&str, CellsView<'_>)]) -> Result<u64, Error>> StateLog for States<F> {
    fn append_states(&mut self, subjects: &[(&str, CellsView<'_>)]) -> Result<u64, Error> {
        (self.0)(subjects)
    }
}

/// A state log running `log` on each chunk of states.
fn state_log<F: FnMut(&[(&str, CellsView<'_>)]) -> Result<u64, Error>>(log: F) -> States<F> {
    States(log)
}

fn at() -> EventTime {
    EventTime::new(AT, horizon())
}

fn horizon() -> crate::period::Horizon {
    Retention {
        months: 24,
        days: 90,
    }
    .horizon(AT)
}

fn entry(targets: &[CounterId], count: i64) -> ResolvedEntry<'_> {
    ResolvedEntry {
        targets,
        amount: Amount { count, value: 0 },
    }
}

fn total(store: &Store, uid: &str, id: CounterId) -> Option<i64> {
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

fn shard_lsns(store: &Store) -> Vec<u64> {
    (0..store.shard_count())
        .map(|shard| store.for_each_in_shard(shard, |_, _| {}))
        .collect()
}

/// Writes back every shard; returns the UIDs written (sorted) and
/// the records' sequence numbers (from 1 on, one per record).
fn write_back_all(store: &Store) -> (Vec<String>, u64) {
    let mut uids = Vec::new();
    let mut lsn = 0;
    for shard in 0..store.shard_count() {
        store
            .write_back(
                shard,
                state_log(|subjects| {
                    uids.extend(subjects.iter().map(|(uid, _)| uid.to_string()));
                    lsn += 1;
                    Ok(lsn)
                }),
            )
            .unwrap();
    }
    uids.sort();
    (uids, lsn)
}

#[test]
fn write_behind_marks_what_changed_and_a_write_back_clears_it() {
    let store = Store::default();
    // Not on: batches are logged, nothing is marked.
    let mut logged = 0;
    store
        .apply(
            "a",
            &[entry(&[0], 1)],
            &at(),
            &mut batches(|_| {
                logged += 1;
                Ok(1)
            }),
        )
        .unwrap();
    assert_eq!(logged, 1);
    assert_eq!(write_back_all(&store).0, Vec::<String>::new());

    store.set_write_behind(true);
    let must_not_log =
        |_: &[ResolvedEntry<'_>]| -> Result<u64, Error> { panic!("logged under write-behind") };
    // An existing subject, one that gains a cell (and moves class),
    // and a new one; then an overflowing batch, which changes nothing.
    for (uid, targets) in [("a", &[0][..]), ("a", &[0, 1]), ("b", &[0])] {
        store
            .apply(uid, &[entry(targets, 1)], &at(), &mut batches(must_not_log))
            .unwrap();
    }
    assert!(
        store
            .apply(
                "c",
                &[entry(&[0], i64::MAX), entry(&[0], 1)],
                &at(),
                &mut batches(must_not_log)
            )
            .is_err()
    );
    let (written, records) = write_back_all(&store);
    assert_eq!(written, ["a", "b"]);
    // Each shard holds the record that wrote its subjects back.
    assert_eq!(shard_lsns(&store).iter().max(), Some(&records));
    assert_eq!(write_back_all(&store).0, Vec::<String>::new());
}

#[test]
fn marks_survive_the_tables_growing_and_records_moving() {
    let store = Store::default();
    store.set_write_behind(true);
    store
        .apply("marked", &[entry(&[0], 1)], &at(), &mut Unlogged)
        .unwrap();
    store.set_write_behind(false);
    // Every shard's table grows several times under these.
    for i in 0..20_000 {
        let uid = format!("other-{i}");
        store
            .apply(&uid, &[entry(&[0], 1)], &at(), &mut Unlogged)
            .unwrap();
    }
    assert_eq!(write_back_all(&store).0, ["marked"]);
}

#[test]
fn a_shard_with_many_changed_subjects_is_written_back_in_chunks() {
    let store = Store::default();
    store.set_write_behind(true);
    let uids: Vec<String> = (0..40_000).map(|i| format!("s{i}")).collect();
    for uid in &uids {
        store
            .apply(uid, &[entry(&[0], 1)], &at(), &mut Unlogged)
            .unwrap();
    }
    let mut records = Vec::new();
    for shard in 0..store.shard_count() {
        let written = store
            .write_back(
                shard,
                state_log(|subjects| {
                    records.push(subjects.iter().map(|(uid, _)| uid.to_string()).collect());
                    Ok(records.len() as u64)
                }),
            )
            .unwrap();
        assert!(written > WRITE_BACK_CHUNK, "{written} in shard {shard}");
    }
    assert!(
        records
            .iter()
            .all(|r: &Vec<String>| r.len() <= WRITE_BACK_CHUNK)
    );
    let mut written: Vec<String> = records.concat();
    written.sort();
    let mut expected = uids.clone();
    expected.sort();
    assert_eq!(written, expected, "each subject once");
    assert_eq!(
        shard_lsns(&store).iter().max(),
        Some(&(records.len() as u64))
    );
}

#[test]
fn a_write_back_ends_while_a_writer_keeps_marking_its_shard() {
    let store = Store::default();
    store.set_write_behind(true);
    store
        .apply("hot", &[entry(&[0], 1)], &at(), &mut Unlogged)
        .unwrap();
    let shard = (0..store.shard_count())
        .find(|&shard| {
            let mut found = false;
            store.for_each_in_shard(shard, |_, _| found = true);
            found
        })
        .unwrap();
    let stop = AtomicBool::new(false);
    let writes = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                store
                    .apply("hot", &[entry(&[0], 1)], &at(), &mut Unlogged)
                    .unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
            }
        });
        while writes.load(Ordering::Relaxed) < 10_000 {
            std::hint::spin_loop();
        }
        // One subject marked at the start: one chunk, however often
        // the writer marks it again meanwhile (a second one fails the
        // write-back, rather than let it run on).
        let outcomes: Vec<_> = (0..2_000)
            .map(|_| {
                let mut records = 0;
                store.write_back(
                    shard,
                    state_log(|_| {
                        records += 1;
                        match records {
                            1 => Ok(1),
                            _ => Err(Error::Config("a second chunk".into())),
                        }
                    }),
                )
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        let longer = outcomes.iter().filter(|o| o.is_err()).count();
        assert_eq!(longer, 0, "{longer} write-backs went on past one chunk");
    });
}

#[test]
fn a_state_written_back_replaces_the_subject_or_creates_it() {
    let source = Store::default();
    source.set_write_behind(true);
    source
        .apply("u", &[entry(&[0, 1], 5)], &at(), &mut Unlogged)
        .unwrap();
    let mut states = Vec::new();
    for shard in 0..source.shard_count() {
        source
            .write_back(
                shard,
                state_log(|subjects| {
                    for (uid, cells) in subjects {
                        states.push((uid.to_string(), SubjectCells::new(cells.0.to_vec())));
                    }
                    Ok(9)
                }),
            )
            .unwrap();
    }
    let [(uid, state)] = &states[..] else {
        panic!("{} states", states.len())
    };
    let target = Store::default();
    target.replace(uid, state.clone(), 9);
    assert_eq!(total(&target, "u", 1), Some(5));
    // An older state (one cell, count 2) replaced by the newer one.
    let older = Store::default();
    older
        .apply("u", &[entry(&[0], 2)], &at(), &mut Unlogged)
        .unwrap();
    older.replace(uid, state.clone(), 9);
    assert_eq!(
        (total(&older, "u", 0), total(&older, "u", 1)),
        (Some(5), Some(5))
    );
    assert_eq!(shard_lsns(&older).iter().max(), Some(&9));
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
