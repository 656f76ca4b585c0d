//! `session-bench`: benchmarks on equal terms. One workload definition (W1–W6) runs unchanged
//! against every session store through `Arc<dyn SessionStore>`, next to a floor (the raw client
//! doing the least work for the same bytes), and reports ops/s, latency percentiles
//! (hdrhistogram), store calls and bytes sent per operation, and the ratio to the floor.
//!
//! [`run`] is the whole benchmark; the `session-bench` binary only parses arguments into a
//! [`BenchConfig`] and calls it.

pub mod config;
pub mod counting;
pub mod error;
pub mod floors;
pub mod report;
pub mod workload;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_memory::MemoryStore;
use backend_redis::RedisStore;
use backend_sql::{SqlOptions, SqlStore};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use session_core::{Config, SessionStore, redact_url};

pub use config::{BackendSpec, BenchConfig, Payload, Workload, parse_duration};
pub use counting::CountingStore;
pub use error::BenchError;
pub use floors::Floor;
pub use report::{Report, Row};
pub use workload::Fixture;

/// Connects the store for `spec`, with `connections` pooled connections for SQL servers.
///
/// # Errors
/// [`BenchError::Connect`] naming the backend.
pub async fn connect_store(
    spec: &BackendSpec,
    connections: u32,
) -> Result<Arc<dyn SessionStore>, BenchError> {
    let fail = |source: session_core::Error| BenchError::Connect {
        backend: spec.name(),
        url: spec.url().map(redact_url).unwrap_or_default(),
        source: source.into(),
    };
    let Some(url) = spec.url() else {
        return Ok(Arc::new(MemoryStore::new()));
    };
    let config = Config::builder()
        .url(url)
        .connection_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(fail)?;
    let store: Arc<dyn SessionStore> = match spec {
        BackendSpec::Memory => Arc::new(MemoryStore::new()),
        BackendSpec::Sqlite(_) | BackendSpec::Postgres(_) | BackendSpec::Mysql(_) => Arc::new(
            SqlStore::connect_with(&config, SqlOptions::new().with_max_connections(connections))
                .await
                .map_err(fail)?,
        ),
        BackendSpec::Redis(_) | BackendSpec::RedisCluster(_) => {
            Arc::new(RedisStore::connect(&config).await.map_err(fail)?)
        }
    };
    Ok(store)
}

type OpFn = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<Duration, BenchError>> + Send>>
        + Send
        + Sync,
>;

struct CellResult {
    ops: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

fn new_hist() -> Histogram<u64> {
    // 1 ns .. 10 min, 3 significant digits: cannot fail for these bounds.
    Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Runs `op` on `tasks` tasks until `duration` has passed.
async fn run_cell(op: OpFn, tasks: usize, duration: Duration) -> Result<CellResult, BenchError> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let op = Arc::clone(&op);
        set.spawn(async move {
            let mut hist = new_hist();
            let mut iter = 0u64;
            while Instant::now() < deadline {
                let latency = op(task, iter).await?;
                hist.saturating_record(
                    u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1),
                );
                iter += 1;
            }
            Ok::<_, BenchError>((iter, hist))
        });
    }
    let mut total = new_hist();
    let mut ops = 0;
    while let Some(done) = set.join_next().await {
        let (n, hist) =
            done.map_err(|e| BenchError::Config(format!("benchmark task failed: {e}")))??;
        ops += n;
        let _ = total.add(&hist);
    }
    Ok(CellResult {
        ops,
        elapsed: start.elapsed(),
        hist: total,
    })
}

fn row(
    backend: &str,
    workload: String,
    tasks: usize,
    cell: &CellResult,
    calls: u64,
    bytes: u64,
) -> Row {
    let q = |p: f64| cell.hist.value_at_quantile(p) as f64 / 1000.0;
    let per_op = |n: u64| {
        if cell.ops == 0 {
            0.0
        } else {
            n as f64 / cell.ops as f64
        }
    };
    Row {
        backend: backend.to_owned(),
        workload,
        concurrency: tasks,
        ops: cell.ops,
        ops_per_sec: cell.ops as f64 / cell.elapsed.as_secs_f64().max(1e-9),
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        calls_per_op: per_op(calls),
        bytes_per_op: per_op(bytes),
        ratio_to_floor: None,
    }
}

/// Fills the floor's keys with blobs of `bytes` bytes (16 at a time).
async fn fill_floor(
    backend: &'static str,
    floor: &Arc<dyn Floor>,
    keys: &Arc<Vec<String>>,
    bytes: usize,
) -> Result<(), BenchError> {
    let blob: Arc<[u8]> = Arc::from(vec![b'f'; bytes]);
    let workers = 16.min(keys.len().max(1));
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (floor, keys, blob) = (Arc::clone(floor), Arc::clone(keys), Arc::clone(&blob));
        set.spawn(async move {
            for key in keys.iter().skip(w).step_by(workers) {
                floor.set(key, &blob).await?;
            }
            Ok::<_, session_core::BoxError>(())
        });
    }
    while let Some(done) = set.join_next().await {
        done.map_err(|e| BenchError::Config(format!("floor setup task failed: {e}")))?
            .map_err(|source| BenchError::Floor { backend, source })?;
    }
    Ok(())
}

