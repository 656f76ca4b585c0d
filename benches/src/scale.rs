//! `--scale`: the same workloads at pools of many live sessions, and what happens around the
//! requests at that size (issue 15): bytes per session, purge, expiry events.
//!
//! For each backend of the run, in order:
//!
//! 1. **Plain storage** (standalone Redis, Postgres): the raw client stores
//!    [`ScaleConfig::plain_sample`] copies of the same payload as one blob each (Redis `SET … EX` of
//!    the items' names and values concatenated; Postgres a `bytea` row keyed by a 25-character
//!    `text` id in a table of its own), measured like the store (below) and removed again.
//! 2. **Pools**: for each pool size N (ascending), the pool grows to N live sessions through the
//!    store's own `create`, on [`PRELOAD_WORKERS`] tasks at once, outside the measured time (the
//!    preload rate is reported, so a slow path shows). The bytes the step added, divided by the
//!    sessions it added, is the step's bytes per session: Redis `INFO memory` `used_memory`
//!    (summed over the cluster's nodes), Postgres `pg_total_relation_size` of the store's tables,
//!    MySQL/MariaDB `data_length + index_length` after `ANALYZE TABLE` (InnoDB's estimate), the
//!    in-process stores (memory, in-memory SQLite) the process's RSS less the bench's own key per
//!    session. Stores that purge (`purge_expired`) then get [`ScaleConfig::purge_probes`] purge
//!    calls that find nothing expired, each timed. Then W1 and W2 run at every concurrency of the
//!    run, through the same workload code and cells as the rows, with each task picking sessions
//!    uniformly at random within its own slice of the pool ([`Fixture::over_pool`]); and, unless
//!    `--no-floors`, the raw client's floors over as many keys as the pool has sessions
//!    (`floor-read`, `floor-rw`), so that a slowdown with the pool's size can be told apart from
//!    the server's own; the floor's keys are removed again before the purge and expiry events.
//! 3. **Purge** (stores declaring `purge_expired`): [`ScaleConfig::expired`] sessions are created
//!    with a 1 s timeout beside the largest pool (the store's sweeper is off, so they stay until
//!    purged) and left to expire (on Postgres, until their expiry minute has passed: its purge
//!    takes a session up to a minute after its expiry); W1 runs on the live pool at the run's largest concurrency, alone
//!    for [`ScaleConfig::before`], then while `purge_expired(batch)` is called until a call comes
//!    back short (as the sweeper does), then one more second. Reported: sessions purged per second
//!    and W1's ops/s and p50/p99/max before, during and after, and per second.
//! 4. **Expiry events** (stores declaring `expiry_events`): a subscriber is opened, W1 runs on the
//!    live pool for a second, then [`ScaleConfig::events`] sessions of the payload are created
//!    with a [`ScaleConfig::events_timeout`] timeout (so they expire together, within about the
//!    time their creation took) while W1 goes on; the subscriber counts the events of those
//!    sessions until every one has come or [`ScaleConfig::events_grace`] after the last expiry.
//!    Reported: events with their final items, with empty items, with other items, said to have
//!    lost their items (`ExpiredItemsLost`), with other reasons,
//!    missing; the delivery rate; the time from the last expiry to the last event.
//!
//! The pool's items hold pseudo-random bytes (not the rows' repeated letters), so that no store
//! compresses them and the bytes per session are those of the payload.
//!
//! The SQL stores run on tables of their own (prefix [`TABLE_PREFIX`], sweeper off): they start
//! empty (emptied with `TRUNCATE` when a previous run left rows), so the sizes measure this run
//! only. Cleanup, also after a failure: those tables are emptied with `TRUNCATE`; on the other
//! stores every session the run created is deleted through the store ([`cleanup::remove_all`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use session_core::{AppName, EndReason, ItemValue, Items, SessionId, SessionKey, SessionStore};
use sessions::sql::SqlOptions;
use sessions::{Backend, BoxError, RefreshWindow, StoreOptions};
use sqlx::{AssertSqlSafe, MySqlPool, PgPool};

use crate::cleanup::{self, Leftover};
use crate::config::{BackendSpec, BenchConfig, Payload, Workload};
use crate::counting::{Counting, CountingStore};
use crate::error::BenchError;
use crate::floors::{self, Floor};
use crate::report::{Row, align, us};
use crate::workload::{Creating, Fixture, SESSION_TIMEOUT, create_sessions, mix};
use crate::{TaskOp, Until, fill_floor, run_cell, run_cells, run_load, with_tasks, workload_op};

/// The table prefix of the SQL stores in a `--scale` run (tables `bench_scale_sessions`, ...).
pub const TABLE_PREFIX: &str = "bench_scale_";

/// The table of the Postgres plain-storage comparison.
const PLAIN_TABLE: &str = "bench_scale_plain";

/// Tasks creating sessions at once during a preload (and deleting them at cleanup).
pub const PRELOAD_WORKERS: usize = 128;

/// The timeout of the sessions a purge removes: they expire a second after their creation.
const EXPIRED_TIMEOUT: Duration = Duration::from_secs(1);

/// A second whose worst operation took longer than this is counted in
/// [`PurgeResult::seconds_over_50ms`].
const SLOW_OP_US: f64 = 50_000.0;

/// What `--scale` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleConfig {
    /// Live sessions per step, ascending (the pool grows from one to the next).
    pub pools: Vec<usize>,
    /// Expired sessions a purge removes (0: no purge measurement).
    pub expired: usize,
    /// Sessions expiring together for the expiry-event measurement (0: none).
    pub events: usize,
    /// The timeout of those sessions.
    pub events_timeout: Duration,
    /// How long after the (estimated) last expiry the event subscriber waits for stragglers.
    pub events_grace: Duration,
    /// Sessions per `purge_expired` call (the sweeper's default batch).
    pub purge_batch: usize,
    /// Purge calls timed at each pool size with nothing expired.
    pub purge_probes: usize,
    /// How long W1 runs alone before the purge starts.
    pub before: Duration,
    /// Largest number of plain blobs stored for the plain-storage comparison.
    pub plain_sample: usize,
    /// How long W1 (and, for the floors, their read) runs unmeasured after each preload or floor
    /// fill, before the cells: the cells measure the server settled at the pool's size, not its
    /// reaction to the bulk load that just ended (Redis rehashing its key table after the count
    /// crossed a power of two runs for seconds and halves the throughput meanwhile).
    pub warmup: Duration,
}

impl ScaleConfig {
    /// The pools of the issue: 1k, 100k and 1M live sessions.
    pub const POOLS: [usize; 3] = [1_000, 100_000, 1_000_000];

    /// The sizes: pools of 1k, 100k and 1M, a purge of 1M expired sessions, 200k
    /// sessions expiring together.
    pub fn full() -> Self {
        Self {
            pools: Self::POOLS.to_vec(),
            expired: 1_000_000,
            events: 200_000,
            events_timeout: Duration::from_secs(5),
            events_grace: Duration::from_secs(60),
            purge_batch: sessions::sql::SweeperOptions::new().batch(),
            purge_probes: 20,
            before: Duration::from_secs(5),
            plain_sample: 100_000,
            warmup: Duration::from_secs(10),
        }
    }

    /// A run of seconds (tests, smoke runs): pools of 1k and 10k, 2k expired, 1k events.
    pub fn quick() -> Self {
        Self {
            pools: vec![1_000, 10_000],
            expired: 2_000,
            events: 1_000,
            events_timeout: Duration::from_secs(1),
            events_grace: Duration::from_secs(20),
            purge_probes: 5,
            before: Duration::from_secs(1),
            plain_sample: 10_000,
            warmup: Duration::from_millis(500),
            ..Self::full()
        }
    }
}

