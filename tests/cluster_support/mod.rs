//! Redis servers a cluster test owns, to stop, kill and restart without
//! disturbing the shared test cluster (`TALLY_TEST_CLUSTER`).
//!
//! - [`LoneNode`]: one cluster-enabled server holding every slot, started
//!   in a temporary directory on a free port; killed and restarted on the
//!   same port and data.
//! - [`OwnCluster`]: three masters with a replica each, started and
//!   stopped by `.ci/redis-cluster`; a master can be killed with SIGKILL.

#![allow(dead_code, reason = "each suite uses only some of these helpers")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server or a cluster is given to come up.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A namespace no other test uses.
pub fn fresh_namespace(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The seed nodes of the shared test cluster, from `TALLY_TEST_CLUSTER`.
pub fn shared_seeds() -> Vec<String> {
    std::env::var("TALLY_TEST_CLUSTER")
        .expect("TALLY_TEST_CLUSTER names the test cluster's nodes (HOST:PORT,...)")
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// The lowest port of the kernel's ephemeral range, where outgoing
/// connections take their local ports.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port free on loopback, and its cluster-bus port (port + 10000) too,
/// both below the ephemeral range: a port there could be taken by an
/// outgoing connection between the check and a restart on it.
fn free_port() -> u16 {
    use std::hash::BuildHasher;
    let highest = ephemeral_low() - 10_001;
    let random = std::collections::hash_map::RandomState::new();
    (0u64..)
        .map(|attempt| 10_000 + (random.hash_one(attempt) % u64::from(highest - 10_000)) as u16)
        .find(|&port| {
            TcpListener::bind(("127.0.0.1", port)).is_ok()
                && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        })
        .expect("a free port")
}

/// `redis-cli -p PORT ARGS…`, its output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until the node at `port` says `cluster_state:ok`.
pub fn wait_cluster_ok(port: u16, limit: Duration) {
    let start = Instant::now();
    while !redis_cli(port, &["cluster", "info"]).contains("cluster_state:ok") {
        assert!(
            start.elapsed() < limit,
            "node {port} not ok within {limit:?}"
        );
        sleep(Duration::from_millis(100));
    }
}

/// One cluster-enabled server that holds all 16384 slots.
pub struct LoneNode {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl LoneNode {
    /// Starts it and assigns it every slot.
    pub fn start() -> LoneNode {
        let dir = tempfile::tempdir().unwrap();
        let mut node = LoneNode {
            dir,
            port: free_port(),
            server: None,
        };
        node.launch();
        redis_cli(node.port, &["cluster", "addslotsrange", "0", "16383"]);
        wait_cluster_ok(node.port, START_LIMIT);
        node
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed?)");
        clean_up_after_exit(&format!(
            "kill -9 {}; rm -rf '{}'",
            child.id(),
            self.dir.path().display()
        ));
        self.server = Some(child);
        let start = Instant::now();
        while !redis_cli(self.port, &["ping"]).contains("PONG") {
            assert!(start.elapsed() < START_LIMIT, "redis-server did not start");
            sleep(Duration::from_millis(50));
        }
    }

    /// The seed to connect through.
    pub fn seed(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill().unwrap();
            server.wait().unwrap();
        }
    }

    /// Starts the server again on its port and data, and waits until the
    /// cluster is whole.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "kill the node first");
        self.launch();
        wait_cluster_ok(self.port, START_LIMIT);
    }
}

impl Drop for LoneNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the shell command `cleanup` once this test process has exited,
/// however it exits: a test killed by a timeout or a signal runs no
/// `Drop`, and the servers it started would outlive it. The watcher runs
/// in a session of its own (`setsid`), so a signal to the test's process
/// group does not reach it either.
fn clean_up_after_exit(cleanup: &str) {
    let watcher = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; {cleanup}",
        std::process::id()
    );
    let status = Command::new("setsid")
        .args(["-f", "bash", "-c", &watcher])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run setsid");
    assert!(status.success(), "the clean-up watcher did not start");
}

