//! `tally load --redis-cluster`: increments under load on the shared
//! store, from concurrent callers of one `Cluster`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tally::cluster::Cluster;
use tally::platform_shaped_uid;

use crate::Failure;
use crate::load::{LoadArgs, latency_histogram};

/// What a run on the cluster measured.
#[derive(serde::Serialize)]
struct ClusterLoadSummary {
    callers: usize,
    subjects: u64,
    counters: u32,
    batch: usize,
    namespace: String,
    calls: u64,
    seconds: f64,
    calls_per_sec: f64,
    entries_per_sec: f64,
    latency_ns: ClusterLatency,
}

#[derive(serde::Serialize)]
struct ClusterLatency {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

/// Runs the load of `args` with `args.threads` concurrent callers (tasks)
/// on the cluster reached through `seeds`, every call timed. The callers
/// share one thread, as redis-benchmark's clients do: the calls wait on
/// the network, and a multi-threaded runtime would spend the machine's
/// cores moving tasks between threads.
pub(crate) fn load_cluster(
    args: &LoadArgs,
    seeds: &[String],
    namespace: &str,
    out: &mut impl Write,
) -> Result<ExitCode, Failure> {
    args.check_sizes()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(run(args, seeds, namespace))?;
    if args.json {
        serde_json::to_writer(&mut *out, &summary)?;
        writeln!(out)?;
    } else {
        let l = &summary.latency_ns;
        writeln!(
            out,
            "{} callers, {} subjects, {} counters, batch {}, Redis Cluster namespace {}",
            summary.callers, summary.subjects, summary.counters, summary.batch, summary.namespace
        )?;
        writeln!(
            out,
            "calls         {} in {:.2} s: {:.0} calls/s ({:.0} entries/s)",
            summary.calls, summary.seconds, summary.calls_per_sec, summary.entries_per_sec
        )?;
        writeln!(
            out,
            "latency       p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns (every call timed)",
            l.p50, l.p99, l.p999, l.max
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(
    args: &LoadArgs,
    seeds: &[String],
    namespace: &str,
) -> Result<ClusterLoadSummary, Failure> {
    let cluster = Cluster::builder(seeds)
        .namespace(namespace)
        .connect()
        .await?;
    // Every path but `/` rolls up to the registered `/`.
    let paths: Arc<Vec<String>> = Arc::new(
        (0..args.counters)
            .map(|i| match i {
                0 => "/".to_owned(),
                i => format!("/c{i}"),
            })
            .collect(),
    );
    cluster
        .register(paths.iter().map(|path| ("load", path.as_str())))
        .await?;
    let uids: Arc<Vec<String>> = Arc::new((0..args.subjects).map(platform_shaped_uid).collect());
    let callers = args.threads;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let quota_of = |caller: usize| {
        args.count
            .map(|t| t / callers as u64 + u64::from((caller as u64) < t % callers as u64))
    };
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(10.0).max(0.0));
    let start = Instant::now();
    let tasks: Vec<tokio::task::JoinHandle<Result<Histogram<u64>, tally::Error>>> = (0..callers)
        .map(|caller| {
            let (cluster, paths, uids, done, stop) = (
                cluster.clone(),
                Arc::clone(&paths),
                Arc::clone(&uids),
                Arc::clone(&done),
                Arc::clone(&stop),
            );
            let quota = quota_of(caller);
            let batch = args.batch;
            let mut histogram = latency_histogram()?;
            Ok(tokio::spawn(async move {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64
                    ^ (caller as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut made = 0u64;
                while quota.map_or(!stop.load(Ordering::Relaxed), |q| made < q) {
                    let uid = &uids[(next() % uids.len() as u64) as usize];
                    let entries: Vec<tally::Increment<'_>> = (0..batch)
                        .map(|_| {
                            let path = &paths[(next() % paths.len() as u64) as usize];
                            tally::Increment::new("load", path).value(1)
                        })
                        .collect();
                    let began = Instant::now();
                    cluster.increment(uid.as_str(), &entries).await?;
                    histogram.saturating_record(began.elapsed().as_nanos() as u64);
                    made += 1;
                }
                done.fetch_add(made, Ordering::Relaxed);
                Ok::<Histogram<u64>, tally::Error>(histogram)
            }))
        })
        .collect::<Result<_, Failure>>()?;
    if args.count.is_none() {
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut latency = latency_histogram()?;
    for task in tasks {
        let histogram = task.await.map_err(|e| e.to_string())??;
        latency.add(&histogram)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let calls = done.load(Ordering::Relaxed);
    Ok(ClusterLoadSummary {
        callers,
        subjects: args.subjects,
        counters: args.counters,
        batch: args.batch,
        namespace: namespace.to_owned(),
        calls,
        seconds,
        calls_per_sec: calls as f64 / seconds,
        entries_per_sec: (calls * args.batch as u64) as f64 / seconds,
        latency_ns: ClusterLatency {
            p50: latency.value_at_quantile(0.50),
            p99: latency.value_at_quantile(0.99),
            p999: latency.value_at_quantile(0.999),
            max: if latency.is_empty() { 0 } else { latency.max() },
        },
    })
}
