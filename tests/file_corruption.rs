//! Corrupt data files: every single-byte flip in a
//! snapshot or a log segment is detected on open. A damaged snapshot with
//! no older one to fall back to, or damage in the middle of the log, is
//! `Error::Corrupt` naming the file and where the damage is (never a panic,
//! never silently wrong counts, and the failed open leaves the files as
//! they were); a damaged newest snapshot with an older valid one falls back
//! to it and still recovers every count exactly.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use tally::{Durability, Error, Increment, ManualClock, Tally};

mod common;
use common::State;

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const DAY: i64 = 86_400;
const HEADER_BYTES: usize = 32;
const UIDS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];

fn open(dir: &Path) -> tally::Result<Tally> {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .system_classes(["_logins"])
        .data_dir(dir)
        .durability(Durability::Always)
        .build()
}

/// The same engine, in memory: the expected state.
fn mirror() -> Tally {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .system_classes(["_logins"])
        .build()
        .unwrap()
}

/// Batches `from..to` of a deterministic workload, applied to every engine given.
fn batches(engines: &[&Tally], from: i64, to: i64) {
    for i in from..to {
        let uid = UIDS[(i % 5) as usize];
        let at = NOW - (i % 11) * DAY - i * 37;
        let batch = [
            Increment::new("shares", "/news/sport").value(i),
            Increment::new("shares", "/").count(2).value(-i),
            Increment::new("_logins", ["/web", "/app/ios"][(i % 2) as usize]),
        ];
        let batch = &batch[..1 + (i % 3) as usize];
        for engine in engines {
            engine.increment_at(uid, batch, at).unwrap();
        }
    }
}

fn state(engine: &Tally) -> State {
    common::state(engine, &UIDS)
}

/// Every data file of a directory (not the lock), by name.
fn files(dir: &Path) -> BTreeMap<OsString, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| (e.file_name(), std::fs::read(e.path()).unwrap()))
        .collect()
}

fn write_files(dir: &Path, files: &BTreeMap<OsString, Vec<u8>>) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn named(files: &BTreeMap<OsString, Vec<u8>>, prefix: &str) -> Vec<OsString> {
    files
        .keys()
        .filter(|n| n.to_str().unwrap().starts_with(prefix))
        .cloned()
        .collect()
}

/// A crashed data directory's files (no close, no final snapshot), the
/// state it must recover to, and a regToken it must still resolve.
struct Fixture {
    files: BTreeMap<OsString, Vec<u8>>,
    expected: State,
    /// The state before the last batch (the last record of the log).
    before_last: State,
    token: tally::RegToken,
}

/// `snapshots` snapshots taken between runs of batches, then a crash.
fn fixture(snapshots: usize) -> Fixture {
    let live = tempfile::tempdir().unwrap();
    let engine = open(live.path()).unwrap();
    let mirror = mirror();
    for engine in [&engine, &mirror] {
        engine
            .register([("shares", "/news"), ("shares", "/news/sport")])
            .unwrap();
    }
    let token = engine.issue_reg_token("u3").unwrap();
    let mut last = 20;
    batches(&[&engine, &mirror], 0, 20);
    for s in 0..snapshots as i64 {
        engine.snapshot().unwrap();
        for engine in [&engine, &mirror] {
            engine
                .register([("likes", format!("/s{s}").as_str())])
                .unwrap();
            engine
                .increment_at("u1", &[Increment::new("likes", &format!("/s{s}"))], NOW)
                .unwrap();
        }
        batches(&[&engine, &mirror], 20 + 10 * s, 30 + 10 * s);
        last = 30 + 10 * s;
    }
    let before_last = {
        let mirror = self::mirror();
        mirror
            .register([("shares", "/news"), ("shares", "/news/sport")])
            .unwrap();
        batches(&[&mirror], 0, 20.min(last - 1));
        for s in 0..snapshots as i64 {
            mirror
                .register([("likes", format!("/s{s}").as_str())])
                .unwrap();
            mirror
                .increment_at("u1", &[Increment::new("likes", &format!("/s{s}"))], NOW)
                .unwrap();
            batches(&[&mirror], 20 + 10 * s, (30 + 10 * s).min(last - 1));
        }
        state(&mirror)
    };
    let expected = state(&mirror);
    assert_eq!(state(&engine), expected);
    std::mem::forget(engine);
    Fixture {
        files: files(live.path()),
        expected,
        before_last,
        token,
    }
}

