//! The shared store's arithmetic is exact over the whole 64-bit range.
//! Its batch script adds and compares amounts as decimal strings (Lua
//! numbers are doubles, exact only below 2^53): the same batches, with
//! amounts anywhere in `i64` and of both signs, leave the shared store
//! and the embedded engine with the same counts and values, and refuse
//! the same entries for overflow. A stored field that is not a canonical
//! 64-bit integer is reported as corrupt, never added to.

mod cluster_support;

use cluster_support::{fresh_namespace, shared_seeds};
use proptest::prelude::*;
use redis::AsyncCommands;
use tally::cluster::Cluster;
use tally::{Error, Increment, ManualClock, Selector, Tally, platform_shaped_uid};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const PATHS: [&str; 3] = ["/", "/a", "/a/b"];

/// Amounts small, near the 2^53 a double holds exactly, near the ends of
/// the range, at the lengths where the script's arithmetic changes (seven
/// digits, thirteen characters), and anywhere.
fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => -10i64..10,
        1 => (-3i64..3).prop_map(|d| (1 << 53) + d),
        1 => (-3i64..3).prop_map(|d| -(1 << 53) + d),
        1 => (0i64..4).prop_map(|d| i64::MAX - d),
        1 => (0i64..4).prop_map(|d| i64::MIN + d),
        1 => (-3i64..3).prop_map(|d| 9_999_999 + d),
        1 => (-3i64..3).prop_map(|d| 9_999_999_999_999 + d),
        1 => (-3i64..3).prop_map(|d| -999_999_999_999 + d),
        3 => any::<i64>(),
    ]
}

/// A batch: entries of (path, count, value).
fn batch() -> impl Strategy<Value = Vec<(usize, i64, i64)>> {
    prop::collection::vec((0..PATHS.len(), amount(), amount()), 1..4)
}

/// Everything a subject holds, as `(class, path, period, count, value)`.
fn rows(rows: Vec<tally::CounterRow>) -> Vec<(String, String, String, i64, i64)> {
    let mut rows: Vec<_> = rows
        .into_iter()
        .map(|r| (r.class, r.path, format!("{:?}", r.period), r.count, r.value))
        .collect();
    rows.sort();
    rows
}

/// What an answer was, for comparing the two stores' answers.
fn outcome(result: &tally::Result<()>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(error) => format!("{error}"),
    }
}

#[test]
fn cluster_sums_agree_with_the_embedded_engine_over_the_whole_range() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(async {
        let cluster = Cluster::builder(shared_seeds())
            .namespace(fresh_namespace("arithmetic"))
            .clock(ManualClock::new(NOW))
            .connect()
            .await
            .unwrap();
        cluster
            .register(PATHS.iter().map(|&p| ("c", p)))
            .await
            .unwrap();
        cluster
    });
    let everything = [Selector::class("regex('')").period("regex('')")];
    let case = std::sync::atomic::AtomicU64::new(0);
    let config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(64)
    };
    proptest!(config, |(batches in prop::collection::vec(batch(), 1..8))| {
        let uid = platform_shaped_uid(case.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let embedded = Tally::builder().clock(ManualClock::new(NOW)).build().unwrap();
        embedded.register(PATHS.iter().map(|&p| ("c", p))).unwrap();
        for batch in &batches {
            let entries: Vec<Increment<'_>> = batch
                .iter()
                .map(|&(p, count, value)| Increment::new("c", PATHS[p]).count(count).value(value))
                .collect();
            let expected = embedded.increment(uid.as_str(), &entries);
            let got = runtime.block_on(cluster.increment(uid.as_str(), &entries));
            prop_assert_eq!(outcome(&got), outcome(&expected), "batch {:?}", batch);
        }
        let expected = rows(embedded.get(uid.as_str(), &everything).unwrap());
        let got = rows(runtime.block_on(cluster.get(uid.as_str(), &everything)).unwrap());
        prop_assert_eq!(got, expected);
    });
}

