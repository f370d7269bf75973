//! Increments through REST: "the error names the index of the first bad
//! entry", whether the REST layer finds it (a missing field, a count that
//! is not an integer) or the engine does (an unregistered counter, bad
//! syntax, overflow by accumulation). Pins a bug where every entry's
//! fields were checked before any entry reached the engine, so that a bad
//! field at entry 5 was named ahead of an unregistered counter at entry 0.

mod rest_support;
mod stores;

use proptest::prelude::*;
use rest_support::{call_json, engine, register};
use stores::StoreKind;

const INC: &str = "accounts.incrementCounters";

/// One entry of `counters`, as JSON text: good ones of four registered
/// counters (amounts large enough to overflow `/` by accumulation), and
/// entries each check rejects.
fn entry() -> impl Strategy<Value = String> {
    let good = (
        0..4usize,
        prop_oneof![3 => -1_000i64..1_000, 1 => Just(i64::MAX / 3)],
    )
        .prop_map(|(p, count)| format!(r#"{{"class":"c","path":"/p{p}","count":{count}}}"#));
    prop_oneof![
        12 => good,
        1 => Just(r#"{"class":"c"}"#.to_owned()),
        1 => Just(r#"{"path":"/p0"}"#.to_owned()),
        1 => Just(r#"{"class":"c","path":"/p0","count":1.5}"#.to_owned()),
        1 => Just(r#"{"class":"c","path":"/p0","value":"x"}"#.to_owned()),
        1 => Just(r#"{"class":"c","path":"/q"}"#.to_owned()),
        1 => Just(r#"{"class":"c","path":"p0"}"#.to_owned()),
        1 => Just(r#"{"class":"nope","path":"/"}"#.to_owned()),
    ]
}

/// The index an error's details name, as `counters[i]` (the REST layer's
/// field errors) or `entry i` (the engine's).
fn named_index(details: &str) -> Option<usize> {
    let digits = |rest: &str| {
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    if let Some(at) = details.find("counters[") {
        return digits(&details[at + "counters[".len()..]);
    }
    let at = details.find("entry ")?;
    digits(&details[at + "entry ".len()..])
}

/// 64 cases on the embedded engine; 32 on the cluster, where a case is two
/// connections and up to some thirty round trips. No regression files
/// written beside the sources.
fn config(kind: StoreKind) -> ProptestConfig {
    let cases = match kind {
        StoreKind::Embedded => 64,
        StoreKind::Cluster => 32,
    };
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

fn prop_first_bad_entry(kind: StoreKind) {
    proptest!(config(kind), |(entries in prop::collection::vec(entry(), 1..20))| {
        let counters = r#"[{"class":"c","path":"/p0"},{"class":"c","path":"/p1"},{"class":"c","path":"/p2"},{"class":"c","path":"/p3"}]"#;
        let ((batched, _), (one_by_one, _)) = (engine(kind), engine(kind));
        register(&batched, counters);
        register(&one_by_one, counters);
        let everything = [("UID", "u"), ("counters", r#"[{"class":"c","period":"regex('')"}]"#)];
        let before = call_json(&batched, "accounts.getCounters", &everything)["counters"].clone();

        let batch = format!("[{}]", entries.join(","));
        let body = call_json(&batched, INC, &[("UID", "u"), ("counters", &batch)]);
        let refused = entries.iter().enumerate().find_map(|(index, entry)| {
            let alone = call_json(&one_by_one, INC, &[("UID", "u"), ("counters", &format!("[{entry}]"))]);
            (alone["errorCode"] != 0).then_some((index, alone))
        });
        match refused {
            None => prop_assert_eq!(&body["errorCode"], 0, "{}", body),
            Some((index, alone)) => {
                prop_assert_eq!(&body["errorCode"], &alone["errorCode"], "{} against {}", body, alone);
                let details = body["errorDetails"].as_str().unwrap_or_default();
                prop_assert_eq!(named_index(details), Some(index), "{}", details);
                let after = call_json(&batched, "accounts.getCounters", &everything)["counters"].clone();
                prop_assert_eq!(after, before);
            }
        }
    });
}

store_tests! {
    fn the_first_bad_entry_is_the_one_entry_by_entry_calls_refuse_first(kind) {
        prop_first_bad_entry(kind);
    }
}
