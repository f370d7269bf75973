//! Write-behind: what batches mark, what a write-back hands its state
//! log (in chunks, each subject once), and a state written back replacing
//! a subject or creating it.

use super::log::WRITE_BACK_CHUNK;
use super::tests::{at, batches, entry, shard_lsns, total};
use super::*;

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
