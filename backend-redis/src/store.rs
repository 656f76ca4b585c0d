//! [`RedisStore`]: connects, declares its capabilities, and delegates each operation to its file in
//! `ops` (one Lua script each) over the one-string layout of `layout`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{
    AcquireOutcome, Capabilities, ChangeIdOutcome, CommitOutcome, Config, CreateOutcome, Delta,
    Error, ExpiryEvents, Items, LockToken, Operation, ReadOutcome, RefreshWindow, ReleaseOutcome,
    ReleaseWatch, RemoveOutcome, Result, SessionId, SessionKey, SessionStore, TouchOutcome,
};

use crate::config::{RedisOptions, Settings};
use crate::connection::{Connection, OpenError};
use crate::error::{BACKEND, ErrorContext};
use crate::expiry::Expiry;
use crate::keys::Keys;
use crate::near::NearCache;
use crate::ops;
use crate::signals::Signals;

/// A session store on Redis: one server (optionally TLS, password, ACL user, database) or a Redis
/// Cluster. Cheap to clone; clones share the connection.
///
/// ```no_run
/// # async fn demo() -> session_core::Result<()> {
/// use std::sync::Arc;
/// use backend_redis::RedisStore;
/// use session_core::{Config, SessionManager};
///
/// let config = Config::from_attributes([
///     ("host", "127.0.0.1"), ("port", "6379"), ("applicationName", "/shop"),
///     ("retryTimeoutInMilliseconds", "5000"),
/// ])?;
/// let manager = SessionManager::new(Arc::new(RedisStore::connect(&config).await?), &config);
/// # let _ = manager; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// What every operation needs: the connection and how to name its errors.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) conn: Connection,
    pub(crate) errors: ErrorContext,
    pub(crate) signals: Signals,
    /// A cluster cannot run `change_id` (two ids, two slots).
    pub(crate) cluster: bool,
    /// Expiry events, where the server sends keyspace notifications for expired keys.
    pub(crate) expiry: Expiry,
    /// The refresh window every sliding access honours (docs/contract.md §1).
    pub(crate) window: RefreshWindow,
    /// The near cache, when the configuration turned it on (`nearCache`).
    pub(crate) near: Option<Arc<NearCache>>,
}

impl RedisStore {
    /// Connects with the configuration's connection settings: its URL (`redis://`, `rediss://`,
    /// `redis+cluster://`, `rediss+cluster://`), a StackExchange.Redis configuration string
    /// (`cache.example:6380,password=...,ssl=true`; the crate's README lists its options), or
    /// else `host`, `port`, `accessKey`, `user`, `ssl` and `databaseId`. A configuration that
    /// does not say cluster (anything but a `+cluster` URL or several endpoints) is opened as a
    /// cluster when its server reports cluster mode (cluster detection).
    /// `connectionTimeoutInMilliseconds` bounds each connection's connect; each command is
    /// bounded by [`response_timeout`](crate::response_timeout), derived from
    /// `operationTimeoutInMilliseconds` (which the manager's retry decorator enforces).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for settings Redis cannot use (also a database other than 0 on a
    /// detected cluster); [`Error::Unavailable`] when no server answers (the source names the
    /// address); [`Error::Backend`] for a wrong password or ACL user, or a server certificate the
    /// configured CA does not trust (each with its own source); [`Error::Timeout`] when the
    /// connect times out.
    pub async fn connect(config: &Config) -> Result<Self> {
        Self::connect_with(config, RedisOptions::new()).await
    }