/// The frames of a log segment after its header, as (start, end) offsets.
fn frames(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut frames = Vec::new();
    let mut at = HEADER_BYTES;
    while at < segment.len() {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        frames.push((at, at + 8 + len));
        at += 8 + len;
    }
    assert_eq!(at, segment.len());
    frames
}

/// XORs `mask` into byte `at` of `path`, in place: rewriting small files
/// whole costs a flush per write on some file systems.
fn flip_in_place(path: &Path, at: usize, mask: u8, original: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&[original[at] ^ mask], at as u64)
        .unwrap();
}

/// Flips `mask` into byte `at` of file `name`, opens, and expects
/// `Error::Corrupt` naming `blamed` at `blamed_offset` (or, when `None`,
/// at or before the flipped byte), with the files left untouched.
fn expect_corrupt(
    dir: &Path,
    files: &BTreeMap<OsString, Vec<u8>>,
    name: &OsString,
    at: usize,
    mask: u8,
    blamed: &OsString,
    blamed_offset: Option<u64>,
) {
    let path = dir.join(name);
    flip_in_place(&path, at, mask, &files[name]);
    let what = format!("{name:?} byte {at} ^ {mask:#04x}");
    match open(dir) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, dir.join(blamed), "{what}");
            match blamed_offset {
                Some(expected) => assert_eq!(offset, expected, "{what}"),
                None => assert!(offset <= at as u64, "{what}: blamed byte {offset}"),
            }
        }
        Err(other) => panic!("{what}: expected Error::Corrupt, got {other}"),
        Ok(engine) => panic!(
            "{what}: opened anyway, {:?}",
            engine.recovery_report().unwrap()
        ),
    }
    let mut expected = files.clone();
    expected.get_mut(name).unwrap()[at] ^= mask;
    assert!(
        self::files(dir) == expected,
        "{what}: a failed open changed the files"
    );
    flip_in_place(&path, at, 0, &files[name]);
}

fn masks(at: usize) -> [u8; 2] {
    [1 << (at % 8), 0xFF]
}

#[test]
fn the_fixtures_recover_exactly_when_undamaged() {
    for snapshots in [0, 1, 2] {
        let fixture = fixture(snapshots);
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &fixture.files);
        let engine = open(dir.path()).unwrap();
        let report = engine.recovery_report().unwrap().clone();
        assert_eq!(report.snapshot.is_some(), snapshots > 0, "{report:?}");
        assert!(report.skipped_snapshots.is_empty(), "{report:?}");
        assert_eq!(report.cut, None);
        assert_eq!(state(&engine), fixture.expected, "{snapshots} snapshots");
        assert_eq!(engine.resolve_uid((&fixture.token).into()).unwrap(), "u3");
    }
}

#[test]
fn every_flip_in_a_lone_snapshot_is_an_error_naming_it() {
    let fixture = fixture(1);
    let snapshots = named(&fixture.files, "snapshot-");
    assert_eq!(snapshots.len(), 1, "{:?}", fixture.files.keys());
    let snapshot = &snapshots[0];
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &fixture.files);
    let len = fixture.files[snapshot].len();
    assert!(len > 500, "{len} bytes");
    for at in 0..len {
        for mask in masks(at) {
            expect_corrupt(
                dir.path(),
                &fixture.files,
                snapshot,
                at,
                mask,
                snapshot,
                None,
            );
        }
    }
    // The undamaged files still open.
    let engine = open(dir.path()).unwrap();
    assert_eq!(state(&engine), fixture.expected);
}

