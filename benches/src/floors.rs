//! Floors: the raw client doing the least work for the same bytes (a bare moka get/insert, SQL
//! `SELECT`/upsert by primary key on a one-table schema, Redis `GET`/`SET`), so that every backend
//! row reads as a ratio to its physical limit. Probes (rows `ref-…`) are extra reference operations
//! between the floor and the store, each adding one of the store's costs, so the gap between W1 and
//! its floor can be split into parts.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sessions::{Backend, BoxError, redact_url};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, MySqlPool, PgPool, SqlitePool};

use crate::cleanup::{self, Leftover};
use crate::config::{BackendSpec, Payload};
use crate::error::BenchError;

/// The table the SQL floors use.
pub const FLOOR_TABLE: &str = "bench_floor";

/// A raw client: one read and one write by key, each a single round trip.
#[async_trait]
pub trait Floor: Send + Sync + fmt::Debug {
    /// Reads the value under `key`.
    ///
    /// # Errors
    /// The client's error.
    async fn get(&self, key: &str) -> Result<(), BoxError>;
    /// Writes `value` under `key` (insert or replace).
    ///
    /// # Errors
    /// The client's error.
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), BoxError>;
    /// Removes `keys` (absent keys are no error): the cleanup after a run, in as few round trips
    /// as the client allows (one `DEL` or one `DELETE … WHERE id IN (…)` where it can).
    ///
    /// # Errors
    /// The client's error.
    async fn remove(&self, keys: &[String]) -> Result<(), BoxError>;
}

/// Removes `keys` through `floor`, [`cleanup::FLOOR_BATCH`] keys per call and
/// [`cleanup::CLEANUP_CONCURRENCY`] calls at once; what could not be removed is returned.
pub async fn remove_keys(floor: &Arc<dyn Floor>, keys: &[String]) -> Leftover {
    let batches: Vec<Vec<String>> = keys
        .chunks(cleanup::FLOOR_BATCH)
        .map(<[String]>::to_vec)
        .collect();
    let floor = Arc::clone(floor);
    cleanup::remove_all(
        batches,
        cleanup::CLEANUP_CONCURRENCY,
        Vec::len,
        move |batch| {
            let floor = Arc::clone(&floor);
            async move { floor.remove(&batch).await.map_err(|e| e.to_string()) }
        },
    )
    .await
}

/// `DELETE … WHERE id IN (?, ?, …)` with `n` placeholders (SQLite, MySQL).
fn delete_in(n: usize) -> String {
    format!(
        "DELETE FROM bench_floor WHERE id IN ({})",
        vec!["?"; n].join(", ")
    )
}

/// A bare moka cache of byte blobs.
#[derive(Debug)]
pub struct MokaFloor(moka::future::Cache<String, Arc<[u8]>>);

#[async_trait]
impl Floor for MokaFloor {
    async fn get(&self, key: &str) -> Result<(), BoxError> {
        std::hint::black_box(self.0.get(key).await);
        Ok(())
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), BoxError> {
        self.0.insert(key.to_owned(), Arc::from(value)).await;
        Ok(())
    }
    async fn remove(&self, keys: &[String]) -> Result<(), BoxError> {
        for key in keys {
            self.0.invalidate(key).await;
        }
        Ok(())
    }
}

/// A one-table SQL schema, read and upserted by primary key.
#[derive(Debug)]
pub enum SqlFloor {
    /// SQLite.
    Sqlite(SqlitePool),
    /// Postgres.
    Postgres(PgPool),
    /// MySQL / MariaDB.
    Mysql(MySqlPool),
}

