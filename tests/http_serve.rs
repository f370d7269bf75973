//! `tally serve`: the real binary on an ephemeral loopback port, driven by
//! an HTTP client, stopped by SIGTERM (or SIGINT, as Ctrl-C sends), then
//! restarted on the same data directory to read the same counters back.

#![cfg(unix)]

mod serve_support;

use serde_json::Value;
use serve_support::ServeProcess;

fn totals(body: &Value) -> Vec<(String, i64, i64)> {
    assert_eq!(body["errorCode"], 0, "{body}");
    body["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                r["count"].as_i64().unwrap(),
                r["value"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn serve_stop_and_restart_keep_the_counters() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path(), &["--durability", "always"]);
    assert!(server.banner.contains("OPEN"), "{}", server.banner);
    let counters = r#"[{"class":"shares","path":"/news"}]"#;
    let body = server.call("accounts.registerCounters", &[("counters", counters)]);
    assert_eq!(body["errorCode"], 0, "{body}");
    let entries = r#"[{"class":"shares","path":"/news","count":2,"value":"9"}]"#;
    for uid in ["u1", "u1", "u2"] {
        let body = server.call(
            "accounts.incrementCounters",
            &[("UID", uid), ("counters", entries)],
        );
        assert_eq!(body["errorCode"], 0, "{body}");
    }
    let before = totals(&server.call("accounts.getCounters", &[("UID", "u1")]));
    assert_eq!(
        before,
        [("/".to_owned(), 4, 18), ("/news".to_owned(), 4, 18)]
    );
    let rest = server.stop("-TERM");
    assert!(
        rest.contains("final snapshot") && rest.contains("stopped"),
        "{rest}"
    );

    let server = ServeProcess::start(dir.path(), &[]);
    assert!(
        server.banner.contains("2 subjects recovered"),
        "{}",
        server.banner
    );
    let after = totals(&server.call("accounts.getCounters", &[("UID", "u1")]));
    assert_eq!(after, before);
    let registered = server.call("accounts.getRegisteredCounters", &[]);
    assert_eq!(registered["counters"][0]["path"], "/news", "{registered}");
    server.stop("-INT");
}

#[test]
fn serve_with_keys_requires_them() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "# test keys\napi-key 3_site c2VjcmV0LWJ5dGVz\n").unwrap();
    let data = dir.path().join("data");
    let server = ServeProcess::start(&data, &["--keys", keys.to_str().unwrap()]);
    assert!(
        server
            .banner
            .contains("authorization required: 1 API keys, 0 user keys"),
        "{}",
        server.banner
    );
    let body = server.call("accounts.getRegisteredCounters", &[]);
    assert_eq!(body["errorCode"], 400_093, "{body}");
    let body = server.call(
        "accounts.getRegisteredCounters",
        &[("apiKey", "3_site"), ("secret", "c2VjcmV0LWJ5dGVz")],
    );
    assert_eq!(body["errorCode"], 0, "{body}");
    server.stop("-TERM");
}
