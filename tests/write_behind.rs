//! Write-behind under `Durability::Interval`: writers do not log
//! their batches; once per interval (or on `sync`, `close` and drop) the
//! log receives the whole state of each subject changed since the last
//! write-back. What was written back and synced survives a crash exactly,
//! and a hot subject costs one state per write-back however often it was
//! incremented.

use std::time::Duration;

use tally::inspect::{FileKind, LogInspection};
use tally::{Durability, Increment, Selector, Tally};

mod common;
use common::copy_dir as crash_copy;

use common::NOW;
const UIDS: [&str; 3] = ["u1", "u2", "u3"];

fn open(dir: &std::path::Path, durability: Durability) -> Tally {
    common::open_durable(dir, durability)
}

/// An interval that never fires during a test: write-backs happen only
/// when the test asks.
fn manual() -> Durability {
    Durability::Interval(Duration::from_secs(3600))
}

/// Every log segment's inspection, oldest first.
fn logs(dir: &std::path::Path) -> Vec<LogInspection> {
    tally::inspect::inspect(dir)
        .unwrap()
        .files
        .into_iter()
        .filter_map(|file| match file.kind {
            FileKind::Log(log) => Some(log),
            _ => None,
        })
        .collect()
}

fn count(engine: &Tally, uid: &str, path: &str) -> i64 {
    engine
        .get(uid, &[Selector::class("shares").path(path)])
        .unwrap()
        .first()
        .map_or(0, |row| row.count)
}

#[test]
fn a_hot_subject_costs_one_state_per_write_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), manual());
    engine.register([("shares", "/news")]).unwrap();
    let handle = engine.counter("shares", "/news").unwrap();
    for i in 0..30_000 {
        engine
            .increment_counter(UIDS[i % 3], &handle, 1, 2)
            .unwrap();
    }
    engine.sync().unwrap();
    let log = &logs(dir.path())[0];
    assert_eq!((log.increments, log.subject_states), (0, 3), "{log:?}");
    // Only what changed since is written back next time.
    engine.increment_counter("u2", &handle, 5, 0).unwrap();
    engine.sync().unwrap();
    engine.sync().unwrap();
    let log = &logs(dir.path())[0];
    assert_eq!(log.subject_states, 4, "{log:?}");

    std::mem::forget(engine);
    let copy = crash_copy(dir.path());
    let engine = open(copy.path(), manual());
    let report = engine.recovery_report().unwrap();
    assert_eq!(
        (report.states_replayed, report.batches_replayed),
        (4, 0),
        "{report:?}"
    );
    assert_eq!(count(&engine, "u1", "/news"), 10_000);
    assert_eq!(count(&engine, "u2", "/news"), 10_005);
    assert_eq!(count(&engine, "u3", "/"), 10_000);
}

#[test]
fn the_timer_writes_back_everything_the_mixed_workload_did() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), Durability::Interval(Duration::from_millis(10)));
    common::mixed_workload(&engine, NOW);
    let before = common::state(&engine, &UIDS);
    // Many intervals: the timer has written back and synced by then.
    std::thread::sleep(Duration::from_millis(500));
    std::mem::forget(engine);
    let copy = crash_copy(dir.path());
    let states: u64 = logs(copy.path()).iter().map(|l| l.subject_states).sum();
    assert!(states >= 2, "{:?}", logs(copy.path()));
    let engine = open(copy.path(), Durability::Never);
    assert_eq!(common::state(&engine, &UIDS), before);
}

/// A counter registered, incremented and unregistered between two
/// write-backs: the registry records come first in the log, so the
/// states that name the counter replay after it exists.
#[test]
fn registry_changes_between_write_backs_replay_before_the_states() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), manual());
    engine.register([("shares", "/news")]).unwrap();
    engine
        .increment("u1", &[Increment::new("shares", "/news")])
        .unwrap();
    engine.sync().unwrap();
    engine.register([("shares", "/news/sport")]).unwrap();
    engine
        .increment("u1", &[Increment::new("shares", "/news/sport").count(3)])
        .unwrap();
    engine
        .increment("u2", &[Increment::new("shares", "/news/sport")])
        .unwrap();
    engine.unregister([("shares", "/news/sport")]).unwrap();
    engine.sync().unwrap();
    let before = common::state(&engine, &UIDS);
    std::mem::forget(engine);
    let copy = crash_copy(dir.path());
    let engine = open(copy.path(), manual());
    assert_eq!(common::state(&engine, &UIDS), before);
    assert_eq!(count(&engine, "u1", "/news"), 4);
}

/// Writers that keep going while the engine closes: every acknowledged
/// increment is either written back by the last write-back or logged
/// (and synced) by its writer after it.
#[test]
fn increments_racing_close_are_all_durable() {
    use std::sync::atomic::{AtomicI64, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), Durability::Interval(Duration::from_millis(2)));
    engine.register([("shares", "/news")]).unwrap();
    let handle = engine.counter("shares", "/news").unwrap();
    let acknowledged: Vec<AtomicI64> = UIDS.iter().map(|_| AtomicI64::new(0)).collect();
    std::thread::scope(|scope| {
        for writer in 0..2 {
            let (engine, handle, acknowledged) = (&engine, &handle, &acknowledged);
            scope.spawn(move || {
                for i in 0..20_000 {
                    let which = (i + writer) % UIDS.len();
                    engine.increment_counter(UIDS[which], handle, 1, 0).unwrap();
                    acknowledged[which].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_millis(5));
        engine.close().unwrap();
    });
    // The final snapshot of `close` may predate the last increments: the
    // log after it must hold them.
    std::mem::forget(engine);
    let copy = crash_copy(dir.path());
    let engine = open(copy.path(), Durability::Never);
    for (uid, acknowledged) in UIDS.iter().zip(&acknowledged) {
        assert_eq!(
            count(&engine, uid, "/news"),
            acknowledged.load(Ordering::Relaxed),
            "{uid}"
        );
    }
}
