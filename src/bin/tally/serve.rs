//! `tally serve`: the HTTP API on a durable engine, or on the shared store
//! in a Redis Cluster, until a signal.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use tally::http::PlainSecrets;
use tracing_subscriber::filter::LevelFilter;

use crate::{DurabilityArg, Failure};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The data directory: created if missing, recovered if not.
    #[arg(long, value_name = "DIR", default_value = "./tally-data")]
    data_dir: PathBuf,
    #[cfg(feature = "redis")]
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Require API keys, read from FILE: lines `api-key KEY [SECRET]` and
    /// `user-key KEY SECRET`, secrets in base64. Without it the server is open.
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// Where a plain `secret` parameter is accepted (signed requests are
    /// accepted everywhere).
    #[arg(long, value_enum, default_value_t = PlainSecretsArg::Loopback)]
    plain_secrets: PlainSecretsArg,
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
    #[arg(long, value_enum, default_value_t = DurabilityArg::Interval)]
    durability: DurabilityArg,
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
    /// How much to log on stderr: a shutdown signal (`info`), requests
    /// still in flight 30 s after it (`warn`). The default is `info`, or
    /// what `RUST_LOG` says when it is set (`tracing-subscriber` filter
    /// directives, e.g. `RUST_LOG=warn`; a directive it cannot parse is
    /// ignored, with a note on stderr).
    #[arg(long, value_name = "LEVEL", value_enum)]
    log: Option<LogLevel>,
}

/// Serving from a Redis Cluster instead of a data directory.
#[cfg(feature = "redis")]
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// Serve the counters kept in the Redis Cluster reached through these
    /// nodes (any of them; more than one in case one is down) instead of a
    /// data directory. Any number of servers may share one cluster.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',',
          conflicts_with_all = ["data_dir", "durability", "snapshot_interval"])]
    redis_cluster: Vec<String>,
    /// The prefix of every key tally writes in the cluster; servers with the
    /// same prefix share counters and registry.
    #[arg(long, value_name = "NAME", default_value = tally::cluster::DEFAULT_NAMESPACE,
          requires = "redis_cluster")]
    redis_namespace: String,
    /// Answer an increment only once N replicas of its subject's master have
    /// acknowledged it (Redis `WAIT`); fewer within --redis-wait-timeout is
    /// a 500001 error saying the batch is applied but may be lost on a
    /// failover. 0 answers once the master has applied it.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "redis_cluster"
    )]
    redis_wait_replicas: usize,
    /// Milliseconds an increment waits for --redis-wait-replicas.
    #[arg(long, value_name = "MS", default_value_t = 1000, requires = "redis_cluster",
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    redis_wait_timeout: u64,
}

/// `--log`: the most detailed log lines written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Off => LevelFilter::OFF,
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// Sends this process's `tracing` events to stderr: at `level`, or as
/// `RUST_LOG` says when no level is given and it is set, else at `info`.
/// Stdout keeps what scripts read: the start-up lines and the stop lines.
fn start_logging(level: Option<LogLevel>) -> Result<(), Failure> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;

    let builder = EnvFilter::builder()
        .with_default_directive(level.map_or(LevelFilter::INFO, LogLevel::filter).into());
    let filter = match level {
        Some(_) => builder.parse_lossy(""),
        None => builder.from_env_lossy(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| e as Failure)?;
    Ok(())
}

/// `--plain-secrets`: where a plain `secret` parameter is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlainSecretsArg {
    Never,
    Loopback,
    Always,
}

impl PlainSecretsArg {
    fn policy(self) -> PlainSecrets {
        match self {
            PlainSecretsArg::Never => PlainSecrets::Never,
            PlainSecretsArg::Loopback => PlainSecrets::Loopback,
            PlainSecretsArg::Always => PlainSecrets::Always,
        }
    }
}

/// The longest timeout `tally serve` takes, in seconds: a day.
const MAX_LIMIT_SECS: u64 = 86_400;

