//! Every REST method's success shape, through the REST layer only
//! (`tally::rest::call`, and `tally::rest::call_cluster` on the shared store).

mod rest_support;
mod stores;

use std::time::Duration;

use rest_support::{assert_ok, call_json, engine, register, rows, totals};
use serde_json::json;

store_tests! {
    fn register_and_get_registered_counters(kind) {
        let (engine, _) = engine(kind);
        let body = call_json(
            &engine,
            "accounts.registerCounters",
            &[(
                "counters",
                r#"[{"class":"shares","path":"/news/sport"},{"class":"_purchases","path":"/shop"},{"class":"shares","path":"/news"}]"#,
            )],
        );
        assert_ok(&body);
        assert!(body.get("counters").is_none(), "{body}");

        let body = call_json(&engine, "accounts.getRegisteredCounters", &[]);
        assert_ok(&body);
        assert_eq!(
            body["counters"],
            json!([
                {"class": "_purchases", "path": "/shop"},
                {"class": "shares", "path": "/news"},
                {"class": "shares", "path": "/news/sport"},
            ])
        );
    }

    fn get_registered_counters_of_a_fresh_engine_is_empty(kind) {
        let (engine, _) = engine(kind);
        let body = call_json(
            &engine,
            "accounts.getRegisteredCounters",
            &[("UID", "ignored")],
        );
        assert_ok(&body);
        assert_eq!(body["counters"], json!([]));
    }

    fn increment_then_get_counters_row_shape(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"_purchases","path":"/shop"}]"#);
        let body = call_json(
            &engine,
            "accounts.incrementCounters",
            &[
                ("UID", "uid-1"),
                (
                    "counters",
                    r#"[{"class":"_purchases","path":"/","value":200},{"class":"_purchases","path":"/shop","count":2,"value":50}]"#,
                ),
            ],
        );
        assert_ok(&body);
        assert!(body.get("counters").is_none(), "{body}");

        let body = call_json(&engine, "accounts.getCounters", &[("UID", "uid-1")]);
        assert_ok(&body);
        assert_eq!(
            body["counters"],
            json!([
                {"class": "_purchases", "path": "/", "period": "total", "count": 3, "value": 250,
                 "lastUpdated": "2026-11-27 12:00:00Z", "lastUpdatedTimestamp": 1_795_780_800},
                {"class": "_purchases", "path": "/shop", "period": "total", "count": 2, "value": 50,
                 "lastUpdated": "2026-11-27 12:00:00Z", "lastUpdatedTimestamp": 1_795_780_800},
            ])
        );
    }

    fn get_counters_with_selectors(kind) {
        let (engine, clock) = engine(kind);
        register(
            &engine,
            r#"[{"class":"shares","path":"/news"},{"class":"likes","path":"/"}]"#,
        );
        let inc = r#"[{"class":"shares","path":"/news","count":"3"},{"class":"likes","path":"/"}]"#;
        assert_ok(&call_json(
            &engine,
            "accounts.incrementCounters",
            &[("UID", "uid-1"), ("counters", inc)],
        ));
        clock.advance(Duration::from_secs(86_400));
        assert_ok(&call_json(
            &engine,
            "accounts.incrementCounters",
            &[("UID", "uid-1"), ("counters", inc)],
        ));

        let body = call_json(
            &engine,
            "accounts.getCounters",
            &[
                ("UID", "uid-1"),
                (
                    "counters",
                    r#"[{"class":"shares","path":"/news","period":"261127"},{"class":"shares","path":"/news","period":"last7Days"},{"class":"likes","period":"2611"}]"#,
                ),
            ],
        );
        assert_ok(&body);
        let got: Vec<(String, String, String, i64)> = body["counters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["class"].as_str().unwrap().to_owned(),
                    r["path"].as_str().unwrap().to_owned(),
                    r["period"].as_str().unwrap().to_owned(),
                    r["count"].as_i64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, String, String, i64)> = [
            ("likes", "/", "2611", 2),
            ("shares", "/news", "261127", 3),
            ("shares", "/news", "last7Days", 6),
        ]
        .iter()
        .map(|&(c, p, q, n)| (c.into(), p.into(), q.into(), n))
        .collect();
        assert_eq!(got, want);

        // A regex selector over the period keys.
        let body = call_json(
            &engine,
            "accounts.getCounters",
            &[
                ("UID", "uid-1"),
                (
                    "counters",
                    r#"[{"class":"regex('^sh')","path":"/news","period":"regex('^\\d{6}$')"}]"#,
                ),
            ],
        );
        assert_ok(&body);
        let periods: Vec<&str> = body["counters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["period"].as_str().unwrap())
            .collect();
        assert_eq!(periods, ["261127", "261128"]);
    }

    fn get_counters_empty_selector_list_and_unknown_subject(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"shares","path":"/news"}]"#);
        call_json(
            &engine,
            "accounts.incrementCounters",
            &[
                ("UID", "u"),
                ("counters", r#"[{"class":"shares","path":"/news"}]"#),
            ],
        );
        let all = call_json(
            &engine,
            "accounts.getCounters",
            &[("UID", "u"), ("counters", "[]")],
        );
        assert_ok(&all);
        assert_eq!(all["counters"].as_array().unwrap().len(), 2);
        assert_eq!(
            all["counters"],
            call_json(&engine, "accounts.getCounters", &[("UID", "u")])["counters"]
        );

        let nobody = call_json(&engine, "accounts.getCounters", &[("UID", "nobody")]);
        assert_ok(&nobody);
        assert_eq!(nobody["counters"], json!([]));
    }

    fn counts_and_values_as_strings_and_negatives(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        let body = call_json(
            &engine,
            "accounts.incrementCounters",
            &[
                ("UID", "u"),
                (
                    "counters",
                    r#"[{"class":"c","path":"/a","count":"5","value":"-3"},{"class":"c","path":"/a","count":-1,"value":null,"extra":"ignored"}]"#,
                ),
            ],
        );
        assert_ok(&body);
        assert_eq!(
            totals(&engine, "u"),
            rows(&[("c", "/", 4, -3), ("c", "/a", 4, -3)])
        );
    }

    fn unregister_stops_counting_but_keeps_data(kind) {
        let (engine, _) = engine(kind);
        register(
            &engine,
            r#"[{"class":"c","path":"/a"},{"class":"c","path":"/b"}]"#,
        );
        let inc_a = [("UID", "u"), ("counters", r#"[{"class":"c","path":"/a"}]"#)];
        assert_ok(&call_json(&engine, "accounts.incrementCounters", &inc_a));

        let body = call_json(
            &engine,
            "accounts.unregisterCounters",
            &[("counters", r#"[{"class":"c","path":"/a"}]"#)],
        );
        assert_ok(&body);
        assert_eq!(
            call_json(&engine, "accounts.getRegisteredCounters", &[])["counters"],
            json!([{"class": "c", "path": "/b"}])
        );
        let body = call_json(&engine, "accounts.incrementCounters", &inc_a);
        assert_eq!(body["errorCode"], 409_011, "{body}");
        assert_eq!(
            totals(&engine, "u"),
            rows(&[("c", "/", 1, 0), ("c", "/a", 1, 0)])
        );
    }

    fn reg_token_subject(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        let token = engine.issue_reg_token("uid-1").unwrap();
        let body = call_json(
            &engine,
            "accounts.incrementCounters",
            &[
                ("regToken", token.as_str()),
                ("counters", r#"[{"class":"c","path":"/a","count":2}]"#),
            ],
        );
        assert_ok(&body);
        // The token's counters are the UID's.
        assert_eq!(
            totals(&engine, "uid-1"),
            rows(&[("c", "/", 2, 0), ("c", "/a", 2, 0)])
        );
        let by_token = call_json(
            &engine,
            "accounts.getCounters",
            &[("regToken", token.as_str())],
        );
        assert_ok(&by_token);
        assert_eq!(by_token["counters"].as_array().unwrap().len(), 2);
        // An empty UID beside a token is no UID.
        let body = call_json(
            &engine,
            "accounts.getCounters",
            &[("UID", ""), ("regToken", token.as_str())],
        );
        assert_ok(&body);
    }

    fn sdk_parameters_are_ignored(kind) {
        let (engine, _) = engine(kind);
        let sdk = [
            ("apiKey", "3_abc"),
            ("userKey", "AK"),
            ("secret", "s3cr3t"),
            ("timestamp", "1427024545"),
            ("nonce", "123.456"),
            ("sig", "abc="),
            ("sig", "twice"),
            ("sdk", "js_latest"),
            ("targetEnv", "jssdk"),
            ("format", "json"),
            ("httpStatusCodes", "false"),
        ];
        let mut params = sdk.to_vec();
        params.push(("counters", r#"[{"class":"c","path":"/a"}]"#));
        assert_ok(&call_json(&engine, "accounts.registerCounters", &params));
        let mut params = sdk.to_vec();
        params.extend([("UID", "u"), ("counters", r#"[{"class":"c","path":"/a"}]"#)]);
        assert_ok(&call_json(&engine, "accounts.incrementCounters", &params));
        let mut params = sdk.to_vec();
        params.push(("UID", "u"));
        let body = call_json(&engine, "accounts.getCounters", &params);
        assert_ok(&body);
        assert_eq!(body["counters"].as_array().unwrap().len(), 2);
        assert_ok(&call_json(&engine, "accounts.getRegisteredCounters", &sdk));
    }

    fn a_parameter_repeated_with_the_same_value_is_that_value(kind) {
        let (engine, _) = engine(kind);
        register(&engine, r#"[{"class":"c","path":"/a"}]"#);
        let counters = r#"[{"class":"c","path":"/a","count":2}]"#;
        let params = [
            ("format", "json"),
            ("UID", "u"),
            ("counters", counters),
            ("format", "json"),
            ("UID", "u"),
            ("counters", counters),
        ];
        assert_ok(&call_json(&engine, "accounts.incrementCounters", &params));
        // Applied once: the parameter's value, not two batches.
        assert_eq!(
            totals(&engine, "u"),
            rows(&[("c", "/", 2, 0), ("c", "/a", 2, 0)])
        );
        let conflicting = [("UID", "u"), ("UID", "v"), ("counters", counters)];
        let body = call_json(&engine, "accounts.incrementCounters", &conflicting);
        rest_support::assert_error(&body, 400_006, "UID");
        assert_eq!(
            totals(&engine, "u"),
            rows(&[("c", "/", 2, 0), ("c", "/a", 2, 0)])
        );
    }

    fn registration_methods_ignore_the_subject(kind) {
        let (engine, _) = engine(kind);
        let body = call_json(
            &engine,
            "accounts.registerCounters",
            &[
                ("UID", "a"),
                ("UID", "b"),
                ("regToken", "whatever"),
                ("counters", r#"[{"class":"c","path":"/a"}]"#),
            ],
        );
        assert_ok(&body);
    }
}
