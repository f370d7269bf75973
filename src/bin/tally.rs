//! `tally`: look into a tally data directory without opening an engine on it.
//!
//! ```text
//! tally inspect DIR          files, sizes, LSN ranges, subjects, counters, registrations
//! tally verify DIR           every checksum; exit code 0 and "ok", or 1 and the first problem
//! tally dump DIR --uid U     one subject's rows as JSON
//! ```
//!
//! None of them takes the directory's lock or changes a file. Each
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

/// What a subcommand can fail with: a tally error, a write to stdout, JSON.
type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::Inspect(args) => inspect(&args, &mut out),
        Command::Verify(args) => verify(&args, &mut out),
        Command::Dump(args) => dump(&args, &mut out),
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