#[async_trait]
impl Floor for SqlFloor {
    async fn get(&self, key: &str) -> Result<(), BoxError> {
        match self {
            Self::Sqlite(p) => {
                sqlx::query("SELECT data FROM bench_floor WHERE id = ?")
                    .bind(key)
                    .fetch_optional(p)
                    .await?;
            }
            Self::Postgres(p) => {
                sqlx::query("SELECT data FROM bench_floor WHERE id = $1")
                    .bind(key)
                    .fetch_optional(p)
                    .await?;
            }
            Self::Mysql(p) => {
                sqlx::query("SELECT data FROM bench_floor WHERE id = ?")
                    .bind(key)
                    .fetch_optional(p)
                    .await?;
            }
        }
        Ok(())
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), BoxError> {
        match self {
            Self::Sqlite(p) => {
                sqlx::query("INSERT OR REPLACE INTO bench_floor (id, data) VALUES (?, ?)")
                    .bind(key)
                    .bind(value)
                    .execute(p)
                    .await?;
            }
            Self::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO bench_floor (id, data) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data",
                )
                .bind(key)
                .bind(value)
                .execute(p)
                .await?;
            }
            Self::Mysql(p) => {
                sqlx::query(
                    "INSERT INTO bench_floor (id, data) VALUES (?, ?) \
                     ON DUPLICATE KEY UPDATE data = VALUES(data)",
                )
                .bind(key)
                .bind(value)
                .execute(p)
                .await?;
            }
        }
        Ok(())
    }
    async fn remove(&self, keys: &[String]) -> Result<(), BoxError> {
        if keys.is_empty() {
            return Ok(());
        }
        match self {
            Self::Sqlite(p) => {
                // Only `?` placeholders are formatted in; the keys are bound.
                let sql = delete_in(keys.len());
                let q = keys
                    .iter()
                    .fold(sqlx::query(AssertSqlSafe(sql)), |q, k| q.bind(k));
                q.execute(p).await?;
            }
            Self::Postgres(p) => {
                sqlx::query("DELETE FROM bench_floor WHERE id = ANY($1)")
                    .bind(keys)
                    .execute(p)
                    .await?;
            }
            Self::Mysql(p) => {
                // Only `?` placeholders are formatted in; the keys are bound.
                let sql = delete_in(keys.len());
                let q = keys
                    .iter()
                    .fold(sqlx::query(AssertSqlSafe(sql)), |q, k| q.bind(k));
                q.execute(p).await?;
            }
        }
        Ok(())
    }
}

/// Redis `GET` / `SET … EX` on one multiplexed connection (standalone) or the async cluster client.
#[derive(Clone)]
pub enum RedisFloor {
    /// Standalone.
    Standalone(redis::aio::ConnectionManager),
    /// Cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl fmt::Debug for RedisFloor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Standalone(_) => "RedisFloor::Standalone",
            Self::Cluster(_) => "RedisFloor::Cluster",
        })
    }
}

#[async_trait]
impl Floor for RedisFloor {
    async fn get(&self, key: &str) -> Result<(), BoxError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let v: Option<Vec<u8>> = match self.clone() {
            Self::Standalone(mut c) => cmd.query_async(&mut c).await?,
            Self::Cluster(mut c) => cmd.query_async(&mut c).await?,
        };
        std::hint::black_box(v);
        Ok(())
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), BoxError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("EX").arg(1800);
        match self.clone() {
            Self::Standalone(mut c) => cmd.query_async::<()>(&mut c).await?,
            Self::Cluster(mut c) => cmd.query_async::<()>(&mut c).await?,
        }
        Ok(())
    }
    async fn remove(&self, keys: &[String]) -> Result<(), BoxError> {
        match self.clone() {
            Self::Standalone(mut c) if !keys.is_empty() => {
                redis::cmd("DEL")
                    .arg(keys)
                    .query_async::<()>(&mut c)
                    .await?;
            }
            Self::Standalone(_) => {}
            // Keys of one `DEL` must share a hash slot in a cluster: one `DEL` per key.
            Self::Cluster(mut c) => {
                for key in keys {
                    redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await?;
                }
            }
        }
        Ok(())
    }
}