/// A way to spoil a bucket's `COUNT:VALUE:LASTUPDATED`.
enum Corruption {
    /// The count replaced by this text.
    Count(&'static str),
    /// The value replaced by this text.
    Value(&'static str),
    /// The lastUpdated part left out.
    NoStamp,
    /// A fourth part added.
    ExtraPart,
    /// Nothing at all.
    Empty,
}

impl Corruption {
    fn apply(&self, stored: &str) -> String {
        let parts: Vec<&str> = stored.split(':').collect();
        match self {
            Corruption::Count(junk) => format!("{junk}:{}:{}", parts[1], parts[2]),
            Corruption::Value(junk) => format!("{}:{junk}:{}", parts[0], parts[2]),
            Corruption::NoStamp => format!("{}:{}", parts[0], parts[1]),
            Corruption::ExtraPart => format!("{stored}:1"),
            Corruption::Empty => String::new(),
        }
    }
}

/// A cluster store on a fresh namespace with `(c, /)` registered, its
/// namespace, and a plain connection to the same cluster for reading and
/// spoiling its keys.
async fn registered_with_raw_connection()
-> (Cluster, String, redis::cluster_async::ClusterConnection) {
    let seeds = shared_seeds();
    let namespace = fresh_namespace("arithmetic");
    let cluster = Cluster::builder(&seeds)
        .namespace(&namespace)
        .connect()
        .await
        .unwrap();
    cluster.register([("c", "/")]).await.unwrap();
    let nodes: Vec<String> = seeds.iter().map(|s| format!("redis://{s}")).collect();
    let client = redis::cluster::ClusterClient::new(nodes).unwrap();
    let raw = client.get_async_connection().await.unwrap();
    (cluster, namespace, raw)
}

#[test]
fn cluster_a_field_that_is_not_a_canonical_64_bit_integer_is_corrupt() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (cluster, namespace, mut raw) = registered_with_raw_connection().await;
        // A leading zero, a minus zero, one past i64::MAX, one below
        // i64::MIN, and no number at all: each would be misread by a
        // comparison of canonical decimals. Each is tried as the count
        // and as the value of counter 0's total, and fields that are not
        // `COUNT:VALUE:LASTUPDATED` at all are tried too.
        let junk_amounts = [
            "007",
            "-0",
            "9223372036854775808",
            "-9223372036854775809",
            "1e3",
        ];
        let mut cases: Vec<Corruption> = Vec::new();
        for junk in junk_amounts {
            cases.push(Corruption::Count(junk));
            cases.push(Corruption::Value(junk));
        }
        cases.extend([
            Corruption::NoStamp,
            Corruption::ExtraPart,
            Corruption::Empty,
        ]);
        for (i, corruption) in cases.iter().enumerate() {
            let uid = platform_shaped_uid(1_000 + i as u64);
            let entry = [Increment::new("c", "/")];
            cluster.increment(uid.as_str(), &entry).await.unwrap();
            let key = format!("{namespace}:{{{uid}}}");
            let before: Vec<(String, String)> = raw.hgetall(&key).await.unwrap();
            // Counter 0's total.
            let total: String = raw.hget(&key, "0:t").await.unwrap();
            let junk = corruption.apply(&total);
            let () = raw.hset(&key, "0:t", &junk).await.unwrap();
            let error = cluster.increment(uid.as_str(), &entry).await.unwrap_err();
            assert!(
                matches!(error.root(), Error::StoreCorrupt { .. }),
                "{junk}: {error:?}"
            );
            // Nothing else was written: every other field is as it was,
            // and the refused batch left no marker (the first one's stays).
            let after: Vec<(String, String)> = raw.hgetall(&key).await.unwrap();
            let others = |fields: Vec<(String, String)>| -> Vec<(String, String)> {
                let mut fields: Vec<_> = fields.into_iter().filter(|(f, _)| f != "0:t").collect();
                fields.sort();
                fields
            };
            let markers: Vec<String> = raw.keys(format!("{key}:b:*")).await.unwrap();
            assert_eq!(markers.len(), 1, "{junk}: {markers:?}");
            assert_eq!(others(after), others(before), "{junk}");
        }
    });
}

/// The batch script claims a batch's id before it checks the batch: a
/// batch refused for overflow must give the claim back, or its marker
/// would outlive a batch that wrote nothing.
#[test]
fn cluster_a_batch_refused_for_overflow_leaves_no_marker() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (cluster, namespace, mut raw) = registered_with_raw_connection().await;
        let uid = platform_shaped_uid(7);
        let key = format!("{namespace}:{{{uid}}}");
        let full = [Increment::new("c", "/").count(i64::MAX)];
        cluster.increment(uid.as_str(), &full).await.unwrap();
        let before: Vec<(String, String)> = raw.hgetall(&key).await.unwrap();
        let error = cluster
            .increment(uid.as_str(), &[Increment::new("c", "/")])
            .await
            .unwrap_err();
        assert!(matches!(error.root(), Error::Overflow { .. }), "{error:?}");
        let after: Vec<(String, String)> = raw.hgetall(&key).await.unwrap();
        assert_eq!(after, before);
        let markers: Vec<String> = raw.keys(format!("{key}:b:*")).await.unwrap();
        assert_eq!(markers.len(), 1, "{markers:?}");
    });
}
