//! What the decoder fuzz targets share: turning fuzzer bytes into frames
//! and headers with correct checksums, so that inputs reach the records
//! instead of stopping at a checksum. The byte layout is
//! `src/persist/format.rs` of the crate.

/// `rest` cut into chunks: each a `u16` LE length, then that many bytes;
/// the last chunk takes what is left.
pub fn chunks(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let (payload, after) = if rest.len() >= 2 {
            let want = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            let rest = &rest[2..];
            rest.split_at(want.min(rest.len()))
        } else {
            (rest, &[][..])
        };
        chunks.push(payload);
        rest = after;
    }
    chunks
}

/// Appends `payload` as a frame: `len` u32 | `crc` u32 (over `len` and the
/// payload) | payload.
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// A file header: magic [8] | version u32 | flags u32 | body_len u64 |
/// body_crc u32 | header_crc u32.
pub fn header(magic: &[u8; 8], version: u32, body_len: u64, body_crc: u32) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(magic);
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    bytes[16..24].copy_from_slice(&body_len.to_le_bytes());
    bytes[24..28].copy_from_slice(&body_crc.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    bytes
}
