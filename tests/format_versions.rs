//! On-disk format versions (docs/format.md §8): a data directory written
//! by an older build (format versions 1, 2 and 3) opens in this one and reads the same, and the log
//! this build appends after it opens again with the old files.

use std::path::Path;

use tally::inspect::FileKind;
use tally::{Durability, Increment, ManualClock, Subject, Tally};

mod common;
use common::{State, copy_dir, state};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC

/// A directory written by the first release (format version 1), with
/// `Durability::Always`, by [`workload`] and a crash at the end of it: a
/// version-1 snapshot taken midway and a version-1 log segment after it.
const V1_FIXTURE: &str = "tests/fixtures/log-v1";

/// The regToken [`workload`] issued for `u4` when the fixture was written.
const V1_TOKEN: &str = "bde4907c43165028c0bce286d968fec3";

/// A directory written by the second release (format version 2) the same
/// way: `common::mixed_workload`, a snapshot, the regToken for `u4`, the
/// rest of [`workload`], and a crash. The snapshot made the segment before
/// it obsolete; a version-2 snapshot and a version-2 segment are left.
const V2_FIXTURE: &str = "tests/fixtures/log-v2";

/// The regToken issued for `u4` when the version-2 fixture was written.
const V2_TOKEN: &str = "26765d467d9cda6b30c800d731b8eae7";

/// A directory written by the third release (format version 3) with
/// `Durability::Interval`: `common::mixed_workload`, a snapshot, the
/// regToken for `u4`, the rest of [`workload`], a write-back (`sync`) and a
/// crash. The increments after the snapshot are in its version-3 segment
/// as a `Subjects` record (written-back states), not as increments.
const V3_FIXTURE: &str = "tests/fixtures/log-v3";

/// The regToken issued for `u4` when the version-3 fixture was written.
const V3_TOKEN: &str = "7a2cd3c38f56955869273f2895ef8188";

const UIDS: [&str; 4] = ["u1", "u2", "u3", "u4"];

fn builder() -> tally::Builder {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .system_classes(["_logins"])
}

fn open(dir: &Path) -> Tally {
    builder()
        .data_dir(dir)
        .durability(Durability::Always)
        .build()
        .expect("open")
}

/// What wrote the fixture (without its snapshot and its regToken, which
/// change nothing a reader sees but the token).
fn workload(engine: &Tally) {
    common::mixed_workload(engine, NOW);
    engine.register([("shares", "/news")]).unwrap();
    engine
        .increment("u3", &[Increment::new("shares", "/news/sport").count(-2)])
        .unwrap();
    engine
        .increment_at(
            "u2",
            &[Increment::new("_logins", "/web/eu").value(7)],
            NOW - 3 * 86_400,
        )
        .unwrap();
}

/// More writes, after the reopen.
fn more(engine: &Tally) {
    engine
        .increment_at(
            "u4",
            &[Increment::new("shares", "/news/sport")],
            NOW - 86_400,
        )
        .unwrap();
    engine.unregister([("shares", "/news/sport")]).unwrap();
    engine
        .increment("u1", &[Increment::new("shares", "/news").value(2)])
        .unwrap();
}

fn expected(steps: &[fn(&Tally)]) -> State {
    let engine = builder().build().unwrap();
    for step in steps {
        step(&engine);
    }
    state(&engine, &UIDS)
}

/// Each log segment's number, format version and increment batches.
type SegmentVersions = Vec<(u64, Option<u32>, u64)>;

/// Writes [`more`] with `engine`, open on `dir`, then copies `dir` as a
/// crash leaves it. Returns the copy, each of its log segments' (number,
/// format version, increment batches), and whether inspection could read
/// its state.
fn more_then_crash(engine: &Tally, dir: &Path) -> (tempfile::TempDir, SegmentVersions, bool) {
    more(engine);
    let crashed = copy_dir(dir);
    let inspection = tally::inspect::inspect(crashed.path()).unwrap();
    let versions = inspection
        .files
        .iter()
        .filter_map(|file| match &file.kind {
            FileKind::Log(log) => Some((log.number, log.format_version, log.increments)),
            _ => None,
        })
        .collect();
    (crashed, versions, inspection.state.is_ok())
}

