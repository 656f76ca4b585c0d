//! [`SqlStore`]: connecting, and the [`SessionStore`] operations as one flow shared by every
//! database: validate and encode the arguments, run the dialect's single call, decode its reply
//! into the operation's outcome. The SQL itself lives in the dialects.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{
    AcquireOutcome, Capabilities, ChangeIdOutcome, CommitOutcome, Config, CreateOutcome, Delta,
    Error, ExpiryEvents, ItemValue, Items, LockInfo, LockToken, Operation, ReadOutcome,
    RefreshWindow, ReleaseOutcome, ReleaseWatch, RemoveOutcome, Result, SessionId, SessionKey,
    SessionStore, Snapshot, TouchOutcome,
};
use tokio::sync::watch;

use crate::dialect::{self, CorruptData, Dialect, Key, Op, Reply, Token};
use crate::error::{classify, corrupt, corrupt_raw};
use crate::options::SqlOptions;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::routines::RoutineDialect;
use crate::schemes::Database;
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
    /// The refresh window ([`Config::refresh_window`], docs/contract.md §1); the dialects take
    /// its percentage.
    window: RefreshWindow,
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

/// What one purge call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Purged {
    /// Sessions deleted.
    pub(crate) sessions: u64,
    /// Statements run (each one transaction of at most `Dialect::purge_statement_max` sessions).
    pub(crate) statements: u64,
    /// Time spent in the statements.
    pub(crate) busy: Duration,
}

impl Inner {
    /// The most sessions one purge statement deletes.
    pub(crate) fn purge_statement_max(&self) -> usize {
        self.dialect.purge_statement_max().max(1)
    }

