//! `tally load`: increments under load, to size tally for a workload.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use tally::platform_shaped_uid;

use crate::{DurabilityArg, Failure, flag_value};

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Threads incrementing at once.
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// Run for this many seconds (the default: 10)...
    #[arg(long, value_name = "SECS", conflicts_with = "count")]
    pub(crate) duration: Option<f64>,
    /// ...or make this many increment calls in all.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Distinct subjects (UIDs of 32 hexadecimal characters, as the
    /// platform issues them); each thread works on
    /// its own share of them.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) subjects: u64,
    /// Distinct counters: class `load`, paths `/`, `/c1`, ..., each call
    /// picks one at random (every path rolls up to `/`).
    #[arg(long, default_value_t = 1)]
    pub(crate) counters: u32,
    /// Entries per call; above 1, calls go by name.
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// Increment through resolved handles or by (class, path) names.
    #[arg(long, value_enum, default_value_t = By::Handle)]
    by: By,
    /// `sequential` walks each thread's subjects in turn (with `--count`
    /// equal to `--subjects`, every subject gets one call); `random` picks
    /// among them uniformly.
    #[arg(long, value_enum, default_value_t = Pattern::Random)]
    pattern: Pattern,
    /// Keep the engine's data (log and snapshots) in DIR; without it the
    /// engine lives in memory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: acknowledge after the log is synced (`always`),
    /// sync within a second (`interval`), or keep no log (`never`).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Interval)]
    durability: DurabilityArg,
    /// Print the summary as one JSON object. (With --data-dir, the
    /// engine's memory includes its log buffers, so bytes per cell are
    /// meaningful in memory only.)
    #[arg(long)]
    pub(crate) json: bool,
    /// Increment the shared store in the Redis Cluster reached through
    /// these nodes instead of an engine in this process; --threads is then
    /// the number of concurrent callers (tasks) of one connection, and
    /// every call names its counter (--by and --pattern do not apply).
    #[cfg(feature = "redis")]
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',',
          conflicts_with_all = ["data_dir", "by", "pattern"])]
    pub(crate) redis_cluster: Vec<String>,
    /// With --redis-cluster: the prefix of the keys the load writes.
    #[cfg(feature = "redis")]
    #[arg(
        long,
        value_name = "NAME",
        default_value = "tally-load",
        requires = "redis_cluster"
    )]
    pub(crate) redis_namespace: String,
}

impl LoadArgs {
    /// Refuses sizes of zero, which no run can have.
    pub(crate) fn check_sizes(&self) -> Result<(), Failure> {
        if self.threads == 0 || self.subjects == 0 || self.counters == 0 || self.batch == 0 {
            return Err("--threads, --subjects, --counters and --batch must be at least 1".into());
        }
        Ok(())
    }
}

/// `--by`: how the load threads increment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum By {
    // Through resolved counter handles.
    Handle,
    // By (class, path) names.
    Name,
}

/// `--pattern`: which subject each call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Pattern {
    // Uniformly at random among the thread's subjects.
    Random,
    // Each of the thread's subjects in turn.
    Sequential,
}

/// One call in this many is timed for the latency percentiles, so that
/// reading the clock does not dominate what is measured.
const LATENCY_SAMPLE_EVERY: u64 = 8;

/// The longest call the latency histograms tell apart, in nanoseconds (an
/// hour); a longer one is counted as this long.
const LATENCY_MAX_NANOS: u64 = 3_600 * 1_000_000_000;

/// A latency histogram in nanoseconds, to three significant digits, its
/// counts allocated up front so that recording never allocates.
pub(crate) fn latency_histogram() -> Result<Histogram<u64>, Failure> {
    Ok(Histogram::new_with_bounds(1, LATENCY_MAX_NANOS, 3)?)
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

pub(crate) fn load(args: &LoadArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    args.check_sizes()?;
    if args.subjects < args.threads as u64 {
        return Err("--subjects must be at least --threads".into());
    }
    if args.batch > 1 && args.by == By::Handle {
        return Err("--batch above 1 needs --by name".into());
    }
    let mut builder = tally::Tally::builder().system_classes(["load"]);
    if let Some(dir) = &args.data_dir {
        builder = builder
            .data_dir(dir)
            .durability(args.durability.durability());
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
    let calls = match args.by {
        By::Name => Calls::Names(&paths),
        By::Handle => Calls::Handles(&handles),
    };
    // The UIDs exist before memory is first measured: only the engine's
    // growth is charged to the cells.
    let uids: Vec<String> = (0..args.subjects).map(platform_shaped_uid).collect();
    let mut histograms = (0..args.threads)
        .map(|_| latency_histogram())
        .collect::<Result<Vec<_>, _>>()?;
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
            let sequential = args.pattern == Pattern::Sequential;
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
                        histogram.saturating_record(began.elapsed().as_nanos() as u64);
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
    let mut latency = latency_histogram()?;
    for histogram in &histograms {
        latency.add(histogram)?;
    }
    let max = if latency.is_empty() { 0 } else { latency.max() };
    let summary = LoadSummary {
        threads: args.threads,
        subjects: args.subjects,
        counters: args.counters,
        batch: args.batch,
        by: flag_value(&args.by),
        pattern: flag_value(&args.pattern),
        durability: if args.data_dir.is_some() {
            flag_value(&args.durability)
        } else {
            "in memory".to_owned()
        },
        calls: calls_made,
        seconds,
        calls_per_sec: calls_made as f64 / seconds,
        entries_per_sec: (calls_made * args.batch as u64) as f64 / seconds,
        latency_ns: LatencySummary {
            sampled_every: LATENCY_SAMPLE_EVERY,
            p50: latency.value_at_quantile(0.50),
            p99: latency.value_at_quantile(0.99),
            p999: latency.value_at_quantile(0.999),
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
