//! `tally serve`: the real binary on an ephemeral loopback port, driven by
//! an HTTP client, stopped by SIGTERM (or SIGINT, as Ctrl-C sends), then
//! restarted on the same data directory to read the same counters back.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use serde_json::Value;

struct Serve {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: String,
    banner: String,
}

impl Serve {
    fn start(dir: &Path, extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["serve", "--data-dir", dir.to_str().unwrap()])
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tally serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        for _ in 0..2 {
            stdout.read_line(&mut banner).unwrap();
        }
        let addr = banner
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("no address in {banner:?}"))
            .to_owned();
        Serve {
            child,
            stdout,
            addr,
            banner,
        }
    }

    fn call(&self, method: &str, params: &[(&str, &str)]) -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(format!("http://{}/{method}", self.addr))
            .send_form(params.iter().copied())
            .unwrap();
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// Sends `signal`, waits for the exit, and returns the rest of stdout.
    fn stop(mut self, signal: &str) -> String {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        assert!(exit.success(), "{exit}: {rest}");
        rest
    }
}

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
    let server = Serve::start(dir.path(), &["--durability", "always"]);
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

    let server = Serve::start(dir.path(), &[]);
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
    let server = Serve::start(&data, &["--keys", keys.to_str().unwrap()]);
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
