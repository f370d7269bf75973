//! The response envelope: JSON and JSONP, HTTP status modes, `context`,
//! `callId` and `time`.

mod rest_support;
mod stores;

use std::collections::HashSet;
use std::time::Duration;

use regex::Regex;
use rest_support::{NOW, assert_error, assert_ok, call_json, engine, json};
use serde_json::Value;

const JS: &str = "application/javascript";
const JSON: &str = "application/json; charset=utf-8";

/// The JSON inside `callback(<json>);`.
fn unwrap_jsonp(body: &str, callback: &str) -> Value {
    let inner = body
        .strip_prefix(&format!("{callback}("))
        .and_then(|rest| rest.strip_suffix(");"))
        .unwrap_or_else(|| panic!("not wrapped in {callback}: {body}"));
    serde_json::from_str(inner).unwrap()
}

store_tests! {
    fn json_is_the_default(kind) {
        let (engine, _) = engine(kind);
        let resp = engine.rest("accounts.getRegisteredCounters", &[]);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.content_type, JSON);
        assert!(
            resp.body.starts_with('{') && resp.body.ends_with('}'),
            "{}",
            resp.body
        );
        let explicit = engine.rest("accounts.getRegisteredCounters", &[("format", "json")]);
        assert_eq!(explicit.content_type, JSON);
        let empty = engine.rest("accounts.getRegisteredCounters", &[("format", "")]);
        assert_eq!(empty.content_type, JSON);
    }

    fn jsonp_wraps_successes_and_errors(kind) {
        let (engine, _) = engine(kind);
        let resp = engine.rest(
            "accounts.getRegisteredCounters",
            &[("format", "jsonp"), ("callback", "cb")],
        );
        assert_eq!(resp.status, 200);
        assert_eq!(resp.content_type, JS);
        assert!(
            resp.body.starts_with("cb(") && resp.body.ends_with(");"),
            "{}",
            resp.body
        );
        assert_ok(&unwrap_jsonp(&resp.body, "cb"));

        for callback in ["jQuery3210_1527", "window.my.cb", "$", "_a$1.b_2"] {
            let resp = engine.rest(
                "accounts.incrementCounters",
                &[("format", "jsonp"), ("callback", callback), ("UID", "u")],
            );
            assert_eq!(resp.content_type, JS);
            assert_error(&unwrap_jsonp(&resp.body, callback), 400_002, "`counters`");
        }
    }

    fn jsonp_injection_is_rejected_without_wrapping(kind) {
        let (engine, _) = engine(kind);
        let long = "a".repeat(129);
        for callback in [
            "alert(1)//",
            "a b",
            "<script>",
            "1abc",
            "a..b",
            ".cb",
            "cb.",
            "cb;alert(1)",
            "cb\n",
            "cb</script>",
            "cb\u{2028}",
            "caf\u{e9}",
            long.as_str(),
        ] {
            let resp = engine.rest(
                "accounts.getRegisteredCounters",
                &[("format", "jsonp"), ("callback", callback)],
            );
            assert_eq!(resp.status, 200);
            assert_eq!(resp.content_type, JSON, "{callback:?}");
            let body = json(&resp);
            assert_error(&body, 400_006, "`callback`");
            assert!(
                !resp.body.contains(callback),
                "echoed {callback:?}: {}",
                resp.body
            );
        }
        // The limit is 128 bytes.
        let max = "a".repeat(128);
        let resp = engine.rest(
            "accounts.getRegisteredCounters",
            &[("format", "jsonp"), ("callback", &max)],
        );
        assert_eq!(resp.content_type, JS);
    }

    fn jsonp_without_callback_is_400002_and_other_formats_400006(kind) {
        let (engine, _) = engine(kind);
        for params in [
            vec![("format", "jsonp")],
            vec![("format", "jsonp"), ("callback", "")],
        ] {
            let resp = engine.rest("accounts.getRegisteredCounters", &params);
            assert_eq!(resp.content_type, JSON);
            assert_error(&json(&resp), 400_002, "`callback`");
        }
        for format in ["xml", "JSON", "jsonp ", "html"] {
            let resp = engine.rest(
                "accounts.getRegisteredCounters",
                &[("format", format), ("callback", "cb")],
            );
            assert_eq!(resp.content_type, JSON);
            assert_error(&json(&resp), 400_006, "`format`");
        }
        // A callback with format=json is unused, so never checked.
        let resp = engine.rest(
            "accounts.getRegisteredCounters",
            &[("format", "json"), ("callback", "alert(1)//")],
        );
        assert_ok(&json(&resp));
    }

    fn a_rejected_envelope_applies_nothing(kind) {
        let (engine, _) = engine(kind);
        let resp = engine.rest(
            "accounts.registerCounters",
            &[
                ("counters", r#"[{"class":"c","path":"/a"}]"#),
                ("format", "jsonp"),
                ("callback", "bad callback"),
            ],
        );
        assert_error(&json(&resp), 400_006, "`callback`");
        let body = call_json(&engine, "accounts.getRegisteredCounters", &[]);
        assert_eq!(body["counters"].as_array().unwrap().len(), 0);
    }

    fn http_status_codes_mode(kind) {
        let (engine, _) = engine(kind);
        let missing = [("UID", "u")];
        let not_registered = [
            ("UID", "u"),
            ("counters", r#"[{"class":"nope","path":"/"}]"#),
        ];
        let cases: [(&[(&str, &str)], u16); 2] = [(&missing, 400), (&not_registered, 409)];
        for (params, status) in cases {
            for (flag, want) in [
                (None, 200),
                (Some("false"), 200),
                (Some("FALSE"), 200),
                (Some("0"), 200),
                (Some(""), 200),
                (Some("true"), status),
                (Some("True"), status),
                (Some("1"), status),
            ] {
                let mut p = params.to_vec();
                if let Some(flag) = flag {
                    p.push(("httpStatusCodes", flag));
                }
                let resp = engine.rest("accounts.incrementCounters", &p);
                assert_eq!(resp.status, want, "{flag:?} {}", resp.body);
                assert_eq!(json(&resp)["statusCode"], status);
            }
        }
        let resp = engine.rest(
            "accounts.getRegisteredCounters",
            &[("httpStatusCodes", "true")],
        );
        assert_eq!(resp.status, 200);

        // Errors about the envelope itself also follow the flag.
        let resp = engine.rest(
            "accounts.getRegisteredCounters",
            &[("httpStatusCodes", "true"), ("format", "xml")],
        );
        assert_eq!(resp.status, 400);

        // An unparseable flag is itself an error, reported with status 200.
        for flag in ["yes", "2", "tru"] {
            let resp = engine.rest(
                "accounts.getRegisteredCounters",
                &[("httpStatusCodes", flag)],
            );
            assert_eq!(resp.status, 200);
            assert_error(&json(&resp), 400_006, "`httpStatusCodes`");
        }
    }

    fn context_is_echoed_unchanged(kind) {
        let (engine, _) = engine(kind);
        for context in [
            "abc",
            "{\"k\": [1, 2]}",
            "é ü \u{2028} </script> \"quoted\"",
            "  spaced  ",
        ] {
            for (method, params) in [
                ("accounts.getRegisteredCounters", vec![("context", context)]),
                (
                    "accounts.incrementCounters",
                    vec![("context", context), ("UID", "u")],
                ),
            ] {
                let body = call_json(&engine, method, &params);
                assert_eq!(body["context"], context, "{body}");
            }
            let resp = engine.rest(
                "accounts.getRegisteredCounters",
                &[
                    ("context", context),
                    ("format", "jsonp"),
                    ("callback", "cb"),
                ],
            );
            assert!(!resp.body.contains('\u{2028}'));
            assert_eq!(unwrap_jsonp(&resp.body, "cb")["context"], context);
        }
        let body = call_json(&engine, "accounts.getRegisteredCounters", &[]);
        assert!(body.get("context").is_none(), "{body}");
    }

    fn call_ids_are_unique_lowercase_hex(kind) {
        let (engine, _) = engine(kind);
        let mut seen = HashSet::new();
        for i in 0..1000 {
            let method = if i % 2 == 0 {
                "accounts.getRegisteredCounters"
            } else {
                "accounts.nope"
            };
            let body = call_json(&engine, method, &[]);
            let id = body["callId"].as_str().unwrap().to_owned();
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
            assert!(seen.insert(id), "duplicate callId");
        }
    }

    fn time_is_iso_millis_from_the_engine_clock(kind) {
        let (engine, clock) = engine(kind);
        let pattern = Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$").unwrap();
        let body = call_json(&engine, "accounts.getRegisteredCounters", &[]);
        let time = body["time"].as_str().unwrap();
        assert!(pattern.is_match(time), "{time}");
        assert_eq!(time, "2026-11-27T12:00:00.000Z");
        assert_eq!(NOW, 1_795_780_800);

        clock.advance(Duration::from_millis(90_061_943));
        let body = call_json(&engine, "accounts.nope", &[]);
        let time = body["time"].as_str().unwrap();
        assert!(pattern.is_match(time), "{time}");
        assert_eq!(time, "2026-11-28T13:01:01.943Z");
    }

    fn body_has_exactly_the_documented_fields(kind) {
        let (engine, _) = engine(kind);
        let ok = call_json(
            &engine,
            "accounts.incrementCounters",
            &[("UID", "u"), ("counters", r#"[{"class":"c","path":"/"}]"#)],
        );
        let mut keys: Vec<&str> = ok.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        // "c" is unknown: an error body.
        assert_eq!(
            keys,
            [
                "callId",
                "errorCode",
                "errorDetails",
                "errorMessage",
                "statusCode",
                "statusReason",
                "time"
            ]
        );
        let ok = call_json(
            &engine,
            "accounts.unregisterCounters",
            &[("counters", r#"[{"class":"c","path":"/a"}]"#)],
        );
        let mut keys: Vec<&str> = ok.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["callId", "errorCode", "statusCode", "statusReason", "time"]
        );
    }
}