/// The number of cells `config` runs.
pub fn cell_count(config: &BenchConfig) -> u64 {
    let per = config.workloads.len() + if config.floors { 2 } else { 0 };
    (config.backends.len() * per * config.concurrency.len()) as u64
}

/// Runs the whole benchmark: for each backend, connects the store (and its floor), prepares the
/// pools, then runs every workload (and the floors) at every concurrency.
///
/// # Errors
/// [`BenchError::Connect`] when a backend cannot be reached (naming it), store failures, bad
/// configuration.
pub async fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    if config.backends.is_empty()
        || config.concurrency.is_empty()
        || config.concurrency.contains(&0)
    {
        return Err(BenchError::Config(
            "need at least one backend and concurrency values >= 1".into(),
        ));
    }
    let bar = if config.progress {
        let bar = ProgressBar::new(cell_count(config));
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let max_tasks = config.concurrency.iter().copied().max().unwrap_or(1);
    let connections = u32::try_from(max_tasks).unwrap_or(u32::MAX);
    let mut rows = Vec::new();
    for spec in &config.backends {
        let name = spec.name();
        bar.set_message(format!("{name}: connecting and filling the pools"));
        let raw = connect_store(spec, connections).await?;
        let floor = if config.floors {
            Some(floors::connect(spec, connections).await?)
        } else {
            None
        };
        let counting = Arc::new(CountingStore::new(Arc::clone(&raw)));
        let store: Arc<dyn SessionStore> = Arc::<CountingStore>::clone(&counting);
        let fixture = Arc::new(Fixture::prepare(config, &store, &raw).await?);
        let first = rows.len();
        for &w in &config.workloads {
            for &tasks in &config.concurrency {
                bar.set_message(format!("{name} {w} x{tasks}"));
                let (fx, st) = (Arc::clone(&fixture), Arc::clone(&store));
                let op: OpFn = Arc::new(move |task, iter| {
                    let (fx, st) = (Arc::clone(&fx), Arc::clone(&st));
                    Box::pin(async move { fx.run_once(&st, w, task, tasks, iter).await })
                });
                let _ = counting.take_counts();
                let cell = run_cell(op, tasks, config.duration).await?;
                let (calls, bytes) = counting.take_counts();
                rows.push(row(name, w.to_string(), tasks, &cell, calls, bytes));
                bar.inc(1);
            }
        }
        if let Some(floor) = floor {
            let n = config.pool_for(config.payload);
            let keys: Arc<Vec<String>> =
                Arc::new((0..n).map(|i| format!("bench-floor-{i}")).collect());
            let blob = fixture.session_bytes();
            fill_floor(name, &floor, &keys, blob).await?;
            let value: Arc<[u8]> = Arc::from(vec![b'g'; blob]);
            for write in [false, true] {
                let label = if write { "floor-rw" } else { "floor-read" };
                for &tasks in &config.concurrency {
                    bar.set_message(format!("{name} {label} x{tasks}"));
                    let (fl, ks, v) = (Arc::clone(&floor), Arc::clone(&keys), Arc::clone(&value));
                    let op: OpFn = Arc::new(move |task, iter| {
                        let (fl, ks, v) = (Arc::clone(&fl), Arc::clone(&ks), Arc::clone(&v));
                        Box::pin(async move {
                            let per = (ks.len() / tasks).max(1);
                            let key = &ks[(task * per + (iter % per as u64) as usize) % ks.len()];
                            let start = Instant::now();
                            let fail = |source| BenchError::Floor {
                                backend: name,
                                source,
                            };
                            fl.get(key).await.map_err(fail)?;
                            if write {
                                fl.set(key, &v).await.map_err(fail)?;
                            }
                            Ok(start.elapsed())
                        })
                    });
                    let cell = run_cell(op, tasks, config.duration).await?;
                    let calls = cell.ops * if write { 2 } else { 1 };
                    let bytes = if write { cell.ops * blob as u64 } else { 0 };
                    rows.push(row(name, label.to_owned(), tasks, &cell, calls, bytes));
                    bar.inc(1);
                }
            }
            set_ratios(&mut rows[first..]);
        }
    }
    bar.finish_and_clear();
    Ok(Report {
        duration_secs: config.duration.as_secs_f64(),
        payload: config.payload.to_string(),
        pool: config.pool_for(config.payload),
        rows,
    })
}

/// W1 against the read floor, W2 against the read+write floor, at the same concurrency.
fn set_ratios(rows: &mut [Row]) {
    let floor = |rows: &[Row], label: &str, tasks: usize| {
        rows.iter()
            .find(|r| r.workload == label && r.concurrency == tasks)
            .map(|r| r.ops_per_sec)
    };
    let snapshot = rows.to_vec();
    for r in rows.iter_mut() {
        let label = match r.workload.as_str() {
            "W1" => "floor-read",
            "W2" => "floor-rw",
            _ => continue,
        };
        if let Some(f) = floor(&snapshot, label, r.concurrency).filter(|f| *f > 0.0) {
            r.ratio_to_floor = Some(r.ops_per_sec / f);
        }
    }
}

/// [`run`] on a new multi-threaded tokio runtime.
///
/// # Errors
/// As [`run`]; [`BenchError::Config`] if the runtime cannot start.
pub fn run_blocking(config: &BenchConfig) -> Result<Report, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Config(format!("cannot start the tokio runtime: {e}")))?
        .block_on(run(config))
}