#[test]
fn a_truncated_or_extended_lone_snapshot_is_an_error_naming_it() {
    let fixture = fixture(1);
    let snapshot = &named(&fixture.files, "snapshot-")[0];
    let bytes = &fixture.files[snapshot];
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &fixture.files);
    let damaged: Vec<Vec<u8>> = (0..bytes.len())
        .step_by(7)
        .map(|cut| bytes[..cut].to_vec())
        .chain([
            [&bytes[..], &[0]].concat(),
            [&bytes[..], &bytes[32..40]].concat(),
        ])
        .collect();
    for damaged in damaged {
        std::fs::write(dir.path().join(snapshot), &damaged).unwrap();
        let what = format!("snapshot of {} bytes", damaged.len());
        match open(dir.path()) {
            Err(Error::Corrupt { file, .. }) => {
                assert_eq!(file, dir.path().join(snapshot), "{what}")
            }
            Err(other) => panic!("{what}: expected Error::Corrupt, got {other}"),
            Ok(_) => panic!("{what}: opened anyway"),
        }
    }
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_older_one_exactly() {
    let fixture = fixture(2);
    let snapshots = named(&fixture.files, "snapshot-");
    assert_eq!(snapshots.len(), 2, "{:?}", fixture.files.keys());
    let (older, newest) = (&snapshots[0], &snapshots[1]);
    let len = fixture.files[newest].len();
    // Every header byte, the last bytes, and a spread of the body.
    let mut offsets: Vec<usize> = (0..HEADER_BYTES).chain(len - 8..len).collect();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    while offsets.len() < 200 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        offsets.push(HEADER_BYTES + (seed % (len - HEADER_BYTES) as u64) as usize);
    }
    for (i, at) in offsets.into_iter().enumerate() {
        let mut files = fixture.files.clone();
        files.get_mut(newest).unwrap()[at] ^= 1 << (at % 8);
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &files);
        let engine = open(dir.path()).unwrap_or_else(|e| panic!("byte {at}: {e}"));
        let report = engine.recovery_report().unwrap().clone();
        assert_eq!(report.snapshot, Some(dir.path().join(older)), "byte {at}");
        assert_eq!(report.skipped_snapshots.len(), 1, "byte {at}: {report:?}");
        assert_eq!(report.skipped_snapshots[0].0, dir.path().join(newest));
        assert_eq!(report.cut, None, "byte {at}");
        assert_eq!(state(&engine), fixture.expected, "byte {at}");
        assert_eq!(engine.resolve_uid((&fixture.token).into()).unwrap(), "u3");
        if i % 25 == 0 {
            // Dropping writes a fresh snapshot: the next open is clean.
            drop(engine);
            let engine = open(dir.path()).unwrap();
            let report = engine.recovery_report().unwrap();
            assert!(report.skipped_snapshots.is_empty(), "{report:?}");
            assert_eq!(state(&engine), fixture.expected, "byte {at}, reopened");
        } else {
            // Syncs are slow: remove the files first, so that the final
            // snapshot of the drop fails at once (drop ignores errors).
            let path = dir.path().to_owned();
            drop(dir);
            assert!(!path.exists());
            drop(engine);
        }
    }
}

/// Pins a bug where, after falling back from a damaged newest snapshot,
/// the next snapshot kept the damaged one as one of the two it keeps and
/// deleted the valid one recovery had fallen back to (and the log it
/// needed): one more damaged snapshot then made the directory unopenable.
#[test]
fn after_a_fallback_the_next_snapshot_keeps_the_valid_one_it_fell_back_to() {
    let fixture = fixture(2);
    let snapshots = named(&fixture.files, "snapshot-");
    let (older, newest) = (&snapshots[0], &snapshots[1]);
    let mut damaged = fixture.files.clone();
    damaged.get_mut(newest).unwrap()[HEADER_BYTES + 3] ^= 0x10;
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &damaged);
    let engine = open(dir.path()).unwrap();
    assert_eq!(
        engine.recovery_report().unwrap().snapshot,
        Some(dir.path().join(older))
    );
    engine.snapshot().unwrap();
    assert!(
        dir.path().join(older).exists(),
        "the valid fallback was deleted"
    );
    std::mem::forget(engine);
    let crashed = common::copy_dir(dir.path());
    // Damage the fresh snapshot too: the older valid one still opens it.
    let fresh = named(&files(crashed.path()), "snapshot-")
        .into_iter()
        .max()
        .unwrap();
    assert!(fresh > *newest);
    let path = crashed.path().join(&fresh);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[HEADER_BYTES + 3] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    let engine = open(crashed.path()).unwrap_or_else(|e| panic!("{e}"));
    let report = engine.recovery_report().unwrap();
    assert_eq!(
        report.snapshot,
        Some(crashed.path().join(older)),
        "{report:?}"
    );
    assert_eq!(state(&engine), fixture.expected);
}

