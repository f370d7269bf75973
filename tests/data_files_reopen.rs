//! Pins the fault where a data directory written by the engine could not be
//! reopened: a snapshot's regToken frame, its registry frame, or the frame
//! of one subject with many cells (in a snapshot or a write-back record of
//! the log) grew past what the reader's decoding limit accepts, so `build()`
//! failed with `LimitExceeded`; and snapshot retention then deleted the
//! last snapshot (and log) that still opened. Whatever the engine writes,
//! it must read back.

use std::path::Path;
use std::time::Duration;

use tally::{Durability, Increment, ManualClock, Selector, Subject, Tally};

/// 2026-11-27 12:00:00 UTC.
const NOW: i64 = 1_795_780_800;
const DAY: i64 = 86_400;

fn builder(dir: &Path, durability: Durability) -> tally::Builder {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .data_dir(dir)
        .durability(durability)
        .max_batch(100_000)
        .max_registrations(1_000_000)
        .max_counters(1_000_000)
        .max_path_depth(16)
        .reg_token_ttl(Duration::from_secs(30 * 86_400))
}

fn open(dir: &Path, durability: Durability) -> Tally {
    builder(dir, durability).build().expect("open")
}

/// Issues `n` regTokens for distinct UIDs; returns the first and the last.
fn issue_tokens(engine: &Tally, n: usize) -> [(tally::RegToken, String); 2] {
    let mut first = None;
    let mut last = None;
    for i in 0..n {
        let uid = format!("user-{i:08}");
        let token = engine.issue_reg_token(&uid).unwrap();
        if i == 0 {
            first = Some((token, uid));
        } else if i + 1 == n {
            last = Some((token, uid));
        }
    }
    [first.unwrap(), last.unwrap()]
}

fn assert_tokens_resolve(engine: &Tally, tokens: &[(tally::RegToken, String)]) {
    for (token, uid) in tokens {
        assert_eq!(&engine.resolve_uid(Subject::from(token)).unwrap(), uid);
    }
}

#[test]
fn fault_a_a_million_live_reg_tokens_reopen_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = {
        let engine = open(dir.path(), Durability::Never);
        let tokens = issue_tokens(&engine, 1_000_000);
        engine.snapshot().unwrap();
        tokens
    };
    let engine = open(dir.path(), Durability::Never);
    assert_tokens_resolve(&engine, &tokens);
}

#[test]
fn fault_a_retention_keeps_the_newest_snapshot_that_opens() {
    // A first snapshot with a few tokens, then a million, and two more
    // snapshots: if those do not open, the first (and the log after it)
    // must still be there.
    let dir = tempfile::tempdir().unwrap();
    let logged = Durability::Interval(Duration::from_secs(3600));
    let (early, late) = {
        let engine = open(dir.path(), logged);
        let early = issue_tokens(&engine, 3);
        engine.snapshot().unwrap();
        let late = issue_tokens(&engine, 1_000_000);
        engine.snapshot().unwrap();
        engine.snapshot().unwrap();
        (early, late)
    };
    let engine = open(dir.path(), logged);
    assert_tokens_resolve(&engine, &early);
    assert_tokens_resolve(&engine, &late);
}

/// A path of about 500 bytes, unique to `i`.
fn long_path(i: usize) -> String {
    format!("/{i:0>499}")
}

/// Registrations (and as many unregistered counters) with long paths:
/// at 100,000 of each, the registry's records take more than the
/// reader's 64 MiB decoding limit.
const REGISTRATIONS: usize = 100_000;

#[test]
fn fault_a_many_registrations_and_as_many_unregistered_counters_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = |range: std::ops::Range<usize>| -> Vec<(String, String)> {
        range.map(|i| ("long".to_string(), long_path(i))).collect()
    };
    // Registered through the log (`register` logs its changes as one
    // batch), then a crash: the log alone holds them.
    let registered = {
        let engine = open(dir.path(), Durability::Always);
        let gone = pairs(0..REGISTRATIONS);
        engine.register(gone.clone()).unwrap();
        engine.unregister(gone).unwrap();
        engine
            .register(pairs(REGISTRATIONS..2 * REGISTRATIONS))
            .unwrap();
        let registered = engine.registered();
        std::mem::forget(engine);
        registered
    };
    assert_eq!(registered.len(), REGISTRATIONS);
    let copy = crash_copy(dir.path());
    {
        let engine = open(copy.path(), Durability::Always);
        assert_eq!(engine.registered(), registered);
        engine.snapshot().unwrap();
    }
    // And from the snapshot.
    let engine = open(copy.path(), Durability::Always);
    assert_eq!(engine.registered(), registered);
}

/// The files of a data directory, without its lock, in a fresh one: what
/// a crash leaves.
fn crash_copy(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    copy
}

/// Registers `counters` counters and gives subject `uid` a cell in each,
/// with a bucket for each of the last 90 days and 24 months: a subject
/// whose state alone is tens of megabytes to decode.
fn subject_with_many_cells(engine: &Tally, uid: &str, counters: usize) {
    let paths: Vec<String> = (0..counters).map(|i| format!("/c{i}")).collect();
    engine
        .register(paths.iter().map(|p| ("many", p.as_str())))
        .unwrap();
    let days = (0..90).map(|d| NOW - d * DAY);
    let months = (3..24).map(|m| NOW - m * 31 * DAY);
    for at in days.chain(months) {
        for chunk in paths.chunks(10_000) {
            let batch: Vec<Increment<'_>> = chunk
                .iter()
                .map(|p| Increment::new("many", p).count(1).value(-7))
                .collect();
            engine.increment_at(uid, &batch, at).unwrap();
        }
    }
}

/// The totals of a hundred cells across the subject, and every period
/// of a few of them.
fn everything(engine: &Tally, uid: &str) -> Vec<tally::CounterRow> {
    let totals: Vec<Selector> = (0..CELLS)
        .step_by(CELLS / 100)
        .map(|i| Selector::class("many").path(format!("/c{i}")))
        .collect();
    let mut rows = engine.get(uid, &totals).unwrap();
    for path in ["/c0", "/c7777", "/c24999"] {
        let all_periods = Selector::class("many").path(path).period("regex('')");
        rows.extend(engine.get(uid, &[all_periods]).unwrap());
    }
    rows
}

const CELLS: usize = 25_000;

#[test]
fn fault_a_a_subject_with_many_cells_reopens_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let engine = open(dir.path(), Durability::Never);
        subject_with_many_cells(&engine, "wide", CELLS);
        engine.snapshot().unwrap();
        everything(&engine, "wide")
    };
    // Each of the three cells read in full has its total, 90 days and
    // the months they and the older increments fall in.
    assert!(
        before.len() > 100 + 3 * (1 + 90 + 20),
        "{} rows",
        before.len()
    );
    let engine = open(dir.path(), Durability::Never);
    assert_eq!(everything(&engine, "wide"), before);
}

#[test]
fn fault_a_a_subject_with_many_cells_reopens_from_a_written_back_log() {
    let dir = tempfile::tempdir().unwrap();
    let interval = Durability::Interval(Duration::from_secs(3600));
    let before = {
        let engine = open(dir.path(), interval);
        subject_with_many_cells(&engine, "wide", CELLS);
        engine.sync().unwrap();
        let rows = everything(&engine, "wide");
        // A crash: no snapshot on close.
        std::mem::forget(engine);
        rows
    };
    let copy = crash_copy(dir.path());
    let engine = open(copy.path(), interval);
    assert_eq!(everything(&engine, "wide"), before);
}