/// The repository's cluster script.
fn cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/redis-cluster")
}

/// Three masters with a replica each, this test's own.
pub struct OwnCluster {
    dir: tempfile::TempDir,
    seeds: Vec<String>,
}

impl OwnCluster {
    /// Starts it with `.ci/redis-cluster start` (every replica synced).
    pub fn start() -> OwnCluster {
        let dir = tempfile::tempdir().unwrap();
        // Before the start: a start that fails half-way leaves servers.
        clean_up_after_exit(&format!(
            "bash '{script}' stop '{dir}'; rm -rf '{dir}'",
            script = cluster_script().display(),
            dir = dir.path().display()
        ));
        let status = Command::new("bash")
            .arg(cluster_script())
            .arg("start")
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .expect("run .ci/redis-cluster");
        assert!(status.success(), "the cluster did not start");
        let seeds = std::fs::read_to_string(dir.path().join("seeds")).unwrap();
        let seeds = seeds.trim().split(',').map(str::to_owned).collect();
        OwnCluster { dir, seeds }
    }

    /// The seed nodes, `HOST:PORT`.
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    fn ports(&self) -> Vec<u16> {
        self.seeds
            .iter()
            .map(|seed| seed.rsplit(':').next().unwrap().parse().unwrap())
            .collect()
    }

    /// The ports of the live masters, as the first node sees them.
    pub fn masters(&self) -> Vec<u16> {
        let nodes = redis_cli(self.ports()[0], &["cluster", "nodes"]);
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                let is_live_master =
                    flags.split(',').any(|f| f == "master") && !flags.contains("fail");
                is_live_master.then(|| port_of(fields[1]))
            })
            .collect()
    }

    /// The port of the master serving `key` now, as the first node sees it.
    pub fn master_of(&self, key: &str) -> u16 {
        let any = self.ports()[0];
        let slot: u16 = redis_cli(any, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        let nodes = redis_cli(any, &["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let is_live_master = fields.get(2).is_some_and(|flags| {
                flags.split(',').any(|f| f == "master") && !flags.contains("fail")
            });
            if is_live_master && fields.iter().skip(8).any(|range| in_range(range, slot)) {
                return port_of(fields[1]);
            }
        }
        panic!("no master serves slot {slot}: {nodes}");
    }

    /// Kills the server on `port` with SIGKILL, by its pid file.
    pub fn kill_9(&self, port: u16) {
        let pidfile = self.dir.path().join(port.to_string()).join("redis.pid");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until every node but `dead` marks it failed (`fail`, not
    /// only suspected) and says `cluster_state:ok`: a replica has taken
    /// over its slots.
    pub fn wait_ok_without(&self, dead: u16) {
        let start = Instant::now();
        for port in self.ports().into_iter().filter(|&p| p != dead) {
            loop {
                let nodes = redis_cli(port, &["cluster", "nodes"]);
                let failed = nodes.lines().any(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 2
                        && port_of(fields[1]) == dead
                        && fields[2].split(',').any(|flag| flag == "fail")
                });
                if failed && redis_cli(port, &["cluster", "info"]).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    start.elapsed() < START_LIMIT,
                    "node {port} did not recover from the loss of {dead}"
                );
                sleep(Duration::from_millis(100));
            }
        }
    }
}

fn port_of(address: &str) -> u16 {
    let address = address.split('@').next().unwrap();
    address.rsplit(':').next().unwrap().parse().unwrap()
}

fn in_range(range: &str, slot: u16) -> bool {
    if range.starts_with('[') {
        return false;
    }
    match range.split_once('-') {
        Some((low, high)) => {
            low.parse::<u16>().is_ok_and(|low| low <= slot)
                && high.parse::<u16>().is_ok_and(|high| slot <= high)
        }
        None => range.parse::<u16>().is_ok_and(|one| one == slot),
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(cluster_script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
