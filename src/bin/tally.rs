//! `tally`: look into a tally data directory without opening an engine on it.
//!
//! ```text
//! tally inspect DIR          files, sizes, LSN ranges, subjects, counters, registrations
//! tally verify DIR           every checksum; exit code 0 and "ok", or 1 and the first problem
//! tally dump DIR --uid U     one subject's rows as JSON
//! tally serve [--data-dir DIR] [--addr 127.0.0.1:8080]   the HTTP API on an engine in DIR
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
    /// subjects, counters and registrations, and what an engine would load.
    Inspect(InspectArgs),
    /// Check every checksum and record of a data directory; exit code 0
    /// and "ok", or 1 and the first problem.
    Verify(VerifyArgs),
    /// Print one subject's rows (every counter, `total` and every stored
    /// month and day) as JSON.
    Dump(DumpArgs),
    /// Serve the REST-compatible HTTP API on a durable engine in DIR, until
    /// SIGTERM or Ctrl-C; then finish the requests in flight, sync the log
    /// and write a final snapshot.
    #[cfg(feature = "http")]
    Serve(ServeArgs),
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
    Ok(ExitCode::SUCCESS)
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
    serde_json::to_writer_pretty(&mut *out, &rows)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "http")]
fn serve(args: &ServeArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    use std::time::Duration;
    use tally::http::{Auth, Options, PlainSecrets};

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
        let server = tally::http::serve(listener, router, shutdown);
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
        Some((first, last)) => parts.push(format!(
            "LSN {first}..={last}: {} of {}",
            plural(l.increments, "batch", "batches"),
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
