//! The workload definitions: one function per workload, called with the same arguments for every
//! backend through `Arc<dyn SessionStore>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_core::{
    Access, AcquireOutcome, AppName, CommitOutcome, Config, CreateOutcome, Delta, EndOutcome,
    ItemValue, Items, LockToken, ReadOutcome, RemoveOutcome, SessionId, SessionKey, SessionManager,
    SessionStore, items_size,
};

use crate::cleanup::{self, Leftover};
use crate::config::{BenchConfig, Payload, Workload};
use crate::error::BenchError;

/// Session timeout used by every workload.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Lock TTL used by every workload.
pub const LOCK_TTL: Duration = Duration::from_secs(110);

/// `n` items `item0..item{n-1}` of `size` bytes.
pub fn make_items(payload: Payload) -> Items {
    (0..payload.items)
        .map(|i| {
            (
                format!("item{i}"),
                ItemValue::from_bytes(vec![b'a' + (i % 26) as u8; payload.item_size]),
            )
        })
        .collect()
}

/// Everything a workload needs, prepared once per backend (pools of existing sessions and the
/// manager for W5), outside the measured time.
#[derive(Debug)]
pub struct Fixture {
    backend: &'static str,
    app: AppName,
    items: Arc<Items>,
    pool: Vec<SessionKey>,
    large_pool: Vec<SessionKey>,
    shared: SessionKey,
    shared_w6: SessionKey,
    values: [ItemValue; 2],
    large_values: [ItemValue; 2],
    manager: SessionManager,
    origin: Instant,
    last_release_ns: AtomicU64,
    /// Pick sessions uniformly at random within each task's slice (`--scale`), rather than in
    /// turn.
    uniform: bool,
}

fn store_err(backend: &'static str, what: String) -> impl Fn(session_core::Error) -> BenchError {
    move |source| BenchError::Store {
        backend,
        workload: what.clone(),
        source,
    }
}

fn unexpected(backend: &'static str, w: Workload, what: String) -> BenchError {
    BenchError::Unexpected {
        backend,
        workload: w.to_string(),
        what,
    }
}

