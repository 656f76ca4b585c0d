//! `session-bench`: the comparison CLI. Parses arguments into a `BenchConfig` and calls
//! `session_bench::run`; with no arguments it runs the embedded default (memory and SQLite
//! in-memory).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use session_bench::{
    BackendSpec, BenchConfig, BenchError, Payload, PeerSpec, ScaleConfig, Workload, parse_duration,
};
use sessions::redact_url;

/// Benchmarks on equal terms: the same workloads (W1-W6) against every session store, next to each
/// store's raw-client floor.
///
/// The run cleans up after itself: at the end of each backend's and each peer's run (and when a run
/// fails midway) it deletes the sessions, floor keys/rows and peer sessions it created, outside the
/// measured time; anything it cannot remove is named in a warning on stderr.
#[derive(Debug, Parser)]
#[command(name = "session-bench", version)]
struct Args {
    /// Standalone Redis URL, e.g. redis://127.0.0.1:6379.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Redis Cluster URL, e.g. redis+cluster://127.0.0.1:7000,127.0.0.1:7001.
    #[arg(long, value_name = "URL")]
    redis_cluster: Option<String>,
    /// Postgres URL, e.g. postgres://user:pw@127.0.0.1:5432/db.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// MySQL/MariaDB URL, e.g. mysql://user:pw@127.0.0.1:3306/db.
    #[arg(long, value_name = "URL")]
    mysql: Option<String>,
    /// SQLite URL for the embedded SQLite row.
    #[arg(long, value_name = "URL", default_value = "sqlite::memory:")]
    sqlite: String,
    /// Skip the embedded rows (memory and SQLite); run only the servers given.
    #[arg(long)]
    no_embedded: bool,
    /// Measured time per cell (backend x workload x concurrency), e.g. 500ms, 2s.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    duration: Duration,
    /// Comma-separated task counts [default: 1,32; with --scale: 32].
    #[arg(long, value_delimiter = ',', value_parser = parse_tasks)]
    concurrency: Option<Vec<usize>>,
    /// Session payload: ITEMSxSIZE, e.g. 10x150 (default), 100x1k, 1x1m.
    #[arg(long, default_value = "10x150")]
    payload: Payload,
    /// Comma-separated workloads (W1..W6).
    #[arg(long, value_delimiter = ',', default_value = "W1,W2,W3,W4,W5,W6")]
    workloads: Vec<Workload>,
    /// Existing sessions per pool (capped at 64 MiB of values per pool).
    #[arg(long, default_value_t = 10_000)]
    pool: usize,
    /// Lock polling interval of the manager (W5) for stores without a release signal (the
    /// manager's default; waiters back off from 2 ms up to it).
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    poll_interval: Duration,
    /// Skip the `<backend>-exact` rows (W1 and W2 with exact sliding, w = 0).
    #[arg(long)]
    no_exact: bool,
    /// Skip the redis-near and redis-cluster-near rows (every workload on the Redis store with its
    /// near cache on, nearCache, every other setting at its default; run with --redis and
    /// --redis-cluster, their JSON rows carry the near cache's counters).
    #[arg(long)]
    no_near: bool,
    /// Skip the raw-client floors (and the reference probes).
    #[arg(long)]
    no_floors: bool,
    /// Also run the tower-sessions stores on W1-W3: moka always, Redis with --redis, Postgres with
    /// --postgres (rows named peer:tower-sessions-*).
    #[arg(long)]
    peers: bool,
    /// Instead of the rows: W1 and W2 at pools of many live sessions (--scale-pools), bytes per
    /// session against the raw client's plain storage, purge calls with nothing expired, a purge
    /// of --scale-expired expired sessions under W1 (SQL stores), and --scale-events sessions
    /// expiring together under W1 (memory, Redis). The JSON gets a `scale` section. The SQL
    /// stores use tables of their own (prefix bench_scale_, emptied at the start and the end).
    #[arg(long)]
    scale: bool,
    /// With --scale: comma-separated pool sizes [default: 1000,100000,1000000; --quick:
    /// 1000,10000].
    #[arg(long, value_delimiter = ',', value_parser = parse_pool, requires = "scale")]
    scale_pools: Option<Vec<usize>>,
    /// With --scale: expired sessions to purge (0: skip) [default: 1000000; --quick: 2000].
    #[arg(long, requires = "scale")]
    scale_expired: Option<usize>,
    /// With --scale: sessions expiring together for the expiry events (0: skip) [default:
    /// 200000; --quick: 1000].
    #[arg(long, requires = "scale")]
    scale_events: Option<usize>,
    /// With --scale: how long W1 (and the floor's read) runs unmeasured after each preload, before
    /// a pool's cells, so that they measure the server settled (0: no warm-up) [default: 10s;
    /// --quick: 500ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_warmup, requires = "scale")]
    scale_warmup: Option<Duration>,
    /// With --scale: the small sizes of a smoke run (pools 1000,10000; 2000 expired; 1000
    /// events).
    #[arg(long, requires = "scale")]
    quick: bool,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write an SVG bar chart of ops/s per backend and workload.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// The store `url` selects, given to `--flag`: its report name must be the flag's (so that
/// `--redis-cluster` is given a cluster URL and `--postgres` a Postgres one).
fn backend_for_flag(flag: &str, url: String) -> Result<BackendSpec, BenchError> {
    let spec = BackendSpec::new(url)?;
    if spec.name() != flag {
        return Err(BenchError::Config(format!(
            "--{flag} takes a {flag} URL, but {} is a {} URL",
            redact_url(spec.url()),
            spec.name()
        )));
    }
    Ok(spec)
}

/// A task count of at least 1.
fn parse_tasks(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("bad task count {s:?} (expected an integer >= 1)")),
    }
}