impl Default for ScaleConfig {
    fn default() -> Self {
        Self::full()
    }
}

/// The `--scale` section of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Pool sizes, ascending.
    pub pools: Vec<usize>,
    /// The payload of every session, e.g. `10x150`.
    pub payload: String,
    /// Tasks of the background W1 load during the purge and the expiry events.
    pub load_tasks: usize,
    /// Seconds of unmeasured W1 after each preload, before a pool's cells (`warmup`).
    pub warmup_secs: f64,
    /// One entry per backend, in run order.
    pub backends: Vec<ScaleBackend>,
}

/// One backend's `--scale` results.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleBackend {
    /// The backend (`memory`, `redis`, `postgres`, ...).
    pub backend: String,
    /// How bytes are measured (`None`: not measured on this backend).
    pub bytes_source: Option<String>,
    /// The raw client's plain storage of the same payload, bytes per session (standalone Redis,
    /// Postgres).
    pub plain_bytes_per_session: Option<f64>,
    /// How many plain blobs that was measured on.
    pub plain_sample: Option<usize>,
    /// One entry per pool size.
    pub pools: Vec<PoolResult>,
    /// ops/s at the largest pool / ops/s at the smallest, per workload and concurrency.
    pub ratios: Vec<PoolRatio>,
    /// The purge measurement (stores declaring `purge_expired`).
    pub purge: Option<PurgeResult>,
    /// The expiry-event measurement (stores declaring `expiry_events`).
    pub expiry_events: Option<EventsResult>,
    /// The failure that ended this backend's measurements early (with its causes), if any: what
    /// was measured before it is kept, and the next backend runs.
    pub error: Option<String>,
}

/// One pool size on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct PoolResult {
    /// Live sessions.
    pub sessions: usize,
    /// Sessions added by this step's preload.
    pub added: usize,
    /// Seconds the preload took.
    pub preload_secs: f64,
    /// Sessions created per second by the preload.
    pub preload_per_sec: f64,
    /// Bytes the step added per session it added.
    pub bytes_per_session: Option<f64>,
    /// `bytes_per_session / plain_bytes_per_session`.
    pub ratio_to_plain: Option<f64>,
    /// Purge calls with nothing expired (stores declaring `purge_expired`).
    pub idle_purge: Option<IdlePurge>,
    /// W1 operations run unmeasured after the preload, before the cells (`warmup`).
    pub warmup_ops: u64,
    /// The floor's reads run unmeasured after its fill, before its cells (`None` without
    /// floors).
    pub floor_warmup_ops: Option<u64>,
    /// W1 and W2 at every concurrency (the rows' format).
    pub rows: Vec<Row>,
}

/// Purge calls that find nothing expired.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IdlePurge {
    /// Calls timed.
    pub calls: usize,
    /// Median time per call, milliseconds.
    pub median_ms: f64,
    /// Slowest call, milliseconds.
    pub max_ms: f64,
    /// Sessions those calls removed (0 unless something expired meanwhile).
    pub purged: u64,
}

/// ops/s at the largest pool over ops/s at the smallest.
#[derive(Debug, Clone, Serialize)]
pub struct PoolRatio {
    /// `W1` or `W2`.
    pub workload: String,
    /// Tasks.
    pub concurrency: usize,
    /// The smallest pool.
    pub from: usize,
    /// The largest pool.
    pub to: usize,
    /// ops/s at `to` / ops/s at `from`.
    pub ratio: f64,
}

/// A load's operations over a span of time.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoadStats {
    /// Operations completed.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Slowest operation, microseconds.
    pub max_us: f64,
}

/// One second of a load.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SecondStats {
    /// Start of the second, seconds from the purge's start (negative: before it).
    pub at_secs: f64,
    /// Operations completed in it, and their latencies.
    #[serde(flatten)]
    pub load: LoadStats,
}

/// A purge of many expired sessions beside the live pool, under W1.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeResult {
    /// Live sessions.
    pub live: usize,
    /// Expired sessions created.
    pub expired: usize,
    /// Seconds their creation took (the store's `create`, outside the measured time).
    pub expired_preload_secs: f64,
    /// Sessions per `purge_expired` call.
    pub batch: usize,
    /// Sessions the purge removed.
    pub purged: u64,
    /// `purge_expired` calls.
    pub calls: u64,
    /// Seconds from the first call to the end of the last.
    pub secs: f64,
    /// Sessions removed per second.
    pub per_sec: f64,
    /// The slowest call, milliseconds.
    pub slowest_call_ms: f64,
    /// W1 (the run's largest concurrency) before the purge.
    pub read_before: LoadStats,
    /// W1 during the purge.
    pub read_during: LoadStats,
    /// W1 in the second after it.
    pub read_after: LoadStats,
    /// `read_during.p99_us / read_before.p99_us`.
    pub p99_ratio: Option<f64>,
    /// Seconds during the purge whose slowest read took over 50 ms.
    pub seconds_over_50ms: usize,
    /// W1 per second, before, during and after.
    pub seconds: Vec<SecondStats>,
}

/// Many sessions expiring together, under W1.
#[derive(Debug, Clone, Serialize)]
pub struct EventsResult {
    /// Sessions created to expire.
    pub sessions: usize,
    /// Their timeout, milliseconds.
    pub timeout_ms: u64,
    /// Seconds their creation took.
    pub create_secs: f64,
    /// `Expired` events carrying the session's final items (all of them).
    pub with_items: u64,
    /// `Expired` events with no items.
    pub empty_items: u64,
    /// `Expired` events with some but not all items.
    pub partial_items: u64,
    /// `ExpiredItemsLost` events: the session expired but the store could no longer deliver its
    /// final items, and says so.
    pub items_lost: u64,
    /// Events for those sessions with another reason (`Removed`, or a kind this bench does not
    /// know).
    pub other_reason: u64,
    /// Sessions whose event never came (within the grace period).
    pub missing: u64,
    /// Seconds from the first session's expiry (its creation plus its timeout and refresh
    /// window: an estimate) to the first event.
    pub first_event_after_first_expiry_secs: Option<f64>,
    /// Seconds from the last session's expiry (estimated likewise) to the last event.
    pub last_event_after_last_expiry_secs: Option<f64>,
    /// Events per second, from the first event to the last.
    pub events_per_sec: Option<f64>,
    /// W1 before the sessions were created.
    pub read_before: LoadStats,
    /// W1 from their creation to the last event.
    pub read_during: LoadStats,
}

/// Latency histogram of one second or one phase: 1 µs resolution up to 60 s, 2 digits (a few
/// KiB each).
fn small_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 2)
        .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!()))
}

fn stats(hist: &Histogram<u64>, secs: f64) -> LoadStats {
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    LoadStats {
        ops: hist.len(),
        ops_per_sec: hist.len() as f64 / secs.max(1e-9),
        p50_us: q(0.5),
        p99_us: q(0.99),
        max_us: hist.max() as f64 / 1000.0,
    }
}

/// A load's latencies per second and per phase (phases are marked by [`Timeline::next_phase`]).
#[derive(Debug)]
pub(crate) struct Timeline {
    start: Instant,
    phase: AtomicUsize,
    data: Mutex<TimelineData>,
}

#[derive(Debug, Default)]
struct TimelineData {
    seconds: Vec<Histogram<u64>>,
    phases: Vec<Histogram<u64>>,
    /// When each phase after the first began (from `start`).
    marks: Vec<Duration>,
}