pub(crate) fn serve(args: &ServeArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    use std::time::Duration;
    use tally::http::{Auth, Options, ServeOptions};

    start_logging(args.log)?;

    // Only `always` makes an increment wait (for a log sync); otherwise
    // calls run on the async workers, about twice the throughput.
    let mut options = Options::default()
        .body_limit(args.body_limit)
        .blocking_pool(args.durability == DurabilityArg::Always);
    if let Some(file) = &args.keys {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("reading the key file {}: {e}", file.display()))?;
        let auth = Auth::new()
            .keys_from_str(&text)?
            .plain_secrets(args.plain_secrets.policy())
            .public_base_url(&args.public_url);
        options = options.auth(auth);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = Served::open(args, &runtime)?;
    let served: Result<(), Failure> = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr).await?;
        writeln!(
            out,
            "tally serve: listening on http://{}, {}",
            listener.local_addr()?,
            store.describe(args)
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
            tracing::info!("shutdown signal received; finishing the requests in flight");
            let _ = stopping_tx.send(());
        };
        let router = store.router(options);
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
            () = deadline => tracing::warn!("requests still in flight after 30 s; closing anyway"),
        }
        Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    let closed = match store {
        Served::Engine(engine) => {
            writeln!(
                out,
                "tally serve: stopping: syncing the log and writing a final snapshot"
            )?;
            out.flush()?;
            engine.close()
        }
        #[cfg(feature = "redis")]
        Served::Cluster(_) => Ok(()),
    };
    served?;
    closed?;
    writeln!(out, "tally serve: stopped")?;
    Ok(ExitCode::SUCCESS)
}

/// The store `serve` answers from.
enum Served {
    Engine(tally::Tally),
    #[cfg(feature = "redis")]
    Cluster(tally::cluster::Cluster),
}

impl Served {
    /// Opens the data directory, or connects to the cluster when
    /// `--redis-cluster` is given.
    fn open(args: &ServeArgs, runtime: &tokio::runtime::Runtime) -> Result<Served, Failure> {
        use std::time::Duration;

        #[cfg(feature = "redis")]
        if !args.cluster.redis_cluster.is_empty() {
            let cluster = &args.cluster;
            let mut builder = tally::cluster::Cluster::builder(&cluster.redis_cluster)
                .namespace(&cluster.redis_namespace);
            if cluster.redis_wait_replicas > 0 {
                builder = builder.wait_for_replicas(
                    cluster.redis_wait_replicas,
                    Duration::from_millis(cluster.redis_wait_timeout),
                );
            }
            let cluster = runtime.block_on(builder.connect())?;
            return Ok(Served::Cluster(cluster));
        }
        let _ = runtime;
        let engine = tally::Tally::builder()
            .data_dir(&args.data_dir)
            .durability(args.durability.durability())
            .snapshot_interval(Duration::from_secs(args.snapshot_interval.max(1)))
            .build()?;
        Ok(Served::Engine(engine))
    }

    /// Where the counters are, for the start-up line.
    fn describe(&self, args: &ServeArgs) -> String {
        match self {
            Served::Engine(engine) => format!(
                "data in {} ({} subjects recovered)",
                args.data_dir.display(),
                engine.subject_count()
            ),
            #[cfg(feature = "redis")]
            Served::Cluster(_) => format!(
                "counters in the Redis Cluster at {} (namespace {}{})",
                args.cluster.redis_cluster.join(","),
                args.cluster.redis_namespace,
                match args.cluster.redis_wait_replicas {
                    0 => String::new(),
                    n => format!(", each increment acknowledged by {n} replicas"),
                }
            ),
        }
    }

    fn router(&self, options: tally::http::Options) -> axum::Router {
        match self {
            Served::Engine(engine) => tally::http::router_with(engine.clone(), options),
            #[cfg(feature = "redis")]
            Served::Cluster(cluster) => tally::http::cluster_router_with(cluster.clone(), options),
        }
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
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
