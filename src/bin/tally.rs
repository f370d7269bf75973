//! `tally`: look into a tally data directory without opening an engine on it.
//!
//! ```text
//! tally inspect DIR          files, sizes, LSN ranges, subjects, counters, registrations;
//!                            exit code 1 if an engine would refuse to open DIR
//! tally verify DIR           every checksum; exit code 0 and "ok", or 1 and the first problem
//! tally dump DIR --uid U     one subject's rows as JSON
//! tally serve [--data-dir DIR] [--addr 127.0.0.1:8080]   the HTTP API on an engine in DIR
//! tally load [--threads N] [--subjects N] [--count N | --duration SECS] [--json]
//!                            increments under load: throughput, latency, memory per cell
//! ```
//!
//! Except `serve`, none of them takes the directory's lock or changes a file. Each
//! subcommand is one variant of [`Command`] and one function below.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tally::inspect::{
    DirInspection, FileInspection, FileKind, LogInspection, SnapshotInspection, StateSummary,
};

/// Inspect, verify and dump tally data directories.
#[derive(Debug, Parser)]
#[command(name = "tally", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List a data directory's files: sizes, LSN ranges, counts of
    /// subjects, counters and registrations, and what an engine would load;
    /// exit code 1 if an engine would refuse to open the directory.
    Inspect(InspectArgs),
    /// Check every checksum and record of a data directory; exit code 0
    /// and "ok", or 1 and the first problem.
    Verify(VerifyArgs),
    /// Print one subject's rows (every counter, `total` and every stored
    /// month and day) as JSON.
    Dump(DumpArgs),
    /// Serve the REST-compatible HTTP API on a durable engine in DIR, until
    /// SIGTERM or Ctrl-C; then finish the requests in flight, sync the log
    /// and write a final snapshot. Slow and idle clients are cut off by
    /// the timeouts below and the number of connections is bounded.
    #[cfg(feature = "http")]
    Serve(ServeArgs),
    /// Increment from N threads for a time or a count over a population of
    /// subjects and a mix of counters, then print throughput, latency
    /// percentiles, resident memory and bytes per cell: to size tally for
    /// a workload.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The data directory.
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The data directory.
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// The data directory.
    dir: PathBuf,
    /// The subject's UID.
    #[arg(long)]
    uid: String,
}

#[cfg(feature = "http")]
#[derive(Debug, Args)]
struct ServeArgs {
    /// The data directory: created if missing, recovered if not.
    #[arg(long, value_name = "DIR", default_value = "./tally-data")]
    data_dir: PathBuf,
    /// The address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Require API keys, read from FILE: lines `api-key KEY [SECRET]` and
    /// `user-key KEY SECRET`, secrets in base64. Without it the server is open.
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// Where a plain `secret` parameter is accepted (signed requests are
    /// accepted everywhere).
    #[arg(long, default_value = "loopback", value_parser = ["never", "loopback", "always"])]
    plain_secrets: String,
    /// The scheme and host clients sign requests for; the request's path is
    /// appended. The server's own URL is accepted too.
    #[arg(long, value_name = "URL", default_value = tally::http::DEFAULT_PUBLIC_BASE_URL)]
    public_url: String,
    /// The largest accepted request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = tally::http::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// When an increment is answered: after the log is synced (`always`),
    /// with the log synced within a second (`interval`), or with no log,
    /// only snapshots (`never`).
    #[arg(long, default_value = "interval", value_parser = ["always", "interval", "never"])]
    durability: String,
    /// Seconds between background snapshots.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    snapshot_interval: u64,
    /// Seconds a client has to send a complete request head, from the
    /// connection's accept or from the request's first byte; past it the
    /// connection is closed without a response.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS),
          default_value_t = tally::http::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    header_read_timeout: u64,
    /// Seconds a kept-alive connection may wait after a response for the
    /// first byte of its next request; past it the connection is closed.
    /// A client must also read its response within this time.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS),
          default_value_t = tally::http::DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout: u64,
    /// Seconds a request may take to arrive in full, head and body, from
    /// its first byte. A body still missing then is answered with a 400006
    /// envelope naming `body` (HTTP 200, or 400 with httpStatusCodes=true)
    /// and the connection closed; nothing of it is applied. A REST call
    /// that has begun is always answered with its outcome.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS),
          default_value_t = tally::http::DEFAULT_REQUEST_TIMEOUT.as_secs())]
    request_timeout: u64,
    /// The most connections open at once; at the bound the server stops
    /// accepting and further clients wait in the listen backlog. Keep it
    /// below the file-descriptor limit (`ulimit -n`) less what the engine uses.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          default_value_t = tally::http::DEFAULT_MAX_CONNECTIONS as u32)]
    max_connections: u32,
}