impl Timeline {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            phase: AtomicUsize::new(0),
            data: Mutex::new(TimelineData::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TimelineData> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the next phase now.
    fn next_phase(&self) {
        let mut data = self.lock();
        data.marks.push(self.start.elapsed());
        self.phase.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one operation's latency in the current second and phase.
    pub(crate) fn record(&self, latency: Duration) {
        let second = usize::try_from(self.start.elapsed().as_secs()).unwrap_or(usize::MAX);
        let phase = self.phase.load(Ordering::Relaxed);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        let mut data = self.lock();
        if second < 1 << 20 {
            while data.seconds.len() <= second {
                data.seconds.push(small_hist());
            }
            data.seconds[second].saturating_record(ns);
        }
        while data.phases.len() <= phase {
            data.phases.push(small_hist());
        }
        data.phases[phase].saturating_record(ns);
    }

    /// Phase `phase`'s operations; `end` is when the load stopped (from `start`).
    fn phase(&self, phase: usize, end: Duration) -> LoadStats {
        let data = self.lock();
        let from = if phase == 0 {
            Duration::ZERO
        } else {
            data.marks.get(phase - 1).copied().unwrap_or(end)
        };
        let to = data.marks.get(phase).copied().unwrap_or(end);
        data.phases.get(phase).map_or_else(LoadStats::default, |h| {
            stats(h, to.saturating_sub(from).as_secs_f64())
        })
    }

    /// Every second's operations, with their start relative to the start of phase `origin`.
    /// The last second ends at `end` (when the load stopped), so its ops/s count its part only.
    fn seconds(&self, origin: usize, end: Duration) -> Vec<SecondStats> {
        let data = self.lock();
        let zero = match origin {
            0 => Duration::ZERO,
            n => data.marks.get(n - 1).copied().unwrap_or_default(),
        };
        data.seconds
            .iter()
            .enumerate()
            .map(|(i, h)| SecondStats {
                at_secs: i as f64 - zero.as_secs_f64(),
                load: stats(h, (end.as_secs_f64() - i as f64).clamp(1e-3, 1.0)),
            })
            .collect()
    }
}

/// W1 on a pool in the background, until [`Background::finish`] (or drop).
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<tokio::task::JoinHandle<Result<crate::CellResult, BenchError>>>,
    timeline: Arc<Timeline>,
}

impl Background {
    fn start(fixture: &Arc<Fixture>, store: &Arc<dyn SessionStore>, tasks: usize) -> Self {
        let op = workload_op(fixture, store, Workload::W1);
        let stop = Arc::new(AtomicBool::new(false));
        let timeline = Arc::new(Timeline::new());
        let handle = tokio::spawn(run_load(
            with_tasks(&op, tasks),
            tasks,
            Until::Flag(Arc::clone(&stop)),
            Some(Arc::clone(&timeline)),
        ));
        Self {
            stop,
            handle: Some(handle),
            timeline,
        }
    }

    /// Stops the load; returns when it ends after (from the timeline's start).
    async fn finish(mut self) -> Result<Duration, BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        let end = self.timeline.start.elapsed();
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .map_err(|e| BenchError::Config(format!("load task failed: {e}")))??;
        }
        Ok(end)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The keys a backend's run created, for the cleanup.
#[derive(Debug, Default)]
struct Created {
    live: Vec<SessionKey>,
    expired: Vec<SessionKey>,
    events: Vec<SessionKey>,
}

/// The payload with pseudo-random values (incompressible), names `item0..`.
fn random_items(payload: Payload) -> Items {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..payload.items)
        .map(|i| {
            let value: Vec<u8> = (0..payload.item_size)
                .map(|_| {
                    // xorshift64
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()[0]
                })
                .collect();
            (format!("item{i}"), ItemValue::from_bytes(value))
        })
        .collect()
}

/// The items' names and values, concatenated: what the plain storage stores per session.
fn plain_blob(items: &Items) -> Vec<u8> {
    items
        .iter()
        .flat_map(|(name, value)| name.as_bytes().iter().chain(value.as_bytes()))
        .copied()
        .collect()
}

/// Connects the store for a scale run: the rows' settings, and on SQL its own tables
/// ([`TABLE_PREFIX`]) with the sweeper off.
async fn connect(
    spec: &BackendSpec, connections: u32,
) -> Result<Arc<dyn SessionStore>, BenchError> {
    let fail = crate::connect_error(spec);
    let config = crate::store_config(spec, RefreshWindow::DEFAULT)
        .build()
        .map_err(&fail)?;
    let sql = SqlOptions::new()
        .with_max_connections(connections)
        .with_sweeper(None)
        .with_table_prefix(TABLE_PREFIX)
        .map_err(&fail)?;
    let options = StoreOptions::new().with_sql(sql);
    sessions::connect_with(&config, &options)
        .await
        .map_err(fail)
}

/// How a scale run creates sessions with `timeout`: [`PRELOAD_WORKERS`] at once, each with its
/// own values on the in-process stores (a networked store copies them anyway).
fn creating(raw: &Arc<dyn SessionStore>, timeout: Duration) -> Creating {
    Creating {
        timeout,
        workers: PRELOAD_WORKERS,
        own_values: raw.backend() == "memory",
    }
}

/// How a backend's bytes are measured.
enum Sizer {
    /// `used_memory` of every node (one for standalone Redis).
    Redis {
        nodes: Vec<redis::aio::MultiplexedConnection>,
        standalone: bool,
    },
    Postgres(PgPool),
    Mysql(MySqlPool),
    /// The process's resident memory (the in-process stores).
    Rss,
    None,
}

fn sizer_error(backend: &'static str) -> impl Fn(BoxError) -> BenchError {
    move |source| BenchError::Floor { backend, source }
}

/// The store's tables in a catalog listing: ours, without the migrations' and plain tables.
fn store_tables(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| {
            n.starts_with(TABLE_PREFIX)
                && *n != format!("{TABLE_PREFIX}migrations")
                && n != PLAIN_TABLE
        })
        .collect()
}

