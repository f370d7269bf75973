//! The byte layout shared by snapshots and log segments, and the only
//! module that touches bincode (so the body encoding can be swapped).
//!
//! A file is a 32-byte header followed by frames:
//!
//! ```text
//! header: magic [8] | version u32 | flags u32 | body_len u64 | body_crc u32 | header_crc u32
//! frame:  len u32 | crc u32 | payload [len]
//! ```
//!
//! All integers are little-endian. `header_crc` is the CRC-32 of the first
//! 28 header bytes. A frame's `crc` is the CRC-32 of its `len` bytes
//! followed by its payload; payloads are bincode (standard configuration)
//! and at most [`MAX_FRAME_BYTES`] long, decoded with that size limit.
//! Snapshots fill `body_len`/`body_crc` over all frames; log segments grow,
//! so theirs are zero. `docs/format.md` describes the records.
//!
//! The decoding limit counts what decoding claims, not the bytes it reads:
//! bincode claims a value's size in memory as it decodes it (8 bytes for a
//! `u64` whose varint is one byte). Writers therefore keep every payload
//! within [`FRAME_BUDGET_BYTES`], an eighth of the limit: no encoded byte
//! makes the decoder claim more than 8 (a `u64` or `i64` varint claims 8
//! for at least 1 byte read, a variant index or `u32` claims 4, a string
//! claims its length and then reads that many bytes, and sequences,
//! tuples and structs claim nothing of their own), so a payload within the
//! budget decodes within the limit, whatever it holds.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first bytes of a snapshot file.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"TALLYSNP";
/// The first bytes of a log segment.
pub(crate) const LOG_MAGIC: [u8; 8] = *b"TALLYLOG";
/// Bytes in a file header.
pub(crate) const HEADER_BYTES: usize = 32;
/// Bytes before a frame's payload.
pub(crate) const FRAME_OVERHEAD: usize = 8;
/// The largest payload a frame may carry; larger claims are corruption.
/// It is also the most a frame's decoding may claim.
pub(crate) const MAX_FRAME_BYTES: usize = 64 << 20;

/// The most any encoded byte makes the decoder claim (see the module
/// documentation).
const MAX_CLAIM_PER_BYTE: usize = 8;

/// The largest payload a writer puts in a frame: one whose decoding cannot
/// claim more than [`MAX_FRAME_BYTES`], so that whatever is written reads
/// back.
pub(crate) const FRAME_BUDGET_BYTES: usize = MAX_FRAME_BYTES / MAX_CLAIM_PER_BYTE;

/// A record alone would take a frame past [`FRAME_BUDGET_BYTES`]: `bytes`
/// long. Never written; the writer reports it as an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub bytes: usize,
}

impl From<TooLarge> for crate::error::Error {
    fn from(too_large: TooLarge) -> Self {
        crate::error::Error::RecordTooLarge {
            bytes: too_large.bytes as u64,
            max: FRAME_BUDGET_BYTES as u64,
        }
    }
}

/// `items` cut into runs, in order, each encoding within `budget` bytes
/// (measured by `len`); an item that alone takes more is refused.
pub(crate) fn runs<T>(
    items: &[T],
    budget: usize,
    len: impl Fn(&T) -> usize,
) -> Result<Vec<std::ops::Range<usize>>, TooLarge> {
    let mut runs = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let bytes = len(item);
        if bytes > budget {
            return Err(TooLarge { bytes });
        }
        if used + bytes > budget {
            runs.push(start..i);
            (start, used) = (i, 0);
        }
        used += bytes;
    }
    if start < items.len() || runs.is_empty() {
        runs.push(start..items.len());
    }
    Ok(runs)
}

/// The number of bytes bincode encodes `value` into.
pub(crate) fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, bincode::config::standard())
        .expect("measuring an encoding cannot fail");
    size.bytes_written
}

/// The on-disk format versions this build reads, oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub(crate) enum FormatVersion {
    /// The first format: every increment log record carries its LSN and
    /// its absolute event time.
    V1 = 1,
    /// A log frame starts with the LSN of its first record, the others
    /// following one by one; an increment's event time is a difference
    /// from the previous increment's in the frame. Snapshots are as in V1.
    V2 = 2,
    /// A log may also hold `Subjects` records: the whole state of
    /// subjects changed since they were last written back (write-behind,
    /// under `Durability::Interval`). Snapshots are as in V2.
    V3 = 3,
    /// Writers split state into frames within [`FRAME_BUDGET_BYTES`]: a
    /// snapshot may hold several `Tokens` and `Registry` frames, and a
    /// subject's cells may go on over consecutive `Subject` frames of the
    /// same UID; a log may hold `Cells` records, each a run of one
    /// subject's cells, for a subject too large for one record.
    V4 = 4,
}

impl FormatVersion {
    pub(crate) const CURRENT: FormatVersion = FormatVersion::V4;

