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
//! subcommand is one variant of [`Command`] and one function in a module beside this one.

mod inspect;
mod load;
#[cfg(feature = "redis")]
mod load_cluster;
#[cfg(feature = "http")]
mod serve;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use inspect::{DumpArgs, InspectArgs, VerifyArgs};
use load::LoadArgs;
#[cfg(feature = "http")]
use serve::ServeArgs;

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

/// `--durability` of `serve` and `load`: when an increment is answered.
/// (The variants carry no doc comments: clap would list them in `--help`
/// in place of the one-line `[possible values: ...]`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DurabilityArg {
    // After the log is synced.
    Always,
    // With the log synced within a second.
    Interval,
    // With no log, only snapshots.
    Never,
}

impl DurabilityArg {
    /// The engine's setting.
    pub(crate) fn durability(self) -> tally::Durability {
        match self {
            DurabilityArg::Always => tally::Durability::Always,
            DurabilityArg::Interval => {
                tally::Durability::Interval(std::time::Duration::from_secs(1))
            }
            DurabilityArg::Never => tally::Durability::Never,
        }
    }
}

/// The name a value of an enumerated flag is spelled with on the command
/// line, e.g. `interval`.
pub(crate) fn flag_value(value: &impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default()
}

/// What a subcommand can fail with: a tally error, a write to stdout, JSON.
pub(crate) type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::Inspect(args) => inspect::inspect(&args, &mut out),
        Command::Verify(args) => inspect::verify(&args, &mut out),
        Command::Dump(args) => inspect::dump(&args, &mut out),
        #[cfg(feature = "http")]
        Command::Serve(args) => serve::serve(&args, &mut out),
        #[cfg(feature = "redis")]
        Command::Load(args) if !args.redis_cluster.is_empty() => {
            load_cluster::load_cluster(&args, &args.redis_cluster, &args.redis_namespace, &mut out)
        }
        Command::Load(args) => load::load(&args, &mut out),
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