/// A reference operation that isolates one part of a store's W1 cost (report rows `ref-…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Probe {
    /// Nothing at all: the harness alone (clock reads, the boxed future, the histogram).
    Harness,
    /// A moka `and_compute_with` that replaces the entry with a new one sharing the same data:
    /// the shape of a read that slides the expiry (a write per read), next to `floor-read`'s `get`.
    MokaCompute,
    /// Redis `HGETALL` of a hash holding the payload's items (vs `floor-read`'s `GET` of one blob).
    Hgetall,
    /// `HGETALL` plus two `PEXPIRE`s (the slide), pipelined: one round trip, three commands.
    HgetallPexpire,
    /// `EVALSHA` of `return 1`: the cost of running a script at all.
    EvalshaNoop,
    /// `EVALSHA` of a script shaped like the store's read (`HMGET` of the meta hash, two `PEXPIRE`s,
    /// `HGETALL` of the items), reply left undecoded: the store's server-side work.
    EvalshaRead,
}

impl Probe {
    /// The probes for the in-process store.
    pub const MEMORY: &'static [Self] = &[Self::Harness, Self::MokaCompute];
    /// The probes for standalone Redis.
    pub const REDIS: &'static [Self] = &[
        Self::Hgetall,
        Self::HgetallPexpire,
        Self::EvalshaNoop,
        Self::EvalshaRead,
    ];

    /// The report's workload label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Harness => "ref-harness",
            Self::MokaCompute => "ref-moka-compute",
            Self::Hgetall => "ref-hgetall",
            Self::HgetallPexpire => "ref-hgetall-pexpire",
            Self::EvalshaNoop => "ref-evalsha-noop",
            Self::EvalshaRead => "ref-evalsha-read",
        }
    }

    /// Store calls (round trips for Redis) per probe operation.
    pub fn calls(self) -> u64 {
        u64::from(self != Self::Harness)
    }
}

/// The read-shaped script of [`Probe::EvalshaRead`]; KEYS: meta hash, items hash.
const PROBE_READ_LUA: &str = "\
local m = redis.call('HMGET', KEYS[1], 't', 'l', 's', 'i')
redis.call('PEXPIRE', KEYS[1], m[1])
redis.call('PEXPIRE', KEYS[2], tonumber(m[1]) + 60000)
return {2, m[1], 0, redis.call('HGETALL', KEYS[2])}";

/// The client the probes run on, with the probe keys filled.
pub struct Prober {
    kind: ProberKind,
}

enum ProberKind {
    Memory(moka::future::Cache<String, Arc<ProbeRecord>>),
    Redis {
        conn: redis::aio::ConnectionManager,
        noop: redis::Script,
        read: redis::Script,
    },
}

/// A memory probe entry: data shared by `Arc`, plus a deadline, like a store record.
#[derive(Debug)]
struct ProbeRecord {
    data: Arc<[u8]>,
    deadline: std::time::Instant,
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ProberKind::Memory(_) => "Prober::Memory",
            ProberKind::Redis { .. } => "Prober::Redis",
        })
    }
}

/// The Redis keys [`prober`] fills for the floor key `key` (a meta hash and an items hash).
pub fn probe_keys(key: &str) -> [String; 2] {
    [meta_key(key), items_key(key)]
}

fn meta_key(key: &str) -> String {
    format!("{{{key}}}:m")
}

fn items_key(key: &str) -> String {
    format!("{{{key}}}:i")
}