/// The longest timeout `tally serve` takes, in seconds: a day.
#[cfg(feature = "http")]
const MAX_LIMIT_SECS: u64 = 86_400;

#[derive(Debug, Args)]
struct LoadArgs {
    /// Threads incrementing at once.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Run for this many seconds (the default: 10)...
    #[arg(long, value_name = "SECS", conflicts_with = "count")]
    duration: Option<f64>,
    /// ...or make this many increment calls in all.
    #[arg(long)]
    count: Option<u64>,
    /// Distinct subjects (UIDs `user-00000000`, ...); each thread works on
    /// its own share of them.
    #[arg(long, default_value_t = 1_000_000)]
    subjects: u64,
    /// Distinct counters: class `load`, paths `/`, `/c1`, ..., each call
    /// picks one at random (every path rolls up to `/`).
    #[arg(long, default_value_t = 1)]
    counters: u32,
    /// Entries per call; above 1, calls go by name.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Increment through resolved handles or by (class, path) names.
    #[arg(long, default_value = "handle", value_parser = ["handle", "name"])]
    by: String,
    /// `sequential` walks each thread's subjects in turn (with `--count`
    /// equal to `--subjects`, every subject gets one call); `random` picks
    /// among them uniformly.
    #[arg(long, default_value = "random", value_parser = ["random", "sequential"])]
    pattern: String,
    /// Keep the engine's data (log and snapshots) in DIR; without it the
    /// engine lives in memory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: acknowledge after the log is synced (`always`),
    /// sync within a second (`interval`), or keep no log (`never`).
    #[arg(long, default_value = "interval", value_parser = ["always", "interval", "never"])]
    durability: String,
    /// Print the summary as one JSON object. (With --data-dir, the
    /// engine's memory includes its log buffers, so bytes per cell are
    /// meaningful in memory only.)
    #[arg(long)]
    json: bool,
}