#[test]
fn a_version_1_directory_opens_and_takes_current_log_segments() {
    let fixture = copy_dir(Path::new(V1_FIXTURE));
    let engine = open(fixture.path());
    let report = engine.recovery_report().unwrap().clone();
    assert!(report.snapshot.is_some());
    assert_eq!(report.batches_replayed, 8);
    assert_eq!(report.batches_skipped, 0);
    assert_eq!(report.other_records, 3, "two registry records, one token");
    assert_eq!(report.cut, None);
    assert_eq!(state(&engine, &UIDS), expected(&[workload]));
    assert_eq!(
        engine.resolve_uid(Subject::RegToken(V1_TOKEN)).unwrap(),
        "u4"
    );

    // Appending goes to a new segment in the current version; a crash
    // image of the mixed directory opens to the same state.
    let (crashed, versions, readable) = more_then_crash(&engine, fixture.path());
    assert_eq!(versions, [(2, Some(1), 8), (3, Some(4), 2)]);
    assert!(readable);
    let reopened = open(crashed.path());
    assert_eq!(reopened.recovery_report().unwrap().batches_replayed, 10);
    assert_eq!(state(&reopened, &UIDS), expected(&[workload, more]));
    assert_eq!(
        reopened.resolve_uid(Subject::RegToken(V1_TOKEN)).unwrap(),
        "u4"
    );
}

#[test]
fn a_version_2_directory_opens_and_takes_current_log_segments() {
    let fixture = copy_dir(Path::new(V2_FIXTURE));
    let engine = open(fixture.path());
    let report = engine.recovery_report().unwrap().clone();
    assert!(report.snapshot.is_some());
    assert_eq!(report.batches_replayed, 2, "{report:?}");
    assert_eq!(report.other_records, 2, "a registry record and a token");
    assert_eq!(report.cut, None);
    assert_eq!(state(&engine, &UIDS), expected(&[workload]));
    assert_eq!(
        engine.resolve_uid(Subject::RegToken(V2_TOKEN)).unwrap(),
        "u4"
    );

    let (crashed, versions, readable) = more_then_crash(&engine, fixture.path());
    assert_eq!(versions, [(2, Some(2), 2), (3, Some(4), 2)]);
    assert!(readable);
    let reopened = open(crashed.path());
    assert_eq!(state(&reopened, &UIDS), expected(&[workload, more]));
    assert_eq!(
        reopened.resolve_uid(Subject::RegToken(V2_TOKEN)).unwrap(),
        "u4"
    );
}

#[test]
fn a_version_3_directory_opens_and_takes_current_log_segments() {
    let fixture = copy_dir(Path::new(V3_FIXTURE));
    let engine = open(fixture.path());
    let report = engine.recovery_report().unwrap().clone();
    assert!(report.snapshot.is_some());
    assert_eq!(report.batches_replayed, 0, "{report:?}");
    assert_eq!(report.states_replayed, 2, "the states of u2 and u3");
    assert_eq!(report.other_records, 2, "a registry record and a token");
    assert_eq!(report.cut, None);
    assert_eq!(state(&engine, &UIDS), expected(&[workload]));
    assert_eq!(
        engine.resolve_uid(Subject::RegToken(V3_TOKEN)).unwrap(),
        "u4"
    );

    let (crashed, versions, readable) = more_then_crash(&engine, fixture.path());
    assert_eq!(versions, [(2, Some(3), 0), (3, Some(4), 2)]);
    assert!(readable);
    let reopened = open(crashed.path());
    assert_eq!(state(&reopened, &UIDS), expected(&[workload, more]));
    assert_eq!(
        reopened.resolve_uid(Subject::RegToken(V3_TOKEN)).unwrap(),
        "u4"
    );
}
