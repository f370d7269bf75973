//! The HTTP router on the shared store, against a one-node cluster this
//! test owns: `/healthz` says ok while the cluster answers and
//! "unavailable" (503) while it does not; a call meanwhile is a 500001
//! envelope saying the store is unavailable; the server stays up and,
//! once the node is back, answers again without a restart, having
//! counted exactly the acknowledged calls.

mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::LoneNode;
use serde_json::Value;
use tally::cluster::Cluster;

const UID: &str = "6f1c0a9e2b7d4c3a8e5f0b1d2c3a4e5f";

/// A server on the router; it stops with its runtime.
struct Served {
    _runtime: tokio::runtime::Runtime,
    addr: String,
    agent: ureq::Agent,
}

impl Served {
    fn start(seed: &str) -> Served {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let addr = runtime.block_on(async {
            let cluster = Cluster::builder([seed])
                .retry_for(Duration::from_secs(2))
                .connect()
                .await
                .expect("connect to the node");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let router = tally::http::cluster_router(cluster);
            tokio::spawn(tally::http::serve(
                listener,
                router,
                std::future::pending::<()>(),
            ));
            addr
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Served {
            _runtime: runtime,
            addr,
            agent,
        }
    }

    fn healthz(&self) -> (u16, Value) {
        let mut response = self
            .agent
            .get(format!("http://{}/healthz", self.addr))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&body).unwrap())
    }

    fn call(&self, method: &str, params: &[(&str, &str)]) -> Value {
        let mut response = self
            .agent
            .post(format!("http://{}/{method}", self.addr))
            .send_form(params.iter().copied())
            .unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    fn increment(&self) -> Value {
        self.call(
            "accounts.incrementCounters",
            &[
                ("UID", UID),
                (
                    "counters",
                    r#"[{"class":"shares","path":"/news","value":3}]"#,
                ),
            ],
        )
    }

    fn total(&self) -> (i64, i64) {
        let body = self.call(
            "accounts.getCounters",
            &[
                ("UID", UID),
                ("counters", r#"[{"class":"shares","path":"/news"}]"#),
            ],
        );
        assert_eq!(body["errorCode"], 0, "{body}");
        let row = &body["counters"][0];
        (
            row["count"].as_i64().unwrap(),
            row["value"].as_i64().unwrap(),
        )
    }
}

#[test]
fn cluster_healthz_reports_an_unreachable_cluster_and_the_server_recovers() {
    let mut node = LoneNode::start();
    let served = Served::start(&node.seed());

    let (status, body) = served.healthz();
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from("ok")),
        "{body}"
    );
    let registered = served.call(
        "accounts.registerCounters",
        &[("counters", r#"[{"class":"shares","path":"/news"}]"#)],
    );
    assert_eq!(registered["errorCode"], 0, "{registered}");
    let first = served.increment();
    assert_eq!(first["errorCode"], 0, "{first}");

    node.kill();
    let (status, body) = served.healthz();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
    let failed = served.increment();
    assert_eq!(failed["errorCode"], 500001, "{failed}");
    assert!(
        failed["errorDetails"]
            .as_str()
            .unwrap()
            .contains("the counter store is unavailable"),
        "{failed}"
    );

    node.restart();
    let start = Instant::now();
    while served.healthz().0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the server did not see the node come back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = served.increment();
    assert_eq!(again["errorCode"], 0, "{again}");
    // The call answered 500001 was never applied: the node was down.
    assert_eq!(served.total(), (2, 6));
}
