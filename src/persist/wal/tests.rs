use std::fs::File;
use std::time::Duration;

use super::*;
use crate::period::Amount;
use crate::persist::format::{FRAME_BUDGET_BYTES, FormatVersion};
use crate::registry::RegistryChange;

fn increment<'a>(entries: &'a [ResolvedEntry<'a>]) -> impl FnOnce(u64) -> RecordRef<'a> {
    move |lsn| RecordRef::Increment {
        lsn,
        uid: "u",
        at: 1_795_780_800,
        entries,
    }
}

#[test]
fn a_failed_write_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::create(dir.path(), 1, 1, Durability::Always).unwrap();
    let entries = [ResolvedEntry {
        targets: &[0],
        amount: Amount { count: 1, value: 0 },
    }];
    let (_, end) = wal.append(increment(&entries)).unwrap();
    wal.wait_durable(end).unwrap();
    // Swap the segment for a read-only handle: the next write fails.
    let path = dir.path().join(segment_name(1));
    wal.segment.lock().file = File::open(&path).unwrap();
    let (_, end) = wal.append(increment(&entries)).unwrap();
    assert!(matches!(wal.wait_durable(end), Err(Error::Io { .. })));
    // From then on, nothing more is accepted or acknowledged.
    assert!(matches!(
        wal.append(increment(&entries)),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(wal.wait_durable(end), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
}

/// The log of a batch under write-behind, which is never called.
struct MustNotLog;

impl BatchLog for MustNotLog {
    fn append_batch(&mut self, _: &str, _: &[ResolvedEntry<'_>], _: &EventTime) -> Result<u64> {
        panic!("logged under write-behind")
    }
}

#[test]
fn a_write_back_logs_states_and_a_failed_one_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let interval = Durability::Interval(std::time::Duration::from_secs(3600));
    let wal = Wal::create(dir.path(), 1, 1, interval).unwrap();
    let store = Store::default();
    store.set_write_behind(true);
    let at = crate::period::EventTime::new(
        1_795_780_800,
        crate::period::Retention {
            months: 24,
            days: 90,
        }
        .horizon(1_795_780_800),
    );
    for uid in ["a", "b"] {
        store
            .apply(uid, &one_entry(), &at, &mut MustNotLog)
            .unwrap();
    }
    wal.write_back(&store).unwrap();
    wal.sync().unwrap();
    let mut written: Vec<String> = records_in(dir.path(), 1)
        .into_iter()
        .flat_map(|record| match record {
            LogRecord::Subjects { subjects, .. } => subjects.into_iter().map(|(uid, _)| uid),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    written.sort();
    assert_eq!(written, ["a", "b"]);

    // Swap the segment for a read-only handle: the next write fails.
    let path = dir.path().join(segment_name(1));
    wal.segment.lock().file = File::open(&path).unwrap();
    store
        .apply("a", &one_entry(), &at, &mut MustNotLog)
        .unwrap();
    wal.write_back(&store).unwrap();
    assert!(matches!(wal.sync(), Err(Error::Io { .. })));
    assert!(matches!(wal.check_poison(), Err(Error::Poisoned { .. })));
    assert!(matches!(
        wal.write_back(&store),
        Err(Error::Poisoned { .. })
    ));
}

/// The payload lengths of the frames of segment 1.
fn frame_lengths(dir: &Path) -> Vec<usize> {
    let bytes = std::fs::read(dir.join(segment_name(1))).unwrap();
    let mut offset = super::super::format::HEADER_BYTES;
    let mut lengths = Vec::new();
    while offset < bytes.len() {
        let (payload, used) = super::super::format::read_frame(&bytes[offset..]).unwrap();
        lengths.push(payload.len());
        offset += used;
    }
    lengths
}

#[test]
fn fault_a_log_frames_stay_within_the_budget_however_much_is_buffered() {
    // More increments buffered than one frame may hold (no sync in
    // between), and registry changes too many for one record.
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::create(
        dir.path(),
        1,
        1,
        Durability::Interval(Duration::from_secs(3600)),
    )
    .unwrap();
    let entries = one_entry();
    let increments = 2 * FRAME_BUDGET_BYTES / 10;
    for _ in 0..increments {
        wal.append(increment(&entries)).unwrap();
    }
    let changes: Vec<RegistryChange> = (0..40_000)
        .map(|id| RegistryChange::Created {
            id,
            class: "c".into(),
            path: format!("/{id:0>499}"),
        })
        .collect();
    let (registry_lsn, _) = wal.append(|_| RecordRef::Registry(&changes)).unwrap();
    let (after, _) = wal.append(increment(&entries)).unwrap();
    wal.sync().unwrap();
    let lengths = frame_lengths(dir.path());
    assert!(lengths.len() >= 5, "{lengths:?}");
    assert!(
        lengths.iter().all(|&len| len <= FRAME_BUDGET_BYTES),
        "{lengths:?}"
    );
    let records = records_in(dir.path(), 1);
    let replayed: Vec<RegistryChange> = records
        .iter()
        .filter_map(|record| match record {
            LogRecord::Registry(changes) => Some(changes.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(replayed, changes);
    let registry_records = records.len() - increments - 1;
    assert!(registry_records >= 3, "{registry_records}");
    // Every record took the next LSN, the registry's as many as it took.
    assert_eq!(registry_lsn, increments as u64 + 1);
    assert_eq!(after, registry_lsn + registry_records as u64);
    let lsns: Vec<u64> = records
        .iter()
        .filter_map(|record| match record {
            LogRecord::Increment { lsn, .. } => Some(*lsn),
            _ => None,
        })
        .collect();
    let expected: Vec<u64> = (1..=increments as u64).chain([after]).collect();
    assert_eq!(lsns, expected);
}

#[test]
fn fault_a_a_record_too_large_for_a_frame_is_refused_and_its_lsn_reused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::create(dir.path(), 1, 1, Durability::Always).unwrap();
    let uid = "u".repeat(FRAME_BUDGET_BYTES);
    let entries = one_entry();
    let huge = wal.append(|lsn| RecordRef::Increment {
        lsn,
        uid: &uid,
        at: 1_795_780_800,
        entries: &entries,
    });
    assert!(
        matches!(huge, Err(Error::RecordTooLarge { .. })),
        "{huge:?}"
    );
    let (lsn, end) = wal.append(increment(&entries)).unwrap();
    assert_eq!(lsn, 1);
    wal.wait_durable(end).unwrap();
    assert_eq!(records_in(dir.path(), 1).len(), 1);
}

/// Records in segments `1..=last`, decoded.
fn records_in(dir: &Path, last: u64) -> Vec<LogRecord> {
    let mut records = Vec::new();
    for number in 1..=last {
        let bytes = std::fs::read(dir.join(segment_name(number))).unwrap();
        let mut offset = super::super::format::HEADER_BYTES;
        while offset < bytes.len() {
            let (payload, used) = super::super::format::read_frame(&bytes[offset..]).unwrap();
            records.extend(decode_log_frame(FormatVersion::CURRENT, payload).unwrap());
            offset += used;
        }
    }
    records
}

/// Eight writers append 50 records each while segments rotate, with
/// or without the group-commit thread; each returns only once its
/// record is durable, and every record reaches a segment.
fn writers_and_rotations(with_syncer: bool) {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::create(dir.path(), 1, 1, Durability::Always).unwrap());
    let syncer = with_syncer.then(|| Wal::start_syncer(&wal, &Arc::default()).unwrap().unwrap());
    let entries = [ResolvedEntry {
        targets: &[0],
        amount: Amount { count: 1, value: 0 },
    }];
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..50 {
                    let (_, end) = wal.append(increment(&entries)).unwrap();
                    wal.settle(end).unwrap();
                    assert!(wal.durable.load(Ordering::Acquire) >= end);
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..5 {
                wal.rotate().unwrap();
            }
        });
    });
    if let Some(thread) = syncer {
        wal.stop_syncer();
        thread.join().unwrap();
    }
    // Every record reached a segment: 400 across 6 segments, with
    // every LSN once.
    let mut lsns: Vec<u64> = records_in(dir.path(), 6)
        .into_iter()
        .map(|record| match record {
            LogRecord::Increment { lsn, .. } => lsn,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=400).collect::<Vec<u64>>());
}

#[test]
fn concurrent_writers_share_syncs_and_rotation_wakes_them() {
    writers_and_rotations(false);
}

#[test]
fn the_group_commit_thread_acknowledges_every_writer() {
    writers_and_rotations(true);
}

/// A log under `Always` in `dir`, with its group-commit thread running.
fn group_committed(dir: &Path) -> (Arc<Wal>, JoinHandle<()>) {
    let wal = Arc::new(Wal::create(dir, 1, 1, Durability::Always).unwrap());
    let syncer = Wal::start_syncer(&wal, &Arc::default()).unwrap().unwrap();
    (wal, syncer)
}

/// One entry adding 1 to counter 0.
fn one_entry() -> [ResolvedEntry<'static>; 1] {
    [ResolvedEntry {
        targets: &[0],
        amount: Amount { count: 1, value: 0 },
    }]
}

#[test]
fn writers_after_the_sync_thread_stops_sync_their_own_records() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, syncer) = group_committed(dir.path());
    let entries = one_entry();
    let (_, end) = wal.append(increment(&entries)).unwrap();
    wal.settle(end).unwrap();
    wal.stop_syncer();
    syncer.join().unwrap();
    let (_, end) = wal.append(increment(&entries)).unwrap();
    wal.settle(end).unwrap();
    assert!(wal.durable.load(Ordering::Acquire) >= end);
    assert_eq!(records_in(dir.path(), 1).len(), 2);
}

#[test]
fn a_failed_group_commit_fails_its_writers_and_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, syncer) = group_committed(dir.path());
    let entries = one_entry();
    let (_, end) = wal.append(increment(&entries)).unwrap();
    wal.settle(end).unwrap();
    // Swap the segment for a read-only handle: the next write fails.
    let path = dir.path().join(segment_name(1));
    wal.segment.lock().file = File::open(&path).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                // Either the append finds the log poisoned already, or
                // the write covering it fails: never acknowledged.
                let result = wal.append(increment(&entries)).and_then(|(_, end)| {
                    wal.settle(end)?;
                    Ok(end)
                });
                assert!(
                    matches!(result, Err(Error::Poisoned { ref reason }) if reason.contains("writing")),
                    "{result:?}"
                );
            });
        }
    });
    assert!(matches!(
        wal.append(increment(&entries)),
        Err(Error::Poisoned { .. })
    ));
    wal.stop_syncer();
    syncer.join().unwrap();
    assert_eq!(records_in(dir.path(), 1).len(), 1);
}
