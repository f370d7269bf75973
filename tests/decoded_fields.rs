//! Pins the fault where decoding trusted a checksummed file's contents: a
//! snapshot whose cell held a month bucket index of 1200 or more, or a
//! day bucket past the calendar, loaded and then misread (or panicked in
//! a read, formatting its period key); and a regToken's UID (or the token
//! itself) restored from a snapshot was not checked at all, so that a
//! token could resolve to a UID no caller may give; and a snapshot's last
//! LSN of `u64::MAX` overflowed numbering the log on (a panic in a debug
//! build). Every decoded field
//! is validated as input is: such a file is an error naming the file and
//! the offset, when the engine opens.

use std::path::Path;

use tally::fuzzing::{CraftedBucket, CraftedSnapshot, crafted_snapshot};
use tally::{Error, ManualClock, Selector, Tally};

/// 2026-11-27 12:00:00 UTC.
const NOW: i64 = 1_795_780_800;
const MONTH_TAG: u32 = 1 << 31;
/// Day numbers (days since 1970-01-01) of 2026-11-27 and 2100-01-01.
const TODAY: u32 = 20_784;
const FIRST_DAY_OF_2100: u32 = 47_482;
/// The month index (months since January 2000) of November 2026.
const THIS_MONTH: u32 = 26 * 12 + 10;
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn valid() -> CraftedSnapshot {
    CraftedSnapshot {
        tokens: vec![(TOKEN.into(), "u".into(), NOW + 3600)],
        uid: "u".into(),
        buckets: vec![
            CraftedBucket {
                key: THIS_MONTH | MONTH_TAG,
                last_updated: NOW as u32,
            },
            CraftedBucket {
                key: TODAY,
                last_updated: NOW as u32,
            },
        ],
        shard_lsn: 0,
    }
}

fn open(dir: &Path) -> tally::Result<Tally> {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .data_dir(dir)
        .build()
}

/// Opens a data directory holding `crafted` as its only snapshot; returns
/// the snapshot's path and what opening gave, having read every period of
/// the subject if it opened.
fn open_with(crafted: &CraftedSnapshot) -> (std::path::PathBuf, tally::Result<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot-00000000000000000001.tsnap");
    std::fs::write(&path, crafted_snapshot(crafted)).unwrap();
    let opened = open(dir.path()).map(|engine| {
        let everything = Selector::class("regex('')").period("regex('')");
        engine
            .get(crafted.uid.as_str(), &[everything])
            .unwrap()
            .len()
    });
    (path, opened)
}

/// Opening `crafted` fails as corrupt, naming the snapshot and the offset
/// of a frame after the header.
fn assert_refused(crafted: &CraftedSnapshot) {
    let (path, opened) = open_with(crafted);
    match opened {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, path);
            assert!(offset >= 32, "offset {offset}");
        }
        other => panic!("expected a corrupt snapshot, got {other:?}"),
    }
}

#[test]
fn a_crafted_snapshot_with_valid_values_opens() {
    let (_, opened) = open_with(&valid());
    // The total, this month and today.
    assert_eq!(opened.unwrap(), 3);
}

#[test]
fn fault_b_a_month_index_of_1200_or_more_is_refused() {
    for month in [1200, 5_000, 0x7FFF_FFFF] {
        let mut crafted = valid();
        crafted.buckets[0].key = month | MONTH_TAG;
        assert_refused(&crafted);
    }
}

#[test]
fn fault_b_a_day_past_the_calendar_is_refused() {
    for day in [FIRST_DAY_OF_2100, 100_000, 0x7FFF_FFFF] {
        let mut crafted = valid();
        crafted.buckets[1] = CraftedBucket {
            key: day,
            last_updated: NOW as u32,
        };
        assert_refused(&crafted);
    }
    // And one before 2000.
    let mut crafted = valid();
    crafted.buckets[1].key = 100;
    assert_refused(&crafted);
}

#[test]
fn fault_b_a_bucket_updated_outside_its_period_is_refused() {
    let mut crafted = valid();
    crafted.buckets[1].last_updated = (NOW - 2 * 86_400) as u32;
    assert_refused(&crafted);
    let mut crafted = valid();
    crafted.buckets[0].last_updated = (NOW - 40 * 86_400) as u32;
    assert_refused(&crafted);
}

#[test]
fn fault_b_a_reg_token_with_an_invalid_uid_is_refused() {
    for uid in ["a\nb".to_string(), "u".repeat(257)] {
        let mut crafted = valid();
        crafted.tokens[0].1 = uid;
        assert_refused(&crafted);
    }
}

#[test]
fn fault_b_a_reg_token_the_engine_could_not_have_issued_is_refused() {
    for token in ["", "not-a-token", "0123456789ABCDEF0123456789ABCDEF"] {
        let mut crafted = valid();
        crafted.tokens[0].0 = token.into();
        assert_refused(&crafted);
    }
}

#[test]
fn fault_b_a_shard_lsn_the_log_could_not_go_on_from_is_refused() {
    let mut crafted = valid();
    crafted.shard_lsn = u64::MAX;
    assert_refused(&crafted);
}

#[test]
fn an_expired_reg_token_whose_uid_a_sweep_dropped_still_opens() {
    let mut crafted = valid();
    crafted.tokens[0] = (TOKEN.into(), String::new(), NOW - 10);
    let (_, opened) = open_with(&crafted);
    assert_eq!(opened.unwrap(), 3);
}
