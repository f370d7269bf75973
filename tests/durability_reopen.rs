//! Durability: what an engine on a data directory acknowledged
//! is there after a reopen, whichever durability it ran with, and a data
//! directory is open in one engine at a time.

use std::time::Duration;

use tally::{Durability, Error, Increment, Selector, Tally};

mod common;
use common::copy_dir as crash_copy;

use common::NOW;

fn open(dir: &std::path::Path, durability: Durability) -> Tally {
    common::open_durable(dir, durability)
}

fn everything(engine: &Tally, uid: &str) -> Vec<tally::CounterRow> {
    let periods = [
        Selector::class("regex('.')").period("regex('.')"),
        Selector::class("regex('.')").period("last7Days"),
    ];
    engine.get(uid, &periods).unwrap()
}

fn workload(engine: &Tally) {
    common::mixed_workload(engine, NOW);
}

#[test]
fn every_durability_survives_a_clean_reopen() {
    for durability in [
        Durability::Always,
        Durability::Interval(Duration::from_millis(50)),
        Durability::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (u1, u2, registered) = {
            let engine = open(dir.path(), durability);
            workload(&engine);
            (
                everything(&engine, "u1"),
                everything(&engine, "u2"),
                engine.registered(),
            )
        };
        let engine = open(dir.path(), durability);
        assert_eq!(everything(&engine, "u1"), u1, "{durability:?}");
        assert_eq!(everything(&engine, "u2"), u2, "{durability:?}");
        assert_eq!(engine.registered(), registered, "{durability:?}");
        assert!(!u1.is_empty());
    }
}

#[test]
fn the_log_alone_recovers_everything_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), Durability::Always);
    workload(&engine);
    let token = engine.issue_reg_token("u9").unwrap();
    let before = everything(&engine, "u1");
    // Simulate a crash: no close, no final snapshot.
    std::mem::forget(engine);
    let copy = crash_copy(dir.path());
    let engine = open(copy.path(), Durability::Always);
    let report = engine.recovery_report().unwrap();
    assert!(report.snapshot.is_none());
    assert!(report.batches_replayed >= 8, "{report:?}");
    assert_eq!(everything(&engine, "u1"), before);
    assert_eq!(engine.resolve_uid((&token).into()).unwrap(), "u9");
}

#[test]
fn a_snapshot_plus_the_log_after_it_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), Durability::Always);
    workload(&engine);
    let summary = engine.snapshot().unwrap();
    assert_eq!(summary.subjects, 2);
    engine
        .increment("u1", &[Increment::new("shares", "/news/sport").count(7)])
        .unwrap();
    let before = everything(&engine, "u1");
    std::mem::forget(engine);
    let copy = crash_copy(dir.path());
    let engine = open(copy.path(), Durability::Always);
    let report = engine.recovery_report().unwrap().clone();
    assert!(report.snapshot.is_some());
    assert_eq!(report.batches_replayed, 1, "{report:?}");
    assert_eq!(everything(&engine, "u1"), before);
}

#[test]
fn a_data_dir_opens_in_one_engine_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path(), Durability::Never);
    let second = Tally::builder().data_dir(dir.path()).build();
    let error = second.unwrap_err();
    assert!(matches!(error, Error::Locked { .. }), "{error}");
    assert_eq!(error.code().number(), 500001);
}

#[test]
fn snapshots_need_a_data_dir() {
    let engine = Tally::builder().build().unwrap();
    assert!(matches!(engine.snapshot(), Err(Error::Config(_))));
    assert!(engine.recovery_report().is_none());
}

