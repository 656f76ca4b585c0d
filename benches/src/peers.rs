//! Peers: the published `tower-sessions` stores (moka; Redis through fred 10; Postgres through
//! sqlx 0.8) on W1–W3, with the same payload, pool of existing sessions and concurrency as our
//! stores, through `Arc<dyn tower_sessions_core::SessionStore>`.
//!
//! The mapping is the request each workload stands for: W1 (read-only request) = `load`; W2
//! (request that changes one item) = `load`, change the item, `save` — tower-sessions has no lock,
//! so this is last-writer-wins where ours is `acquire` + `commit` under an exclusive lock; W3 (new
//! session) = `create`, then `delete`. The peer stores pair with `tower-sessions-core` 0.14.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use sessions::{BoxError, redact_url};
use tower_sessions_core::SessionStore as PeerStore;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store;
use tower_sessions_redis_store::fred::prelude::{Builder, ClientLike, Config as FredConfig};
use tower_sessions_sqlx_store::sqlx::postgres::PgPoolOptions;

use crate::cleanup::{self, Leftover};
use crate::config::{BenchConfig, Payload, Workload};
use crate::error::BenchError;
use crate::workload::SESSION_TIMEOUT;

/// The table the Postgres peer uses (in tower-sessions' own `tower_sessions` schema).
pub const PEER_TABLE: &str = "session_bench_peer";

/// A `tower-sessions` store to run next to ours.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerSpec {
    /// `tower-sessions-moka-store` (in process).
    Moka,
    /// `tower-sessions-redis-store` on one fred client (one multiplexed connection, like ours).
    Redis(String),
    /// `tower-sessions-sqlx-store`'s `PostgresStore` on an sqlx 0.8 pool.
    Postgres(String),
}

impl PeerSpec {
    /// The workloads a peer runs (the others need locking or deltas, which peers do not have).
    pub const WORKLOADS: [Workload; 3] = [Workload::W1, Workload::W2, Workload::W3];

    /// The name used in the report (`peer:` marks peer rows).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Moka => "peer:tower-sessions-moka",
            Self::Redis(_) => "peer:tower-sessions-redis",
            Self::Postgres(_) => "peer:tower-sessions-postgres",
        }
    }

    /// Our backend on the same server kind: its floors are the peer's floors too.
    pub fn ours(&self) -> &'static str {
        match self {
            Self::Moka => "memory",
            Self::Redis(_) => "redis",
            Self::Postgres(_) => "postgres",
        }
    }

    /// The URL, if any (`None` for moka).
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Moka => None,
            Self::Redis(u) | Self::Postgres(u) => Some(u),
        }
    }
}

/// Connects the peer store for `spec` (`connections` pooled connections for Postgres).
///
/// # Errors
/// [`BenchError::Connect`] naming the peer.
pub async fn connect(spec: &PeerSpec, connections: u32) -> Result<Arc<dyn PeerStore>, BenchError> {
    let fail = |source: BoxError| BenchError::Connect {
        backend: spec.name(),
        url: spec.url().map(redact_url).unwrap_or_default(),
        source,
    };
    let timeout = Duration::from_secs(5);
    let store: Arc<dyn PeerStore> = match spec {
        PeerSpec::Moka => Arc::new(tower_sessions_moka_store::MokaStore::new(None)),
        PeerSpec::Redis(url) => {
            let config = FredConfig::from_url(url).map_err(|e| fail(e.into()))?;
            let client = Builder::from_config(config)
                .with_connection_config(|c| {
                    c.connection_timeout = timeout;
                    c.internal_command_timeout = timeout;
                })
                .build()
                .map_err(|e| fail(e.into()))?;
            // The connection task runs until the client is dropped; its handle is not needed.
            let _task = client.init().await.map_err(|e| fail(e.into()))?;
            Arc::new(tower_sessions_redis_store::RedisStore::new(client))
        }
        PeerSpec::Postgres(url) => {
            let pool = PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(timeout)
                .connect(url)
                .await
                .map_err(|e| fail(e.into()))?;
            let store = tower_sessions_sqlx_store::PostgresStore::new(pool)
                .with_table_name(PEER_TABLE)
                .map_err(|e| fail(e.into()))?;
            store.migrate().await.map_err(|e| fail(e.into()))?;
            Arc::new(store)
        }
    };
    Ok(store)
}

/// Item bytes of a record's data: names plus values (a string value counts its UTF-8 bytes, the
/// same bytes our stores get as an item value; other values their JSON text).
pub fn data_size(data: &std::collections::HashMap<String, Value>) -> usize {
    data.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    Value::String(s) => s.len(),
                    other => other.to_string().len(),
                }
        })
        .sum()
}

