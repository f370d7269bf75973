//! Every error code reachable through REST, and that rejected calls change nothing.

mod rest_support;
mod stores;

use std::time::Duration;

use rest_support::{assert_error, assert_ok, call_json, engine, register, rows, totals};
use serde_json::json;

const INC: &str = "accounts.incrementCounters";

/// A method, its parameters, and what the error details must mention.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

store_tests! {
    fn missing_parameters_are_400002(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        let entry = r#"[{"class":"c","path":"/a"}]"#;
        let cases: Vec<Case<'_>> = vec![
            (INC, vec![("counters", entry)], "`UID`"),
            (INC, vec![("UID", ""), ("counters", entry)], "`UID`"),
            (INC, vec![("regToken", ""), ("counters", entry)], "`UID`"),
            ("accounts.getCounters", vec![], "`UID`"),
            (INC, vec![("UID", "u")], "`counters`"),
            (INC, vec![("UID", "u"), ("counters", "")], "`counters`"),
            (INC, vec![("UID", "u"), ("counters", "[]")], "`counters`"),
            ("accounts.registerCounters", vec![], "`counters`"),
            (
                "accounts.registerCounters",
                vec![("counters", "[]")],
                "`counters`",
            ),
            (
                "accounts.unregisterCounters",
                vec![("counters", " [ ] ")],
                "`counters`",
            ),
            (
                INC,
                vec![
                    ("UID", "u"),
                    ("counters", r#"[{"class":"c","path":"/a"},{"class":"c"}]"#),
                ],
                "`counters[1].path`",
            ),
            (
                INC,
                vec![("UID", "u"), ("counters", r#"[{"path":"/a"}]"#)],
                "`counters[0].class`",
            ),
            (
                INC,
                vec![
                    ("UID", "u"),
                    ("counters", r#"[{"class":null,"path":"/a"}]"#),
                ],
                "`counters[0].class`",
            ),
            (
                "accounts.registerCounters",
                vec![(
                    "counters",
                    r#"[{"class":"c","path":"/a"},{"class":"c","path":"/b"},{"class":"d"}]"#,
                )],
                "`counters[2].path`",
            ),
            (
                "accounts.getCounters",
                vec![("UID", "u"), ("counters", r#"[{"path":"/a"}]"#)],
                "`counters[0].class`",
            ),
        ];
        for (method, params, mentions) in cases {
            let body = call_json(&engine, method, &params);
            assert_error(&body, 400_002, mentions);
            assert_eq!(body["errorMessage"], "Missing required parameter");
            assert_eq!(body["statusReason"], "Bad Request");
        }
        assert_eq!(totals(&engine, "u"), rows(&[]));
        assert_eq!(
            call_json(&engine, "accounts.getRegisteredCounters", &[])["counters"],
            json!([{"class": "c", "path": "/a"}])
        );
    }

    fn malformed_counters_are_400004(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        for (counters, mentions) in [
            ("[{\"class\":\"c\",\"path\":\"/a\"", "`counters`"),
            ("not json", "`counters`"),
            ("{\"class\":\"c\",\"path\":\"/a\"}", "`counters`"),
            ("\"[]\"", "`counters`"),
            ("null", "`counters`"),
            ("[{\"class\":\"c\",\"path\":\"/a\"}, 5]", "`counters[1]`"),
            ("[[\"c\", \"/a\"]]", "`counters[0]`"),
            // Valid JSON beyond what serde_json holds, where an array or an
            // object must be.
            ("1e400", "`counters`"),
            (
                "[{\"class\":\"c\",\"path\":\"/a\"}, -1e400]",
                "`counters[1]`",
            ),
        ] {
            let body = call_json(&engine, INC, &[("UID", "u"), ("counters", counters)]);
            assert_error(&body, 400_004, mentions);
            assert_eq!(body["errorMessage"], "Invalid parameter format");
            let body = call_json(
                &engine,
                "accounts.getCounters",
                &[("UID", "u"), ("counters", counters)],
            );
            assert_error(&body, 400_004, mentions);
            let body = call_json(
                &engine,
                "accounts.registerCounters",
                &[("counters", counters)],
            );
            assert_error(&body, 400_004, mentions);
        }
        assert_eq!(totals(&engine, "u"), rows(&[]));
    }

    fn bad_count_or_value_is_400006_and_changes_nothing(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        let good = r#"{"class":"c","path":"/a","count":2,"value":10}"#;
        assert_ok(&call_json(
            &engine,
            INC,
            &[("UID", "u"), ("counters", &format!("[{good}]"))],
        ));
        let before = totals(&engine, "u");
        assert_eq!(before, rows(&[("c", "/", 2, 10), ("c", "/a", 2, 10)]));

        for bad in [
            "1.5",
            "\"abc\"",
            "\"1.5\"",
            "true",
            "{}",
            "[3]",
            "12345678901234567890",
            "-9223372036854775809",
            "\"99999999999999999999\"",
            // Valid JSON, beyond even f64: the field is named, not `counters`.
            "1e400",
            "-1e400",
            "[1e400]",
        ] {
            for field in ["count", "value"] {
                let counters = format!(r#"[{good},{{"class":"c","path":"/a","{field}":{bad}}}]"#);
                let body = call_json(&engine, INC, &[("UID", "u"), ("counters", &counters)]);
                assert_error(&body, 400_006, &format!("`counters[1].{field}`"));
                assert_eq!(body["errorMessage"], "Invalid parameter value");
            }
        }
        assert_eq!(totals(&engine, "u"), before);
    }

    fn wrongly_typed_strings_are_400006(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        for (method, counters, mentions) in [
            (INC, r#"[{"class":5,"path":"/a"}]"#, "`counters[0].class`"),
            (
                INC,
                r#"[{"class":"c","path":["/a"]}]"#,
                "`counters[0].path`",
            ),
            (
                "accounts.registerCounters",
                r#"[{"class":"c","path":true}]"#,
                "`counters[0].path`",
            ),
            (
                "accounts.getCounters",
                r#"[{"class":"c","path":1}]"#,
                "`counters[0].path`",
            ),
            (
                "accounts.getCounters",
                r#"[{"class":"c","period":2611}]"#,
                "`counters[0].period`",
            ),
        ] {
            let body = call_json(&engine, method, &[("UID", "u"), ("counters", counters)]);
            assert_error(&body, 400_006, mentions);
        }
    }

    fn engine_validation_errors_are_400006(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        let cases: Vec<Case<'_>> = vec![
            (
                "accounts.registerCounters",
                vec![("counters", r#"[{"class":"c","path":"/a/b/c"}]"#)],
                "entry 0",
            ),
            (
                "accounts.registerCounters",
                vec![(
                    "counters",
                    r#"[{"class":"c","path":"/x"},{"class":"has space","path":"/x"}]"#,
                )],
                "entry 1",
            ),
            (
                "accounts.registerCounters",
                vec![("counters", r#"[{"class":"c","path":"no-slash"}]"#)],
                "no-slash",
            ),
            (
                INC,
                vec![
                    ("UID", "u"),
                    ("regToken", "t"),
                    ("counters", r#"[{"class":"c","path":"/a"}]"#),
                ],
                "not both",
            ),
            (
                INC,
                vec![
                    ("UID", "u\u{1}"),
                    ("counters", r#"[{"class":"c","path":"/a"}]"#),
                ],
                "UID",
            ),
            (
                "accounts.getCounters",
                vec![
                    ("UID", "u"),
                    ("counters", r#"[{"class":"c","period":"yesterday"}]"#),
                ],
                "yesterday",
            ),
            (
                "accounts.getCounters",
                vec![("UID", "u"), ("counters", r#"[{"class":"regex('(')"}]"#)],
                "regular expression",
            ),
        ];
        for (method, params, mentions) in cases {
            assert_error(&call_json(&engine, method, &params), 400_006, mentions);
        }
        // Nothing of the rejected registration was registered.
        assert_eq!(
            call_json(&engine, "accounts.getRegisteredCounters", &[])["counters"],
            json!([{"class": "c", "path": "/a"}])
        );
    }

    fn overflow_is_400006_and_changes_nothing(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        let max = format!(r#"[{{"class":"c","path":"/a","value":"{}"}}]"#, i64::MAX);
        assert_ok(&call_json(
            &engine,
            INC,
            &[("UID", "u"), ("counters", &max)],
        ));
        let body = call_json(
            &engine,
            INC,
            &[
                ("UID", "u"),
                (
                    "counters",
                    r#"[{"class":"c","path":"/","count":0,"value":1}]"#,
                ),
            ],
        );
        assert_error(&body, 400_006, "overflow");
        assert_eq!(
            totals(&engine, "u"),
            rows(&[("c", "/", 1, i64::MAX), ("c", "/a", 1, i64::MAX)])
        );
    }

    fn the_first_bad_entry_is_named_whether_its_fields_or_the_engine_reject_it(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        let max = format!(r#"[{{"class":"c","path":"/a","count":"{}"}}]"#, i64::MAX);
        assert_ok(&call_json(
            &engine,
            INC,
            &[("UID", "u"), ("counters", &max)],
        ));
        let before = totals(&engine, "u");
        let cases: [(&str, &str, u32, &str); 6] = [
            // The engine rejects entry 0; entry 1's fields are bad.
            (
                "u",
                r#"[{"class":"c","path":"/nope"},{"class":"c","path":"/","count":"abc"}]"#,
                409_011,
                "entry 0",
            ),
            (
                "u",
                r#"[{"class":"bad class","path":"/"},{"class":"c"}]"#,
                400_006,
                "entry 0",
            ),
            (
                "u",
                r#"[{"class":"c","path":"/a"},{"class":"c","path":"/a","value":true}]"#,
                400_006,
                "overflow",
            ),
            // Entry 0 is good: entry 1's fields are named, as before.
            (
                "u",
                r#"[{"class":"c","path":"/a","count":0},{"class":"c"}]"#,
                400_002,
                "`counters[1].path`",
            ),
            // The engine rejects entry 1; entry 0's fields are bad.
            (
                "u",
                r#"[{"class":"c","path":"/a","count":1.5},{"class":"c","path":"/nope"}]"#,
                400_006,
                "`counters[0].count`",
            ),
            // The subject's value is checked before the entries.
            ("u\u{1}", r#"[{"class":"c"}]"#, 400_006, "UID"),
        ];
        for (uid, counters, code, mentions) in cases {
            let body = call_json(&engine, INC, &[("UID", uid), ("counters", counters)]);
            assert_error(&body, code, mentions);
            assert_eq!(totals(&engine, "u"), before, "{counters}");
        }
    }

    fn unregistered_counters_are_409011(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        for (counters, mentions) in [
            (
                r#"[{"class":"c","path":"/a"},{"class":"c","path":"/b"}]"#,
                "entry 1",
            ),
            (r#"[{"class":"unknown","path":"/"}]"#, "unknown"),
        ] {
            let body = call_json(&engine, INC, &[("UID", "u"), ("counters", counters)]);
            assert_error(&body, 409_011, mentions);
            assert_eq!(body["errorMessage"], "Counter not registered");
            assert_eq!(body["statusReason"], "Conflict");
        }
        assert_eq!(totals(&engine, "u"), rows(&[]));
    }

    fn unknown_and_expired_reg_tokens_are_400006(kind) {
        let (engine, clock) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        let entry = r#"[{"class":"c","path":"/a"}]"#;
        let body = call_json(
            &engine,
            INC,
            &[("regToken", "not-a-token"), ("counters", entry)],
        );
        assert_error(&body, 400_006, "unknown regToken");

        let token = engine.issue_reg_token("uid-1").unwrap();
        clock.advance(Duration::from_secs(2 * 3600));
        let body = call_json(
            &engine,
            INC,
            &[("regToken", token.as_str()), ("counters", entry)],
        );
        assert_error(&body, 400_006, "expired");
        let body = call_json(
            &engine,
            "accounts.getCounters",
            &[("regToken", token.as_str())],
        );
        assert_error(&body, 400_006, "expired");
        assert_eq!(totals(&engine, "uid-1"), rows(&[]));
    }

    fn conflicting_duplicate_parameters_are_400006(kind) {
        // (A parameter repeated with the same value is that value: rest_methods.rs.)
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        let entry = r#"[{"class":"c","path":"/a"}]"#;
        let other = r#"[{"class":"c","path":"/"}]"#;
        let cases: Vec<Case<'_>> = vec![
            (
                INC,
                vec![("UID", "u"), ("UID", "v"), ("counters", entry)],
                "`UID`",
            ),
            (
                INC,
                vec![("UID", "u"), ("counters", entry), ("counters", other)],
                "`counters`",
            ),
            (
                INC,
                vec![("regToken", "t"), ("regToken", "t2"), ("counters", entry)],
                "`regToken`",
            ),
            (
                "accounts.getCounters",
                vec![("UID", "u"), ("UID", "")],
                "`UID`",
            ),
            (
                "accounts.registerCounters",
                vec![("counters", entry), ("counters", "[]")],
                "`counters`",
            ),
            (
                "accounts.getRegisteredCounters",
                vec![("format", "json"), ("format", "jsonp"), ("callback", "cb")],
                "`format`",
            ),
            (
                INC,
                vec![
                    ("UID", "u"),
                    ("counters", entry),
                    ("httpStatusCodes", "true"),
                    ("httpStatusCodes", "false"),
                ],
                "`httpStatusCodes`",
            ),
            (
                INC,
                vec![
                    ("UID", "u"),
                    ("counters", entry),
                    ("context", "a"),
                    ("context", "b"),
                ],
                "`context`",
            ),
        ];
        for (method, params, mentions) in cases {
            let body = call_json(&engine, method, &params);
            assert_error(&body, 400_006, mentions);
            assert!(body.get("context").is_none(), "{body}");
        }
        assert_eq!(totals(&engine, "u"), rows(&[]));
    }

    fn unknown_methods_are_errors_not_panics(kind) {
        let (engine, _) = engine(kind);
        for method in [
            "accounts.nope",
            "",
            "accounts.incrementcounters",
            "socialize.getUserInfo",
            "\u{0}\u{2028}é",
        ] {
            let body = call_json(&engine, method, &[("UID", "u")]);
            assert_error(&body, 400_006, "method");
        }
        let body = call_json(&engine, "accounts.nope", &[]);
        assert_error(&body, 400_006, "accounts.nope");
        let long = "x".repeat(100_000);
        let body = call_json(&engine, &long, &[]);
        assert_error(&body, 400_006, "unknown method");
        assert!(body["errorDetails"].as_str().unwrap().len() < 1_000);
    }

    fn hostile_inputs_never_panic(kind) {
        let (engine, _) = engine(kind);
        let deep = "[".repeat(100_000);
        let huge = format!(
            r#"[{{"class":"c","path":"/","count":{}}}]"#,
            "9".repeat(10_000)
        );
        // A 10,000-digit count is a bad value where it is read, and an
        // ignored field where it is not (selectors, registration).
        let body = call_json(&engine, INC, &[("UID", "u"), ("counters", &huge)]);
        assert_error(&body, 400_006, "`counters[0].count`");
        assert!(body["errorDetails"].as_str().unwrap().len() < 1_000);
        for method in ["accounts.getCounters", "accounts.registerCounters"] {
            let body = call_json(&engine, method, &[("UID", "u"), ("counters", &huge)]);
            assert_eq!(body["errorCode"], 0, "{body}");
        }
        for counters in [deep.as_str(), "\u{0}", "[{\"class\":\"\\ud800\"}]", "[{}]"] {
            for method in [
                "accounts.registerCounters",
                "accounts.unregisterCounters",
                INC,
                "accounts.getCounters",
            ] {
                let body = call_json(&engine, method, &[("UID", "u"), ("counters", counters)]);
                assert!(body["errorCode"].as_u64().unwrap() >= 400_000, "{body}");
            }
        }
    }
}