    /// [`RedisStore::connect`] with Redis-specific options (a custom CA for TLS).
    ///
    /// # Errors
    /// As [`RedisStore::connect`]; [`Error::InvalidConfig`] for an unreadable CA file.
    pub async fn connect_with(config: &Config, options: RedisOptions) -> Result<Self> {
        let mut settings = Settings::resolve(config, &options)?;
        let errors = ErrorContext {
            addr: settings.addr.clone(),
            response_timeout: settings.response_timeout,
        };
        let (pushes, received) = tokio::sync::mpsc::unbounded_channel();
        let budget = connect_budget(&settings);
        // Sets `settings.cluster` when the server turns out to be a cluster node (detection).
        let open = Connection::open(&mut settings, pushes);
        let conn = match tokio::time::timeout(budget, open).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(OpenError::Config(e))) => return Err(e),
            Ok(Err(OpenError::Driver(e))) => {
                // A connect error is reported under the connect timeout, not the operation one.
                let errors = ErrorContext {
                    response_timeout: settings.connection_timeout,
                    ..errors
                };
                return Err(errors.map(Operation::Connect, e));
            }
            Err(_) => {
                return Err(Error::Timeout {
                    backend: BACKEND,
                    operation: Operation::Connect,
                    after: budget,
                });
            }
        };
        let signals = Signals::default();
        signals.spawn_dispatcher(received);
        let limits = options.expiry_listener_limits();
        let expiry = Expiry::detect(&conn, &settings, config.application_name(), limits).await;
        let near = if settings.near_cache {
            let limits = options.near_cache_limits();
            let (window, app) = (config.refresh_window(), config.application_name());
            Some(NearCache::open(&conn, &settings, window, limits, app).await?)
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                errors,
                signals,
                cluster: settings.cluster,
                expiry,
                window: config.refresh_window(),
                near,
            }),
        })
    }

    /// The near cache's counters, or `None` when the configuration did not turn it on
    /// (`nearCache`).
    ///
    /// The invalidations already received are applied first, so the counters are current.
    pub fn near_cache_stats(&self) -> Option<crate::NearCacheStats> {
        self.inner.near.as_ref().map(|near| {
            near.drain();
            near.stats()
        })
    }

    /// The server's client ids of the near cache's invalidation connections that are up (one per
    /// node), for operators (`CLIENT LIST`, `CLIENT KILL ID`); empty without a near cache.
    pub fn near_cache_client_ids(&self) -> Vec<u64> {
        self.inner
            .near
            .as_ref()
            .map(|near| near.client_ids())
            .unwrap_or_default()
    }

    /// The expiry listener's counters (what it heard, queued, swept and reported), or `None`
    /// where expiry events are not declared. All zero until the first `expiry_events()` call
    /// starts the listener.
    pub fn expiry_listener_stats(&self) -> Option<crate::ExpiryListenerStats> {
        self.inner.expiry.stats()
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The inner state for an operation on `key`, recording that this store serves its
    /// application (expiry events report only the applications a store serves).
    fn serve(&self, key: &SessionKey) -> &Inner {
        self.inner.expiry.serve(key);
        &self.inner
    }

    /// Runs a write on `key`: this process's near copy of it is dropped before the write is
    /// sent and again when it ends, so that no read answers from memory what this process is
    /// changing (the server's invalidation follows as well).
    async fn writing<T>(
        &self, key: &SessionKey, write: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(near) = &self.inner.near else {
            return write.await;
        };
        let name = Keys::session_of(key);
        near.forget(&name);
        let result = write.await;
        near.forget(&name);
        result
    }
}

/// The whole connect: TCP, TLS, HELLO/AUTH, and for a cluster the topology discovery; when the
/// configuration does not say cluster, also the standalone connect and `INFO cluster` that come
/// first (cluster detection).
fn connect_budget(settings: &Settings) -> Duration {
    let cluster = settings.connection_timeout * 2 + settings.response_timeout;
    if settings.cluster {
        cluster
    } else {
        cluster + settings.connection_timeout + settings.response_timeout * 2
    }
}

