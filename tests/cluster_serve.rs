//! Two `tally serve --redis-cluster` processes on one cluster (the shared
//! test cluster, `TALLY_TEST_CLUSTER`, in a namespace of their own):
//! many writers drive both at once, and every acknowledged call is
//! counted exactly once, read through either server; a registration made
//! through one server is honoured by the other.

mod cluster_support;
mod serve_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cluster_support::{fresh_namespace, shared_seeds};
use serde_json::Value;
use serve_support::ServeProcess;

/// Platform-shaped UIDs: 32 hexadecimal characters.
const UIDS: [&str; 4] = [
    "0f3a9c1d7e2b4a6c8d0e1f2a3b4c5d6e",
    "a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b",
    "ffffffffffffffffffffffffffffffff",
];
const WRITERS: usize = 16;
const CALLS_PER_WRITER: usize = 60;

fn row(body: &Value, path: &str) -> (i64, i64) {
    assert_eq!(body["errorCode"], 0, "{body}");
    let rows = body["counters"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|row| row["path"] == path)
        .unwrap_or_else(|| panic!("no row for {path} in {body}"));
    (
        row["count"].as_i64().unwrap(),
        row["value"].as_i64().unwrap(),
    )
}

#[test]
fn cluster_two_servers_count_every_acknowledged_call_once() {
    let seeds = shared_seeds();
    let namespace = fresh_namespace("two-servers");
    let servers = Arc::new([
        ServeProcess::on_cluster(&seeds, &namespace, &[]),
        ServeProcess::on_cluster(&seeds, &namespace, &[]),
    ]);
    let registered = servers[0].call(
        "accounts.registerCounters",
        &[(
            "counters",
            r#"[{"class":"plays","path":"/music"},{"class":"plays","path":"/music/jazz"}]"#,
        )],
    );
    assert_eq!(registered["errorCode"], 0, "{registered}");

    // Each writer alternates between the servers; call k adds value k.
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let servers = Arc::clone(&servers);
            std::thread::spawn(move || {
                let mut acknowledged: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
                for call in 0..CALLS_PER_WRITER {
                    let uid = UIDS[(writer + call) % UIDS.len()];
                    let value = (writer * CALLS_PER_WRITER + call) as i64;
                    let counters =
                        format!(r#"[{{"class":"plays","path":"/music/jazz","value":{value}}}]"#);
                    let body = servers[(writer + call) % 2].call(
                        "accounts.incrementCounters",
                        &[("UID", uid), ("counters", &counters)],
                    );
                    if body["errorCode"] == 0 {
                        let total = acknowledged.entry(uid).or_default();
                        total.0 += 1;
                        total.1 += value;
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut expected: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for writer in writers {
        for (uid, (count, value)) in writer.join().unwrap() {
            let total = expected.entry(uid).or_default();
            total.0 += count;
            total.1 += value;
        }
    }
    let acknowledged: i64 = expected.values().map(|(count, _)| count).sum();
    assert_eq!(
        acknowledged,
        (WRITERS * CALLS_PER_WRITER) as i64,
        "every call is answered ok while the cluster is up"
    );

    for server in servers.iter() {
        for (uid, total) in &expected {
            let body = server.call("accounts.getCounters", &[("UID", uid)]);
            assert_eq!(row(&body, "/music/jazz"), *total, "{uid}");
            // The roll-up to the registered parent counted each call once too.
            assert_eq!(row(&body, "/music"), *total, "{uid}");
        }
    }
}

#[test]
fn cluster_a_registration_through_one_server_is_honoured_by_the_other() {
    let seeds = shared_seeds();
    let namespace = fresh_namespace("registration");
    let first = ServeProcess::on_cluster(&seeds, &namespace, &[]);
    let second = ServeProcess::on_cluster(&seeds, &namespace, &[]);
    let uid = UIDS[0];
    let counters = r#"[{"class":"likes","path":"/photos"}]"#;

    let before = second.call(
        "accounts.incrementCounters",
        &[("UID", uid), ("counters", counters)],
    );
    assert_eq!(before["errorCode"], 409011, "not registered yet: {before}");

    let registered = first.call("accounts.registerCounters", &[("counters", counters)]);
    assert_eq!(registered["errorCode"], 0, "{registered}");
    // An increment of a pair the server has not seen yet reads the
    // registry again before it refuses: honoured at once.
    let after = second.call(
        "accounts.incrementCounters",
        &[("UID", uid), ("counters", counters)],
    );
    assert_eq!(after["errorCode"], 0, "{after}");

    // And the listing catches up by the periodic refresh (every second).
    let more = r#"[{"class":"likes","path":"/videos"}]"#;
    let registered = second.call("accounts.registerCounters", &[("counters", more)]);
    assert_eq!(registered["errorCode"], 0, "{registered}");
    std::thread::sleep(tally::cluster::DEFAULT_REGISTRY_REFRESH + Duration::from_secs(1));
    let listed = first.call("accounts.getRegisteredCounters", &[]);
    assert_eq!(listed["errorCode"], 0, "{listed}");
    let paths: Vec<&str> = listed["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/photos") && paths.contains(&"/videos"),
        "{listed}"
    );
}