/// Wraps a peer store, counting calls and the item bytes in the records it is given.
#[derive(Debug)]
pub struct CountingPeer {
    inner: Arc<dyn PeerStore>,
    calls: AtomicU64,
    bytes: AtomicU64,
}

impl CountingPeer {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn PeerStore>) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Calls and bytes so far, and resets both to zero.
    pub fn take_counts(&self) -> (u64, u64) {
        (
            self.calls.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }

    fn count(&self, bytes: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

#[async_trait]
impl PeerStore for CountingPeer {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.count(data_size(&record.data));
        self.inner.create(record).await
    }
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.count(data_size(&record.data));
        self.inner.save(record).await
    }
    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        self.count(0);
        self.inner.load(session_id).await
    }
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.count(0);
        self.inner.delete(session_id).await
    }
}

/// The peer's counterpart of [`crate::Fixture`]: the pool of existing sessions and the values,
/// prepared once per peer outside the measured time.
pub struct PeerFixture {
    backend: &'static str,
    data: std::collections::HashMap<String, Value>,
    pool: Vec<Id>,
    values: [Value; 2],
}

impl fmt::Debug for PeerFixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerFixture")
            .field("backend", &self.backend)
            .field("items", &self.data.len())
            .field("pool", &self.pool.len())
            .finish_non_exhaustive()
    }
}

fn peer_err(backend: &'static str, what: String) -> impl Fn(session_store::Error) -> BenchError {
    move |source| BenchError::Peer {
        backend,
        workload: what.clone(),
        source,
    }
}

/// The same items as [`crate::workload::make_items`], as tower-sessions data: `item{i}` holds a
/// string of `item_size` ASCII bytes (the same bytes as our item value).
pub fn make_data(payload: Payload) -> std::collections::HashMap<String, Value> {
    (0..payload.items)
        .map(|i| {
            let byte = b'a' + (i % 26) as u8;
            (
                format!("item{i}"),
                Value::String(String::from(byte as char).repeat(payload.item_size)),
            )
        })
        .collect()
}

/// Deletes the records `ids` through `store` ([`cleanup::CLEANUP_CONCURRENCY`] at a time).
pub async fn remove_records(store: &Arc<dyn PeerStore>, ids: Vec<Id>) -> Leftover {
    let store = Arc::clone(store);
    cleanup::remove_all(
        ids,
        cleanup::CLEANUP_CONCURRENCY,
        |_| 1,
        move |id| {
            let store = Arc::clone(&store);
            async move { store.delete(&id).await.map_err(|e| e.to_string()) }
        },
    )
    .await
}

fn expiry() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + SESSION_TIMEOUT
}

