//! Entry points for the cargo-fuzz targets in `fuzz/`: raw bytes into each
//! decoder, with fresh engine parts. Not a stable API.

use std::path::Path;

use super::recovery::replay_segment_bytes;
use super::snapshot::load_bytes;
use crate::error::Result;
use crate::period::Retention;
use crate::registry::Registry;
use crate::store::Store;
use crate::subject::TokenStore;

const NOW_SECS: i64 = 1_795_780_800;

fn fresh() -> (Registry, Store, TokenStore) {
    (
        Registry::new(2, 10_000),
        Store::default(),
        TokenStore::new(std::time::Duration::from_secs(3600)),
    )
}

/// Decodes `bytes` as a snapshot file; returns the number of subjects.
pub fn decode_snapshot(bytes: &[u8]) -> Result<u64> {
    let (registry, mut store, tokens) = fresh();
    load_bytes(Path::new("<bytes>"), bytes, &registry, &mut store, &tokens)
        .map(|loaded| loaded.subjects)
}

/// Replays `bytes` as the last log segment; returns where a torn tail starts.
pub fn replay_log_segment(bytes: &[u8]) -> Result<Option<usize>> {
    let horizon = Retention {
        months: 24,
        days: 90,
    }
    .horizon(NOW_SECS);
    replay_segment_bytes(bytes, &fresh(), horizon)
}