impl Prober {
    /// The probes this client runs.
    pub fn probes(&self) -> &'static [Probe] {
        match self.kind {
            ProberKind::Memory(_) => Probe::MEMORY,
            ProberKind::Redis { .. } => Probe::REDIS,
        }
    }

    /// Runs `probe` once on `key` (one of the keys the prober was filled with).
    ///
    /// # Errors
    /// The client's error; a probe of another backend.
    pub async fn run(&self, probe: Probe, key: &str) -> Result<(), BoxError> {
        match (&self.kind, probe) {
            (_, Probe::Harness) => {}
            (ProberKind::Memory(cache), Probe::MokaCompute) => {
                let now = std::time::Instant::now();
                cache
                    .entry_by_ref(key)
                    .and_compute_with(|entry| {
                        let op = match entry {
                            Some(e) => moka::ops::compute::Op::Put(Arc::new(ProbeRecord {
                                data: Arc::clone(&e.value().data),
                                deadline: now + Duration::from_secs(1800),
                            })),
                            None => moka::ops::compute::Op::Nop,
                        };
                        std::future::ready(op)
                    })
                    .await;
            }
            (ProberKind::Redis { conn, noop, read }, probe) => {
                let mut conn = conn.clone();
                let reply: redis::Value = match probe {
                    Probe::Hgetall => {
                        redis::cmd("HGETALL")
                            .arg(items_key(key))
                            .query_async(&mut conn)
                            .await?
                    }
                    Probe::HgetallPexpire => {
                        redis::pipe()
                            .cmd("HGETALL")
                            .arg(items_key(key))
                            .cmd("PEXPIRE")
                            .arg(meta_key(key))
                            .arg(1_800_000)
                            .ignore()
                            .cmd("PEXPIRE")
                            .arg(items_key(key))
                            .arg(1_860_000)
                            .ignore()
                            .query_async(&mut conn)
                            .await?
                    }
                    Probe::EvalshaNoop => noop.invoke_async(&mut conn).await?,
                    Probe::EvalshaRead => {
                        read.key(meta_key(key))
                            .key(items_key(key))
                            .invoke_async(&mut conn)
                            .await?
                    }
                    other => return Err(format!("{} is not a Redis probe", other.label()).into()),
                };
                std::hint::black_box(reply);
            }
            (ProberKind::Memory(_), other) => {
                return Err(format!("{} is not a memory probe", other.label()).into());
            }
        }
        Ok(())
    }
}

/// The prober for `spec`, filled for `keys` with `payload` (Redis: a meta hash and an items hash
/// per key, shaped like the store's; memory: one entry per key), or `None` for backends without
/// probes (SQL and Redis Cluster).
///
/// # Errors
/// [`BenchError::Connect`] or [`BenchError::Floor`] naming the backend.
pub async fn prober(
    spec: &BackendSpec, keys: &[String], payload: Payload,
) -> Result<Option<Prober>, BenchError> {
    let backend = spec.name();
    let floor_err = |source: BoxError| BenchError::Floor { backend, source };
    match spec.backend() {
        Backend::Memory => {
            let cache = moka::future::Cache::builder().build();
            let data: Arc<[u8]> = Arc::from(vec![b'p'; payload.bytes()]);
            let deadline = std::time::Instant::now() + Duration::from_secs(1800);
            for key in keys {
                let record = ProbeRecord {
                    data: Arc::clone(&data),
                    deadline,
                };
                std::hint::black_box(record.deadline);
                cache.insert(key.clone(), Arc::new(record)).await;
            }
            Ok(Some(Prober {
                kind: ProberKind::Memory(cache),
            }))
        }
        Backend::Redis if spec.is_standalone_redis() => {
            let conn = connect_redis(spec).await?;
            let mut fill = conn.clone();
            for chunk in keys.chunks(100) {
                let mut pipe = redis::pipe();
                for key in chunk {
                    pipe.cmd("HSET")
                        .arg(meta_key(key))
                        .arg("t")
                        .arg(1_800_000)
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(meta_key(key))
                        .arg(1_800_000)
                        .ignore();
                    let items = pipe.cmd("HSET").arg(items_key(key));
                    for i in 0..payload.items {
                        items
                            .arg(format!("item{i}"))
                            .arg(vec![b'a' + (i % 26) as u8; payload.item_size]);
                    }
                    pipe.ignore()
                        .cmd("PEXPIRE")
                        .arg(items_key(key))
                        .arg(1_860_000)
                        .ignore();
                }
                pipe.query_async::<()>(&mut fill)
                    .await
                    .map_err(|e| floor_err(e.into()))?;
            }
            Ok(Some(Prober {
                kind: ProberKind::Redis {
                    conn,
                    noop: redis::Script::new("return 1"),
                    read: redis::Script::new(PROBE_READ_LUA),
                },
            }))
        }
        _ => Ok(None),
    }
}