/// Deletes `keys` through `store` ([`cleanup::CLEANUP_CONCURRENCY`] at a time); a key that is
/// already gone counts as removed.
pub async fn remove_sessions(store: &Arc<dyn SessionStore>, keys: Vec<SessionKey>) -> Leftover {
    let store = Arc::clone(store);
    cleanup::remove_all(
        keys,
        cleanup::CLEANUP_CONCURRENCY,
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

/// Creates `count` sessions of `items` through `store` (16 at a time); every key is added to
/// `created` before its session is created, so a failed setup can remove what it made.
async fn create_pool(
    backend: &'static str, store: &Arc<dyn SessionStore>, app: &AppName, items: &Arc<Items>,
    count: usize, created: &mut Vec<SessionKey>,
) -> Result<Vec<SessionKey>, BenchError> {
    let first = created.len();
    let how = Creating {
        timeout: SESSION_TIMEOUT,
        workers: 16,
        own_values: false,
    };
    create_sessions(backend, store, app, items, count, how, created).await?;
    Ok(created[first..].to_vec())
}

/// How [`create_sessions`] creates sessions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Creating {
    /// The sessions' timeout.
    pub timeout: Duration,
    /// Tasks creating at once.
    pub workers: usize,
    /// Give every session its own copy of the values (an in-process store would otherwise keep
    /// one shared buffer per value for all of them, which no real application does).
    pub own_values: bool,
}

/// Creates `count` new sessions of `items` through `store` as `how` says (each task generating
/// its own keys), and appends their keys to `created`: every key whose `create` was sent, also
/// when one fails (then the first error is returned after every task has stopped), so that the
/// caller can remove what was made.
///
/// # Errors
/// A store failure, or an outcome other than `Created`.
pub(crate) async fn create_sessions(
    backend: &'static str, store: &Arc<dyn SessionStore>, app: &AppName, items: &Arc<Items>,
    count: usize, how: Creating, created: &mut Vec<SessionKey>,
) -> Result<(), BenchError> {
    let Creating {
        timeout,
        workers,
        own_values,
    } = how;
    let workers = workers.clamp(1, count.max(1));
    created.reserve(count);
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let n = count / workers + usize::from(w < count % workers);
        let (store, items, app) = (Arc::clone(store), Arc::clone(items), app.clone());
        set.spawn(async move {
            let err = store_err(backend, "setup".to_owned());
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                let key = match SessionId::generate() {
                    Ok(id) => SessionKey::new(app.clone(), id),
                    Err(e) => return (keys, Err(err(e))),
                };
                keys.push(key.clone());
                let copy;
                let items = if own_values {
                    copy = items
                        .iter()
                        .map(|(n, v)| (n.clone(), ItemValue::from_bytes(v.as_bytes().to_vec())))
                        .collect();
                    &copy
                } else {
                    &*items
                };
                match store.create(&key, items, timeout, true).await {
                    Ok(CreateOutcome::Created) => {}
                    Ok(other) => {
                        let what = format!("create: {other:?}");
                        return (keys, Err(unexpected(backend, Workload::W3, what)));
                    }
                    Err(e) => return (keys, Err(err(e))),
                }
            }
            (keys, Ok(()))
        });
    }
    let mut first_error = None;
    while let Some(done) = set.join_next().await {
        let failed = match done {
            Ok((keys, result)) => {
                created.extend(keys);
                result.err()
            }
            Err(e) => Some(BenchError::Config(format!("setup task failed: {e}"))),
        };
        if let Some(e) = failed {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A well-mixed 64-bit hash of `(a, b)` (SplitMix64's finaliser): picks sessions uniformly.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b)
        .wrapping_add(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Fixture {
    /// Prepares the pools that `workloads` need on `store` (uncounted setup calls go through
    /// `setup_store`; the W5 manager wraps `store`). Remove them with [`Fixture::remove`] when
    /// done; if setup fails, the sessions it created are removed before the error is returned.
    ///
    /// # Errors
    /// A store failure during setup.
    pub async fn prepare(
        config: &BenchConfig, store: &Arc<dyn SessionStore>, setup_store: &Arc<dyn SessionStore>,
    ) -> Result<Self, BenchError> {
        let mut created = Vec::new();
        let prepared = Self::prepare_into(config, store, setup_store, &mut created).await;
        if prepared.is_err() {
            remove_sessions(setup_store, created)
                .await
                .warn(store.backend());
        }
        prepared
    }

    async fn prepare_into(
        config: &BenchConfig, store: &Arc<dyn SessionStore>, setup_store: &Arc<dyn SessionStore>,
        created: &mut Vec<SessionKey>,
    ) -> Result<Self, BenchError> {
        let backend = store.backend();
        let err = store_err(backend, "setup".to_owned());
        let app = AppName::new("/session-bench").map_err(&err)?;
        let items = Arc::new(make_items(config.payload));
        let large = Arc::new(make_items(Payload::LARGE));
        let wants = |w| config.workloads.contains(&w);
        let pool = if wants(Workload::W1) || wants(Workload::W2) {
            let n = config.pool_for(config.payload);
            create_pool(backend, setup_store, &app, &items, n, created).await?
        } else {
            Vec::new()
        };
        let large_pool = if wants(Workload::W4) {
            let n = config.pool_for(Payload::LARGE);
            create_pool(backend, setup_store, &app, &large, n, created).await?
        } else {
            Vec::new()
        };
        let shared = create_pool(backend, setup_store, &app, &items, 2, created).await?;
        let max_tasks = config.concurrency.iter().copied().max().unwrap_or(1);
        let manager_config = Config::builder()
            .application_name(app.clone())
            .poll_interval(config.poll_interval)
            .max_waiters_per_session(max_tasks.max(50) + 1)
            .lock_wait_timeout(Duration::from_secs(120))
            .session_timeout(SESSION_TIMEOUT)
            .build()
            .map_err(&err)?;
        let value = |size: usize, b: u8| ItemValue::from_bytes(vec![b; size]);
        Ok(Self {
            backend,
            manager: SessionManager::new(Arc::clone(store), &manager_config),
            app,
            pool,
            large_pool,
            shared: shared[0].clone(),
            shared_w6: shared[1].clone(),
            values: [
                value(config.payload.item_size, b'x'),
                value(config.payload.item_size, b'y'),
            ],
            large_values: [value(1024, b'x'), value(1024, b'y')],
            items,
            origin: Instant::now(),
            last_release_ns: AtomicU64::new(0),
            uniform: false,
        })
    }

    /// A fixture for W1 and W2 over an existing `pool` of sessions holding `items` (created by
    /// the caller, who also removes them): each task picks sessions uniformly at random within
    /// its own slice of the pool, so reads and cycles spread over the whole pool (however short
    /// the cell) and exclusive cycles never contend. Get the pool back with
    /// [`Fixture::into_pool`].
    ///
    /// # Errors
    /// [`BenchError::Config`] for an empty pool; a configuration failure of the W5 manager.
    pub fn over_pool(
        store: &Arc<dyn SessionStore>, app: AppName, pool: Vec<SessionKey>, items: Arc<Items>,
        payload: Payload,
    ) -> Result<Self, BenchError> {
        let backend = store.backend();
        let err = store_err(backend, "setup".to_owned());
        let (Some(first), Some(last)) = (pool.first().cloned(), pool.last().cloned()) else {
            return Err(BenchError::Config(format!("{backend}: empty pool")));
        };
        let manager_config = Config::builder()
            .application_name(app.clone())
            .session_timeout(SESSION_TIMEOUT)
            .build()
            .map_err(&err)?;
        let value = |size: usize, b: u8| ItemValue::from_bytes(vec![b; size]);
        Ok(Self {
            backend,
            manager: SessionManager::new(Arc::clone(store), &manager_config),
            app,
            pool,
            large_pool: Vec::new(),
            shared: first,
            shared_w6: last,
            values: [
                value(payload.item_size, b'x'),
                value(payload.item_size, b'y'),
            ],
            large_values: [value(1024, b'x'), value(1024, b'y')],
            items,
            origin: Instant::now(),
            last_release_ns: AtomicU64::new(0),
            uniform: true,
        })
    }

    /// The pool of a fixture made by [`Fixture::over_pool`] (or [`Fixture::prepare`]'s pool).
    pub fn into_pool(self) -> Vec<SessionKey> {
        self.pool
    }

    /// Every session the fixture created: the pools and the shared sessions of W5 and W6.
    pub fn sessions(&self) -> Vec<SessionKey> {
        let shared = [self.shared.clone(), self.shared_w6.clone()];
        self.pool
            .iter()
            .chain(&self.large_pool)
            .cloned()
            .chain(shared)
            .collect()
    }

    /// Deletes every session the fixture created through `store` (use the uncounted one), with
    /// bounded concurrency; what could not be removed is returned, not an error.
    pub async fn remove(&self, store: &Arc<dyn SessionStore>) -> Leftover {
        remove_sessions(store, self.sessions()).await
    }

    /// Bytes of one pooled session (item names + values): the floors write the same amount.
    pub fn session_bytes(&self) -> usize {
        items_size(&self.items)
    }

    /// Task `task` of `tasks` uses its own slice of `pool`, so exclusive workloads never contend:
    /// its sessions in turn, or uniformly at random ([`Fixture::over_pool`]).
    fn key<'a>(
        &self, pool: &'a [SessionKey], task: usize, tasks: usize, iter: u64,
    ) -> &'a SessionKey {
        let per = (pool.len() / tasks.max(1)).max(1);
        let step = if self.uniform {
            mix(task as u64, iter)
        } else {
            iter
        };
        let i = task * per + (step % per as u64) as usize;
        &pool[i % pool.len()]
    }

    /// Runs workload `w` once as task `task` of `tasks` (iteration `iter`), returning the latency
    /// to record: the operation's time, or for W5 the lock hand-off time.
    ///
    /// # Errors
    /// A store failure or an unexpected outcome.
    pub async fn run_once(
        &self, store: &Arc<dyn SessionStore>, w: Workload, task: usize, tasks: usize, iter: u64,
    ) -> Result<Duration, BenchError> {
        let backend = self.backend;
        let err = store_err(backend, w.to_string());
        match w {
            Workload::W1 => {
                let key = self.key(&self.pool, task, tasks, iter);
                let start = Instant::now();
                match store.read(key).await.map_err(&err)? {
                    ReadOutcome::Found(s) => {
                        std::hint::black_box(s);
                    }
                    other => return Err(unexpected(backend, w, format!("read: {other:?}"))),
                }
                Ok(start.elapsed())
            }
            Workload::W2 | Workload::W4 => {
                let (pool, values) = if w == Workload::W2 {
                    (&self.pool, &self.values)
                } else {
                    (&self.large_pool, &self.large_values)
                };
                let key = self.key(pool, task, tasks, iter);
                let token = LockToken::generate().map_err(&err)?;
                let delta = Delta::new().with_set("item0", values[(iter % 2) as usize].clone());
                let start = Instant::now();
                match store.acquire(key, token, LOCK_TTL).await.map_err(&err)? {
                    AcquireOutcome::Acquired(s) => {
                        std::hint::black_box(s);
                    }
                    other => return Err(unexpected(backend, w, format!("acquire: {other:?}"))),
                }
                match store
                    .commit(key, token, &delta, SESSION_TIMEOUT)
                    .await
                    .map_err(&err)?
                {
                    CommitOutcome::Committed => Ok(start.elapsed()),
                    other => Err(unexpected(backend, w, format!("commit: {other:?}"))),
                }
            }
            Workload::W3 => {
                let id = SessionId::generate().map_err(&err)?;
                let key = SessionKey::new(self.app.clone(), id);
                let start = Instant::now();
                match store
                    .create(&key, &self.items, SESSION_TIMEOUT, true)
                    .await
                    .map_err(&err)?
                {
                    CreateOutcome::Created => {}
                    other => return Err(unexpected(backend, w, format!("create: {other:?}"))),
                }
                match store.delete(&key).await.map_err(&err)? {
                    RemoveOutcome::Removed => Ok(start.elapsed()),
                    other => Err(unexpected(backend, w, format!("delete: {other:?}"))),
                }
            }
            Workload::W5 => {
                let wait_start = Instant::now();
                let mut session = self
                    .manager
                    .open(Some(self.shared.id().expose()), Access::Exclusive)
                    .await
                    .map_err(&err)?;
                let acquired = Instant::now();
                if session.is_new() {
                    return Err(unexpected(backend, w, "the shared session is gone".into()));
                }
                let released = self.origin
                    + Duration::from_nanos(self.last_release_ns.load(Ordering::Acquire));
                let handoff = acquired.saturating_duration_since(released.max(wait_start));
                session.insert("counter", &iter).map_err(&err)?;
                // The release time is taken as the commit starts: the next holder cannot get the
                // lock before it, so the hand-off includes at most the commit's own duration.
                let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.last_release_ns.store(now, Ordering::Release);
                match session.end().await.map_err(&err)? {
                    EndOutcome::Committed => Ok(handoff),
                    other => Err(unexpected(backend, w, format!("end: {other:?}"))),
                }
            }
            Workload::W6 => {
                let delta = Delta::new()
                    .with_set(format!("t{task}"), self.values[(iter % 2) as usize].clone());
                let start = Instant::now();
                match store
                    .write_concurrent(&self.shared_w6, &delta, SESSION_TIMEOUT)
                    .await
                    .map_err(&err)?
                {
                    CommitOutcome::Committed => Ok(start.elapsed()),
                    other => Err(unexpected(
                        backend,
                        w,
                        format!("write_concurrent: {other:?}"),
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendSpec;
    use crate::counting::{Counting, CountingStore};

    /// The operation names each workload issues, per backend, for three iterations at one task.
    async fn sequences(spec: &BackendSpec) -> Vec<(Workload, Vec<&'static str>, u64)> {
        let config = BenchConfig {
            backends: vec![spec.clone()],
            concurrency: vec![1],
            pool: 8,
            ..BenchConfig::default()
        };
        let raw = crate::connect_store(spec, 1).await.unwrap();
        let counting = Arc::new(Counting::wrap(Arc::clone(&raw)));
        let store: Arc<dyn SessionStore> = Arc::<CountingStore>::clone(&counting);
        let fixture = Fixture::prepare(&config, &store, &raw).await.unwrap();
        assert_eq!(
            counting.layer().take_counts(),
            (0, 0),
            "setup is not counted"
        );
        counting.layer().set_logging(true);
        let mut out = Vec::new();
        for w in Workload::ALL {
            for iter in 0..3 {
                fixture.run_once(&store, w, 0, 1, iter).await.unwrap();
            }
            let (_, bytes) = counting.layer().take_counts();
            out.push((w, counting.layer().take_log(), bytes));
        }
        out
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_backend_gets_the_same_calls() {
        let memory = sequences(&BackendSpec::memory()).await;
        let sqlite = sequences(&BackendSpec::sqlite_in_memory()).await;
        assert_eq!(memory, sqlite);
        let expect = |w: Workload| -> Vec<&str> {
            let one: &[&str] = match w {
                Workload::W1 => &["read"],
                Workload::W2 | Workload::W4 | Workload::W5 => &["acquire", "commit"],
                Workload::W3 => &["create", "delete"],
                Workload::W6 => &["write_concurrent"],
            };
            one.repeat(3)
        };
        for (w, log, bytes) in &memory {
            assert_eq!(log, &expect(*w), "{w}");
            let per_op = match w {
                Workload::W1 => 0,
                // "item0" + one 150 B value.
                Workload::W2 => 5 + 150,
                // Ten items "item0".."item9" of 150 B.
                Workload::W3 => 10 * (5 + 150),
                // "item0" + one 1 KiB value.
                Workload::W4 => 5 + 1024,
                // "counter" + a MessagePack integer (1 byte for 0..=2).
                Workload::W5 => 7 + 1,
                // "t0" + one 150 B value.
                Workload::W6 => 2 + 150,
            };
            assert_eq!(*bytes, 3 * per_op, "{w}");
        }
    }
}