impl PeerFixture {
    /// Creates the pool of existing sessions through `setup_store` (uncounted), 16 at a time.
    /// Remove them with [`PeerFixture::remove`] when done; if setup fails, the sessions it created
    /// are removed before the error is returned.
    ///
    /// # Errors
    /// A peer store failure during setup.
    pub async fn prepare(
        config: &BenchConfig, backend: &'static str, setup_store: &Arc<dyn PeerStore>,
    ) -> Result<Self, BenchError> {
        let data = make_data(config.payload);
        let wants = |w| config.workloads.contains(&w);
        let count = if wants(Workload::W1) || wants(Workload::W2) {
            config.pool_for(config.payload)
        } else {
            0
        };
        let workers = 16.min(count.max(1));
        let mut set = tokio::task::JoinSet::new();
        for w in 0..workers {
            let store = Arc::clone(setup_store);
            let data = data.clone();
            let n = count / workers + usize::from(w < count % workers);
            set.spawn(async move {
                // The ids created so far come back with an error too, for the cleanup.
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut record = Record {
                        id: Id::default(),
                        data: data.clone(),
                        expiry_date: expiry(),
                    };
                    if let Err(e) = store.create(&mut record).await {
                        return (ids, Err(e));
                    }
                    ids.push(record.id);
                }
                (ids, Ok(()))
            });
        }
        let mut pool = Vec::with_capacity(count);
        let mut failure = None;
        while let Some(done) = set.join_next().await {
            match done {
                Ok((ids, result)) => {
                    pool.extend(ids);
                    if let Err(e) = result {
                        failure.get_or_insert(peer_err(backend, "setup".to_owned())(e));
                    }
                }
                Err(e) => {
                    failure
                        .get_or_insert(BenchError::Config(format!("peer setup task failed: {e}")));
                }
            }
        }
        if let Some(err) = failure {
            remove_records(setup_store, pool).await.warn(backend);
            return Err(err);
        }
        let value = |b: u8| Value::String(String::from(b as char).repeat(config.payload.item_size));
        Ok(Self {
            backend,
            data,
            pool,
            values: [value(b'x'), value(b'y')],
        })
    }

    /// Deletes the pool through `store` (use the uncounted one), with bounded concurrency; what
    /// could not be removed is returned, not an error.
    pub async fn remove(&self, store: &Arc<dyn PeerStore>) -> Leftover {
        remove_records(store, self.pool.clone()).await
    }

    /// Task `task` of `tasks` uses its own slice of the pool, as [`crate::Fixture`] does.
    fn key(&self, task: usize, tasks: usize, iter: u64) -> &Id {
        let per = (self.pool.len() / tasks.max(1)).max(1);
        let i = task * per + (iter % per as u64) as usize;
        &self.pool[i % self.pool.len()]
    }

    /// Runs workload `w` (W1–W3) once as task `task` of `tasks`, returning its latency.
    ///
    /// # Errors
    /// A peer store failure, a missing pooled session, or a workload peers do not run.
    pub async fn run_once(
        &self, store: &Arc<dyn PeerStore>, w: Workload, task: usize, tasks: usize, iter: u64,
    ) -> Result<Duration, BenchError> {
        let backend = self.backend;
        let err = peer_err(backend, w.to_string());
        let missing = || BenchError::Unexpected {
            backend,
            workload: w.to_string(),
            what: "load: a pooled session is missing".to_owned(),
        };
        match w {
            Workload::W1 if !self.pool.is_empty() => {
                let id = self.key(task, tasks, iter);
                let start = Instant::now();
                let record = store.load(id).await.map_err(&err)?.ok_or_else(missing)?;
                std::hint::black_box(record);
                Ok(start.elapsed())
            }
            Workload::W2 if !self.pool.is_empty() => {
                let id = self.key(task, tasks, iter);
                let value = self.values[(iter % 2) as usize].clone();
                let start = Instant::now();
                let mut record = store.load(id).await.map_err(&err)?.ok_or_else(missing)?;
                record.data.insert("item0".to_owned(), value);
                // What tower-sessions' `OnInactivity` expiry does on every save.
                record.expiry_date = expiry();
                store.save(&record).await.map_err(&err)?;
                Ok(start.elapsed())
            }
            Workload::W3 => {
                let mut record = Record {
                    id: Id::default(),
                    data: self.data.clone(),
                    expiry_date: expiry(),
                };
                let start = Instant::now();
                store.create(&mut record).await.map_err(&err)?;
                store.delete(&record.id).await.map_err(&err)?;
                Ok(start.elapsed())
            }
            _ => Err(BenchError::Config(format!(
                "{backend}: peers run W1-W3 only (with a pool), not {w}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_data_matches_our_items() {
        let data = make_data(Payload::DEFAULT);
        let items = crate::workload::make_items(Payload::DEFAULT);
        assert_eq!(data_size(&data), session_core::items_size(&items));
        assert_eq!(data_size(&data), 10 * (5 + 150));
        for (name, value) in &items {
            let Some(Value::String(s)) = data.get(name) else {
                panic!("no {name}");
            };
            assert_eq!(s.as_bytes(), value.as_bytes());
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_or_unreachable_peers_are_connect_errors() {
        for spec in [
            PeerSpec::Redis("redis://127.0.0.1:1".into()),
            PeerSpec::Redis("not a url".into()),
            PeerSpec::Postgres("postgres://u:secret@127.0.0.1:1/db".into()),
            PeerSpec::Postgres("not a url".into()),
        ] {
            let started = Instant::now();
            match connect(&spec, 1).await {
                Err(err @ BenchError::Connect { backend, .. }) => {
                    assert_eq!(backend, spec.name());
                    assert!(!err.to_string().contains("secret"), "{err}");
                }
                other => panic!("{spec:?}: {other:?}"),
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{spec:?} hung");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_moka_peer_runs_w1_to_w3() {
        let config = BenchConfig {
            concurrency: vec![1],
            pool: 8,
            ..BenchConfig::default()
        };
        let spec = PeerSpec::Moka;
        let raw = connect(&spec, 1).await.unwrap();
        let counting = Arc::new(CountingPeer::new(Arc::clone(&raw)));
        let store: Arc<dyn PeerStore> = Arc::<CountingPeer>::clone(&counting);
        let fixture = PeerFixture::prepare(&config, spec.name(), &raw)
            .await
            .unwrap();
        assert_eq!(counting.take_counts(), (0, 0), "setup is not counted");
        for (w, calls, bytes) in [
            (Workload::W1, 1, 0),
            // The whole record is saved: every item, not only the changed one.
            (Workload::W2, 2, 10 * (5 + 150)),
            (Workload::W3, 2, 10 * (5 + 150)),
        ] {
            fixture.run_once(&store, w, 0, 1, 0).await.unwrap();
            assert_eq!(counting.take_counts(), (calls, bytes), "{w}");
        }
        assert!(
            fixture
                .run_once(&store, Workload::W4, 0, 1, 0)
                .await
                .is_err()
        );
    }
}