#[test]
fn both_snapshots_damaged_is_an_error() {
    let fixture = fixture(2);
    let snapshots = named(&fixture.files, "snapshot-");
    let mut files = fixture.files.clone();
    for name in &snapshots {
        files.get_mut(name).unwrap()[HEADER_BYTES + 5] ^= 0x40;
    }
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &files);
    let error = open(dir.path()).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt { file, .. } if snapshots.iter().any(|s| *file == dir.path().join(s))),
        "{error}"
    );
}

/// Every flip in a log segment short of its last record: `Error::Corrupt`
/// naming the segment and the start of the damaged record (0 for its header).
fn every_flip_in_a_segment_is_an_error(
    files: &BTreeMap<OsString, Vec<u8>>,
    segment: &OsString,
    skip_last_record: bool,
) -> usize {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), files);
    let bytes = &files[segment];
    let frames = frames(bytes);
    assert!(frames.len() > 10, "{} records", frames.len());
    let end = if skip_last_record {
        frames.last().unwrap().0
    } else {
        bytes.len()
    };
    for at in 0..end {
        let blamed = frames
            .iter()
            .find(|(start, end)| (*start..*end).contains(&at))
            .map_or(0, |(start, _)| *start as u64);
        for mask in masks(at) {
            expect_corrupt(dir.path(), files, segment, at, mask, segment, Some(blamed));
        }
    }
    end
}

#[test]
fn every_flip_in_the_middle_of_the_log_is_an_error_naming_the_segment() {
    let fixture = fixture(0);
    let segments = named(&fixture.files, "log-");
    assert_eq!(segments.len(), 1, "{:?}", fixture.files.keys());
    let checked = every_flip_in_a_segment_is_an_error(&fixture.files, &segments[0], true);
    assert!(checked > 500, "{checked} bytes checked");
}

#[test]
fn every_flip_in_the_log_after_the_newest_snapshot_is_an_error() {
    let fixture = fixture(2);
    let segments = named(&fixture.files, "log-");
    assert_eq!(segments.len(), 2, "{:?}", fixture.files.keys());
    every_flip_in_a_segment_is_an_error(&fixture.files, &segments[1], true);
}

/// With the newest snapshot damaged, recovery replays the older segment
/// too, and that one is not the last: a flip anywhere in it, its last
/// record included, is corruption, not a torn tail.
#[test]
fn every_flip_in_a_segment_replayed_after_a_fallback_is_an_error() {
    let fixture = fixture(2);
    let segments = named(&fixture.files, "log-");
    let newest = named(&fixture.files, "snapshot-").pop().unwrap();
    let mut files = fixture.files.clone();
    files.get_mut(&newest).unwrap()[HEADER_BYTES] ^= 0x01;
    every_flip_in_a_segment_is_an_error(&files, &segments[0], false);
}

/// A flip in the last record of the last segment cannot be told from a
/// torn write: recovery cuts that record off, and says so in the report.
#[test]
fn a_flip_in_the_last_record_of_the_log_is_cut_and_reported() {
    for snapshots in [0, 2] {
        let fixture = fixture(snapshots);
        assert_ne!(fixture.before_last, fixture.expected);
        let segment = named(&fixture.files, "log-").pop().unwrap();
        let bytes = &fixture.files[&segment];
        let (start, end) = *frames(bytes).last().unwrap();
        for at in start..end {
            let mut files = fixture.files.clone();
            files.get_mut(&segment).unwrap()[at] ^= 1 << (at % 8);
            let dir = tempfile::tempdir().unwrap();
            write_files(dir.path(), &files);
            let engine = open(dir.path()).unwrap_or_else(|e| panic!("byte {at}: {e}"));
            let report = engine.recovery_report().unwrap().clone();
            assert_eq!(
                report.cut,
                Some((
                    dir.path().join(&segment),
                    start as u64,
                    (end - start) as u64
                )),
                "byte {at}"
            );
            assert_eq!(state(&engine), fixture.before_last, "byte {at}");
            // Syncs are slow: remove the files first, so that the final
            // snapshot of the drop fails at once (drop ignores errors).
            drop(dir);
            drop(engine);
        }
    }
}
