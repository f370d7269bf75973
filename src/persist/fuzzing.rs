//! Entry points for the cargo-fuzz targets in `fuzz/` and for tests that
//! need checksummed data files holding impossible values: raw bytes into
//! each decoder, with fresh engine parts, and what decodes then read end
//! to end. Not a stable API.

use std::path::Path;

use serde::Serialize;

use super::format::{FormatVersion, HEADER_BYTES, Header, SNAPSHOT_MAGIC, write_frame};
use super::recovery::replay_segment_bytes;
use super::snapshot::load_bytes;
use crate::error::Result;
use crate::period::{Amount, Horizon, Retention};
use crate::query::{CompiledRead, Selector, read_rows};
use crate::registry::{Registry, RegistryChange};
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

fn horizon() -> Horizon {
    Retention {
        months: 24,
        days: 90,
    }
    .horizon(NOW_SECS)
}

/// Reads every subject of `parts` with `class: regex(''), period:
/// regex('')` (every cell, every stored period), and resolves every
/// regToken: what a decoded file must allow without a panic. Returns
/// the number of rows.
fn read_everything(parts: &(Registry, Store, TokenStore)) -> usize {
    let (registry, store, tokens) = parts;
    let everything = Selector::class("regex('')").period("regex('')");
    let Ok(everything) = CompiledRead::compile(&[everything], crate::path::MAX_PATH_DEPTH, 1)
    else {
        return 0;
    };
    let view = registry.view();
    let mut rows = 0;
    store.for_each(|_, cells| {
        rows += read_rows(
            cells.cells(),
            &view,
            &everything,
            NOW_SECS,
            horizon(),
            usize::MAX,
        )
        .map_or(0, |rows| rows.len());
    });
    drop(view);
    for (token, _) in tokens.image() {
        let _ = tokens.lookup(&token, NOW_SECS);
    }
    rows
}

/// Decodes `bytes` as a snapshot file; returns the number of subjects.
pub fn decode_snapshot(bytes: &[u8]) -> Result<u64> {
    let (registry, mut store, tokens) = fresh();
    load_bytes(Path::new("<bytes>"), bytes, &registry, &mut store, &tokens)
        .map(|loaded| loaded.subjects)
}

/// [`decode_snapshot`], then reads whatever decoded end to end (every
/// subject, every cell and stored period, every regToken); returns the
/// number of rows read.
pub fn decode_snapshot_and_read(bytes: &[u8]) -> Result<usize> {
    let (registry, mut store, tokens) = fresh();
    load_bytes(Path::new("<bytes>"), bytes, &registry, &mut store, &tokens)?;
    Ok(read_everything(&(registry, store, tokens)))
}

/// Replays `bytes` as the last log segment; returns where a torn tail starts.
pub fn replay_log_segment(bytes: &[u8]) -> Result<Option<usize>> {
    replay_segment_bytes(bytes, &fresh(), horizon())
}

/// [`replay_log_segment`], then reads whatever was replayed end to end
/// (as [`decode_snapshot_and_read`] does), also after an error: what the
/// log applied before damage stays in an engine's memory only if recovery
/// succeeds, but reading it must not panic either way.
pub fn replay_log_segment_and_read(bytes: &[u8]) -> Result<Option<usize>> {
    let parts = fresh();
    let replayed = replay_segment_bytes(bytes, &parts, horizon());
    read_everything(&parts);
    replayed
}

/// One bucket of a cell as the format lays it out.
#[derive(Serialize)]
struct BucketImage {
    key: u32,
    last_updated: u32,
    amount: Amount,
}

/// A cell as the format lays it out.
#[derive(Serialize)]
struct CellImage {
    total: Amount,
    last_updated: i64,
    buckets: Vec<BucketImage>,
}

/// A snapshot record as the format lays it out (variant order matters).
#[derive(Serialize)]
enum RecordImage {
    Meta {
        created_millis: i64,
        replay_from: u64,
        hash_seed: u64,
    },
    Tokens(Vec<(String, (String, i64))>),
    Subject(String, Vec<(u32, CellImage)>),
    Registry(Vec<RegistryChange>),
    End {
        subjects: u64,
        shard_lsns: Vec<u64>,
    },
}

/// A bucket of a crafted snapshot's cell: its key as the format stores
/// it (a day number, or a month index with bit 31 set) and `lastUpdated`.
#[derive(Clone, Copy, Debug)]
pub struct CraftedBucket {
    /// The stored key.
    pub key: u32,
    /// The stored `lastUpdated`, Unix seconds.
    pub last_updated: u32,
}

/// A crafted snapshot's contents: regTokens (token, UID, expiry) and one
/// subject's UID and buckets (of one cell, of the counter `("c", "/")`).
#[derive(Clone, Debug)]
pub struct CraftedSnapshot {
    /// `(token, uid, expires_at)` of each regToken.
    pub tokens: Vec<(String, String, i64)>,
    /// The subject's UID.
    pub uid: String,
    /// Its cell's buckets, newest first.
    pub buckets: Vec<CraftedBucket>,
    /// The LSN of the last logged batch each store shard holds.
    pub shard_lsn: u64,
}

/// A snapshot file in the current format, with valid checksums, holding
/// `crafted` as the engine's own encoder writes it, whatever the values:
/// for tests of what reading back impossible values does.
pub fn crafted_snapshot(crafted: &CraftedSnapshot) -> Vec<u8> {
    let one = Amount { count: 1, value: 1 };
    let cell = CellImage {
        total: one,
        last_updated: crafted
            .buckets
            .iter()
            .map(|b| i64::from(b.last_updated))
            .max()
            .unwrap_or(NOW_SECS),
        buckets: (crafted.buckets.iter())
            .map(|b| BucketImage {
                key: b.key,
                last_updated: b.last_updated,
                amount: one,
            })
            .collect(),
    };
    let records = [
        RecordImage::Meta {
            created_millis: NOW_SECS * 1000,
            replay_from: 1,
            hash_seed: 7,
        },
        RecordImage::Tokens(
            (crafted.tokens.iter())
                .map(|(token, uid, expires_at)| (token.clone(), (uid.clone(), *expires_at)))
                .collect(),
        ),
        RecordImage::Subject(crafted.uid.clone(), vec![(0, cell)]),
        RecordImage::Registry(vec![RegistryChange::Created {
            id: 0,
            class: "c".into(),
            path: "/".into(),
        }]),
        RecordImage::End {
            subjects: 1,
            shard_lsns: vec![crafted.shard_lsn; Store::default().shard_count()],
        },
    ];
    let mut body = Vec::new();
    for record in &records {
        write_frame(&mut body, record).expect("a small record");
    }
    let mut header = Header::new(SNAPSHOT_MAGIC, body.len() as u64, crc32fast::hash(&body));
    header.version = FormatVersion::CURRENT;
    let mut file = Vec::with_capacity(HEADER_BYTES + body.len());
    file.extend_from_slice(&header.encode());
    file.extend_from_slice(&body);
    file
}
