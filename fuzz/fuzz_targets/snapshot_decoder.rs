//! Snapshot decoder: any input must yield `Ok` or `Err`, never a panic, and
//! never an allocation beyond libFuzzer's limits (`-malloc_limit_mb`).
//!
//! The first byte picks a mode. Even: the whole input goes in as raw bytes.
//! Odd: the rest is cut into chunks (each a `u16` LE length, then that many
//! bytes, the last chunk taking what is left), every chunk becomes a frame
//! with a correct checksum, and a correct header goes in front (format
//! version 2 if bit 1 of the mode is set, else 1, or 4 if bit 2 is also set:
//! their records differ);
//! so the fuzzer reaches the bincode records instead of stopping at a
//! checksum. The byte layout is `src/persist/format.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAGIC: &[u8; 8] = b"TALLYSNP";

fuzz_target!(|data: &[u8]| {
    let bytes = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => framed(rest, version(*mode)),
        _ => data.to_vec(),
    };
    // Whatever decodes is then read end to end: every subject, every cell
    // and stored period (`class: regex(''), period: regex('')`), every
    // regToken.
    let _ = tally::fuzzing::decode_snapshot_and_read(&bytes);
});

/// The format version a framed input's mode picks.
fn version(mode: u8) -> u32 {
    match (mode & 2 == 2, mode & 4 == 4) {
        (false, _) => 1,
        (true, false) => 2,
        (true, true) => 4,
    }
}

/// A snapshot with a valid header and valid frame checksums around `rest`.
fn framed(rest: &[u8], version: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(rest.len() + 64);
    for chunk in tally_fuzz::chunks(rest) {
        tally_fuzz::push_frame(&mut body, chunk);
    }
    let header = tally_fuzz::header(MAGIC, version, body.len() as u64, crc32fast::hash(&body));
    let mut out = header.to_vec();
    out.extend_from_slice(&body);
    out
}