/// A connection to the standalone Redis of `spec`.
async fn connect_redis(spec: &BackendSpec) -> Result<redis::aio::ConnectionManager, BenchError> {
    let fail = |source: BoxError| BenchError::Connect {
        backend: spec.name(),
        url: redact_url(spec.url()),
        source,
    };
    let client = redis::Client::open(spec.url()).map_err(|e| fail(e.into()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(0);
    redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| fail(e.into()))
}

/// Connects the floor for `spec`, with up to `connections` pooled connections where the client
/// pools (the same count as the backend's pool).
///
/// # Errors
/// [`BenchError::Connect`] naming the backend.
pub async fn connect(spec: &BackendSpec, connections: u32) -> Result<Arc<dyn Floor>, BenchError> {
    let fail = |source: BoxError| BenchError::Connect {
        backend: spec.name(),
        url: redact_url(spec.url()),
        source,
    };
    let timeout = Duration::from_secs(5);
    let url = spec.url();
    let floor: Arc<dyn Floor> = match spec.backend() {
        Backend::Memory => Arc::new(MokaFloor(moka::future::Cache::builder().build())),
        Backend::Sqlite => {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| fail(e.into()))?
                .create_if_missing(true)
                .busy_timeout(Duration::from_secs(5));
            let (options, max) = if in_memory {
                (options, 1)
            } else {
                (options.journal_mode(SqliteJournalMode::Wal), connections)
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .min_connections(u32::from(in_memory))
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options)
                .await
                .map_err(|e| fail(e.into()))?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS bench_floor (id TEXT PRIMARY KEY, data BLOB NOT NULL)",
            )
            .execute(&pool)
            .await
            .map_err(|e| fail(e.into()))?;
            Arc::new(SqlFloor::Sqlite(pool))
        }
        Backend::Postgres => {
            let pool = PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(timeout)
                .connect(url)
                .await
                .map_err(|e| fail(e.into()))?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS bench_floor (id TEXT PRIMARY KEY, data BYTEA NOT NULL)",
            )
            .execute(&pool)
            .await
            .map_err(|e| fail(e.into()))?;
            Arc::new(SqlFloor::Postgres(pool))
        }
        Backend::Mysql => {
            let pool = MySqlPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(timeout)
                .connect(url)
                .await
                .map_err(|e| fail(e.into()))?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS bench_floor \
                 (id VARCHAR(64) PRIMARY KEY, data LONGBLOB NOT NULL)",
            )
            .execute(&pool)
            .await
            .map_err(|e| fail(e.into()))?;
            Arc::new(SqlFloor::Mysql(pool))
        }
        Backend::Redis if spec.is_cluster() => {
            // One URL per seed node, each keeping the TLS and credentials of the cluster URL.
            let nodes = sessions::redis::node_urls(url).map_err(|e| fail(e.into()))?;
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(timeout)
                .build()
                .map_err(|e| fail(e.into()))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| fail(e.into()))?;
            Arc::new(RedisFloor::Cluster(conn))
        }
        Backend::Redis => Arc::new(RedisFloor::Standalone(connect_redis(spec).await?)),
        other => {
            return Err(BenchError::Config(format!(
                "no floor for the {other} backend"
            )));
        }
    };
    Ok(floor)
}

#[cfg(test)]
mod tests {
    /// The cluster floor's nodes are backend-redis's split of the URL: a TLS cluster's nodes
    /// keep TLS (`rediss://`) and the credentials.
    #[test]
    fn cluster_urls_split_into_nodes_that_keep_tls() {
        let nodes = |url: &str| sessions::redis::node_urls(url).unwrap();
        assert_eq!(
            nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            nodes("rediss+cluster://app:pw@h:1,g:2"),
            ["rediss://app:pw@h:1", "rediss://app:pw@g:2"]
        );
    }
}
