//! [`SqlOptions`]: the settings of the SQL store that the shared [`Config`](session_core::Config)
//! does not carry, among them the pool acquire timeout (the wait for a pooled connection, which
//! is not `connectionTimeoutInMilliseconds`).

use std::time::Duration;

use session_core::{Error, Result};

/// How long an operation waits for a pooled connection on Postgres and MySQL/MariaDB unless
/// [`SqlOptions::with_pool_acquire_timeout`] says otherwise.
pub const DEFAULT_POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The same on SQLite: as long as its busy timeout (30 s), since a connection may be held that long
/// by a writer waiting for the file's one write lock.
pub const DEFAULT_SQLITE_POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest table prefix: the longest table name it yields (`<prefix>migrations`) stays under
/// MySQL's 64-character identifier limit.
const MAX_PREFIX_CHARS: usize = 48;

/// Settings of an [`SqlStore`](crate::SqlStore) beyond the connection [`Config`](session_core::Config).
///
/// Built with [`SqlOptions::new`] and the `with_*` setters.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    table_prefix: String,
    max_connections: u32,
    pool_acquire_timeout: Option<Duration>,
    sweeper: Option<SweeperOptions>,
    migrate: bool,
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl SqlOptions {
    /// The defaults: prefix `sess_` (tables `sess_sessions`, `sess_migrations`), 10
    /// pooled connections (1 for `sqlite::memory:`), the pool acquire timeout of the database
    /// ([`DEFAULT_POOL_ACQUIRE_TIMEOUT`], [`DEFAULT_SQLITE_POOL_ACQUIRE_TIMEOUT`]), the sweeper on
    /// ([`SweeperOptions::new`]), migrations run on connect. (The refresh window is a [`Config`]
    /// setting, `refreshWindowPercent`: [`Config::refresh_window`].)
    ///
    /// [`Config`]: session_core::Config
    /// [`Config::refresh_window`]: session_core::Config::refresh_window
    pub fn new() -> Self {
        Self {
            table_prefix: "sess_".to_owned(),
            max_connections: 10,
            pool_acquire_timeout: None,
            sweeper: Some(SweeperOptions::new()),
            migrate: true,
        }
    }

    /// Sets the prefix of every table (and stored routine) name.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] unless the prefix is 1..=48 ASCII letters, digits and `_`, not
    /// starting with a digit (it is spliced into SQL, so nothing else is allowed).
    pub fn with_table_prefix(mut self, prefix: &str) -> Result<Self> {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_CHARS
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !prefix.as_bytes().first().is_some_and(u8::is_ascii_digit);
        if !valid {
            return Err(Error::config(
                "table_prefix",
                "must be 1..=48 lowercase ASCII letters, digits or '_', not starting with a digit \
                 (MySQL routine names ignore case and Postgres folds it, so mixed case could collide)",
            ));
        }
        self.table_prefix = prefix.to_owned();
        Ok(self)
    }

    /// Sets the pool size (at least 1). Ignored for `sqlite::memory:`, which uses one connection.
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets how long an operation waits for a connection from the pool before it fails with
    /// [`Error::Unavailable`] (transient): the wait for a free connection when all are in use, and
    /// the opening of a new one when the pool grows (sqlx opens connections inside this wait).
    /// Default: [`DEFAULT_POOL_ACQUIRE_TIMEOUT`] (10 s) on Postgres and MySQL/MariaDB,
    /// [`DEFAULT_SQLITE_POOL_ACQUIRE_TIMEOUT`] (30 s) on SQLite. At least 1 ms.
    ///
    /// A server that cannot be reached does not make operations wait this long on Postgres and
    /// MySQL/MariaDB: an operation that would wait probes the server with a connection of its own
    /// within `connectionTimeoutInMilliseconds`, and fails with `Unavailable` as soon as that
    /// probe is refused or times out; while the server stays down, each operation fails at once.
    ///
    /// Not to be confused with `connectionTimeoutInMilliseconds`
    /// ([`Config::connection_timeout`](session_core::Config::connection_timeout)), which bounds
    /// the first connection made at [`SqlStore::connect`](crate::SqlStore::connect) and those
    /// probes, nor with `operationTimeoutInMilliseconds`, which bounds a whole operation attempt
    /// (this wait included) in the manager's retry decorator.
    pub fn with_pool_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.pool_acquire_timeout = Some(timeout.max(Duration::from_millis(1)));
        self
    }

    /// Sets the background sweeper, or turns it off with `None` (then call
    /// [`purge_expired`](session_core::SessionStore::purge_expired) yourself).
    pub fn with_sweeper(mut self, sweeper: Option<SweeperOptions>) -> Self {
        self.sweeper = sweeper;
        self
    }

    /// Whether [`SqlStore::connect`](crate::SqlStore::connect) runs the embedded migrations (on by
    /// default). Turn it off when the schema is deployed separately.
    pub fn with_migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The table prefix.
    pub fn table_prefix(&self) -> &str {
        &self.table_prefix
    }

    /// The pool size.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The pool acquire timeout set with [`SqlOptions::with_pool_acquire_timeout`] (`None`: the
    /// database's default).
    pub fn pool_acquire_timeout(&self) -> Option<Duration> {
        self.pool_acquire_timeout
    }

    /// The pool acquire timeout on SQLite (`sqlite`) or a networked database.
    pub(crate) fn pool_acquire_timeout_for(&self, sqlite: bool) -> Duration {
        self.pool_acquire_timeout.unwrap_or(if sqlite {
            DEFAULT_SQLITE_POOL_ACQUIRE_TIMEOUT
        } else {
            DEFAULT_POOL_ACQUIRE_TIMEOUT
        })
    }

    /// The sweeper settings (`None`: off).
    pub fn sweeper(&self) -> Option<&SweeperOptions> {
        self.sweeper.as_ref()
    }

    /// Whether migrations run on connect.
    pub fn migrate(&self) -> bool {
        self.migrate
    }
}