impl Sizer {
    async fn connect(spec: &BackendSpec) -> Result<Self, BenchError> {
        let name = spec.name();
        let fail = sizer_error(name);
        let url = spec.url();
        Ok(match spec.backend() {
            Backend::Redis => {
                let urls = if spec.is_cluster() {
                    sessions::redis::node_urls(url).map_err(|e| fail(e.into()))?
                } else {
                    vec![url.to_owned()]
                };
                let mut nodes = Vec::new();
                for url in urls {
                    let client = redis::Client::open(url).map_err(|e| fail(e.into()))?;
                    let conn = client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| fail(e.into()))?;
                    nodes.push(conn);
                }
                Self::Redis {
                    nodes,
                    standalone: spec.is_standalone_redis(),
                }
            }
            Backend::Postgres => Self::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(url)
                    .await
                    .map_err(|e| fail(e.into()))?,
            ),
            Backend::Mysql => Self::Mysql(
                sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(1)
                    .connect(&url.replacen("mariadb://", "mysql://", 1))
                    .await
                    .map_err(|e| fail(e.into()))?,
            ),
            Backend::Memory => Self::Rss,
            Backend::Sqlite if url.contains(":memory:") || url.contains("mode=memory") => Self::Rss,
            _ => Self::None,
        })
    }

    fn source(&self) -> Option<&'static str> {
        match self {
            Self::Redis {
                standalone: true, ..
            } => Some("redis INFO memory used_memory"),
            Self::Redis { .. } => Some("redis INFO memory used_memory, summed over the nodes"),
            Self::Postgres(_) => Some("pg_total_relation_size of the store's tables"),
            Self::Mysql(_) => {
                Some("information_schema data_length + index_length after ANALYZE TABLE (estimate)")
            }
            Self::Rss => Some("process RSS, less the bench's own key per session"),
            Self::None => None,
        }
    }

    /// The backend's bytes now.
    async fn bytes(&self) -> Result<Option<u64>, BoxError> {
        Ok(match self {
            Self::Redis { nodes, .. } => {
                let mut total = 0;
                for node in nodes {
                    let info: String = redis::cmd("INFO")
                        .arg("memory")
                        .query_async(&mut node.clone())
                        .await?;
                    total += info
                        .lines()
                        .find_map(|l| l.strip_prefix("used_memory:"))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .ok_or("INFO memory has no used_memory")?;
                }
                Some(total)
            }
            Self::Postgres(pool) => {
                let like = format!("{}%", TABLE_PREFIX.replace('_', "\\_"));
                let size: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT \
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                      WHERE n.nspname = current_schema() AND c.relkind = 'r' \
                        AND c.relname LIKE $1 AND c.relname <> ALL($2)",
                )
                .bind(like)
                .bind(vec![
                    format!("{TABLE_PREFIX}migrations"),
                    PLAIN_TABLE.to_owned(),
                ])
                .fetch_one(pool)
                .await?;
                Some(u64::try_from(size).unwrap_or(0))
            }
            Self::Mysql(pool) => {
                let tables = self.tables().await?;
                for t in &tables {
                    sqlx::raw_sql(AssertSqlSafe(format!("ANALYZE TABLE `{t}`")))
                        .execute(pool)
                        .await?;
                }
                let mut total = 0u64;
                for t in &tables {
                    let size: i64 = sqlx::query_scalar(
                        "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) \
                           FROM information_schema.TABLES \
                          WHERE table_schema = DATABASE() AND table_name = ?",
                    )
                    .bind(t)
                    .fetch_one(pool)
                    .await?;
                    total += u64::try_from(size).unwrap_or(0);
                }
                Some(total)
            }
            Self::Rss => Some(rss()),
            Self::None => None,
        })
    }

    /// Postgres: the time left until the next minute begins on the database's clock; `None`
    /// elsewhere.
    async fn until_next_minute(&self) -> Result<Option<Duration>, BoxError> {
        let Self::Postgres(pool) = self else {
            return Ok(None);
        };
        let secs: f64 = sqlx::query_scalar(
            "SELECT (60 - mod(extract(epoch FROM clock_timestamp()), 60))::FLOAT8",
        )
        .fetch_one(pool)
        .await?;
        Ok(Some(Duration::try_from_secs_f64(secs).unwrap_or_default()))
    }

    /// The store's tables (SQL servers; none elsewhere).
    async fn tables(&self) -> Result<Vec<String>, BoxError> {
        let like = format!("{}%", TABLE_PREFIX.replace('_', "\\_"));
        let names: Vec<String> = match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT tablename::TEXT FROM pg_tables \
                      WHERE schemaname = current_schema() AND tablename LIKE $1",
                )
                .bind(like)
                .fetch_all(pool)
                .await?
            }
            Self::Mysql(pool) => {
                sqlx::query_scalar(
                    "SELECT CAST(table_name AS CHAR) FROM information_schema.TABLES \
                      WHERE table_schema = DATABASE() AND table_name LIKE ?",
                )
                .bind(like)
                .fetch_all(pool)
                .await?
            }
            _ => Vec::new(),
        };
        Ok(store_tables(names))
    }

    /// Empties the store's tables (SQL servers): `Ok(true)` when done, `Ok(false)` on the other
    /// backends.
    async fn truncate(&self) -> Result<bool, BoxError> {
        match self {
            Self::Postgres(pool) => {
                let tables = self.tables().await?;
                if !tables.is_empty() {
                    let list: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
                    sqlx::raw_sql(AssertSqlSafe(format!("TRUNCATE {}", list.join(", "))))
                        .execute(pool)
                        .await?;
                }
                Ok(true)
            }
            Self::Mysql(pool) => {
                let tables = self.tables().await?;
                // TRUNCATE refuses a table a foreign key refers to unless the checks are off
                // (on this one connection).
                let mut conn = pool.acquire().await?;
                let mut statements = vec!["SET FOREIGN_KEY_CHECKS = 0".to_owned()];
                statements.extend(tables.iter().map(|t| format!("TRUNCATE TABLE `{t}`")));
                statements.push("SET FOREIGN_KEY_CHECKS = 1".to_owned());
                for sql in statements {
                    sqlx::raw_sql(AssertSqlSafe(sql))
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Bytes per session of the raw client's plain storage of `blob`, on `sample` keys
    /// (standalone Redis, Postgres; `None` elsewhere). Removes what it stored, also on failure.
    async fn plain(&self, sample: usize, blob: &[u8]) -> Result<Option<f64>, BoxError> {
        if sample == 0 {
            return Ok(None);
        }
        match self {
            Self::Redis {
                nodes,
                standalone: true,
            } => {
                let mut conn = nodes[0].clone();
                let keys: Vec<String> = (0..sample)
                    .map(|_| {
                        SessionId::generate().map(|id| format!("bench-scale-plain:{}", id.expose()))
                    })
                    .collect::<Result<_, _>>()?;
                let measured = async {
                    let before = self.bytes().await?.unwrap_or(0);
                    for chunk in keys.chunks(1000) {
                        let mut pipe = redis::pipe();
                        for key in chunk {
                            pipe.cmd("SET")
                                .arg(key)
                                .arg(blob)
                                .arg("EX")
                                .arg(1800)
                                .ignore();
                        }
                        pipe.query_async::<()>(&mut conn).await?;
                    }
                    let after = self.bytes().await?.unwrap_or(0);
                    Ok::<_, BoxError>(after.saturating_sub(before) as f64 / sample as f64)
                }
                .await;
                for chunk in keys.chunks(cleanup::FLOOR_BATCH) {
                    redis::cmd("DEL")
                        .arg(chunk)
                        .query_async::<()>(&mut conn)
                        .await?;
                }
                measured.map(Some)
            }
            Self::Postgres(pool) => {
                let create = format!(
                    "DROP TABLE IF EXISTS {PLAIN_TABLE}; \
                     CREATE TABLE {PLAIN_TABLE} (id TEXT PRIMARY KEY, data BYTEA NOT NULL)"
                );
                sqlx::raw_sql(AssertSqlSafe(create)).execute(pool).await?;
                let measured = async {
                    let mut from = 0i64;
                    let total = i64::try_from(sample)?;
                    while from < total {
                        let to = (from + 20_000).min(total);
                        sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO {PLAIN_TABLE} \
                             SELECT 'p' || lpad(g::TEXT, 24, '0'), $1 \
                               FROM generate_series($2::BIGINT, $3::BIGINT - 1) g"
                        )))
                        .bind(blob)
                        .bind(from)
                        .bind(to)
                        .execute(pool)
                        .await?;
                        from = to;
                    }
                    let size: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                        "SELECT pg_total_relation_size('{PLAIN_TABLE}')"
                    )))
                    .fetch_one(pool)
                    .await?;
                    Ok::<_, BoxError>(size as f64 / sample as f64)
                }
                .await;
                sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE IF EXISTS {PLAIN_TABLE}")))
                    .execute(pool)
                    .await?;
                measured.map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// The resident set size of this process in bytes (0 where `/proc/self/statm` is missing).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// Runs `--scale` on every backend of `config`.
pub(crate) async fn run(
    config: &BenchConfig, scale: &ScaleConfig, connections: u32, bar: &ProgressBar,
) -> Result<ScaleReport, BenchError> {
    let mut pools = scale.pools.clone();
    pools.sort_unstable();
    pools.dedup();
    if pools.is_empty() || pools[0] == 0 {
        return Err(BenchError::Config(
            "--scale needs pool sizes of at least 1".into(),
        ));
    }
    let scale = ScaleConfig {
        pools,
        ..scale.clone()
    };
    // W1 and W2, and the two floors.
    let per_pool = if config.floors { 4 } else { 2 };
    let cells = config.backends.len() * scale.pools.len() * per_pool * config.concurrency.len();
    bar.set_length(cells as u64);
    let mut backends = Vec::new();
    for spec in &config.backends {
        backends.push(run_backend(config, &scale, spec, connections, bar).await?);
    }
    Ok(ScaleReport {
        pools: scale.pools,
        payload: config.payload.to_string(),
        load_tasks: load_tasks(config),
        warmup_secs: scale.warmup.as_secs_f64(),
        backends,
    })
}

/// `e` and its causes, `: `-separated.
fn error_chain(e: &BenchError) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Tasks of the background W1 load: the run's largest concurrency.
fn load_tasks(config: &BenchConfig) -> usize {
    config.concurrency.iter().copied().max().unwrap_or(1)
}

/// One backend: the measurements, then (also after a failure) the cleanup.
async fn run_backend(
    config: &BenchConfig, scale: &ScaleConfig, spec: &BackendSpec, connections: u32,
    bar: &ProgressBar,
) -> Result<ScaleBackend, BenchError> {
    let name = spec.name();
    bar.set_message(format!("{name}: connecting"));
    let raw = connect(spec, connections).await?;
    let sizer = Sizer::connect(spec).await?;
    // Rows a previous run left in the bench's own tables would skew the sizes.
    sizer.truncate().await.map_err(sizer_error(name))?;
    let mut created = Created::default();
    let mut out = ScaleBackend {
        backend: name.to_owned(),
        bytes_source: sizer.source().map(str::to_owned),
        plain_bytes_per_session: None,
        plain_sample: None,
        pools: Vec::new(),
        ratios: Vec::new(),
        purge: None,
        expiry_events: None,
        error: None,
    };
    let mut floor = match config.floors {
        true => Some(ScaleFloor {
            client: floors::connect(spec, connections).await?,
            keys: Vec::new(),
        }),
        false => None,
    };
    let measured = measure(
        config,
        scale,
        &raw,
        &sizer,
        floor.as_mut(),
        bar,
        &mut out,
        &mut created,
    )
    .await;
    bar.set_message(format!("{name}: cleaning up"));
    let mut left = remove_created(&raw, &sizer, created).await;
    if let Some(floor) = &floor {
        left.merge(floors::remove_keys(&floor.client, &floor.keys).await);
    }
    bar.suspend(|| left.warn(name));
    if let Err(e) = measured {
        // The other backends still run: a long run keeps what it measured.
        let message = error_chain(&e);
        bar.suspend(|| eprintln!("session-bench: error: {message}"));
        out.error = Some(message);
    }
    Ok(out)
}

/// Removes what a backend's run created: the bench's own SQL tables are emptied; elsewhere every
/// session is deleted through the store (a session already gone counts as removed).
async fn remove_created(raw: &Arc<dyn SessionStore>, sizer: &Sizer, created: Created) -> Leftover {
    let truncated = match sizer.truncate().await {
        Ok(done) => done,
        Err(e) => {
            eprintln!(
                "session-bench: warning: {}: emptying the bench's tables failed ({e}); \
                 deleting session by session",
                raw.backend()
            );
            false
        }
    };
    if truncated {
        return Leftover::default();
    }
    let mut keys = created.live;
    keys.extend(created.expired);
    keys.extend(created.events);
    let store = Arc::clone(raw);
    cleanup::remove_all(
        keys,
        PRELOAD_WORKERS,
        |_| 1,
        move |key| {
            let store = Arc::clone(&store);
            async move {
                store
                    .delete(&key)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
}

fn store_error(backend: &'static str, what: &str) -> impl Fn(session_core::Error) -> BenchError {
    let what = what.to_owned();
    move |source| BenchError::Store {
        backend,
        workload: what.clone(),
        source,
    }
}

/// A fixture over `pool` (taken; put it back with [`give_back`]).
fn fixture(
    store: &Arc<dyn SessionStore>, app: &AppName, pool: &mut Vec<SessionKey>, items: &Arc<Items>,
    payload: Payload,
) -> Result<Arc<Fixture>, BenchError> {
    let keys = std::mem::take(pool);
    Fixture::over_pool(store, app.clone(), keys, Arc::clone(items), payload).map(Arc::new)
}

/// The raw client's floor at each pool size: as many keys as the pool has sessions, each holding
/// the payload as one blob ([`plain_blob`]), read (`floor-read`, W1's floor) and read then
/// written (`floor-rw`, W2's) by tasks that pick keys uniformly at random within their own slice,
/// as the workloads pick sessions; so a pool's slowdown can be told apart from the server's own.
struct ScaleFloor {
    client: Arc<dyn Floor>,
    keys: Vec<String>,
}

impl ScaleFloor {
    /// Adds keys up to `n`, each set to `blob` ([`PRELOAD_WORKERS`] sets at once).
    async fn grow(
        &mut self, name: &'static str, n: usize, blob: &Arc<[u8]>,
    ) -> Result<(), BenchError> {
        let from = self.keys.len();
        if n <= from {
            return Ok(());
        }
        self.keys
            .extend((from..n).map(|i| format!("bench-scale-floor-{i}")));
        let keys: Arc<[String]> = Arc::from(&self.keys[from..]);
        fill_floor(name, &self.client, keys, Arc::clone(blob), PRELOAD_WORKERS).await
    }

    /// The `floor-read` and `floor-rw` cells over the current keys, after `floor-read` ran
    /// unmeasured for the warm-up; returns the warm-up's operations.
    async fn rows(
        &self, config: &BenchConfig, scale: &ScaleConfig, bar: &ProgressBar, name: &'static str,
        blob: &Arc<[u8]>, rows: &mut Vec<Row>,
    ) -> Result<u64, BenchError> {
        let keys: Arc<Vec<String>> = Arc::new(self.keys.clone());
        let mut warmed = 0;
        for write in [false, true] {
            let label = if write { "floor-rw" } else { "floor-read" };
            let ops = Arc::new(AtomicU64::new(0));
            let counter = Arc::clone(&ops);
            let (client, ks, value) = (
                Arc::clone(&self.client),
                Arc::clone(&keys),
                Arc::clone(blob),
            );
            let op: TaskOp = Arc::new(move |task, tasks, iter| {
                counter.fetch_add(1, Ordering::Relaxed);
                let (client, ks, value) =
                    (Arc::clone(&client), Arc::clone(&ks), Arc::clone(&value));
                Box::pin(async move {
                    let per = (ks.len() / tasks.max(1)).max(1);
                    let i = task * per + (mix(task as u64, iter) % per as u64) as usize;
                    let key = &ks[i % ks.len()];
                    let fail = |source| BenchError::Floor {
                        backend: name,
                        source,
                    };
                    let start = Instant::now();
                    client.get(key).await.map_err(fail)?;
                    if write {
                        client.set(key, &value).await.map_err(fail)?;
                    }
                    Ok(start.elapsed())
                })
            });
            if !write {
                bar.set_message(format!("{name}: warming up the floor"));
                warmed = warm_up(&op, load_tasks(config), scale.warmup).await?;
            }
            // One call per read, two per read+write; the write sends the blob.
            let size = blob.len() as u64;
            let counts = || {
                let n = ops.swap(0, Ordering::Relaxed);
                if write { (2 * n, n * size) } else { (n, 0) }
            };
            run_cells(config, bar, rows, name, label, &op, &counts).await?;
        }
        Ok(warmed)
    }
}

/// Runs `op` on `tasks` tasks for `warmup`, unmeasured; returns how many operations it ran.
async fn warm_up(op: &TaskOp, tasks: usize, warmup: Duration) -> Result<u64, BenchError> {
    if warmup.is_zero() {
        return Ok(0);
    }
    Ok(run_cell(with_tasks(op, tasks), tasks, warmup).await?.ops)
}

/// Puts a fixture's pool back into `pool` (every operation holding the fixture has ended).
fn give_back(fixture: Arc<Fixture>, pool: &mut Vec<SessionKey>) {
    *pool = match Arc::try_unwrap(fixture) {
        Ok(fixture) => fixture.into_pool(),
        Err(shared) => shared.sessions(),
    };
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    config: &BenchConfig, scale: &ScaleConfig, raw: &Arc<dyn SessionStore>, sizer: &Sizer,
    mut floor: Option<&mut ScaleFloor>, bar: &ProgressBar, out: &mut ScaleBackend,
    created: &mut Created,
) -> Result<(), BenchError> {
    let name = raw.backend();
    let size_err = sizer_error(name);
    let app = AppName::new(&format!("/session-bench-scale-{}", std::process::id()))
        .map_err(store_error(name, "setup"))?;
    let items = Arc::new(random_items(config.payload));
    let largest = scale.pools.last().copied().unwrap_or(0);
    let sample = scale.plain_sample.min(largest);
    bar.set_message(format!("{name}: plain storage of {sample} sessions"));
    out.plain_bytes_per_session = sizer
        .plain(sample, &plain_blob(&items))
        .await
        .map_err(&size_err)?;
    out.plain_sample = out.plain_bytes_per_session.map(|_| sample);

    let counting = Arc::new(Counting::wrap(Arc::clone(raw)));
    let store: Arc<dyn SessionStore> = Arc::<CountingStore>::clone(&counting);
    let caps = raw.capabilities();
    for &n in &scale.pools {
        let added = n - created.live.len();
        bar.set_message(format!("{name}: preloading {added} sessions (pool {n})"));
        let before = sizer.bytes().await.map_err(&size_err)?;
        let start = Instant::now();
        create_sessions(
            name,
            raw,
            &app,
            &items,
            added,
            creating(raw, SESSION_TIMEOUT),
            &mut created.live,
        )
        .await?;
        let preload = start.elapsed();
        let after = sizer.bytes().await.map_err(&size_err)?;
        let bytes_per_session = before.zip(after).map(|(b, a)| {
            let per = a.saturating_sub(b) as f64 / added.max(1) as f64;
            if matches!(sizer, Sizer::Rss) {
                per - std::mem::size_of::<SessionKey>() as f64
            } else {
                per
            }
        });
        let idle_purge = if caps.purge_expired {
            bar.set_message(format!("{name}: idle purge calls (pool {n})"));
            Some(idle_purge(raw, scale).await?)
        } else {
            None
        };
        let fx = fixture(&store, &app, &mut created.live, &items, config.payload)?;
        let mut rows = Vec::new();
        let mut warmup_ops = 0;
        let ran: Result<(), BenchError> = async {
            let counts = || counting.layer().take_counts();
            bar.set_message(format!("{name}: warming up (pool {n})"));
            let w1 = workload_op(&fx, &store, Workload::W1);
            warmup_ops = warm_up(&w1, load_tasks(config), scale.warmup).await?;
            for w in [Workload::W1, Workload::W2] {
                let op = workload_op(&fx, &store, w);
                let label = w.to_string();
                run_cells(config, bar, &mut rows, name, &label, &op, &counts).await?;
            }
            Ok(())
        }
        .await;
        give_back(fx, &mut created.live);
        ran?;
        let mut floor_warmup_ops = None;
        if let Some(floor) = floor.as_deref_mut() {
            let blob: Arc<[u8]> = Arc::from(plain_blob(&items));
            bar.set_message(format!("{name}: filling the floor to {n} keys"));
            floor.grow(name, n, &blob).await?;
            let warmed = floor
                .rows(config, scale, bar, name, &blob, &mut rows)
                .await?;
            floor_warmup_ops = Some(warmed);
        }
        out.pools.push(PoolResult {
            sessions: n,
            added,
            preload_secs: preload.as_secs_f64(),
            preload_per_sec: added as f64 / preload.as_secs_f64().max(1e-9),
            bytes_per_session,
            ratio_to_plain: bytes_per_session
                .zip(out.plain_bytes_per_session)
                .map(|(ours, plain)| ours / plain),
            idle_purge,
            warmup_ops,
            floor_warmup_ops,
            rows,
        });
    }
    out.ratios = ratios(&out.pools);
    if let Some(floor) = floor {
        // The floor's keys would weigh on the purge and the expiry events: gone before them.
        bar.set_message(format!("{name}: removing the floor's keys"));
        let left = floors::remove_keys(&floor.client, &floor.keys).await;
        bar.suspend(|| left.warn(name));
        floor.keys.clear();
    }
    let tasks = load_tasks(config);
    if caps.purge_expired && scale.expired > 0 {
        out.purge = Some(
            purge(
                raw,
                sizer,
                scale,
                &app,
                &items,
                config.payload,
                tasks,
                bar,
                created,
            )
            .await?,
        );
    }
    if caps.expiry_events && scale.events > 0 {
        out.expiry_events = Some(
            expiry_events(
                raw,
                scale,
                &app,
                &items,
                config.payload,
                tasks,
                bar,
                created,
            )
            .await?,
        );
    }
    Ok(())
}

/// ops/s at the largest pool over the smallest, per workload and concurrency.
fn ratios(pools: &[PoolResult]) -> Vec<PoolRatio> {
    let (Some(first), Some(last)) = (pools.first(), pools.last()) else {
        return Vec::new();
    };
    if pools.len() < 2 {
        return Vec::new();
    }
    first
        .rows
        .iter()
        .filter_map(|a| {
            let b = last
                .rows
                .iter()
                .find(|b| b.workload == a.workload && b.concurrency == a.concurrency)?;
            (a.ops_per_sec > 0.0).then(|| PoolRatio {
                workload: a.workload.clone(),
                concurrency: a.concurrency,
                from: first.sessions,
                to: last.sessions,
                ratio: b.ops_per_sec / a.ops_per_sec,
            })
        })
        .collect()
}

/// Purges whatever has expired, then times [`ScaleConfig::purge_probes`] calls that find
/// nothing (or the few sessions that expired since the previous call).
async fn idle_purge(
    raw: &Arc<dyn SessionStore>, scale: &ScaleConfig,
) -> Result<IdlePurge, BenchError> {
    let err = store_error(raw.backend(), "purge_expired");
    let batch = scale.purge_batch.max(1);
    while raw.purge_expired(batch).await.map_err(&err)? >= batch as u64 {}
    let mut times = Vec::with_capacity(scale.purge_probes);
    let mut purged = 0;
    for _ in 0..scale.purge_probes {
        let start = Instant::now();
        purged += raw.purge_expired(batch).await.map_err(&err)?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(IdlePurge {
        calls: times.len(),
        median_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
        max_ms: times.last().copied().unwrap_or(0.0),
        purged,
    })
}

/// How long after its creation a session created with `timeout` has surely expired: the timeout
/// plus the store's refresh window (a create may set `now + timeout + w`).
fn expiry_after(raw: &Arc<dyn SessionStore>, timeout: Duration) -> Duration {
    timeout + timeout * u32::from(raw.refresh_window().percent()) / 100
}

#[allow(clippy::too_many_arguments)]
async fn purge(
    raw: &Arc<dyn SessionStore>, sizer: &Sizer, scale: &ScaleConfig, app: &AppName,
    items: &Arc<Items>, payload: Payload, tasks: usize, bar: &ProgressBar, created: &mut Created,
) -> Result<PurgeResult, BenchError> {
    let name = raw.backend();
    let err = store_error(name, "purge_expired");
    let batch = scale.purge_batch.max(1);
    bar.set_message(format!(
        "{name}: creating {} sessions to expire",
        scale.expired
    ));
    let start = Instant::now();
    create_sessions(
        name,
        raw,
        app,
        items,
        scale.expired,
        creating(raw, EXPIRED_TIMEOUT),
        &mut created.expired,
    )
    .await?;
    let expired_preload = start.elapsed();
    tokio::time::sleep(expiry_after(raw, EXPIRED_TIMEOUT) + Duration::from_millis(500)).await;
    if let Some(wait) = sizer.until_next_minute().await.map_err(sizer_error(name))? {
        // Postgres purges a session once its expiry MINUTE has passed (backend-sql's migration
        // 0008: one index bound per call, the current minute's bucket), up to a minute after it
        // expired: wait for the next minute on the database's clock.
        bar.set_message(format!("{name}: waiting for the expiry minute to pass"));
        tokio::time::sleep(wait + Duration::from_secs(1)).await;
    }

    bar.set_message(format!(
        "{name}: purging {} expired sessions under W1",
        scale.expired
    ));
    let fx = fixture(raw, app, &mut created.live, items, payload)?;
    let load = Background::start(&fx, raw, tasks);
    let timeline = Arc::clone(&load.timeline);
    let purged: Result<_, BenchError> = async {
        tokio::time::sleep(scale.before).await;
        timeline.next_phase();
        let start = Instant::now();
        let (mut purged, mut calls, mut slowest) = (0u64, 0u64, Duration::ZERO);
        loop {
            let call = Instant::now();
            let n = raw.purge_expired(batch).await.map_err(&err)?;
            slowest = slowest.max(call.elapsed());
            purged += n;
            calls += 1;
            if n < batch as u64 {
                break;
            }
        }
        let secs = start.elapsed();
        timeline.next_phase();
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok((purged, calls, slowest, secs))
    }
    .await;
    let end = load.finish().await;
    give_back(fx, &mut created.live);
    let (purged, calls, slowest, secs) = purged?;
    let end = end?;
    let before = timeline.phase(0, end);
    let during = timeline.phase(1, end);
    let seconds = timeline.seconds(1, end);
    let purge_secs = secs.as_secs_f64();
    let seconds_over_50ms = seconds
        .iter()
        .filter(|s| s.at_secs > -1.0 && s.at_secs < purge_secs && s.load.max_us > SLOW_OP_US)
        .count();
    Ok(PurgeResult {
        live: created.live.len(),
        expired: scale.expired,
        expired_preload_secs: expired_preload.as_secs_f64(),
        batch,
        purged,
        calls,
        secs: purge_secs,
        per_sec: purged as f64 / purge_secs.max(1e-9),
        slowest_call_ms: slowest.as_secs_f64() * 1000.0,
        read_before: before,
        read_during: during,
        read_after: timeline.phase(2, end),
        p99_ratio: (before.p99_us > 0.0).then(|| during.p99_us / before.p99_us),
        seconds_over_50ms,
        seconds,
    })
}

/// What the expiry-event subscriber saw of the sessions it waits for.
#[derive(Debug, Default)]
struct Tally {
    seen: u64,
    with_items: u64,
    empty_items: u64,
    partial_items: u64,
    items_lost: u64,
    other_reason: u64,
    first: Option<Duration>,
    last: Option<Duration>,
}

#[allow(clippy::too_many_arguments)]
async fn expiry_events(
    raw: &Arc<dyn SessionStore>, scale: &ScaleConfig, app: &AppName, items: &Arc<Items>,
    payload: Payload, tasks: usize, bar: &ProgressBar, created: &mut Created,
) -> Result<EventsResult, BenchError> {
    let name = raw.backend();
    let k = scale.events;
    let mut events = raw
        .expiry_events()
        .await
        .map_err(store_error(name, "expiry_events"))?;
    let events_app =
        AppName::new(&format!("{}-events", app.as_str())).map_err(store_error(name, "setup"))?;
    let origin = Instant::now();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let wanted = events_app.clone();
    let full = payload.items;
    let mut collector = tokio::spawn(async move {
        let mut tally = Tally::default();
        let mut seen = HashSet::new();
        loop {
            tokio::select! {
                biased;
                _ = &mut stop_rx => break,
                event = events.next() => {
                    let Some(event) = event else { break };
                    if *event.key.app() != wanted || !seen.insert(event.key.clone()) {
                        continue;
                    }
                    let at = origin.elapsed();
                    tally.first.get_or_insert(at);
                    tally.last = Some(at);
                    tally.seen += 1;
                    match event.reason {
                        EndReason::Expired if event.items.len() == full => tally.with_items += 1,
                        EndReason::Expired if event.items.is_empty() => tally.empty_items += 1,
                        EndReason::Expired => tally.partial_items += 1,
                        EndReason::ExpiredItemsLost => tally.items_lost += 1,
                        _ => tally.other_reason += 1,
                    }
                    if seen.len() >= k {
                        break;
                    }
                }
            }
        }
        tally
    });

    bar.set_message(format!("{name}: {k} sessions expiring together under W1"));
    let fx = fixture(raw, app, &mut created.live, items, payload)?;
    let load = Background::start(&fx, raw, tasks);
    let timeline = Arc::clone(&load.timeline);
    let expire = expiry_after(raw, scale.events_timeout);
    let ran: Result<_, BenchError> = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        timeline.next_phase();
        let create_start = origin.elapsed();
        create_sessions(
            name,
            raw,
            &events_app,
            items,
            k,
            creating(raw, scale.events_timeout),
            &mut created.events,
        )
        .await?;
        let create_end = origin.elapsed();
        let deadline = origin + create_end + expire + scale.events_grace;
        let tally = match tokio::time::timeout_at(deadline.into(), &mut collector).await {
            Ok(done) => done,
            Err(_) => {
                let _ = stop_tx.send(());
                (&mut collector).await
            }
        }
        .map_err(|e| BenchError::Config(format!("event subscriber failed: {e}")))?;
        Ok((tally, create_start, create_end))
    }
    .await;
    collector.abort();
    let end = load.finish().await;
    give_back(fx, &mut created.live);
    let (tally, create_start, create_end) = ran?;
    let end = end?;
    let secs = |d: Duration| d.as_secs_f64();
    Ok(EventsResult {
        sessions: k,
        timeout_ms: u64::try_from(scale.events_timeout.as_millis()).unwrap_or(u64::MAX),
        create_secs: secs(create_end.saturating_sub(create_start)),
        with_items: tally.with_items,
        empty_items: tally.empty_items,
        partial_items: tally.partial_items,
        items_lost: tally.items_lost,
        other_reason: tally.other_reason,
        missing: (k as u64).saturating_sub(tally.seen),
        first_event_after_first_expiry_secs: tally
            .first
            .map(|f| secs(f) - secs(create_start + expire)),
        last_event_after_last_expiry_secs: tally.last.map(|l| secs(l) - secs(create_end + expire)),
        events_per_sec: tally
            .first
            .zip(tally.last)
            .filter(|(f, l)| l > f)
            .map(|(f, l)| tally.seen as f64 / secs(l - f)),
        read_before: timeline.phase(0, end),
        read_during: timeline.phase(1, end),
    })
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

impl ScaleReport {
    /// The scale results as aligned text tables: pools (ops/s, percentiles, bytes, idle purge),
    /// ratios, purges, expiry events.
    pub fn table(&self) -> String {
        let mut out = format!(
            "scale: pools {:?}, payload {}, background load W1 x{}, warm-up {} s after each preload\n\n",
            self.pools, self.payload, self.load_tasks, self.warmup_secs
        );
        let s = |v: &str| v.to_owned();
        let mut lines = vec![
            [
                "backend",
                "pool",
                "workload",
                "conc",
                "ops/s",
                "p50",
                "p99",
                "p99.9",
                "B/session",
                "vs plain",
                "preload/s",
                "idle purge",
            ]
            .map(s)
            .to_vec(),
        ];
        for b in &self.backends {
            for p in &b.pools {
                for r in &p.rows {
                    lines.push(vec![
                        b.backend.clone(),
                        p.sessions.to_string(),
                        r.workload.clone(),
                        r.concurrency.to_string(),
                        format!("{:.0}", r.ops_per_sec),
                        us(r.p50_us),
                        us(r.p99_us),
                        us(r.p999_us),
                        opt(p.bytes_per_session, |x| format!("{x:.0}")),
                        opt(p.ratio_to_plain, |x| format!("{x:.2}x")),
                        format!("{:.0}", p.preload_per_sec),
                        p.idle_purge.map_or_else(
                            || "-".to_owned(),
                            |i| format!("{:.2}/{:.2}ms", i.median_ms, i.max_ms),
                        ),
                    ]);
                }
            }
        }
        out.push_str(&align(&lines, 3));
        out.push_str(
            "B/session: bytes the pool's preload step added per session added; vs plain: over the \
             raw client's plain storage of the same payload; idle purge: median/max of purge \
             calls finding nothing expired.\n",
        );
        let ratios: Vec<String> = self
            .backends
            .iter()
            .flat_map(|b| {
                b.ratios.iter().map(move |r| {
                    format!(
                        "{} {} x{}: {:.2}x ({} -> {})",
                        b.backend, r.workload, r.concurrency, r.ratio, r.from, r.to
                    )
                })
            })
            .collect();
        if !ratios.is_empty() {
            out.push_str("\nops/s, largest pool / smallest:\n");
            for r in ratios {
                out.push_str(&format!("  {r}\n"));
            }
        }
        let plain: Vec<String> = self
            .backends
            .iter()
            .filter_map(|b| {
                let per = b.plain_bytes_per_session?;
                Some(format!(
                    "  {}: {per:.0} B/session ({} sessions)",
                    b.backend,
                    b.plain_sample.unwrap_or(0)
                ))
            })
            .collect();
        if !plain.is_empty() {
            out.push_str("\nplain storage of the same payload (raw client):\n");
            out.push_str(&plain.join("\n"));
            out.push('\n');
        }
        let mut purges = vec![
            [
                "backend",
                "live",
                "expired",
                "purged/s",
                "calls",
                "slowest",
                "p50 before",
                "p50 during",
                "p99 before",
                "p99 during",
                "max before",
                "max during",
                "s>50ms",
            ]
            .map(s)
            .to_vec(),
        ];
        for b in &self.backends {
            if let Some(p) = &b.purge {
                purges.push(vec![
                    b.backend.clone(),
                    p.live.to_string(),
                    p.expired.to_string(),
                    format!("{:.0}", p.per_sec),
                    p.calls.to_string(),
                    format!("{:.1}ms", p.slowest_call_ms),
                    us(p.read_before.p50_us),
                    us(p.read_during.p50_us),
                    us(p.read_before.p99_us),
                    us(p.read_during.p99_us),
                    us(p.read_before.max_us),
                    us(p.read_during.max_us),
                    p.seconds_over_50ms.to_string(),
                ]);
            }
        }
        if purges.len() > 1 {
            out.push_str("\npurge of expired sessions under W1 (reads before vs during):\n");
            out.push_str(&align(&purges, 1));
        }
        let mut events = vec![
            [
                "backend",
                "sessions",
                "with items",
                "empty",
                "partial",
                "items lost",
                "other",
                "missing",
                "events/s",
                "last after expiry",
                "p99 before",
                "p99 during",
            ]
            .map(s)
            .to_vec(),
        ];
        for b in &self.backends {
            if let Some(e) = &b.expiry_events {
                events.push(vec![
                    b.backend.clone(),
                    e.sessions.to_string(),
                    e.with_items.to_string(),
                    e.empty_items.to_string(),
                    e.partial_items.to_string(),
                    e.items_lost.to_string(),
                    e.other_reason.to_string(),
                    e.missing.to_string(),
                    opt(e.events_per_sec, |x| format!("{x:.0}")),
                    opt(e.last_event_after_last_expiry_secs, |x| format!("{x:.1}s")),
                    us(e.read_before.p99_us),
                    us(e.read_during.p99_us),
                ]);
            }
        }
        if events.len() > 1 {
            out.push_str("\nexpiry events of sessions expiring together, under W1:\n");
            out.push_str(&align(&events, 1));
        }
        for b in &self.backends {
            if let Some(e) = &b.error {
                out.push_str(&format!("\n{} stopped early: {e}\n", b.backend));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Phases split a load's latencies; seconds are placed relative to a phase's start.
    #[test]
    fn timeline_phases_and_seconds() {
        let t = Timeline::new();
        t.record(Duration::from_micros(100));
        t.record(Duration::from_micros(300));
        t.next_phase();
        t.record(Duration::from_millis(70));
        let end = t.start.elapsed() + Duration::from_secs(1);
        let (before, during) = (t.phase(0, end), t.phase(1, end));
        assert_eq!((before.ops, during.ops), (2, 1));
        assert!(
            before.max_us < 1000.0 && during.max_us > 60_000.0,
            "{before:?} {during:?}"
        );
        let seconds = t.seconds(1, Duration::from_millis(500));
        assert_eq!(seconds.len(), 1);
        assert!(seconds[0].at_secs <= 0.0);
        assert_eq!(seconds[0].load.ops, 3);
        // The load stopped half way through its only second.
        assert_eq!(seconds[0].load.ops_per_sec, 6.0);
    }

    /// The plain blob is the items' names and values; random values differ between items.
    #[test]
    fn payload_is_random_and_plain_is_its_bytes() {
        let items = random_items(Payload::DEFAULT);
        assert_eq!(items.len(), 10);
        assert_eq!(plain_blob(&items).len(), session_core::items_size(&items));
        let values: HashSet<&[u8]> = items.values().map(ItemValue::as_bytes).collect();
        assert_eq!(values.len(), 10);
    }

    #[test]
    fn only_the_stores_tables_are_sized() {
        let names = [
            "bench_scale_sessions",
            "bench_scale_items",
            "bench_scale_migrations",
        ]
        .into_iter()
        .chain([PLAIN_TABLE, "sess_sessions"])
        .map(str::to_owned)
        .collect();
        assert_eq!(
            store_tables(names),
            ["bench_scale_sessions", "bench_scale_items"]
        );
    }
}