// Regression: a crash while creating a segment left a short header; the
// next open cut it to nothing and moved on to a new segment, after which
// every open failed because the emptied segment was no longer the last.
#[test]
fn a_segment_emptied_by_a_crash_does_not_block_later_opens() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), Durability::Always);
    workload(&engine);
    std::mem::forget(engine);
    let copy = crash_copy(dir.path());
    let segments = tally::inspect::inspect(copy.path()).unwrap();
    let last = segments
        .files
        .iter()
        .filter_map(|f| {
            f.path
                .file_name()?
                .to_str()?
                .strip_prefix("log-")?
                .strip_suffix(".tlog")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap();
    // The torn creation of the next segment: 10 bytes of its header.
    std::fs::write(
        copy.path().join(format!("log-{:020}.tlog", last + 1)),
        [0u8; 10],
    )
    .unwrap();
    let engine = open(copy.path(), Durability::Always);
    let before = everything(&engine, "u1");
    engine
        .increment("u1", &[Increment::new("shares", "/")])
        .unwrap();
    std::mem::forget(engine);
    let again = crash_copy(copy.path());
    let engine = open(again.path(), Durability::Always);
    let after = everything(&engine, "u1");
    assert_ne!(after, before);
    let root_total = |rows: &[tally::CounterRow]| {
        rows.iter()
            .find(|r| r.path == "/" && r.period == tally::Period::Total)
            .unwrap()
            .count
    };
    assert_eq!(root_total(&after), root_total(&before) + 1);
}

/// Each reopen shards subjects with a new hash seed; a snapshot taken by a
/// reopened engine, and the log after it, must still count every batch
/// once, across a chain of crashes.
#[test]
fn snapshots_of_reopened_engines_stay_exact_across_crashes() {
    let uids: Vec<String> = (0..400).map(|i| format!("subject-{i}")).collect();
    let mut expected = vec![0i64; uids.len()];
    let bump = |engine: &Tally, expected: &mut Vec<i64>, round: usize| {
        let handle = engine.counter("shares", "/news").unwrap();
        for (i, uid) in uids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % (round + 2) != 0)
        {
            engine
                .increment_counter(uid.as_str(), &handle, 1, 0)
                .unwrap();
            expected[i] += 1;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(dir.path(), Durability::Always);
    engine.register([("shares", "/news")]).unwrap();
    let mut copies = Vec::new();
    for round in 0..4 {
        bump(&engine, &mut expected, round);
        engine.snapshot().unwrap();
        bump(&engine, &mut expected, round + 1);
        // Crash, and reopen a copy of what was on disk.
        std::mem::forget(engine);
        let copy = crash_copy(
            copies
                .last()
                .map_or(dir.path(), |c: &tempfile::TempDir| c.path()),
        );
        engine = open(copy.path(), Durability::Always);
        copies.push(copy);
        let report = engine.recovery_report().unwrap();
        assert!(report.snapshot.is_some(), "round {round}: {report:?}");
        assert!(report.batches_replayed > 0, "round {round}: {report:?}");
        for (uid, &count) in uids.iter().zip(&expected) {
            let rows = engine
                .get(uid.as_str(), &[Selector::class("shares").path("/news")])
                .unwrap();
            let counted = rows.first().map_or(0, |row| row.count);
            assert_eq!(counted, count, "round {round}, {uid}");
        }
    }
}

/// A snapshot taken while writers run holds some of the batches logged
/// after its rotation and not others; recovery from it (here forced by
/// deleting the newer, clean snapshot) must count each batch once.
#[test]
fn a_snapshot_taken_under_load_and_its_log_recover_exactly() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

    for durability in [
        Durability::Interval(Duration::from_millis(5)),
        Durability::Always,
    ] {
        let uids: Vec<String> = (0..2000).map(|i| format!("subject-{i}")).collect();
        let counted: Vec<AtomicI64> = uids.iter().map(|_| AtomicI64::new(0)).collect();
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path(), durability);
        engine.register([("shares", "/news")]).unwrap();
        let handle = engine.counter("shares", "/news").unwrap();
        let stop = AtomicBool::new(false);
        let fuzzy = std::thread::scope(|scope| {
            for writer in 0..2u64 {
                let (engine, handle, uids, counted, stop) =
                    (&engine, &handle, &uids, &counted, &stop);
                scope.spawn(move || {
                    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ writer;
                    while !stop.load(Ordering::Relaxed) {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let i = (state % uids.len() as u64) as usize;
                        engine
                            .increment_counter(uids[i].as_str(), handle, 1, 0)
                            .unwrap();
                        counted[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(40));
            let fuzzy = engine.snapshot().unwrap();
            std::thread::sleep(Duration::from_millis(40));
            stop.store(true, Ordering::Relaxed);
            fuzzy
        });
        // A clean snapshot syncs the log; then the crash.
        let clean = engine.snapshot().unwrap();
        std::mem::forget(engine);
        let copy = crash_copy(dir.path());
        let newest = copy.path().join(clean.path.file_name().unwrap());
        std::fs::remove_file(newest).unwrap();
        let engine = open(copy.path(), durability);
        let report = engine.recovery_report().unwrap();
        assert_eq!(
            report.snapshot.as_deref().and_then(|p| p.file_name()),
            fuzzy.path.file_name(),
            "{durability:?}"
        );
        // Under `Interval`, the log holds subjects' states written back
        // rather than batches.
        assert!(
            report.batches_replayed + report.states_replayed > 0,
            "{durability:?}: {report:?}"
        );
        for (uid, counted) in uids.iter().zip(&counted) {
            let rows = engine
                .get(uid.as_str(), &[Selector::class("shares").path("/news")])
                .unwrap();
            let count = rows.first().map_or(0, |row| row.count);
            assert_eq!(
                count,
                counted.load(Ordering::Relaxed),
                "{durability:?} {uid}"
            );
        }
    }
}

/// After `close`, the interval sync thread is gone; an increment made
/// after it must still reach the disk rather than wait in memory.
#[test]
fn increments_after_close_are_still_durable() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), Durability::Interval(Duration::from_secs(3600)));
    engine.register([("shares", "/news")]).unwrap();
    engine
        .increment("u1", &[Increment::new("shares", "/news")])
        .unwrap();
    engine.close().unwrap();
    engine
        .increment("u1", &[Increment::new("shares", "/news").count(4)])
        .unwrap();
    std::mem::forget(engine);
    let copy = crash_copy(dir.path());
    let engine = open(copy.path(), Durability::Never);
    let rows = engine
        .get("u1", &[Selector::class("shares").path("/news")])
        .unwrap();
    assert_eq!(rows.first().map(|row| row.count), Some(5));
}

/// Pins a bug where reopening a directory with a smaller
/// `max_path_depth` than its counters were created under failed as
/// `Error::Corrupt` (and recovery listed intact snapshots as damaged):
/// a configuration change is not corruption.
#[test]
fn a_smaller_max_path_depth_on_reopen_keeps_deeper_counters_readable() {
    let with_depth = |dir: &std::path::Path, depth| {
        Tally::builder()
            .clock(tally::ManualClock::new(NOW))
            .data_dir(dir)
            .durability(Durability::Always)
            .max_path_depth(depth)
            .build()
    };
    for snapshot in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let engine = with_depth(dir.path(), 3).unwrap();
        engine.register([("c", "/a/b/c")]).unwrap();
        engine
            .increment("u", &[Increment::new("c", "/a/b/c").count(4)])
            .unwrap();
        if snapshot {
            engine.snapshot().unwrap();
        }
        std::mem::forget(engine);
        let dir = crash_copy(dir.path());
        let engine = match with_depth(dir.path(), 2) {
            Ok(engine) => engine,
            Err(e) => panic!("snapshot {snapshot}: reopening at depth 2 fails: {e}"),
        };
        let report = engine.recovery_report().unwrap();
        assert!(report.skipped_snapshots.is_empty(), "{report:?}");
        // Read through the class (an exact selector path is held to the
        // depth too).
        let rows = engine.get("u", &[Selector::class("c")]).unwrap();
        let deep: Vec<i64> = rows
            .iter()
            .filter(|r| r.path == "/a/b/c")
            .map(|r| r.count)
            .collect();
        assert_eq!(deep, [4], "{rows:?}");
        // The smaller depth holds for what comes next.
        let err = engine
            .increment("u", &[Increment::new("c", "/a/b/c")])
            .unwrap_err();
        assert!(matches!(err.root(), Error::PathTooDeep { .. }), "{err:?}");
    }
}