    fn parse(number: u32) -> Option<FormatVersion> {
        match number {
            1 => Some(FormatVersion::V1),
            2 => Some(FormatVersion::V2),
            3 => Some(FormatVersion::V3),
            4 => Some(FormatVersion::V4),
            _ => None,
        }
    }
}

/// A parsed file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub magic: [u8; 8],
    pub version: FormatVersion,
    pub body_len: u64,
    pub body_crc: u32,
}

/// What is wrong with some bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FormatError {
    /// The bytes end before the structure does.
    Truncated,
    /// The bytes are present but wrong.
    Corrupt(String),
}

impl Header {
    pub(crate) fn new(magic: [u8; 8], body_len: u64, body_crc: u32) -> Header {
        Header {
            magic,
            version: FormatVersion::CURRENT,
            body_len,
            body_crc,
        }
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[..8].copy_from_slice(&self.magic);
        bytes[8..12].copy_from_slice(&(self.version as u32).to_le_bytes());
        bytes[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8], magic: [u8; 8]) -> Result<Header, FormatError> {
        if bytes.len() < HEADER_BYTES {
            return Err(FormatError::Truncated);
        }
        if bytes[..8] != magic {
            return Err(FormatError::Corrupt("wrong magic number".into()));
        }
        let crc = u32_at(bytes, 28);
        if crc32fast::hash(&bytes[..28]) != crc {
            return Err(FormatError::Corrupt("header checksum mismatch".into()));
        }
        let number = u32_at(bytes, 8);
        let version = FormatVersion::parse(number)
            .ok_or_else(|| FormatError::Corrupt(format!("unsupported format version {number}")))?;
        Ok(Header {
            magic,
            version,
            body_len: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
            body_crc: u32_at(bytes, 24),
        })
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn frame_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(payload);
    hasher.finalize()
}

/// Appends `value` to `out` as one frame, unless its payload would be
/// larger than [`FRAME_BUDGET_BYTES`] (then `out` is left as it was).
pub(crate) fn write_frame<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), TooLarge> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_OVERHEAD]);
    write_record(out, value);
    let sealed = seal_frame(&mut out[start..]);
    if sealed.is_err() {
        out.truncate(start);
    }
    sealed
}

/// Appends `value` as a bare record, for a log frame that
/// [`seal_frame`] closes.
pub(crate) fn write_record<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
        .expect("encoding into a Vec cannot fail");
}

/// The variant index of `Increment` in the log record enum.
const INCREMENT_VARIANT: u32 = 2;

/// Appends an unsigned integer as bincode's standard varint: one byte
/// below 251, else a marker (251, 252, 253) and 2, 4 or 8 bytes.
#[inline(always)]
fn put_varint(out: &mut Vec<u8>, value: u64) {
    if value < 251 {
        out.push(value as u8);
    } else {
        put_long_varint(out, value);
    }
}