    /// Deletes up to `batch` expired sessions, in statements of at most the dialect's
    /// `purge_statement_max` sessions each (one transaction each, the task yielding between
    /// them), until `batch` are deleted or a statement comes back short. Each statement is
    /// bounded by a timestamp it reads once (`Op::Purge`), so one that finds nothing expired is
    /// one index probe. Not tried again when rolled back (the next sweep will).
    pub(crate) async fn purge(&self, batch: usize) -> Result<Purged> {
        let max = self.purge_statement_max();
        let mut left = batch;
        let mut done = Purged::default();
        while left > 0 {
            if done.statements > 0 {
                tokio::task::yield_now().await;
            }
            let take = left.min(max);
            let start = tokio::time::Instant::now();
            let reply = self
                .dialect
                .run(Op::Purge {
                    batch: i64::try_from(take).unwrap_or(i64::MAX),
                })
                .await
                .map_err(|e| classify(self.backend, Operation::PurgeExpired, e))?;
            done.busy += start.elapsed();
            let n = u64::try_from(reply.status).unwrap_or(0);
            done.statements += 1;
            done.sessions += n;
            if n < take as u64 {
                break;
            }
            left -= take;
        }
        Ok(done)
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

/// A lock token as the database stores it.
fn token_bytes(token: LockToken) -> Token {
    token.as_u128().to_be_bytes()
}

impl SqlStore {
    /// Connects to the database that `config`'s URL names (`postgres://`, `postgresql://`,
    /// `sqlite:`, `mysql://`, `mariadb://`), with the default [`SqlOptions`], and runs the
    /// embedded migrations.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a missing URL, another scheme, a database whose cargo
    /// feature is off, or `nearCache` (a Redis feature). [`Error::Unavailable`] if the server cannot be reached (refused),
    /// [`Error::Timeout`] if the first connection is not made within
    /// `connectionTimeoutInMilliseconds`, [`Error::Backend`] if the server refuses the login (wrong
    /// password, missing database, TLS required) or a migration fails; the source is sqlx's error
    /// with the server's message.
    pub async fn connect(config: &Config) -> Result<Self> {
        Self::connect_with(config, SqlOptions::new()).await
    }

    /// Like [`SqlStore::connect`], with `options`.
    ///
    /// # Errors
    /// As [`SqlStore::connect`].
    pub async fn connect_with(config: &Config, options: SqlOptions) -> Result<Self> {
        if config.near_cache() {
            return Err(Error::config(
                "nearCache",
                "the near cache is a Redis feature: no SQL database here tells a process when \
                 another one changed a session",
            ));
        }
        let url = config.url().ok_or_else(|| {
            Error::config(
                "url",
                "backend-sql needs a connection URL (postgres://, sqlite:, mysql://)",
            )
        })?;
        let dialect: Box<dyn Dialect> = match Database::from_url(url)? {
            #[cfg(feature = "postgres")]
            Database::Postgres => {
                Box::new(RoutineDialect::<sqlx::Postgres>::connect(url, config, &options).await?)
            }
            #[cfg(feature = "sqlite")]
            Database::Sqlite => {
                Box::new(crate::sqlite::SqliteDialect::connect(url, &options).await?)
            }
            #[cfg(feature = "mysql")]
            Database::Mysql => {
                Box::new(RoutineDialect::<sqlx::MySql>::connect(url, config, &options).await?)
            }
        };
        let inner = Arc::new(Inner {
            backend: dialect.backend(),
            dialect,
            window: config.refresh_window(),
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

    /// Runs `op`, trying it again while the database rolls it back as a deadlock victim.
    async fn run(&self, operation: Operation, op: Op<'_>) -> Result<Reply> {
        retry_rolled_back(|| self.inner.dialect.run(op))
            .await
            .map_err(|e| match (&e, op.key()) {
                // Undecodable stored data names the session (docs/contract.md §4).
                (sqlx::Error::Decode(inner), Some(key)) => {
                    match inner.downcast_ref::<CorruptData>() {
                        Some(what) => corrupt_raw(self.inner.backend, key, what.0),
                        None => classify(self.inner.backend, operation, e),
                    }
                }
                _ => classify(self.inner.backend, operation, e),
            })
    }

    /// Runs `op` and answers the outcome that its status stands for in `outcomes`.
    async fn decide<T, const N: usize>(
        &self, operation: Operation, op: Op<'_>, outcomes: [(i64, T); N],
    ) -> Result<T> {
        let status = self.run(operation, op).await?.status;
        outcomes
            .into_iter()
            .find_map(|(code, outcome)| (code == status).then_some(outcome))
            .ok_or_else(|| self.unexpected(operation, status))
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
            // Names the application could never have stored (docs/contract.md §1: 1..=256 bytes),
            // and a name stored twice, whose first value would be dropped silently
            // (docs/contract.md §4, bad stored data; `tests/fuzz_stored.rs`).
            session_core::validate_item_name(&name)
                .map_err(|_| corrupt(self.inner.backend, key, "item name is empty or too long"))?;
            if items.insert(name, ItemValue::from_bytes(value)).is_some() {
                return Err(corrupt(self.inner.backend, key, "item name appears twice"));
            }
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

    /// The window of [`Config::refresh_window`] (docs/contract.md §1): every access leaves a
    /// session `expires_at >= now + timeout`; an access that must write to slide sets
    /// `now + timeout + w`, and one that finds enough life left writes nothing at all (no
    /// `UPDATE`, no row lock).
    fn refresh_window(&self) -> RefreshWindow {
        self.inner.window
    }

    /// `change_id` (one `UPDATE` of the id) and `purge_expired` (batched, on the expiry index, one
    /// runner at a time) everywhere; a release signal on Postgres (`LISTEN`/`NOTIFY`). No expiry
    /// events.
    fn capabilities(&self) -> Capabilities {
        let caps = Capabilities::none().with_change_id().with_purge_expired();
        if self.inner.dialect.signal().is_some() {
            caps.with_release_signal()
        } else {
            caps
        }
    }

    async fn read(&self, key: &SessionKey) -> Result<ReadOutcome> {
        let op = Op::Read {
            key: Key::of(key),
            window: i32::from(self.inner.window.percent()),
        };
        let reply = self.run(Operation::Read, op).await?;
        match reply.status {
            dialect::read::MISSING => Ok(ReadOutcome::Missing),
            dialect::read::LOCKED => Ok(ReadOutcome::Locked(self.lock_info(key, reply)?)),
            dialect::read::FOUND => Ok(ReadOutcome::Found(self.snapshot(key, reply)?)),
            other => Err(self.unexpected(Operation::Read, other)),
        }
    }

    async fn acquire(
        &self, key: &SessionKey, token: LockToken, lock_ttl: Duration,
    ) -> Result<AcquireOutcome> {
        let op = Op::Acquire {
            key: Key::of(key),
            token: token_bytes(token),
            ttl_ms: millis(lock_ttl),
            window: i32::from(self.inner.window.percent()),
        };
        let reply = self.run(Operation::Acquire, op).await?;
        match reply.status {
            dialect::acquire::MISSING => Ok(AcquireOutcome::Missing),
            dialect::acquire::LOCKED => Ok(AcquireOutcome::Locked(self.lock_info(key, reply)?)),
            dialect::acquire::ACQUIRED => Ok(AcquireOutcome::Acquired(self.snapshot(key, reply)?)),
            other => Err(self.unexpected(Operation::Acquire, other)),
        }
    }

    async fn commit(
        &self, key: &SessionKey, token: LockToken, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome> {
        // The fingerprint is stored with the settled token so that a retry of this exact commit is
        // recognised and reported without being applied twice (docs/contract.md §2, "Repeated
        // calls").
        let op = Op::Commit {
            key: Key::of(key),
            token: token_bytes(token),
            delta,
            timeout_ms: millis(timeout),
            fingerprint: delta.fingerprint(timeout) as i64,
            window: i32::from(self.inner.window.percent()),
        };
        let outcomes = [
            (dialect::commit::LOCK_LOST, CommitOutcome::LockLost),
            (dialect::commit::COMMITTED, CommitOutcome::Committed),
        ];
        self.decide(Operation::Commit, op, outcomes).await
    }

    async fn release(&self, key: &SessionKey, token: LockToken) -> Result<ReleaseOutcome> {
        let op = Op::Release {
            key: Key::of(key),
            token: token_bytes(token),
            window: i32::from(self.inner.window.percent()),
        };
        let outcomes = [
            (dialect::release::LOCK_LOST, ReleaseOutcome::LockLost),
            (dialect::release::RELEASED, ReleaseOutcome::Released),
        ];
        self.decide(Operation::Release, op, outcomes).await
    }

    async fn create(
        &self, key: &SessionKey, items: &Items, timeout: Duration, initialized: bool,
    ) -> Result<CreateOutcome> {
        let op = Op::Create {
            key: Key::of(key),
            items,
            timeout_ms: millis(timeout),
            initialize: !initialized,
            window: i32::from(self.inner.window.percent()),
        };
        let outcomes = [
            (
                dialect::create::ALREADY_EXISTS,
                CreateOutcome::AlreadyExists,
            ),
            (dialect::create::CREATED, CreateOutcome::Created),
        ];
        self.decide(Operation::Create, op, outcomes).await
    }

    async fn remove(&self, key: &SessionKey, token: LockToken) -> Result<RemoveOutcome> {
        let op = Op::Remove {
            key: Key::of(key),
            token: token_bytes(token),
        };
        let outcomes = [
            (dialect::remove::MISSING, RemoveOutcome::Missing),
            (dialect::remove::LOCK_LOST, RemoveOutcome::LockLost),
            (dialect::remove::REMOVED, RemoveOutcome::Removed),
        ];
        self.decide(Operation::Remove, op, outcomes).await
    }

    async fn touch(&self, key: &SessionKey) -> Result<TouchOutcome> {
        let op = Op::Touch {
            key: Key::of(key),
            window: i32::from(self.inner.window.percent()),
        };
        let outcomes = [
            (dialect::touch::MISSING, TouchOutcome::Missing),
            (dialect::touch::TOUCHED, TouchOutcome::Touched),
        ];
        self.decide(Operation::Touch, op, outcomes).await
    }

    async fn write_concurrent(
        &self, key: &SessionKey, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome> {
        let op = Op::WriteConcurrent {
            key: Key::of(key),
            delta,
            timeout_ms: millis(timeout),
            window: i32::from(self.inner.window.percent()),
        };
        let outcomes = [
            (dialect::concurrent::MISSING, CommitOutcome::Missing),
            (dialect::concurrent::COMMITTED, CommitOutcome::Committed),
        ];
        self.decide(Operation::WriteConcurrent, op, outcomes).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<RemoveOutcome> {
        let op = Op::Delete { key: Key::of(key) };
        let outcomes = [
            (dialect::delete::MISSING, RemoveOutcome::Missing),
            (dialect::delete::REMOVED, RemoveOutcome::Removed),
        ];
        self.decide(Operation::Delete, op, outcomes).await
    }

    async fn change_id(
        &self, key: &SessionKey, new_id: SessionId, token: LockToken,
    ) -> Result<ChangeIdOutcome> {
        let op = Op::ChangeId {
            key: Key::of(key),
            new_sid: new_id.expose().as_bytes(),
            token: token_bytes(token),
        };
        let outcomes = [
            (dialect::change_id::LOCK_LOST, ChangeIdOutcome::LockLost),
            (
                dialect::change_id::ALREADY_EXISTS,
                ChangeIdOutcome::AlreadyExists,
            ),
            (dialect::change_id::CHANGED, ChangeIdOutcome::Changed),
        ];
        self.decide(Operation::ChangeId, op, outcomes).await
    }

    /// In statements of at most 1,000 sessions, each bounded by one timestamp read once, so that
    /// it reads only the index entries of what it deletes (the [crate docs](crate), "Purge
    /// cost").
    async fn purge_expired(&self, batch: usize) -> Result<u64> {
        Ok(self.inner.purge(batch).await?.sessions)
    }

    /// Postgres: a waiter on the store's one `LISTEN` connection, woken by the `NOTIFY` that every
    /// routine releasing a lock sends (and by the connection coming back after a loss). Never fails:
    /// while the listener is down, the manager's poll interval is the safety net.
    async fn watch_release(&self, key: &SessionKey) -> Result<ReleaseWatch> {
        match self.inner.dialect.signal() {
            Some(signal) => Ok(signal.watch(key)),
            None => Err(Error::Unsupported {
                backend: self.inner.backend,
                operation: Operation::WatchRelease,
            }),
        }
    }

    async fn expiry_events(&self) -> Result<ExpiryEvents> {
        Err(Error::Unsupported {
            backend: self.inner.backend,
            operation: Operation::ExpiryEvents,
        })
    }
}