/// A pool size of at least 1.
fn parse_pool(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("bad pool size {s:?} (expected an integer >= 1)")),
    }
}

/// A duration as `--duration` takes it, or `0` for none.
fn parse_warmup(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "0" => Ok(Duration::ZERO),
        _ => parse_duration(s),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut peers = Vec::new();
    if args.peers {
        peers.push(PeerSpec::Moka);
        peers.extend(args.redis.clone().map(PeerSpec::Redis));
        peers.extend(args.postgres.clone().map(PeerSpec::Postgres));
    }
    let mut backends = Vec::new();
    let mut urls = vec![
        ("redis", args.redis),
        ("redis-cluster", args.redis_cluster),
        ("postgres", args.postgres),
        ("mysql", args.mysql),
    ];
    if !args.no_embedded {
        backends.push(BackendSpec::memory());
        urls.insert(0, ("sqlite", Some(args.sqlite)));
    }
    for (flag, url) in urls {
        let Some(url) = url else { continue };
        match backend_for_flag(flag, url) {
            Ok(spec) => backends.push(spec),
            Err(err) => {
                eprintln!("session-bench: error: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let scale = args.scale.then(|| {
        let base = if args.quick {
            ScaleConfig::quick()
        } else {
            ScaleConfig::full()
        };
        ScaleConfig {
            pools: args.scale_pools.unwrap_or(base.pools.clone()),
            expired: args.scale_expired.unwrap_or(base.expired),
            events: args.scale_events.unwrap_or(base.events),
            warmup: args.scale_warmup.unwrap_or(base.warmup),
            ..base
        }
    });
    let concurrency = args.concurrency.unwrap_or_else(|| {
        if scale.is_some() {
            vec![32]
        } else {
            vec![1, 32]
        }
    });
    let config = BenchConfig {
        backends,
        workloads: args.workloads,
        concurrency,
        payload: args.payload,
        duration: args.duration,
        pool: args.pool,
        floors: !args.no_floors,
        peers,
        poll_interval: args.poll_interval,
        exact_rows: !args.no_exact,
        near_rows: !args.no_near,
        progress: !args.quiet,
        scale,
        ..BenchConfig::default()
    };
    let report = match session_bench::run_blocking(&config) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("session-bench: error: {err}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    let outputs = [
        args.json.map(|p| (report.write_json(&p), p)),
        args.chart.map(|p| (report.write_chart(&p), p)),
    ];
    for (result, path) in outputs.into_iter().flatten() {
        if let Err(err) = result {
            eprintln!("session-bench: error: {err}");
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    // A `--scale` backend that stopped early has its error in the report (and the others ran).
    let stopped = report
        .scale
        .iter()
        .flat_map(|s| &s.backends)
        .any(|b| b.error.is_some());
    if stopped {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