/// [`put_varint`] for values of 251 and more, out of the common path.
#[inline(never)]
fn put_long_varint(out: &mut Vec<u8>, value: u64) {
    if value <= u64::from(u16::MAX) {
        out.push(251);
        out.extend_from_slice(&(value as u16).to_le_bytes());
    } else if value <= u64::from(u32::MAX) {
        out.push(252);
        out.extend_from_slice(&(value as u32).to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Starts a log frame at the end of `out`: [`FRAME_OVERHEAD`] reserved
/// bytes for [`seal_frame`], then `first_lsn`, the LSN of the frame's
/// first record (version 2).
pub(crate) fn start_log_frame(out: &mut Vec<u8>, first_lsn: u64) {
    out.extend_from_slice(&[0u8; FRAME_OVERHEAD]);
    put_varint(out, first_lsn);
}

/// Splits a version-2 log frame's payload into the LSN of its first
/// record and the records.
pub(crate) fn split_first_lsn(payload: &[u8]) -> Result<(u64, &[u8]), FormatError> {
    let config = bincode::config::standard().with_limit::<MAX_FRAME_BYTES>();
    let (first_lsn, read): (u64, usize) = bincode::serde::decode_from_slice(payload, config)
        .map_err(|e| FormatError::Corrupt(format!("undecodable first LSN: {e}")))?;
    Ok((first_lsn, &payload[read..]))
}

/// Appends an increment log record (version 2) as a bare record, encoded
/// by hand into exactly the bytes bincode's standard encoding of
/// `Increment { uid, at_delta, entries }` (variant 2 of the log record
/// enum) would give (a test pins this), because this runs on every
/// durable increment.
pub(crate) fn write_increment_record(
    out: &mut Vec<u8>,
    uid: &str,
    at_delta: i64,
    entries: &[crate::store::ResolvedEntry<'_>],
) {
    // Room for the usual record (small numbers, one entry with a few
    // targets), so that growing is rare.
    out.reserve(uid.len() + 48);
    put_varint(out, u64::from(INCREMENT_VARIANT));
    put_varint(out, uid.len() as u64);
    out.extend_from_slice(uid.as_bytes());
    put_varint(out, zigzag(at_delta));
    put_varint(out, entries.len() as u64);
    for entry in entries {
        put_varint(out, entry.targets.len() as u64);
        for &target in entry.targets {
            put_varint(out, u64::from(target));
        }
        put_varint(out, zigzag(entry.amount.count));
        put_varint(out, zigzag(entry.amount.value));
    }
}

/// A signed integer as bincode maps it before writing a varint: zig-zag.
#[inline(always)]
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Closes a log frame: `frame` is [`FRAME_OVERHEAD`] reserved bytes
/// followed by records; this fills in the length and the checksum. A log
/// frame thus carries the records of one group commit (as many as fit the
/// budget; the log seals a frame and starts the next rather than go past
/// it), and its checksum is computed once over all of them, by the writer,
/// off the appenders' path.
/// A payload larger than [`FRAME_BUDGET_BYTES`] is refused (and the frame
/// left unsealed): the reader might not accept it.
pub(crate) fn seal_frame(frame: &mut [u8]) -> Result<(), TooLarge> {
    let payload = frame.len() - FRAME_OVERHEAD;
    if payload > FRAME_BUDGET_BYTES {
        return Err(TooLarge { bytes: payload });
    }
    let len = payload as u32;
    let len_bytes = len.to_le_bytes();
    let crc = frame_crc(len_bytes, &frame[FRAME_OVERHEAD..]);
    frame[..4].copy_from_slice(&len_bytes);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes every record of a log frame's payload, in order: the payload
/// must be whole records with nothing left over.
pub(crate) fn decode_all<T: DeserializeOwned>(payload: &[u8]) -> Result<Vec<T>, FormatError> {
    let config = bincode::config::standard().with_limit::<MAX_FRAME_BYTES>();
    let mut records = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let (record, read) = bincode::serde::decode_from_slice(&payload[at..], config)
            .map_err(|e| FormatError::Corrupt(format!("undecodable record: {e}")))?;
        if read == 0 {
            return Err(FormatError::Corrupt("an empty record".into()));
        }
        records.push(record);
        at += read;
    }
    if records.is_empty() {
        return Err(FormatError::Corrupt("a frame without records".into()));
    }
    Ok(records)
}

/// Checks the frame at the start of `bytes` and returns its payload and
/// total length.
pub(crate) fn read_frame(bytes: &[u8]) -> Result<(&[u8], usize), FormatError> {
    if bytes.len() < FRAME_OVERHEAD {
        return Err(FormatError::Truncated);
    }
    let len_bytes: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FormatError::Corrupt(format!(
            "frame claims {len} bytes, more than the {MAX_FRAME_BYTES} allowed"
        )));
    }
    let end = FRAME_OVERHEAD + len;
    if bytes.len() < end {
        return Err(FormatError::Truncated);
    }
    let payload = &bytes[FRAME_OVERHEAD..end];
    if frame_crc(len_bytes, payload) != u32_at(bytes, 4) {
        return Err(FormatError::Corrupt("frame checksum mismatch".into()));
    }
    Ok((payload, end))
}

/// Whether `bytes`, which follow damage at the end of a log, hold no valid
/// frame anywhere: a torn tail, rather than corruption in the middle.
pub(crate) fn is_torn_tail(bytes: &[u8]) -> bool {
    // Every offset may claim a frame of up to 64 MiB; checksumming each
    // claim is quadratic in the tail's size. Past this many checksummed
    // bytes the scan gives up, and the damage counts as corruption: an
    // error to look at, never a silent cut.
    const SCAN_BUDGET_BYTES: usize = 256 << 20;
    let mut budget = SCAN_BUDGET_BYTES;
    for at in 0..bytes.len() {
        let rest = &bytes[at..];
        if rest.len() <= FRAME_OVERHEAD {
            break;
        }
        let len = u32_at(rest, 0) as usize;
        if len == 0 || len > MAX_FRAME_BYTES || FRAME_OVERHEAD + len > rest.len() {
            continue;
        }
        let Some(left) = budget.checked_sub(len) else {
            return false;
        };
        budget = left;
        if read_frame(rest).is_ok() {
            return false;
        }
    }
    true
}

/// Decodes a frame payload, with the frame size as the allocation limit.
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FormatError> {
    let config = bincode::config::standard().with_limit::<MAX_FRAME_BYTES>();
    let (value, read) = bincode::serde::decode_from_slice(payload, config)
        .map_err(|e| FormatError::Corrupt(format!("undecodable record: {e}")))?;
    if read != payload.len() {
        return Err(FormatError::Corrupt("trailing bytes after a record".into()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
