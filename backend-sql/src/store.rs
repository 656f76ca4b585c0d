//! [`SqlStore`]: connecting, and the [`SessionStore`] operations as one flow shared by every
//! database: validate and encode the arguments, run the dialect's single call, decode its reply
//! into the operation's outcome. The SQL itself lives in the dialects.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{
    AcquireOutcome, BackendKind, Capabilities, ChangeIdOutcome, CommitOutcome, Config,
    CreateOutcome, Delta, Error, ExpiryEvents, ItemValue, Items, LockInfo, LockToken, Operation,
    ReadOutcome, ReleaseOutcome, ReleaseWatch, RemoveOutcome, Result, SessionId, SessionKey,
    SessionStore, Snapshot, TouchOutcome,
};
use tokio::sync::watch;

use crate::dialect::{self, Dialect, Key, Reply, Token};
use crate::error::{classify, corrupt};
use crate::options::SqlOptions;
use crate::sweeper::{SweepReport, Sweeper};

/// A session store in a SQL database: PostgreSQL, SQLite or MySQL/MariaDB (see the
/// [crate docs](crate) for the layout, the round trips and the capabilities).
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

/// What the clones share; the sweeper holds a `Weak` to it.
pub(crate) struct Inner {
    backend: &'static str,
    dialect: Box<dyn Dialect>,
    keep_permille: i32,
    options: SqlOptions,
    /// Set once, right after construction (the sweeper needs the `Arc` to exist).
    sweeper: std::sync::OnceLock<Sweeper>,
}

/// How often an operation the database rolled back as a deadlock victim is tried again.
const ROLLED_BACK_RETRIES: u32 = 5;

/// Runs one operation, trying it again when the database rolled it back whole as the victim of a
/// deadlock or a serialization failure (likely under purges and contention on MySQL/MariaDB). The
/// rollback undid everything, so the retry cannot apply anything twice; unlike a lost reply, this
/// failure is never ambiguous, so it is handled here rather than by the retry policy.
async fn retry_rolled_back<T, F, Fut>(mut call: F) -> std::result::Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(err) if tries < ROLLED_BACK_RETRIES && crate::error::rolled_back(&err) => {
                tries += 1;
                tracing::debug!(tries, "operation rolled back by the database; trying again");
                tokio::time::sleep(Duration::from_millis(u64::from(tries) * 5)).await;
            }
            other => return other,
        }
    }
}

impl Inner {
    pub(crate) async fn purge(&self, batch: usize) -> Result<u64> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        self.dialect
            .purge(batch)
            .await
            .map_err(|e| classify(self.backend, Operation::PurgeExpired, e))
    }
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.inner.backend)
            .field("dialect", &self.inner.dialect)
            .field("options", &self.inner.options)
            .finish()
    }
}

