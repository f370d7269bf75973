//! `tally serve` as a child process, for the suites that run the real
//! binary: started on an ephemeral loopback port with the caller's flags,
//! its address read from its banner, and killed if a test ends without
//! stopping it.

#![allow(dead_code, reason = "each suite uses only some of these helpers")]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use serde_json::Value;

/// A running `tally serve`.
pub struct ServeProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// Where it listens: `127.0.0.1:PORT`.
    pub addr: String,
    /// Its banner's two lines: the address and the store, then the
    /// authorization it requires.
    pub banner: String,
    agent: ureq::Agent,
}

impl ServeProcess {
    /// Serves the data directory `dir`, with `extra` flags.
    pub fn start(dir: &Path, extra: &[&str]) -> ServeProcess {
        ServeProcess::spawn(&["--data-dir", dir.to_str().unwrap()], extra)
    }

    /// Serves the shared store on the cluster of `seeds` in `namespace`,
    /// logging warnings only, with `extra` flags.
    pub fn on_cluster(seeds: &[String], namespace: &str, extra: &[&str]) -> ServeProcess {
        let seeds = seeds.join(",");
        let flags = [
            "--redis-cluster",
            &seeds,
            "--redis-namespace",
            namespace,
            "--log",
            "warn",
        ];
        ServeProcess::spawn(&flags, extra)
    }

    /// `tally serve` with `flags`, `--addr 127.0.0.1:0` and `extra`; returns
    /// once it has printed its banner.
    fn spawn(flags: &[&str], extra: &[&str]) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .arg("serve")
            .args(flags)
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
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        ServeProcess {
            child,
            stdout,
            addr,
            banner,
            agent,
        }
    }

    /// POSTs a REST call and returns the JSON body.
    pub fn call(&self, method: &str, params: &[(&str, &str)]) -> Value {
        let mut response = self
            .agent
            .post(format!("http://{}/{method}", self.addr))
            .send_form(params.iter().copied())
            .expect("the server answers");
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// Sends `signal` (`-TERM`, `-INT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit, which must be a success, and returns the rest
    /// of stdout.
    pub fn wait(mut self) -> String {
        let exit = self.child.wait().unwrap();
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        assert!(exit.success(), "{exit}: {rest}");
        rest
    }

    /// Sends `signal`, waits for the exit, and returns the rest of stdout.
    pub fn stop(self, signal: &str) -> String {
        self.signal(signal);
        self.wait()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // A failed test must not leave the server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