/// How the background sweeper purges expired sessions.
#[derive(Debug, Clone, Copy)]
pub struct SweeperOptions {
    interval: Duration,
    batch: usize,
    work_share: u8,
}

impl Default for SweeperOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl SweeperOptions {
    /// Every 60 s, batches of 1000 (each batch is one short transaction), statements back to back
    /// (work share 100 %).
    pub fn new() -> Self {
        Self {
            interval: Duration::from_secs(60),
            batch: 1000,
            work_share: 100,
        }
    }

    /// Sets the pause between sweeps (at least 10 ms).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Sets the batch size (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Sets the share of a sweep's time, in percent (1..=100; 0 counts as 1, more than 100 as
    /// 100), that its purge statements may take: after a statement that took `d`, the sweeper
    /// rests `d * (100 - percent) / percent` before the next (holding no reference to the store
    /// meanwhile: dropping the store ends the sweep). Default 100: statements back to back
    /// (yielding between them), the fastest purge. A purge statement keeps a database core busy
    /// while it runs; on a server whose cores the traffic keeps busy, a lower share trades purge
    /// speed for request latency (measured on 2 cores under reads: 100 % purged 81.8k sessions/s
    /// with the reads' p99 at 1.75x, 50 % 35.6k/s at 1.25x; the crate docs, "Purge and traffic").
    /// The share applies to the sweeper only; `SessionStore::purge_expired` always runs back to
    /// back.
    pub fn with_work_share(mut self, percent: u8) -> Self {
        self.work_share = percent.clamp(1, 100);
        self
    }

    /// The share of a sweep's time its statements may take, in percent.
    pub fn work_share(&self) -> u8 {
        self.work_share
    }

    /// The pause between sweeps.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Sessions deleted per statement.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_identifiers() {
        for ok in ["a", "sess_", "_x1", &"a".repeat(48)] {
            assert_eq!(
                SqlOptions::new()
                    .with_table_prefix(ok)
                    .unwrap()
                    .table_prefix(),
                ok
            );
        }
        for bad in [
            "",
            "1a",
            "a-b",
            "a b",
            "a;",
            "a\"",
            "é",
            "Sess_",
            "A",
            &"a".repeat(49),
        ] {
            assert!(SqlOptions::new().with_table_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_pool_acquire_timeout_is_its_own_setting() {
        let default = SqlOptions::new();
        assert_eq!(default.pool_acquire_timeout(), None);
        assert_eq!(
            default.pool_acquire_timeout_for(false),
            DEFAULT_POOL_ACQUIRE_TIMEOUT
        );
        assert_eq!(
            default.pool_acquire_timeout_for(true),
            DEFAULT_SQLITE_POOL_ACQUIRE_TIMEOUT
        );
        let set = SqlOptions::new().with_pool_acquire_timeout(Duration::from_millis(250));
        assert_eq!(set.pool_acquire_timeout(), Some(Duration::from_millis(250)));
        assert_eq!(
            set.pool_acquire_timeout_for(true),
            Duration::from_millis(250)
        );
        assert_eq!(
            set.pool_acquire_timeout_for(false),
            Duration::from_millis(250)
        );
        let zero = SqlOptions::new().with_pool_acquire_timeout(Duration::ZERO);
        assert_eq!(zero.pool_acquire_timeout(), Some(Duration::from_millis(1)));
    }
}