fn unsupported(operation: Operation) -> Error {
    Error::Unsupported {
        backend: BACKEND,
        operation,
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// The release signal; `change_id` on a standalone server only (on a cluster the two ids' keys
    /// live in different slots, so no script can move them atomically); expiry events where every
    /// node sends keyspace notifications for expired keys (`notify-keyspace-events` with `E` and
    /// `x`, checked at connect). Not `purge_expired` (Redis expires keys itself).
    /// The window of [`Config::refresh_window`] (default [`RefreshWindow::DEFAULT`]): a
    /// read, acquire, release or touch writes a slide only when it finds less than the timeout
    /// left, and then sets `now + timeout + w` (the scripts compute `w` from each session's stored
    /// timeout); create, commit and write_concurrent set `now + timeout + w` with their write.
    fn refresh_window(&self) -> RefreshWindow {
        self.inner.window
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::none().with_release_signal();
        if !self.inner.cluster {
            caps = caps.with_change_id();
        }
        if self.inner.expiry.enabled() {
            caps = caps.with_expiry_events();
        }
        caps
    }

    async fn read(&self, key: &SessionKey) -> Result<ReadOutcome> {
        ops::read::run(self.serve(key), key).await
    }

    async fn acquire(
        &self, key: &SessionKey, token: LockToken, lock_ttl: Duration,
    ) -> Result<AcquireOutcome> {
        self.writing(
            key,
            ops::acquire::run(self.serve(key), key, token, lock_ttl),
        )
        .await
    }

    async fn commit(
        &self, key: &SessionKey, token: LockToken, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome> {
        self.writing(
            key,
            ops::commit::run(self.serve(key), key, token, delta, timeout),
        )
        .await
    }

    async fn release(&self, key: &SessionKey, token: LockToken) -> Result<ReleaseOutcome> {
        self.writing(key, ops::release::run(self.serve(key), key, token))
            .await
    }

    async fn create(
        &self, key: &SessionKey, items: &Items, timeout: Duration, initialized: bool,
    ) -> Result<CreateOutcome> {
        self.writing(
            key,
            ops::create::run(self.serve(key), key, items, timeout, initialized),
        )
        .await
    }

    async fn remove(&self, key: &SessionKey, token: LockToken) -> Result<RemoveOutcome> {
        self.writing(key, ops::remove::run(self.serve(key), key, token))
            .await
    }

    async fn touch(&self, key: &SessionKey) -> Result<TouchOutcome> {
        self.writing(key, ops::touch::run(self.serve(key), key))
            .await
    }

    async fn write_concurrent(
        &self, key: &SessionKey, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome> {
        self.writing(
            key,
            ops::write_concurrent::run(self.serve(key), key, delta, timeout),
        )
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<RemoveOutcome> {
        self.writing(key, ops::delete::run(self.serve(key), key))
            .await
    }

    async fn change_id(
        &self, key: &SessionKey, new_id: SessionId, token: LockToken,
    ) -> Result<ChangeIdOutcome> {
        if self.inner.cluster {
            return Err(unsupported(Operation::ChangeId));
        }
        let renamed = key.with_id(new_id);
        let change = ops::change_id::run(self.serve(key), key, new_id, token);
        self.writing(key, self.writing(&renamed, change)).await
    }

    async fn purge_expired(&self, _batch: usize) -> Result<u64> {
        Err(unsupported(Operation::PurgeExpired))
    }

    async fn watch_release(&self, key: &SessionKey) -> Result<ReleaseWatch> {
        let inner = self.inner();
        let keys = Keys::new(key);
        if let Some(near) = &inner.near {
            // The waiter's next look must see the lock's end even if its invalidation is
            // still on the way: it goes to the server.
            near.forget(&keys.session);
        }
        let channel = keys.channel();
        let mut conn = inner.conn.clone();
        let rx = inner
            .signals
            .watch(&mut conn, &channel)
            .await
            .map_err(|e| inner.errors.map(Operation::WatchRelease, e))?;
        // Subscribed (confirmed): now ask for the lock's end to be published.
        if !ops::wait::run(inner, key).await? {
            // Nothing was locked when we asked, so nothing will be published for the lock the
            // caller's next look may find (another request may take it in between): the watch
            // completes at once, and the caller looks and watches again, marking that lock. A
            // lock that ended before we asked is found free by that look.
            return Ok(ReleaseWatch::new(async {}));
        }
        // A dropped sender (the store is gone) also completes the watch: waiters re-check.
        Ok(ReleaseWatch::new(async move {
            let _ = rx.await;
        }))
    }

    async fn expiry_events(&self) -> Result<ExpiryEvents> {
        let inner = self.inner();
        if !inner.expiry.enabled() {
            return Err(unsupported(Operation::ExpiryEvents));
        }
        inner
            .expiry
            .subscribe(&inner.errors)
            .await
            .map_err(|e| inner.errors.map(Operation::ExpiryEvents, e))
    }
}
