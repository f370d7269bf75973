//! `tally inspect`, `tally verify` and `tally dump`: read a data directory
//! without taking its lock or changing a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use tally::inspect::{
    DirInspection, FileInspection, FileKind, LogInspection, SnapshotInspection, StateSummary,
};

use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The data directory.
    dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The data directory.
    dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    /// The data directory.
    dir: PathBuf,
    /// The subject's UID.
    #[arg(long)]
    uid: String,
}

pub(crate) fn inspect(args: &InspectArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    let inspection = tally::inspect::inspect(&args.dir)?;
    write_inspection(&inspection, out)?;
    // A problem recovery tolerates (a torn tail of the last segment) is
    // shown but is no failure; one that stops an engine opening is.
    Ok(match inspection.state {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    })
}

pub(crate) fn verify(args: &VerifyArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
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

pub(crate) fn dump(args: &DumpArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
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
