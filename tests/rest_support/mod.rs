//! Helpers shared by the `tests/rest_*.rs` scenarios, which run on both
//! stores: each suite declares `mod stores;` beside `mod rest_support;`.

#![allow(dead_code)]

use serde_json::Value;
use tally::ManualClock;
use tally::rest::Response;

use crate::stores::{Store, StoreKind};

/// 2026-11-27 12:00:00 UTC.
pub const NOW: i64 = 1_795_780_800;

/// A fresh store of `kind` on a manual clock standing at [`NOW`].
pub fn engine(kind: StoreKind) -> (Store, ManualClock) {
    let clock = ManualClock::new(NOW);
    let engine = Store::on_clock(kind, &clock);
    (engine, clock)
}

/// Parses a JSON response body.
pub fn json(resp: &Response) -> Value {
    assert_eq!(
        resp.content_type, "application/json; charset=utf-8",
        "{resp:?}"
    );
    serde_json::from_str(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.body))
}

/// Calls and parses a JSON response.
pub fn call_json(engine: &Store, method: &str, params: &[(&str, &str)]) -> Value {
    json(&engine.rest(method, params))
}

/// Asserts a success body.
pub fn assert_ok(body: &Value) {
    assert_eq!(body["errorCode"], 0, "{body}");
    assert_eq!(body["statusCode"], 200, "{body}");
    assert_eq!(body["statusReason"], "OK", "{body}");
    assert!(body.get("errorMessage").is_none(), "{body}");
    assert!(body.get("errorDetails").is_none(), "{body}");
}

/// Asserts an error body with `code`, whose details mention `mentions`.
pub fn assert_error(body: &Value, code: u32, mentions: &str) {
    assert_eq!(body["errorCode"], code, "{body}");
    assert_eq!(body["statusCode"], code / 1000, "{body}");
    assert!(body["errorMessage"].is_string(), "{body}");
    let details = body["errorDetails"].as_str().unwrap_or_default();
    assert!(details.contains(mentions), "{mentions:?} not in {body}");
}

/// Registers `(class, path)` pairs through REST.
pub fn register(engine: &Store, counters: &str) {
    assert_ok(&call_json(
        engine,
        "accounts.registerCounters",
        &[("counters", counters)],
    ));
}

/// The `total` rows of a UID, as (class, path, count, value).
pub fn totals(engine: &Store, uid: &str) -> Vec<(String, String, i64, i64)> {
    let body = call_json(engine, "accounts.getCounters", &[("UID", uid)]);
    assert_ok(&body);
    body["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["class"].as_str().unwrap().to_owned(),
                row["path"].as_str().unwrap().to_owned(),
                row["count"].as_i64().unwrap(),
                row["value"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Owned tuples for comparing with [`totals`].
pub fn rows(expected: &[(&str, &str, i64, i64)]) -> Vec<(String, String, i64, i64)> {
    expected
        .iter()
        .map(|&(c, p, n, v)| (c.to_owned(), p.to_owned(), n, v))
        .collect()
}