/// Milliseconds as the database stores them (saturating; timeouts are at most one year).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SqlStore {
    /// Connects to the database that `config`'s URL names (`postgres://`, `postgresql://`,
    /// `sqlite:`, `mysql://`, `mariadb://`), with the default [`SqlOptions`], and runs the
    /// embedded migrations.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a missing URL, another scheme, or a database whose cargo
    /// feature is off. [`Error::Unavailable`] if the server cannot be reached (refused, timed
    /// out), [`Error::Backend`] if it refuses the login (wrong password, missing database, TLS
    /// required) or a migration fails; the source is sqlx's error with the server's message.
    pub async fn connect(config: &Config) -> Result<Self> {
        Self::connect_with(config, SqlOptions::new()).await
    }

    /// Like [`SqlStore::connect`], with `options`.
    ///
    /// # Errors
    /// As [`SqlStore::connect`].
    pub async fn connect_with(config: &Config, options: SqlOptions) -> Result<Self> {
        let url = config.url().ok_or_else(|| {
            Error::config(
                "url",
                "backend-sql needs a connection URL (postgres://, sqlite:, mysql://)",
            )
        })?;
        let (backend, dialect): (&'static str, Box<dyn Dialect>) = match config.backend_kind() {
            #[cfg(feature = "postgres")]
            BackendKind::Postgres => (
                crate::postgres::BACKEND,
                Box::new(crate::postgres::PgDialect::connect(url, config, &options).await?),
            ),
            #[cfg(feature = "sqlite")]
            BackendKind::Sqlite => (
                crate::sqlite::BACKEND,
                Box::new(crate::sqlite::SqliteDialect::connect(url, config, &options).await?),
            ),
            #[cfg(feature = "mysql")]
            BackendKind::Mysql => (
                crate::mysql::BACKEND,
                Box::new(crate::mysql::MysqlDialect::connect(url, config, &options).await?),
            ),
            other => {
                return Err(Error::config(
                    "url",
                    format!(
                        "backend-sql cannot serve {other:?} URLs (or its cargo feature is off)"
                    ),
                ));
            }
        };
        let inner = Arc::new(Inner {
            backend,
            dialect,
            keep_permille: options.keep_permille(),
            options: options.clone(),
            sweeper: std::sync::OnceLock::new(),
        });
        let sweeper = match options.sweeper() {
            Some(s) => Sweeper::start(Arc::downgrade(&inner), *s),
            None => Sweeper::off(),
        };
        let _ = inner.sweeper.set(sweeper);
        Ok(Self { inner })
    }

    /// The settings this store was built with.
    pub fn options(&self) -> &SqlOptions {
        &self.inner.options
    }

    /// The sweeper's reports (they stay at the default when the sweeper is off).
    pub fn sweep_reports(&self) -> watch::Receiver<SweepReport> {
        match self.inner.sweeper.get() {
            Some(s) => s.reports(),
            None => Sweeper::off().reports(),
        }
    }

    /// Closes the connection pool (waits for connections in use to come back). Later operations
    /// fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        self.inner.dialect.close().await;
    }

    fn err(&self, operation: Operation) -> impl Fn(sqlx::Error) -> Error + '_ {
        move |e| classify(self.inner.backend, operation, e)
    }

    fn token(&self, key: &SessionKey, bytes: Option<Vec<u8>>) -> Result<LockToken> {
        let bytes: Token = bytes
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt(self.inner.backend, key, "lock token is not 16 bytes"))?;
        Ok(LockToken::from_u128(u128::from_be_bytes(bytes)))
    }

    fn lock_info(&self, key: &SessionKey, reply: Reply) -> Result<LockInfo> {
        let age = u64::try_from(reply.age_ms.unwrap_or(0).max(0)).unwrap_or(0);
        Ok(LockInfo::new(
            self.token(key, reply.token)?,
            Duration::from_millis(age),
        ))
    }

    fn snapshot(&self, key: &SessionKey, reply: Reply) -> Result<Snapshot> {
        let mut items = Items::new();
        for (name, value) in reply.items {
            let name = String::from_utf8(name)
                .map_err(|_| corrupt(self.inner.backend, key, "item name is not UTF-8"))?;
            items.insert(name, ItemValue::from_bytes(value));
        }
        let timeout = reply
            .timeout_ms
            .and_then(|t| u64::try_from(t).ok())
            .ok_or_else(|| corrupt(self.inner.backend, key, "timeout is missing or negative"))?;
        Ok(
            Snapshot::new(Arc::new(items), Duration::from_millis(timeout))
                .with_initialize(reply.initialize),
        )
    }

    fn unexpected(&self, operation: Operation, status: i64) -> Error {
        Error::Backend {
            backend: self.inner.backend,
            operation,
            source: format!("unexpected status {status} from the database").into(),
        }
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    fn backend(&self) -> &'static str {
        self.inner.backend
    }

    /// `change_id` (one `UPDATE` of the id) and `purge_expired` (batched, on the expiry index, one
    /// runner at a time). No release signal or expiry events: waiters poll.
    fn capabilities(&self) -> Capabilities {
        Capabilities::none().with_change_id().with_purge_expired()
    }

    #[tracing::instrument(skip_all, fields(op = "read", backend = self.inner.backend))]
    async fn read(&self, key: &SessionKey) -> Result<ReadOutcome> {
        let reply = retry_rolled_back(|| {
            self.inner
                .dialect
                .read(Key::of(key), self.inner.keep_permille)
        })
        .await
        .map_err(self.err(Operation::Read))?;
        match reply.status {
            dialect::read::MISSING => Ok(ReadOutcome::Missing),
            dialect::read::LOCKED => Ok(ReadOutcome::Locked(self.lock_info(key, reply)?)),
            dialect::read::FOUND => Ok(ReadOutcome::Found(self.snapshot(key, reply)?)),
            other => Err(self.unexpected(Operation::Read, other)),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "acquire", backend = self.inner.backend))]
    async fn acquire(
        &self,
        key: &SessionKey,
        token: LockToken,
        lock_ttl: Duration,
    ) -> Result<AcquireOutcome> {
        let reply = retry_rolled_back(|| {
            self.inner.dialect.acquire(
                Key::of(key),
                token.as_u128().to_be_bytes(),
                millis(lock_ttl),
            )
        })
        .await
        .map_err(self.err(Operation::Acquire))?;
        match reply.status {
            dialect::acquire::MISSING => Ok(AcquireOutcome::Missing),
            dialect::acquire::LOCKED => Ok(AcquireOutcome::Locked(self.lock_info(key, reply)?)),
            dialect::acquire::ACQUIRED => Ok(AcquireOutcome::Acquired(
                self.snapshot(key, reply)?.with_lock(token),
            )),
            other => Err(self.unexpected(Operation::Acquire, other)),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "commit", backend = self.inner.backend))]
    async fn commit(
        &self,
        key: &SessionKey,
        token: LockToken,
        delta: &Delta,
        timeout: Duration,
    ) -> Result<CommitOutcome> {
        // The fingerprint is stored with the settled token so that a retry of this exact commit is
        // recognised and reported without being applied twice (SPEC §4).
        let fingerprint = delta.fingerprint(timeout) as i64;
        let status = retry_rolled_back(|| {
            self.inner.dialect.commit(
                Key::of(key),
                token.as_u128().to_be_bytes(),
                delta,
                millis(timeout),
                fingerprint,
            )
        })
        .await
        .map_err(self.err(Operation::Commit))?;
        match status {
            dialect::commit::LOCK_LOST => Ok(CommitOutcome::LockLost),
            dialect::commit::COMMITTED => Ok(CommitOutcome::Committed),
            other => Err(self.unexpected(Operation::Commit, other)),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "release", backend = self.inner.backend))]
    async fn release(&self, key: &SessionKey, token: LockToken) -> Result<ReleaseOutcome> {
        let status = retry_rolled_back(|| {
            self.inner
                .dialect
                .release(Key::of(key), token.as_u128().to_be_bytes())
        })
        .await
        .map_err(self.err(Operation::Release))?;
        match status {
            dialect::release::LOCK_LOST => Ok(ReleaseOutcome::LockLost),
            dialect::release::RELEASED => Ok(ReleaseOutcome::Released),
            other => Err(self.unexpected(Operation::Release, other)),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "create", backend = self.inner.backend))]
    async fn create(
        &self,
        key: &SessionKey,
        items: &Items,
        timeout: Duration,
        initialized: bool,
    ) -> Result<CreateOutcome> {
        let status = retry_rolled_back(|| {
            self.inner
                .dialect
                .create(Key::of(key), items, millis(timeout), !initialized)
        })
        .await
        .map_err(self.err(Operation::Create))?;
        match status {
            dialect::create::ALREADY_EXISTS => Ok(CreateOutcome::AlreadyExists),
            dialect::create::CREATED => Ok(CreateOutcome::Created),
            other => Err(self.unexpected(Operation::Create, other)),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "remove", backend = self.inner.backend))]
    async fn remove(&self, key: &SessionKey, token: LockToken) -> Result<RemoveOutcome> {
        let status = retry_rolled_back(|| {
            self.inner
                .dialect
                .remove(Key::of(key), token.as_u128().to_be_bytes())
        })
        .await
        .map_err(self.err(Operation::Remove))?;
        match status {
            dialect::remove::MISSING => Ok(RemoveOutcome::Missing),
            dialect::remove::LOCK_LOST => Ok(RemoveOutcome::LockLost),
            dialect::remove::REMOVED => Ok(RemoveOutcome::Removed),
            other => Err(self.unexpected(Operation::Remove, other)),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "touch", backend = self.inner.backend))]
    async fn touch(&self, key: &SessionKey) -> Result<TouchOutcome> {
        let status = retry_rolled_back(|| {
            self.inner
                .dialect
                .touch(Key::of(key), self.inner.keep_permille)
        })
        .await
        .map_err(self.err(Operation::Touch))?;
        match status {
            dialect::touch::MISSING => Ok(TouchOutcome::Missing),
            dialect::touch::TOUCHED => Ok(TouchOutcome::Touched),
            other => Err(self.unexpected(Operation::Touch, other)),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "write_concurrent", backend = self.inner.backend))]
    async fn write_concurrent(
        &self,
        key: &SessionKey,
        delta: &Delta,
        timeout: Duration,
    ) -> Result<CommitOutcome> {
        let status = retry_rolled_back(|| {
            self.inner
                .dialect
                .write_concurrent(Key::of(key), delta, millis(timeout))
        })
        .await
        .map_err(self.err(Operation::WriteConcurrent))?;
        match status {
            dialect::concurrent::MISSING => Ok(CommitOutcome::Missing),
            dialect::concurrent::COMMITTED => Ok(CommitOutcome::Committed),
            other => Err(self.unexpected(Operation::WriteConcurrent, other)),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "delete", backend = self.inner.backend))]
    async fn delete(&self, key: &SessionKey) -> Result<RemoveOutcome> {
        let status = retry_rolled_back(|| self.inner.dialect.delete(Key::of(key)))
            .await
            .map_err(self.err(Operation::Delete))?;
        match status {
            dialect::delete::MISSING => Ok(RemoveOutcome::Missing),
            dialect::delete::REMOVED => Ok(RemoveOutcome::Removed),
            other => Err(self.unexpected(Operation::Delete, other)),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "change_id", backend = self.inner.backend))]
    async fn change_id(
        &self,
        key: &SessionKey,
        new_id: SessionId,
        token: LockToken,
    ) -> Result<ChangeIdOutcome> {
        let status = retry_rolled_back(|| {
            self.inner.dialect.change_id(
                Key::of(key),
                new_id.expose().as_bytes(),
                token.as_u128().to_be_bytes(),
            )
        })
        .await
        .map_err(self.err(Operation::ChangeId))?;
        match status {
            dialect::change_id::LOCK_LOST => Ok(ChangeIdOutcome::LockLost),
            dialect::change_id::ALREADY_EXISTS => Ok(ChangeIdOutcome::AlreadyExists),
            dialect::change_id::CHANGED => Ok(ChangeIdOutcome::Changed),
            other => Err(self.unexpected(Operation::ChangeId, other)),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "purge_expired", backend = self.inner.backend))]
    async fn purge_expired(&self, batch: usize) -> Result<u64> {
        self.inner.purge(batch).await
    }

    async fn watch_release(&self, _key: &SessionKey) -> Result<ReleaseWatch> {
        Err(Error::Unsupported {
            backend: self.inner.backend,
            operation: Operation::WatchRelease,
        })
    }

    async fn expiry_events(&self) -> Result<ExpiryEvents> {
        Err(Error::Unsupported {
            backend: self.inner.backend,
            operation: Operation::ExpiryEvents,
        })
    }
}