/// What a subcommand can fail with: a tally error, a write to stdout, JSON.
type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::Inspect(args) => inspect(&args, &mut out),
        Command::Verify(args) => verify(&args, &mut out),
        Command::Dump(args) => dump(&args, &mut out),
        #[cfg(feature = "http")]
        Command::Serve(args) => serve(&args, &mut out),
        Command::Load(args) => load(&args, &mut out),
    };
    let result = result.and_then(|code| out.flush().map(|()| code).map_err(Failure::from));
    match result {
        Ok(code) => code,
        // `tally inspect DIR | head` is not an error.
        Err(error) if is_broken_pipe(&*error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tally: {error}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn inspect(args: &InspectArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    let inspection = tally::inspect::inspect(&args.dir)?;
    write_inspection(&inspection, out)?;
    // A problem recovery tolerates (a torn tail of the last segment) is
    // shown but is no failure; one that stops an engine opening is.
    Ok(match inspection.state {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    })
}

fn verify(args: &VerifyArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    match tally::inspect::verify(&args.dir) {
        Ok(verification) => {
            writeln!(
                out,
                "ok: {} and {} checked in {}",
                plural(verification.files, "file", "files"),
                plural(verification.records, "record", "records"),
                args.dir.display()
            )?;
            if let Some((file, offset, bytes)) = &verification.torn_tail {
                writeln!(
                    out,
                    "note: {} ends in a torn tail of {bytes} bytes at byte {offset}, \
                     which an engine cuts off when it opens the directory",
                    file.display()
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problem) => {
            writeln!(out, "{problem}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn dump(args: &DumpArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    let rows = tally::inspect::dump(&args.dir, &args.uid)?;
    // What recovery skipped or would cut, on stderr: the rows are then
    // those of an older snapshot, or of the log short of its tail.
    if let Ok(Ok(state)) = tally::inspect::inspect(&args.dir).map(|i| i.state) {
        for (path, why) in &state.report.skipped_snapshots {
            eprintln!(
                "tally dump: skipped damaged snapshot {}: {why}",
                path.display()
            );
        }
        if let Some((path, offset, bytes)) = &state.report.cut {
            eprintln!(
                "tally dump: torn tail of {} at byte {offset} ({bytes} bytes) left out",
                path.display()
            );
        }
    }
    serde_json::to_writer_pretty(&mut *out, &rows)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "http")]
fn serve(args: &ServeArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    use std::time::Duration;
    use tally::http::{Auth, Options, PlainSecrets, ServeOptions};

    let durability = match args.durability.as_str() {
        "always" => tally::Durability::Always,
        "never" => tally::Durability::Never,
        _ => tally::Durability::Interval(Duration::from_secs(1)),
    };
    // Only `always` makes an increment wait (for a log sync); otherwise
    // calls run on the async workers, about twice the throughput.
    let mut options = Options::default()
        .body_limit(args.body_limit)
        .blocking_pool(args.durability == "always");
    if let Some(file) = &args.keys {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("reading the key file {}: {e}", file.display()))?;
        let auth = Auth::new()
            .keys_from_str(&text)?
            .plain_secrets(match args.plain_secrets.as_str() {
                "never" => PlainSecrets::Never,
                "always" => PlainSecrets::Always,
                _ => PlainSecrets::Loopback,
            })
            .public_base_url(&args.public_url);
        options = options.auth(auth);
    }
    let engine = tally::Tally::builder()
        .data_dir(&args.data_dir)
        .durability(durability)
        .snapshot_interval(Duration::from_secs(args.snapshot_interval.max(1)))
        .build()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served: Result<(), Failure> = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr).await?;
        writeln!(
            out,
            "tally serve: listening on http://{}, data in {} ({} subjects recovered)",
            listener.local_addr()?,
            args.data_dir.display(),
            engine.subject_count()
        )?;
        match &options.auth {
            None => writeln!(
                out,
                "tally serve: OPEN: no --keys given, so every request is served without authorization"
            )?,
            Some(auth) => {
                let (api, user) = auth.key_counts();
                writeln!(
                    out,
                    "tally serve: authorization required: {api} API keys, {user} user keys; \
                     plain secrets {}; signatures for {}/<method> or this server's URL",
                    match auth.plain_secret_policy() {
                        PlainSecrets::Never => "refused",
                        PlainSecrets::Always => "accepted",
                        _ => "from loopback only",
                    },
                    auth.public_base()
                )?
            }
        }
        out.flush()?;
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown_signal().await;
            let _ = stopping_tx.send(());
        };
        let router = tally::http::router_with(engine.clone(), options);
        let limits = ServeOptions::default()
            .header_read_timeout(Duration::from_secs(args.header_read_timeout))
            .idle_timeout(Duration::from_secs(args.idle_timeout))
            .request_timeout(Duration::from_secs(args.request_timeout))
            .max_connections(usize::try_from(args.max_connections).unwrap_or(usize::MAX));
        let server = tally::http::serve_with(listener, router, limits, shutdown);
        // In-flight requests get 30 s to finish once a signal arrives.
        let deadline = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(Duration::from_secs(30)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = server => result?,
            () = deadline => eprintln!("tally serve: requests still in flight after 30 s; closing anyway"),
        }
        Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    writeln!(
        out,
        "tally serve: stopping: syncing the log and writing a final snapshot"
    )?;
    out.flush()?;
    let closed = engine.close();
    served?;
    closed?;
    writeln!(out, "tally serve: stopped")?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
#[cfg(feature = "http")]
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn write_inspection(inspection: &DirInspection, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "data directory {}", inspection.dir.display())?;
    let width = inspection
        .files
        .iter()
        .map(|f| f.name().len())
        .max()
        .unwrap_or(0)
        .max("FILE".len());
    writeln!(out)?;
    writeln!(
        out,
        "{:<width$}  {:<9}  {:>12}  CONTENTS",
        "FILE", "KIND", "BYTES"
    )?;
    for file in &inspection.files {
        let (kind, contents) = describe(file);
        writeln!(
            out,
            "{:<width$}  {kind:<9}  {:>12}  {contents}",
            file.name(),
            file.bytes
        )?;
        if let Some(problem) = problem_of(file) {
            writeln!(
                out,
                "{:<width$}  {:<9}  {:>12}  problem: {problem}",
                "", "", ""
            )?;
        }
    }
    if inspection.files.is_empty() {
        writeln!(out, "(empty)")?;
    }
    writeln!(out)?;
    match &inspection.state {
        Ok(state) => write_state(state, &inspection.dir, out),
        Err(error) => writeln!(out, "an engine would refuse to open it: {error}"),
    }
}

fn describe(file: &FileInspection) -> (&'static str, String) {
    match &file.kind {
        FileKind::Snapshot(snapshot) => ("snapshot", describe_snapshot(snapshot)),
        FileKind::Log(log) => ("log", describe_log(log, file.bytes)),
        FileKind::Lock => ("lock", String::new()),
        FileKind::Temporary => ("temporary", "unfinished snapshot, removed on open".into()),
        _ => ("other", "not a tally file".into()),
    }
}

fn describe_snapshot(s: &SnapshotInspection) -> String {
    let mut parts = Vec::new();
    if let Some(version) = s.format_version {
        parts.push(format!("v{version}"));
    }
    parts.push(format!("replay from log {}", s.replay_from));
    parts.push(plural(s.subjects, "subject", "subjects"));
    parts.push(plural(s.cells, "cell", "cells"));
    parts.push(plural(s.counters, "counter", "counters"));
    parts.push(plural(s.registrations, "registration", "registrations"));
    parts.push(plural(s.tokens, "regToken", "regTokens"));
    parts.push(format!("LSN up to {}", s.max_lsn));
    parts.join(", ")
}

fn describe_log(l: &LogInspection, bytes: u64) -> String {
    let mut parts = Vec::new();
    match l.format_version {
        Some(version) => parts.push(format!("v{version}")),
        None if l.torn_tail == Some(0) => parts.push("incomplete header".into()),
        None => {}
    }
    match l.lsn_range {
        Some((first, last)) if l.state_records == 0 => parts.push(format!(
            "LSN {first}..={last}: {} of {}",
            plural(l.increments, "batch", "batches"),
            plural(l.subjects, "subject", "subjects")
        )),
        Some((first, last)) => parts.push(format!(
            "LSN {first}..={last}: {}, {} ({}) of {}",
            plural(l.increments, "batch", "batches"),
            plural(l.state_records, "write-back", "write-backs"),
            plural(l.subject_states, "subject state", "subject states"),
            plural(l.subjects, "subject", "subjects")
        )),
        None => parts.push("no batches".into()),
    }
    if l.registry_records > 0 {
        let changes: Vec<String> = [
            (l.counters_created, "counters created"),
            (l.registered, "registered"),
            (l.unregistered, "unregistered"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        let records = plural(l.registry_records, "registry record", "registry records");
        parts.push(if changes.is_empty() {
            records
        } else {
            format!("{records} ({})", changes.join(", "))
        });
    }
    if l.token_records > 0 {
        parts.push(plural(l.token_records, "regToken", "regTokens"));
    }
    if let Some(offset) = l.torn_tail {
        parts.push(format!(
            "torn tail of {} at byte {offset}",
            plural(bytes.saturating_sub(offset), "byte", "bytes")
        ));
    }
    parts.join(", ")
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn problem_of(file: &FileInspection) -> Option<&tally::Error> {
    match &file.kind {
        FileKind::Snapshot(snapshot) => snapshot.problem.as_ref(),
        FileKind::Log(log) => log.problem.as_ref(),
        _ => None,
    }
}

fn write_state(state: &StateSummary, dir: &Path, out: &mut impl Write) -> std::io::Result<()> {
    let name = |path: &Path| path.strip_prefix(dir).unwrap_or(path).display().to_string();
    let report = &state.report;
    writeln!(out, "an engine opening it would load:")?;
    match &report.snapshot {
        Some(snapshot) => writeln!(
            out,
            "  snapshot      {} ({})",
            name(snapshot),
            plural(report.snapshot_subjects, "subject", "subjects")
        )?,
        None => writeln!(out, "  snapshot      none")?,
    }
    for (skipped, why) in &report.skipped_snapshots {
        writeln!(out, "  skipped       {} ({why})", name(skipped))?;
    }
    writeln!(
        out,
        "  log           {}: {} replayed, {} already in the snapshot, {}",
        plural(report.segments.len() as u64, "segment", "segments"),
        plural(report.batches_replayed, "batch", "batches"),
        report.batches_skipped,
        plural(report.other_records, "other record", "other records"),
    )?;
    if report.states_replayed + report.states_skipped > 0 {
        writeln!(
            out,
            "  write-backs   {} replayed, {} already in the snapshot",
            plural(report.states_replayed, "subject state", "subject states"),
            report.states_skipped,
        )?;
    }
    if let Some((file, offset, bytes)) = &report.cut {
        writeln!(
            out,
            "  torn tail     {bytes} bytes at byte {offset} of {} (cut when an engine opens it)",
            name(file)
        )?;
    }
    writeln!(out, "  subjects      {}", state.subjects)?;
    writeln!(out, "  cells         {}", state.cells)?;
    writeln!(out, "  counters      {}", state.counters)?;
    writeln!(out, "  registrations {}", state.registrations)?;
    writeln!(out, "  regTokens     {}", state.tokens)?;
    writeln!(out, "  next LSN      {}", state.next_lsn)
}

/// One call in this many is timed for the latency percentiles, so that
/// reading the clock does not dominate what is measured.
const LATENCY_SAMPLE_EVERY: u64 = 8;

/// A log-linear latency histogram: 16 buckets per power of two (about 6%
/// resolution), in nanoseconds.
struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    const SUB: u32 = 16;

    fn new() -> Self {
        Histogram {
            counts: vec![0; 64 * Self::SUB as usize],
        }
    }

    fn bucket(nanos: u64) -> usize {
        if nanos < u64::from(Self::SUB) {
            return nanos as usize;
        }
        let exp = 63 - nanos.leading_zeros();
        let sub = (nanos >> (exp - 4)) & u64::from(Self::SUB - 1);
        ((exp - 3) * Self::SUB) as usize + sub as usize
    }

    /// The middle of a bucket's range.
    fn value(bucket: usize) -> u64 {
        let sub = u64::from(Self::SUB);
        if (bucket as u64) < sub {
            return bucket as u64;
        }
        let exp = bucket as u64 / sub + 3;
        let low = (sub + bucket as u64 % sub) << (exp - 4);
        low + (1u64 << (exp - 4)) / 2
    }

    fn record(&mut self, nanos: u64) {
        self.counts[Self::bucket(nanos)] += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.counts.iter().sum();
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total.max(1));
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::value(bucket);
            }
        }
        0
    }
}

/// This process's resident memory (`VmRSS` of /proc/self/status), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[derive(serde::Serialize)]
struct LoadSummary {
    threads: usize,
    subjects: u64,
    counters: u32,
    batch: usize,
    by: String,
    pattern: String,
    durability: String,
    calls: u64,
    seconds: f64,
    calls_per_sec: f64,
    entries_per_sec: f64,
    latency_ns: LatencySummary,
    rss_bytes: Option<u64>,
    engine_bytes: Option<u64>,
    subjects_with_cells: usize,
    cells: u64,
    bytes_per_cell: Option<f64>,
}

#[derive(serde::Serialize)]
struct LatencySummary {
    sampled_every: u64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

/// How each load thread increments: through handles or by name.
enum Calls<'a> {
    Handles(&'a [tally::CounterHandle]),
    Names(&'a [String]),
}

fn load(args: &LoadArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    if args.threads == 0 || args.subjects == 0 || args.counters == 0 || args.batch == 0 {
        return Err("--threads, --subjects, --counters and --batch must be at least 1".into());
    }
    if args.subjects < args.threads as u64 {
        return Err("--subjects must be at least --threads".into());
    }
    if args.batch > 1 && args.by == "handle" {
        return Err("--batch above 1 needs --by name".into());
    }
    let durability = match args.durability.as_str() {
        "always" => tally::Durability::Always,
        "never" => tally::Durability::Never,
        _ => tally::Durability::Interval(Duration::from_secs(1)),
    };
    let mut builder = tally::Tally::builder().system_classes(["load"]);
    if let Some(dir) = &args.data_dir {
        builder = builder.data_dir(dir).durability(durability);
    }
    let engine = builder.build()?;
    let paths: Vec<String> = (0..args.counters)
        .map(|i| {
            if i == 0 {
                "/".to_owned()
            } else {
                format!("/c{i}")
            }
        })
        .collect();
    let handles = paths
        .iter()
        .map(|path| engine.counter("load", path))
        .collect::<Result<Vec<_>, _>>()?;
    let calls = if args.by == "name" {
        Calls::Names(&paths)
    } else {
        Calls::Handles(&handles)
    };
    // The UIDs exist before memory is first measured: only the engine's
    // growth is charged to the cells.
    let uids: Vec<String> = (0..args.subjects).map(|i| format!("user-{i:08}")).collect();
    let mut histograms: Vec<Histogram> = (0..args.threads).map(|_| Histogram::new()).collect();
    let rss_before = resident_bytes();

    let total = args.count;
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(10.0).max(0.0));
    let progress = match total {
        Some(total) => indicatif::ProgressBar::new(total),
        None => indicatif::ProgressBar::new(duration.as_secs().max(1)),
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failure = parking_lot::Mutex::new(None::<tally::Error>);
    let share = args.subjects / args.threads as u64;
    let start = Instant::now();
    let elapsed = std::thread::scope(|scope| {
        for (thread, histogram) in histograms.iter_mut().enumerate() {
            let (engine, uids, calls, done, stop, failure) =
                (&engine, &uids, &calls, &done, &stop, &failure);
            let quota = total.map(|t| {
                t / args.threads as u64 + u64::from((thread as u64) < t % args.threads as u64)
            });
            let first = thread as u64 * share;
            let sequential = args.pattern == "sequential";
            let (counters, batch) = (args.counters as u64, args.batch);
            scope.spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64
                    ^ (thread as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut entries: Vec<tally::Increment<'_>> = Vec::with_capacity(batch);
                let mut made = 0u64;
                loop {
                    if quota.is_some_and(|q| made >= q)
                        || (quota.is_none() && stop.load(Ordering::Relaxed))
                    {
                        break;
                    }
                    let subject = if sequential {
                        made % share
                    } else {
                        next() % share
                    };
                    let uid = uids[(first + subject) as usize].as_str();
                    let timed = made.is_multiple_of(LATENCY_SAMPLE_EVERY);
                    let began = timed.then(Instant::now);
                    let result = match calls {
                        Calls::Handles(handles) => {
                            let handle = &handles[(next() % counters) as usize];
                            engine.increment_counter(uid, handle, 1, 1)
                        }
                        Calls::Names(paths) => {
                            entries.clear();
                            for _ in 0..batch {
                                let path = &paths[(next() % counters) as usize];
                                entries.push(tally::Increment::new("load", path).value(1));
                            }
                            engine.increment(uid, &entries)
                        }
                    };
                    if let Some(began) = began {
                        histogram.record(began.elapsed().as_nanos() as u64);
                    }
                    if let Err(error) = result {
                        failure.lock().get_or_insert(error);
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    made += 1;
                    if made.is_multiple_of(1024) {
                        done.fetch_add(1024, Ordering::Relaxed);
                        if quota.is_some() && stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
                done.fetch_add(made % 1024, Ordering::Relaxed);
            });
        }
        // This thread draws the progress bar and ends a timed run.
        loop {
            let finished = done.load(Ordering::Relaxed);
            let elapsed = start.elapsed();
            match total {
                Some(total) if finished >= total => break,
                Some(_) => progress.set_position(finished),
                None => {
                    progress.set_position(elapsed.as_secs());
                    if elapsed >= duration {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let rate = finished as f64 / elapsed.as_secs_f64().max(1e-9);
            progress.set_message(format!("{rate:.0} calls/s"));
            std::thread::sleep(Duration::from_millis(50));
        }
        // The threads are joined when the scope ends; time ends with them.
        start
    });
    let seconds = elapsed.elapsed().as_secs_f64();
    progress.finish_and_clear();
    if let Some(error) = failure.into_inner() {
        return Err(error.into());
    }
    let rss = resident_bytes();
    let calls_made = done.load(Ordering::Relaxed);
    // Cells: one row per cell when every counter is read at period total.
    let mut cells = 0u64;
    for uid in &uids {
        cells += engine.get(uid.as_str(), &[])?.len() as u64;
    }
    let engine_bytes = rss
        .zip(rss_before)
        .map(|(after, before)| after.saturating_sub(before));
    let mut latency = Histogram::new();
    for histogram in &histograms {
        latency.merge(histogram);
    }
    let max = latency
        .counts
        .iter()
        .rposition(|&c| c > 0)
        .map_or(0, Histogram::value);
    let summary = LoadSummary {
        threads: args.threads,
        subjects: args.subjects,
        counters: args.counters,
        batch: args.batch,
        by: args.by.clone(),
        pattern: args.pattern.clone(),
        durability: if args.data_dir.is_some() {
            args.durability.clone()
        } else {
            "in memory".to_owned()
        },
        calls: calls_made,
        seconds,
        calls_per_sec: calls_made as f64 / seconds,
        entries_per_sec: (calls_made * args.batch as u64) as f64 / seconds,
        latency_ns: LatencySummary {
            sampled_every: LATENCY_SAMPLE_EVERY,
            p50: latency.quantile(0.50),
            p99: latency.quantile(0.99),
            p999: latency.quantile(0.999),
            max,
        },
        rss_bytes: rss,
        engine_bytes,
        subjects_with_cells: engine.subject_count(),
        cells,
        bytes_per_cell: engine_bytes
            .filter(|_| cells > 0)
            .map(|bytes| bytes as f64 / cells as f64),
    };
    if args.data_dir.is_some() {
        engine.close()?;
    }
    if args.json {
        serde_json::to_writer(&mut *out, &summary)?;
        writeln!(out)?;
    } else {
        write_load_summary(&summary, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_load_summary(s: &LoadSummary, out: &mut impl Write) -> std::io::Result<()> {
    let mib = |bytes: Option<u64>| {
        bytes.map_or("unknown".to_owned(), |b| {
            format!("{:.1} MiB", b as f64 / 1048576.0)
        })
    };
    writeln!(
        out,
        "{} threads, {} subjects, {} counters, batch {}, by {}, {} pattern, {}",
        s.threads, s.subjects, s.counters, s.batch, s.by, s.pattern, s.durability
    )?;
    writeln!(
        out,
        "calls         {} in {:.2} s: {:.0} calls/s ({:.0} entries/s)",
        s.calls, s.seconds, s.calls_per_sec, s.entries_per_sec
    )?;
    let l = &s.latency_ns;
    writeln!(
        out,
        "latency       p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns (1 call in {} timed)",
        l.p50, l.p99, l.p999, l.max, l.sampled_every
    )?;
    writeln!(out, "resident      {}", mib(s.rss_bytes))?;
    writeln!(
        out,
        "engine        {} for {} cells of {} subjects: {}",
        mib(s.engine_bytes),
        s.cells,
        s.subjects_with_cells,
        s.bytes_per_cell
            .map_or("unknown bytes per cell".to_owned(), |b| format!(
                "{b:.1} bytes per cell"
            ))
    )
}
