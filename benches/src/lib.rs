//! `session-bench`: benchmarks on equal terms. One workload definition (W1–W6) runs unchanged
//! against every session store through `Arc<dyn SessionStore>`, next to a floor (the raw client
//! doing the least work for the same bytes), and reports ops/s, latency percentiles
//! (hdrhistogram), store calls and bytes sent per operation, and the ratio to the floor.
//!
//! [`run`] is the whole benchmark; the `session-bench` binary only parses arguments into a
//! [`BenchConfig`] and calls it. With [`BenchConfig::scale`] (`--scale`) it runs [`scale`]
//! instead: W1 and W2 at pools of many live sessions, bytes per session, purge and expiry events.
//!
//! A run cleans up after itself ([`cleanup`]): at the end of each backend's and each peer's run,
//! also when it fails midway, the sessions, floor keys/rows and peer sessions it created on the
//! servers are deleted, outside every measured cell; what cannot be removed is reported as a
//! warning on stderr (backend and key count), without discarding the results.

pub mod cleanup;
pub mod config;
pub mod counting;
pub mod error;
pub mod floors;
pub mod peers;
pub mod report;
pub mod scale;
pub mod wire;
pub mod workload;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use sessions::redis::{RedisOptions, RedisStore};
use sessions::sql::SqlOptions;
use sessions::{Backend, Config, RefreshWindow, SessionStore, StoreOptions, redact_url};

pub use config::{BackendSpec, BenchConfig, Payload, Workload, parse_duration};
pub use counting::{Counting, CountingStore};
pub use error::BenchError;
pub use floors::{Floor, Probe};
pub use peers::PeerSpec;
pub use report::{NearCacheCounters, Report, Row};
pub use scale::{ScaleConfig, ScaleReport};
pub use workload::Fixture;

/// Connects the store for `spec` through the facade (`sessions::connect_with`), with
/// `connections` pooled connections for SQL servers and every other setting at its default
/// (the default refresh window included).
///
/// # Errors
/// [`BenchError::Connect`] naming the backend.
pub async fn connect_store(
    spec: &BackendSpec, connections: u32,
) -> Result<Arc<dyn SessionStore>, BenchError> {
    connect_store_with(spec, connections, RefreshWindow::DEFAULT).await
}

/// [`connect_store`] with the refresh window `window` (the `-exact` rows use
/// [`RefreshWindow::EXACT`]).
///
/// # Errors
/// [`BenchError::Connect`] naming the backend.
pub async fn connect_store_with(
    spec: &BackendSpec, connections: u32, window: RefreshWindow,
) -> Result<Arc<dyn SessionStore>, BenchError> {
    let fail = connect_error(spec);
    let config = store_config(spec, window).build().map_err(fail)?;
    let options = StoreOptions::new().with_sql(SqlOptions::new().with_max_connections(connections));
    sessions::connect_with(&config, &options)
        .await
        .map_err(connect_error(spec))
}

/// Connects our Redis store for `spec` (standalone or cluster) with its near cache on: the
/// configuration of [`connect_store`] plus the one setting `nearCache`
/// (`Config::builder().near_cache(true)`), and the Redis options the facade's dispatch passes
/// (`RedisOptions::new()`: the default memory bound). Opened directly rather than through
/// `sessions::connect_with` (which makes the same call) so that the caller keeps the concrete
/// store for [`RedisStore::near_cache_stats`]; a clone shares its connections and its cache.
///
/// # Errors
/// [`BenchError::Config`] when `spec` is not Redis; [`BenchError::Connect`] naming the backend.
pub async fn connect_near_store(spec: &BackendSpec) -> Result<RedisStore, BenchError> {
    if spec.backend() != Backend::Redis {
        return Err(BenchError::Config(format!(
            "{}: only the Redis store has a near cache",
            spec.name()
        )));
    }
    let config = store_config(spec, RefreshWindow::DEFAULT)
        .near_cache(true)
        .build()
        .map_err(connect_error(spec))?;
    RedisStore::connect_with(&config, RedisOptions::new())
        .await
        .map_err(connect_error(spec))
}

