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
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = Header::new(SNAPSHOT_MAGIC, 1234, 99);
        let bytes = header.encode();
        assert_eq!(Header::decode(&bytes, SNAPSHOT_MAGIC).unwrap(), header);
        assert!(Header::decode(&bytes, LOG_MAGIC).is_err());
        assert_eq!(
            Header::decode(&bytes[..10], SNAPSHOT_MAGIC),
            Err(FormatError::Truncated)
        );
        for i in 0..HEADER_BYTES {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(Header::decode(&bad, SNAPSHOT_MAGIC).is_err(), "byte {i}");
        }
    }

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let mut out = Vec::new();
        write_frame(&mut out, &("hello".to_string(), 42u64)).unwrap();
        write_frame(&mut out, &vec![1u32, 2, 3]).unwrap();
        let (payload, used) = read_frame(&out).unwrap();
        assert_eq!(
            decode::<(String, u64)>(payload).unwrap(),
            ("hello".into(), 42)
        );
        let (payload, _) = read_frame(&out[used..]).unwrap();
        assert_eq!(decode::<Vec<u32>>(payload).unwrap(), [1, 2, 3]);
        for cut in 0..used {
            assert!(read_frame(&out[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..used {
            let mut bad = out.clone();
            bad[i] ^= 0x01;
            assert!(
                read_frame(&bad).is_err() || read_frame(&bad).unwrap().1 != used,
                "flip {i}"
            );
        }
        assert!(!is_torn_tail(&out[1..]));
        assert!(is_torn_tail(&out[1..used]));
    }

    #[test]
    fn hand_encoded_increments_are_bincode_records() {
        use crate::period::Amount;
        use crate::persist::wal::{LogRecord, LoggedEntry, RecordV2Ref, decode_log_frame};
        use crate::store::ResolvedEntry;
        let entries = [
            ResolvedEntry {
                targets: &[70_000, 300, 3, 0],
                amount: Amount {
                    count: -2,
                    value: i64::MAX,
                },
            },
            ResolvedEntry {
                targets: &[0],
                amount: Amount {
                    count: 1,
                    value: i64::MIN,
                },
            },
        ];
        let long_uid = "ü".repeat(200);
        for (uid, at_delta) in [
            ("user-ü", 1_795_780_800),
            ("u", -86_400),
            (long_uid.as_str(), 0),
            ("u", i64::MIN),
        ] {
            let mut by_serde = Vec::new();
            write_record(
                &mut by_serde,
                &RecordV2Ref::Increment {
                    uid,
                    at_delta,
                    entries: &entries,
                },
            );
            let mut by_hand = Vec::new();
            write_increment_record(&mut by_hand, uid, at_delta, &entries);
            assert_eq!(by_hand, by_serde, "{uid} {at_delta}");
        }
        // A frame: its first LSN, then records back to back, each taking
        // the next LSN; event times are differences from the previous one.
        let mut frame = Vec::new();
        start_log_frame(&mut frame, 1 << 40);
        write_increment_record(&mut frame, "user-ü", 1_795_780_800, &entries[1..]);
        write_record(&mut frame, &RecordV2Ref::Registry(&[]));
        write_increment_record(&mut frame, "u", -86_400, &entries[..1]);
        seal_frame(&mut frame).unwrap();
        let (payload, used) = read_frame(&frame).unwrap();
        assert_eq!(used, frame.len());
        let decoded = decode_log_frame(FormatVersion::V2, payload).unwrap();
        let logged = |entry: &ResolvedEntry<'_>| LoggedEntry {
            targets: entry.targets.to_vec(),
            amount: entry.amount,
        };
        assert_eq!(
            decoded,
            [
                LogRecord::Increment {
                    lsn: 1 << 40,
                    uid: "user-ü".into(),
                    at: 1_795_780_800,
                    entries: vec![logged(&entries[1])],
                },
                LogRecord::Registry(Vec::new()),
                LogRecord::Increment {
                    lsn: (1 << 40) + 2,
                    uid: "u".into(),
                    at: 1_795_780_800 - 86_400,
                    entries: vec![logged(&entries[0])],
                },
            ]
        );
        // A payload cut inside a record is not whole records, and a frame
        // needs a record after its first LSN.
        assert!(decode_log_frame(FormatVersion::V2, &payload[..payload.len() - 3]).is_err());
        assert!(decode_log_frame(FormatVersion::V2, &payload[..1]).is_err());
        assert!(decode_log_frame(FormatVersion::V2, &[]).is_err());
        // Version 1 reads the same bytes as records with no first LSN:
        // they do not decode.
        assert!(decode_log_frame(FormatVersion::V1, payload).is_err());
    }

    #[test]
    fn the_worked_example_of_the_format_document() {
        use crate::period::Amount;
        use crate::store::ResolvedEntry;
        let entries = [ResolvedEntry {
            targets: &[0],
            amount: Amount { count: 1, value: 0 },
        }];
        let mut frame = Vec::new();
        start_log_frame(&mut frame, 5);
        write_increment_record(&mut frame, "u2", 1_795_780_800, &entries);
        write_increment_record(&mut frame, "u3", 60, &entries);
        seal_frame(&mut frame).unwrap();
        let hex: Vec<String> = frame.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            "19 00 00 00 51 57 49 32 05 02 02 75 32 fc 80 e1 12 d6 01 01 00 02 00 \
             02 02 75 33 78 01 01 00 02 00"
        );
    }

    #[test]
    fn implied_lsns_and_event_times_that_overflow_are_corrupt() {
        use crate::period::Amount;
        use crate::persist::wal::{RecordV2Ref, decode_log_frame};
        use crate::store::ResolvedEntry;
        let entries = [ResolvedEntry {
            targets: &[0],
            amount: Amount { count: 1, value: 0 },
        }];
        let mut lsns = Vec::new();
        start_log_frame(&mut lsns, u64::MAX);
        write_record(&mut lsns, &RecordV2Ref::Registry(&[]));
        write_increment_record(&mut lsns, "u", 1, &entries);
        let mut times = Vec::new();
        start_log_frame(&mut times, 1);
        write_increment_record(&mut times, "u", i64::MAX, &entries);
        write_increment_record(&mut times, "u", 1, &entries);
        for frame in [lsns, times] {
            let payload = &frame[FRAME_OVERHEAD..];
            assert!(matches!(
                decode_log_frame(FormatVersion::V2, payload),
                Err(FormatError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn a_huge_damaged_tail_is_scanned_in_bounded_time() {
        // Every offset claims a ~16 MiB frame; without a budget this scan
        // would checksum terabytes. It gives up and reports corruption.
        let tail = vec![1u8; 0x0101_0101 + FRAME_OVERHEAD + 5000];
        assert!(!is_torn_tail(&tail));
    }

    #[test]
    fn fault_a_a_payload_within_the_budget_decodes_within_the_limit() {
        // The densest claims there are: `u64`s of one byte each, 8 bytes
        // claimed per byte read. A payload of the budget decodes; one of
        // twice the budget (still well under the frame limit) does not,
        // which is why writers keep to the budget.
        let payload_of = |len: usize| {
            let count = len - 5;
            let mut payload = vec![0xFC];
            payload.extend_from_slice(&(count as u32).to_le_bytes());
            payload.resize(len, 0);
            payload
        };
        let within = payload_of(FRAME_BUDGET_BYTES);
        assert_eq!(
            decode::<Vec<u64>>(&within).unwrap().len(),
            FRAME_BUDGET_BYTES - 5
        );
        let twice = payload_of(2 * FRAME_BUDGET_BYTES);
        assert!(matches!(
            decode::<Vec<u64>>(&twice),
            Err(FormatError::Corrupt(_))
        ));
        // And a frame over the budget is never written.
        let mut out = vec![1, 2, 3];
        let too_large = write_frame(&mut out, &vec![0u8; FRAME_BUDGET_BYTES]);
        assert!(matches!(too_large, Err(TooLarge { .. })), "{too_large:?}");
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn decoding_claims_are_bounded() {
        // A length prefix claiming 2^60 elements must fail, not allocate.
        let mut evil = vec![0xFFu8];
        evil.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<Vec<u64>>(&evil).is_err());
    }
}
