//! Log-segment decoder, replayed as the last segment of a recovery (so a
//! torn tail is allowed): any input must yield `Ok` or `Err`, never a panic,
//! and never an allocation beyond libFuzzer's limits (`-malloc_limit_mb`).
//!
//! The first byte picks a mode. Even: the whole input goes in as raw bytes.
//! Odd: the rest is cut into chunks (each a `u16` LE length, then that many
//! bytes, the last chunk taking what is left), every chunk becomes a frame
//! with a correct checksum, and a correct header goes in front; so the fuzzer
//! reaches the bincode records instead of stopping at a checksum. With bit 1
//! of the first byte also set, the last chunk is appended as it is, unframed,
//! to exercise the torn-tail and mid-log corruption paths after valid
//! records. Bits 2 and 3 pick the header's format version: 1, 2, 3 or 4
//! (the value 0..=3, plus 1; each version decodes frames its own way, 3
//! and 4 admit write-back records, and only 4 parts of subjects' states). The byte layout is
//! `src/persist/format.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAGIC: &[u8; 8] = b"TALLYLOG";

fuzz_target!(|data: &[u8]| {
    let bytes = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => {
            let version = 1 + u32::from(mode >> 2 & 0b11);
            framed(rest, mode & 2 == 2, version)
        }
        _ => data.to_vec(),
    };
    // Whatever was replayed is then read end to end: every subject, every
    // cell and stored period (`class: regex(''), period: regex('')`),
    // every regToken.
    if let Ok(Some(torn_at)) = tally::fuzzing::replay_log_segment_and_read(&bytes) {
        assert!(
            torn_at <= bytes.len(),
            "torn tail at {torn_at}, past the end ({})",
            bytes.len()
        );
    }
});

/// A log segment (header body fields zero) with valid frames around `rest`.
fn framed(rest: &[u8], raw_tail: bool, version: u32) -> Vec<u8> {
    let mut out = tally_fuzz::header(MAGIC, version, 0, 0).to_vec();
    let chunks = tally_fuzz::chunks(rest);
    for (i, chunk) in chunks.iter().enumerate() {
        if raw_tail && i + 1 == chunks.len() {
            out.extend_from_slice(chunk);
        } else {
            tally_fuzz::push_frame(&mut out, chunk);
        }
    }
    out
}