/// The settings every row's store is opened with: the URL, a 5 s connection timeout, `window`;
/// everything else at its default.
fn store_config(spec: &BackendSpec, window: RefreshWindow) -> sessions::ConfigBuilder {
    Config::builder()
        .url(spec.url())
        .connection_timeout(Some(Duration::from_secs(5)))
        .refresh_window(window)
}

/// A connect failure of `spec`'s store, naming the backend and the URL (password redacted).
fn connect_error(spec: &BackendSpec) -> impl Fn(sessions::Error) -> BenchError + '_ {
    move |source| BenchError::Connect {
        backend: spec.name(),
        url: redact_url(spec.url()),
        source: source.into(),
    }
}

type OpFn = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<Duration, BenchError>> + Send>>
        + Send
        + Sync,
>;

pub(crate) struct CellResult {
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
    run_load(op, tasks, Until::Deadline(Instant::now() + duration), None).await
}

/// When a load ([`run_load`]) stops: at a deadline, or once a flag is raised.
#[derive(Debug, Clone)]
pub(crate) enum Until {
    /// At this instant.
    Deadline(Instant),
    /// When the flag becomes `true`.
    Flag(Arc<std::sync::atomic::AtomicBool>),
}

impl Until {
    fn reached(&self) -> bool {
        match self {
            Self::Deadline(deadline) => Instant::now() >= *deadline,
            Self::Flag(flag) => flag.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Runs `op` on `tasks` tasks until `until`; every latency also goes to `timeline` when given
/// (per second and per phase: [`scale::Timeline`]).
///
/// Each task spends one unit of tokio's cooperative budget per operation, so an operation that
/// completes without waiting (a memory store, a near cache hit) still yields now and then (at the
/// latest every 128 operations) and every task runs: without it, the first tasks on the worker threads would
/// loop until the deadline and the others would never start. An operation that waits on I/O
/// spends the budget anyway.
pub(crate) async fn run_load(
    op: OpFn, tasks: usize, until: Until, timeline: Option<Arc<scale::Timeline>>,
) -> Result<CellResult, BenchError> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let op = Arc::clone(&op);
        let (until, timeline) = (until.clone(), timeline.clone());
        set.spawn(async move {
            let mut hist = new_hist();
            let mut iter = 0u64;
            while !until.reached() {
                let latency = op(task, iter).await?;
                hist.saturating_record(
                    u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1),
                );
                if let Some(timeline) = &timeline {
                    timeline.record(latency);
                }
                iter += 1;
                tokio::task::coop::consume_budget().await;
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
    backend: &str, workload: String, tasks: usize, cell: &CellResult, calls: u64, bytes: u64,
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
        peer_of: None,
        wire_bytes_per_op: None,
        near_cache: None,
    }
}

/// Sets every one of `keys` to `blob` through `floor`, `workers` sets at once.
async fn fill_floor(
    backend: &'static str, floor: &Arc<dyn Floor>, keys: Arc<[String]>, blob: Arc<[u8]>,
    workers: usize,
) -> Result<(), BenchError> {
    let workers = workers.clamp(1, keys.len().max(1));
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (floor, keys, blob) = (Arc::clone(floor), Arc::clone(&keys), Arc::clone(&blob));
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

/// The number of cells `config` runs (probes counted for the backends that have them).
pub fn cell_count(config: &BenchConfig) -> u64 {
    let probes = |spec: &BackendSpec| match spec.backend() {
        _ if !config.floors => 0,
        // The probes plus W1 through the bare store.
        Backend::Memory => floors::Probe::MEMORY.len() + 1,
        Backend::Redis if spec.is_standalone_redis() => floors::Probe::REDIS.len(),
        _ => 0,
    };
    let floors = if config.floors { 2 } else { 0 };
    let ours: usize = config
        .backends
        .iter()
        .map(|b| config.workloads.len() + floors + probes(b))
        .sum();
    let exact = if config.exact_rows {
        config.backends.len() * exact_workloads(config).count()
    } else {
        0
    };
    let near = if config.near_rows {
        near_backends(config).count() * config.workloads.len()
    } else {
        0
    };
    let peer_workloads = config
        .workloads
        .iter()
        .filter(|w| PeerSpec::WORKLOADS.contains(w))
        .count();
    ((ours + exact + near + config.peers.len() * peer_workloads) * config.concurrency.len()) as u64
}

/// Operations per wire-byte measurement round (three rounds, the smallest kept).
const WIRE_OPS: u64 = 200;

/// Runs the whole benchmark: for each backend, connects the store (and its floor), prepares the
/// pools, then runs every workload (and the floors and probes) at every concurrency, then its
/// `-exact` rows and, on Redis, its `-near` rows (each on a store of its own); each peer runs
/// right after our backend of the same kind (or at the end, if that backend is not in the run).
///
/// # Errors
/// [`BenchError::Connect`] when a backend cannot be reached (naming it), store failures, bad
/// configuration.
pub async fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    if (config.backends.is_empty() && config.peers.is_empty())
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
    if let Some(scale) = &config.scale {
        // `--scale` runs its own plan (pools, bytes, purge, expiry events) instead of the rows.
        let scaled = scale::run(config, scale, connections, &bar).await;
        bar.finish_and_clear();
        return Ok(Report {
            duration_secs: config.duration.as_secs_f64(),
            payload: config.payload.to_string(),
            pool: 0,
            refresh_window_percent: RefreshWindow::DEFAULT.percent(),
            rows: Vec::new(),
            scale: Some(scaled?),
        });
    }
    let mut rows = Vec::new();
    for spec in &config.backends {
        run_backend(config, spec, connections, &bar, &mut rows).await?;
        if config.exact_rows {
            run_exact(config, spec, connections, &bar, &mut rows).await?;
        }
        if config.near_rows && spec.near_name().is_some() {
            run_near(config, spec, &bar, &mut rows).await?;
        }
        for peer in config.peers.iter().filter(|p| p.ours() == spec.name()) {
            run_peer(config, peer, connections, &bar, &mut rows).await?;
        }
    }
    for peer in &config.peers {
        if !config.backends.iter().any(|b| b.name() == peer.ours()) {
            run_peer(config, peer, connections, &bar, &mut rows).await?;
        }
    }
    set_ratios(&mut rows);
    bar.finish_and_clear();
    Ok(Report {
        duration_secs: config.duration.as_secs_f64(),
        payload: config.payload.to_string(),
        pool: config.pool_for(config.payload),
        refresh_window_percent: RefreshWindow::DEFAULT.percent(),
        rows,
        scale: None,
    })
}

/// Runs `op` on every concurrency, pushing one row per cell (`counts` is read before and after).
async fn run_cells(
    config: &BenchConfig, bar: &ProgressBar, rows: &mut Vec<Row>, name: &'static str, label: &str,
    op: &TaskOp, counts: &(dyn Fn() -> (u64, u64) + Sync),
) -> Result<(), BenchError> {
    run_cells_then(config, bar, rows, name, label, op, counts, &mut |_| ()).await
}

/// [`run_cells`], calling `then` on each row right after its cell (before the next one starts).
#[allow(clippy::too_many_arguments)]
async fn run_cells_then(
    config: &BenchConfig, bar: &ProgressBar, rows: &mut Vec<Row>, name: &'static str, label: &str,
    op: &TaskOp, counts: &(dyn Fn() -> (u64, u64) + Sync), then: &mut (dyn FnMut(&mut Row) + Send),
) -> Result<(), BenchError> {
    for &tasks in &config.concurrency {
        bar.set_message(format!("{name} {label} x{tasks}"));
        let _ = counts();
        let cell = run_cell(with_tasks(op, tasks), tasks, config.duration).await?;
        let (calls, bytes) = counts();
        let mut row = row(name, label.to_owned(), tasks, &cell, calls, bytes);
        then(&mut row);
        rows.push(row);
        bar.inc(1);
    }
    Ok(())
}

/// An operation of `(task, tasks, iter)`, fixed to `tasks` tasks for [`run_cell`].
type TaskOp = Arc<
    dyn Fn(usize, usize, u64) -> Pin<Box<dyn Future<Output = Result<Duration, BenchError>> + Send>>
        + Send
        + Sync,
>;

fn with_tasks(op: &TaskOp, tasks: usize) -> OpFn {
    let op = Arc::clone(op);
    Arc::new(move |task, iter| op(task, tasks, iter))
}

/// Our store on one backend: its workloads, floors, probes and (standalone Redis) wire bytes; then
/// (also after a failure) the cleanup of its sessions and floor keys, outside every cell.
async fn run_backend(
    config: &BenchConfig, spec: &BackendSpec, connections: u32, bar: &ProgressBar,
    rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let name = spec.name();
    bar.set_message(format!("{name}: connecting and filling the pools"));
    let raw = connect_store(spec, connections).await?;
    let floor = if config.floors {
        Some(floors::connect(spec, connections).await?)
    } else {
        None
    };
    let counting = Arc::new(Counting::wrap(Arc::clone(&raw)));
    let store: Arc<dyn SessionStore> = Arc::<CountingStore>::clone(&counting);
    // From here on, what the run creates is removed at the end, whether the run succeeds or not.
    let fixture = Arc::new(Fixture::prepare(config, &store, &raw).await?);
    let n = config.pool_for(config.payload);
    let keys: Arc<Vec<String>> = Arc::new((0..n).map(|i| format!("bench-floor-{i}")).collect());
    let measured: Result<(), BenchError> = async {
        let meter = if spec.is_standalone_redis() {
            Some(wire::WireMeter::connect(name, spec.url()).await?)
        } else {
            None
        };
        let counts = || counting.layer().take_counts();
        for &w in &config.workloads {
            let op = workload_op(&fixture, &store, w);
            let first = rows.len();
            run_cells(config, bar, rows, name, &w.to_string(), &op, &counts).await?;
            // W5's lock hand-off goes through the manager's waiting, not one operation.
            if let Some(meter) = meter.as_ref().filter(|_| w != Workload::W5) {
                bar.set_message(format!("{name} {w} wire bytes"));
                let wire = meter.per_op(WIRE_OPS, |i| op(0, 1, i)).await?;
                let _ = counting.layer().take_counts();
                for r in &mut rows[first..] {
                    r.wire_bytes_per_op = Some(wire);
                }
            }
        }
        let Some(floor) = floor.clone() else {
            return Ok(());
        };
        let blob = fixture.session_bytes();
        fill_floor(
            name,
            &floor,
            Arc::from(keys.as_slice()),
            Arc::from(vec![b'f'; blob]),
            16,
        )
        .await?;
        let value: Arc<[u8]> = Arc::from(vec![b'g'; blob]);
        for write in [false, true] {
            let label = if write { "floor-rw" } else { "floor-read" };
            let (fl, ks, v) = (Arc::clone(&floor), Arc::clone(&keys), Arc::clone(&value));
            let op: TaskOp = Arc::new(move |task, tasks, iter| {
                let (fl, ks, v) = (Arc::clone(&fl), Arc::clone(&ks), Arc::clone(&v));
                Box::pin(async move {
                    let key = floor_key(&ks, task, tasks, iter);
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
            let ops = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let ops_counter = Arc::clone(&ops);
            let counted: TaskOp = Arc::new(move |task, tasks, iter| {
                ops_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                op(task, tasks, iter)
            });
            // One call per read, two per read+write; the write sends one session's bytes.
            let counts = || {
                let n = ops.swap(0, std::sync::atomic::Ordering::Relaxed);
                if write {
                    (2 * n, n * blob as u64)
                } else {
                    (n, 0)
                }
            };
            run_cells(config, bar, rows, name, label, &counted, &counts).await?;
        }
        let Some(prober) = floors::prober(spec, &keys, config.payload).await? else {
            return Ok(());
        };
        let prober = Arc::new(prober);
        for &probe in prober.probes() {
            let (pr, ks) = (Arc::clone(&prober), Arc::clone(&keys));
            let ops = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let ops_counter = Arc::clone(&ops);
            let op: TaskOp = Arc::new(move |task, tasks, iter| {
                let (pr, ks) = (Arc::clone(&pr), Arc::clone(&ks));
                ops_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Box::pin(async move {
                    let key = floor_key(&ks, task, tasks, iter);
                    let start = Instant::now();
                    pr.run(probe, key)
                        .await
                        .map_err(|source| BenchError::Floor {
                            backend: name,
                            source,
                        })?;
                    Ok(start.elapsed())
                })
            });
            let counts = || {
                (
                    ops.swap(0, std::sync::atomic::Ordering::Relaxed) * probe.calls(),
                    0,
                )
            };
            run_cells(config, bar, rows, name, probe.label(), &op, &counts).await?;
        }
        if spec.backend() == Backend::Memory && config.workloads.contains(&Workload::W1) {
            // W1 on the bare store: what the counting decorator adds.
            let read = workload_op(&fixture, &raw, Workload::W1);
            let ops = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let ops_counter = Arc::clone(&ops);
            let op: TaskOp = Arc::new(move |task, tasks, iter| {
                ops_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                read(task, tasks, iter)
            });
            let counts = || (ops.swap(0, std::sync::atomic::Ordering::Relaxed), 0);
            run_cells(config, bar, rows, name, "ref-W1-uncounted", &op, &counts).await?;
        }
        Ok(())
    }
    .await;
    bar.set_message(format!("{name}: cleaning up"));
    let mut left = fixture.remove(&raw).await;
    if let Some(floor) = &floor {
        let mut floor_keys = keys.to_vec();
        if spec.is_standalone_redis() {
            floor_keys.extend(keys.iter().flat_map(|k| floors::probe_keys(k)));
        }
        left.merge(floors::remove_keys(floor, &floor_keys).await);
    }
    bar.suspend(|| left.warn(name));
    measured
}

/// The workloads of the `-exact` rows: those of `config` that read or slide (W1, W2).
fn exact_workloads(config: &BenchConfig) -> impl Iterator<Item = Workload> + '_ {
    config
        .workloads
        .iter()
        .copied()
        .filter(|w| matches!(w, Workload::W1 | Workload::W2))
}

/// Our store on one backend with exact sliding (`w = 0`, ASP.NET's behaviour): W1 and W2 only,
/// rows named `<backend>-exact`, so the cost of exact expiry stays visible next to the default
/// window's rows. Its own pool of sessions, removed at the end (also after a failure).
async fn run_exact(
    config: &BenchConfig, spec: &BackendSpec, connections: u32, bar: &ProgressBar,
    rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let name = spec.exact_name();
    if exact_workloads(config).next().is_none() {
        return Ok(());
    }
    bar.set_message(format!("{name}: connecting and filling the pools"));
    let raw = connect_store_with(spec, connections, RefreshWindow::EXACT).await?;
    let counting = Arc::new(Counting::wrap(Arc::clone(&raw)));
    let store: Arc<dyn SessionStore> = Arc::<CountingStore>::clone(&counting);
    let fixture = Arc::new(Fixture::prepare(config, &store, &raw).await?);
    let measured: Result<(), BenchError> = async {
        let counts = || counting.layer().take_counts();
        for w in exact_workloads(config) {
            let op = workload_op(&fixture, &store, w);
            run_cells(config, bar, rows, name, &w.to_string(), &op, &counts).await?;
        }
        Ok(())
    }
    .await;
    bar.set_message(format!("{name}: cleaning up"));
    let left = fixture.remove(&raw).await;
    bar.suspend(|| left.warn(name));
    measured
}

/// The backends of `config` that get `-near` rows (Redis standalone and cluster).
fn near_backends(config: &BenchConfig) -> impl Iterator<Item = &BackendSpec> + '_ {
    config.backends.iter().filter(|b| b.near_name().is_some())
}

/// Our Redis store with its near cache on (`nearCache`, every other setting at its default):
/// every workload of `config`, rows named `redis-near` / `redis-cluster-near`, each with the near
/// cache's counters over its cell ([`NearCacheCounters`]; none while the store reports none),
/// plus wire bytes on standalone Redis as for the plain rows. Its own pool of sessions, removed
/// at the end (also after a failure).
async fn run_near(
    config: &BenchConfig, spec: &BackendSpec, bar: &ProgressBar, rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let Some(name) = spec.near_name() else {
        return Ok(());
    };
    bar.set_message(format!("{name}: connecting and filling the pools"));
    let near = connect_near_store(spec).await?;
    let raw: Arc<dyn SessionStore> = Arc::new(near.clone());
    let counting = Arc::new(Counting::wrap(Arc::clone(&raw)));
    let store: Arc<dyn SessionStore> = Arc::<CountingStore>::clone(&counting);
    let fixture = Arc::new(Fixture::prepare(config, &store, &raw).await?);
    let measured: Result<(), BenchError> = async {
        let meter = if spec.is_standalone_redis() {
            Some(wire::WireMeter::connect(name, spec.url()).await?)
        } else {
            None
        };
        let counts = || counting.layer().take_counts();
        for &w in &config.workloads {
            let op = workload_op(&fixture, &store, w);
            let first = rows.len();
            if w == Workload::W1 {
                // Reads are what the near cache serves; a process that has been serving these
                // sessions holds them, so the pool is read once first, outside the measured time
                // (at 1 task a cell reads about one pass of the pool, which would otherwise
                // measure only the cold cache).
                bar.set_message(format!("{name} W1: reading the pool once"));
                for i in 0..config.pool_for(config.payload) as u64 {
                    op(0, 1, i).await?;
                }
                let _ = counting.layer().take_counts();
            }
            // Each row gets the counters of its own cell: read before the first cell and after
            // each one (the setup and the wire-byte operations fall outside every cell).
            let mut last = near.near_cache_stats();
            let mut then = |r: &mut Row| {
                let now = near.near_cache_stats();
                r.near_cache = last
                    .as_ref()
                    .zip(now.as_ref())
                    .map(|(before, after)| NearCacheCounters::between(before, after));
                last = now;
            };
            run_cells_then(
                config,
                bar,
                rows,
                name,
                &w.to_string(),
                &op,
                &counts,
                &mut then,
            )
            .await?;
            if let Some(meter) = meter.as_ref().filter(|_| w != Workload::W5) {
                bar.set_message(format!("{name} {w} wire bytes"));
                let wire = meter.per_op(WIRE_OPS, |i| op(0, 1, i)).await?;
                let _ = counting.layer().take_counts();
                for r in &mut rows[first..] {
                    r.wire_bytes_per_op = Some(wire);
                }
            }
        }
        Ok(())
    }
    .await;
    bar.set_message(format!("{name}: cleaning up"));
    let left = fixture.remove(&raw).await;
    bar.suspend(|| left.warn(name));
    measured
}

/// Workload `w` of `fixture` on `store`, as the operation of a cell.
fn workload_op(fixture: &Arc<Fixture>, store: &Arc<dyn SessionStore>, w: Workload) -> TaskOp {
    let (fx, st) = (Arc::clone(fixture), Arc::clone(store));
    Arc::new(move |task, tasks, iter| {
        let (fx, st) = (Arc::clone(&fx), Arc::clone(&st));
        Box::pin(async move { fx.run_once(&st, w, task, tasks, iter).await })
    })
}

/// Task `task` of `tasks` uses its own slice of the floor's keys.
fn floor_key(keys: &[String], task: usize, tasks: usize, iter: u64) -> &str {
    let per = (keys.len() / tasks.max(1)).max(1);
    &keys[(task * per + (iter % per as u64) as usize) % keys.len()]
}

/// One `tower-sessions` store on W1–W3 (those of `config.workloads`), plus wire bytes on Redis;
/// then (also after a failure) the cleanup of its pool, outside every cell.
async fn run_peer(
    config: &BenchConfig, spec: &PeerSpec, connections: u32, bar: &ProgressBar, rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let name = spec.name();
    bar.set_message(format!("{name}: connecting and filling the pool"));
    let raw = peers::connect(spec, connections).await?;
    let counting = Arc::new(peers::CountingPeer::new(Arc::clone(&raw)));
    let store: Arc<dyn tower_sessions_core::SessionStore> =
        Arc::<peers::CountingPeer>::clone(&counting);
    let fixture = Arc::new(peers::PeerFixture::prepare(config, name, &raw).await?);
    let measured: Result<(), BenchError> = async {
        let meter = match spec {
            PeerSpec::Redis(url) => Some(wire::WireMeter::connect(name, url).await?),
            _ => None,
        };
        let counts = || counting.take_counts();
        for &w in config
            .workloads
            .iter()
            .filter(|w| PeerSpec::WORKLOADS.contains(w))
        {
            let (fx, st) = (Arc::clone(&fixture), Arc::clone(&store));
            let op: TaskOp = Arc::new(move |task, tasks, iter| {
                let (fx, st) = (Arc::clone(&fx), Arc::clone(&st));
                Box::pin(async move { fx.run_once(&st, w, task, tasks, iter).await })
            });
            let first = rows.len();
            run_cells(config, bar, rows, name, &w.to_string(), &op, &counts).await?;
            let wire = match &meter {
                Some(meter) => {
                    bar.set_message(format!("{name} {w} wire bytes"));
                    let wire = meter.per_op(WIRE_OPS, |i| op(0, 1, i)).await?;
                    let _ = counting.take_counts();
                    Some(wire)
                }
                None => None,
            };
            for r in &mut rows[first..] {
                r.peer_of = Some(spec.ours().to_owned());
                r.wire_bytes_per_op = wire;
            }
        }
        Ok(())
    }
    .await;
    bar.set_message(format!("{name}: cleaning up"));
    let left = fixture.remove(&raw).await;
    bar.suspend(|| left.warn(name));
    measured
}

/// W1 against the read floor, W2 against the read+write floor, at the same concurrency and on the
/// same backend (a peer row uses the floors of our backend of the same kind).
fn set_ratios(rows: &mut [Row]) {
    let snapshot = rows.to_vec();
    for r in rows.iter_mut() {
        let label = match r.workload.as_str() {
            "W1" => "floor-read",
            "W2" => "floor-rw",
            _ => continue,
        };
        // Peers and the `-exact` and `-near` rows compare with the floor of the backend they run
        // on.
        let backend = r.peer_of.as_deref().unwrap_or_else(|| {
            r.backend
                .strip_suffix("-exact")
                .or_else(|| r.backend.strip_suffix("-near"))
                .unwrap_or(&r.backend)
        });
        let floor = snapshot
            .iter()
            .find(|f| f.backend == backend && f.workload == label && f.concurrency == r.concurrency)
            .map(|f| f.ops_per_sec)
            .filter(|f| *f > 0.0);
        if let Some(f) = floor {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backends: &[&str], near_rows: bool) -> BenchConfig {
        BenchConfig {
            backends: backends
                .iter()
                .map(|url| BackendSpec::new(*url).unwrap())
                .collect(),
            near_rows,
            ..BenchConfig::default()
        }
    }

    /// Redis standalone and cluster get `-near` rows on every workload; the other stores none,
    /// and `near_rows: false` (`--no-near`) leaves them out.
    #[test]
    fn near_rows_are_planned_for_redis() {
        let urls = ["redis://127.0.0.1:6379", "redis+cluster://127.0.0.1:7000"];
        let near: Vec<&str> = near_backends(&config(&urls, true))
            .filter_map(BackendSpec::near_name)
            .collect();
        assert_eq!(near, ["redis-near", "redis-cluster-near"]);
        let embedded = config(&["memory://", "sqlite::memory:"], true);
        assert_eq!(near_backends(&embedded).count(), 0);

        // Per backend and concurrency: 6 workloads + 2 floors (+ 3 probes on standalone Redis)
        // + 2 exact rows; with the near rows, 6 more on each Redis.
        let with = cell_count(&config(&urls, true));
        let without = cell_count(&config(&urls, false));
        assert_eq!(without, 2 * ((6 + 2 + 2) * 2 + Probe::REDIS.len() as u64));
        assert_eq!(with - without, 2 * 2 * 6);
        assert_eq!(
            cell_count(&config(&["memory://"], true)),
            cell_count(&config(&["memory://"], false))
        );
    }

    /// A `-near` row's ratio is to the plain row's floor.
    #[test]
    fn near_rows_compare_with_the_plain_floor() {
        let cell = CellResult {
            ops: 100,
            elapsed: Duration::from_secs(1),
            hist: new_hist(),
        };
        let mut rows = vec![
            row("redis", "floor-read".into(), 1, &cell, 0, 0),
            row("redis-near", "W1".into(), 1, &cell, 0, 0),
            row("redis-cluster-near", "W1".into(), 1, &cell, 0, 0),
        ];
        rows[1].ops_per_sec = 300.0;
        set_ratios(&mut rows);
        assert_eq!(rows[1].ratio_to_floor, Some(3.0));
        assert_eq!(rows[2].ratio_to_floor, None, "no redis-cluster floor here");
    }
}
