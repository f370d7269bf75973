//! Snapshot decoder: any input must yield `Ok` or `Err`, never a panic, and
//! never an allocation beyond libFuzzer's limits (`-malloc_limit_mb`).
//!
//! The first byte picks a mode. Even: the whole input goes in as raw bytes.
//! Odd: the rest is cut into chunks (each a `u16` LE length, then that many
//! bytes, the last chunk taking what is left), every chunk becomes a frame
//! with a correct checksum, and a correct header goes in front (format
//! version 2 if bit 1 of the mode is set, else 1: their records differ);
//! so the fuzzer reaches the bincode records instead of stopping at a
//! checksum. The byte layout is `src/persist/format.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAGIC: &[u8; 8] = b"TALLYSNP";

fuzz_target!(|data: &[u8]| {
    let bytes = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => framed(rest, if mode & 2 == 2 { 2 } else { 1 }),
        _ => data.to_vec(),
    };
    let _ = tally::fuzzing::decode_snapshot(&bytes);
});

/// A snapshot with a valid header and valid frame checksums around `rest`.
fn framed(rest: &[u8], version: u32) -> Vec<u8> {
    let body = frames(rest);
    let mut out = header(version, body.len() as u64, crc32fast::hash(&body)).to_vec();
    out.extend_from_slice(&body);
    out
}

/// `rest` cut into frames whose `len` and `crc` fields are right.
fn frames(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len() + 64);
    while !rest.is_empty() {
        let (payload, after) = if rest.len() >= 2 {
            let want = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            let rest = &rest[2..];
            rest.split_at(want.min(rest.len()))
        } else {
            (rest, &[][..])
        };
        let len = (payload.len() as u32).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len);
        crc.update(payload);
        out.extend_from_slice(&len);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(payload);
        rest = after;
    }
    out
}

/// magic [8] | version u32 | flags u32 | body_len u64 | body_crc u32 | header_crc u32
fn header(version: u32, body_len: u64, body_crc: u32) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    bytes[16..24].copy_from_slice(&body_len.to_le_bytes());
    bytes[24..28].copy_from_slice(&body_crc.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    bytes
}
