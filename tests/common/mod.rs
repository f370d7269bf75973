//! Helpers shared by the durability tests (not a test target itself).

#![allow(dead_code, reason = "each test file uses only some of these helpers")]

use std::path::Path;

use tally::{CounterKey, Durability, Increment, ManualClock, Selector, Tally};

/// The clock of [`open_durable`]'s engines: 2026-11-27 12:00:00 UTC.
pub const NOW: i64 = 1_795_780_800;

/// An engine on `dir` with `durability`, its clock stopped at [`NOW`] and
/// the system class `_logins` (what [`mixed_workload`] expects).
pub fn open_durable(dir: &Path, durability: Durability) -> Tally {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .system_classes(["_logins"])
        .data_dir(dir)
        .durability(durability)
        .build()
        .expect("open")
}

/// Copies a data directory's files, without its lock, into a fresh one:
/// the directory as a crash leaves it, openable while the original is open.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    copy_with(from, None)
}

/// [`copy_dir`], with the file `replaced.0` holding `replaced.1` instead.
/// (Files are written new: truncating a file and rewriting it costs a
/// flush on some file systems.)
pub fn copy_with(from: &Path, replaced: Option<(&std::ffi::OsStr, &[u8])>) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        match replaced {
            Some((replaced, bytes)) if name == replaced => {
                std::fs::write(copy.path().join(&name), bytes).unwrap();
            }
            _ if name == "LOCK" => {}
            _ => {
                std::fs::copy(entry.path(), copy.path().join(&name)).unwrap();
            }
        }
    }
    copy
}

/// Everything observable about the counters of some subjects: every row
/// (every class, path and stored period) and the registered pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub rows: Vec<Vec<tally::CounterRow>>,
    pub registered: Vec<CounterKey>,
}

/// The [`State`] of `uids` in `engine`.
pub fn state(engine: &Tally, uids: &[&str]) -> State {
    let everything = [Selector::class("regex('.')").period("regex('.')")];
    State {
        rows: uids
            .iter()
            .map(|uid| engine.get(*uid, &everything).unwrap())
            .collect(),
        registered: engine.registered(),
    }
}

/// A mixed workload for an engine with the system class `_logins`, its
/// clock at `now`: registrations, a batch, a backfill, handle increments,
/// an unregistration and an increment after it.
pub fn mixed_workload(engine: &Tally, now: i64) {
    engine
        .register([("shares", "/news"), ("shares", "/news/sport")])
        .unwrap();
    engine
        .increment(
            "u1",
            &[
                Increment::new("shares", "/news/sport").value(3),
                Increment::new("shares", "/"),
            ],
        )
        .unwrap();
    engine
        .increment_at(
            "u2",
            &[Increment::new("_logins", "/web/eu")],
            now - 40 * 86_400,
        )
        .unwrap();
    let handle = engine.counter("shares", "/news").unwrap();
    for _ in 0..5 {
        engine.increment_counter("u1", &handle, 1, 10).unwrap();
    }
    engine.unregister([("shares", "/news")]).unwrap();
    engine
        .increment("u1", &[Increment::new("shares", "/news/sport")])
        .unwrap();
}

/// A data directory's log segments, oldest first.
pub fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tlog"))
        .collect();
    segments.sort();
    segments
}
