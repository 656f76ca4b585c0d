//! Configuration (docs/contract.md §4): the settings of the ASP.NET Redis provider with the same
//! meanings, plus the session module's settings. Read from `web.config`-style attributes, from a
//! URL, or built in code; bad settings are rejected when the configuration is built, naming the
//! setting.
//!
//! Each setting has one meaning and one owner, documented on its [`ConfigBuilder`] method; the
//! attribute names, and how their values are read, live in the `attributes` submodule. The
//! connection URL is kept as an opaque string: which store its scheme selects is decided by the
//! `sessions` facade, and each backend parses its own schemes.

use std::fmt;
use std::time::Duration;

use crate::conn_string::{is_stackexchange, redact_stackexchange};
use crate::conn_url::{redact_url, url_scheme};
use crate::error::{Error, Result};
use crate::names::AppName;
use crate::refresh::RefreshWindow;

mod attributes;

/// Longest session timeout accepted: one year, as ASP.NET's InProc limit.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(525_600 * 60);

/// The connect timeout when `connectionTimeoutInMilliseconds` is 0 or unset, on every networked
/// backend: 5 s (StackExchange.Redis's default, which the ASP.NET provider inherits).
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Every setting of a session store and its manager.
///
/// Build one with [`Config::builder`], [`Config::from_attributes`] or [`Config::from_url`]. Every
/// value has been validated. `Debug` redacts the access key and the URL's secrets (its password
/// and secret-looking parameters, see [`redact_url`](crate::redact_url)).
///
/// The URL is opaque here: only its syntax (`scheme:...`) is checked. Which store its scheme
/// selects is the `sessions` facade's business, and the backend checks the rest when it connects.
///
/// As in the ASP.NET provider (where `host` is used only without a `connectionString`), the
/// connection settings `host`, `port`, `accessKey`, `user`, `ssl` and `databaseId` describe the
/// server when no URL is given; a URL carries its own (its scheme, credentials, port, database
/// and TLS), which the backend reads and which win. Their accessors return what was set, not
/// what a URL contains.
#[derive(Clone)]
pub struct Config {
    url: Option<String>,
    redis_configuration: Option<String>,
    host: Option<String>,
    port: u16,
    user: Option<String>,
    access_key: Option<String>,
    ssl: bool,
    throw_on_error: bool,
    retry_timeout: Duration,
    database_id: u32,
    application_name: AppName,
    connection_timeout: Duration,
    operation_timeout: Option<Duration>,
    session_timeout: Duration,
    lock_ttl: Duration,
    poll_interval: Duration,
    refresh_window: RefreshWindow,
    near_cache: bool,
    keep_alive_when_unused: bool,
    max_waiters_per_session: usize,
    lock_wait_timeout: Duration,
    max_session_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            url: None,
            redis_configuration: None,
            host: None,
            port: 0,
            user: None,
            access_key: None,
            ssl: false,
            throw_on_error: true,
            retry_timeout: Duration::ZERO,
            database_id: 0,
            application_name: AppName::default(),
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            operation_timeout: None,
            session_timeout: Duration::from_secs(20 * 60),
            lock_ttl: Duration::from_secs(110),
            poll_interval: Duration::from_millis(500),
            refresh_window: RefreshWindow::DEFAULT,
            near_cache: false,
            keep_alive_when_unused: true,
            max_waiters_per_session: 50,
            lock_wait_timeout: Duration::from_secs(120),
            max_session_size: 16 * 1024 * 1024,
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Self::default(),
        }
    }

    /// A configuration for `url`, everything else default.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a URL without a scheme.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::builder().url(url).build()
    }

    /// The connection URL, if any: a `connectionString` (or `url`) with a scheme, as given
    /// (trimmed). The `sessions` facade selects the store by its scheme.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }
    /// The StackExchange.Redis configuration string, if any: a `connectionString` (or `url`) in
    /// that form (`host:port[,host2:port2][,key=value...]`, a bare host such as `localhost`), as
    /// given (trimmed). It selects the Redis store, which parses it (its endpoints, `password`,
    /// `user`, `ssl`, `defaultDatabase`, ...); only its shape was checked here. Never log it
    /// (`Debug` redacts its `password`). At most one of this and [`Config::url`] is set.
    pub fn redis_configuration(&self) -> Option<&str> {
        self.redis_configuration.as_deref()
    }
    /// `host`.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    /// `port` (0: the backend's default).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The ACL user name.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    /// `accessKey`: the password. Never log it.
    pub fn access_key(&self) -> Option<&str> {
        self.access_key.as_deref()
    }
    /// `ssl`.
    pub fn ssl(&self) -> bool {
        self.ssl
    }
    /// `throwOnError`.
    pub fn throw_on_error(&self) -> bool {
        self.throw_on_error
    }
    /// `retryTimeoutInMilliseconds` (zero: no retries).
    pub fn retry_timeout(&self) -> Duration {
        self.retry_timeout
    }
    /// `databaseId`.
    pub fn database_id(&self) -> u32 {
        self.database_id
    }
    /// `applicationName`.
    pub fn application_name(&self) -> &AppName {
        &self.application_name
    }
    /// `connectionTimeoutInMilliseconds`: how long opening one connection may take, the default
    /// applied (see [`ConfigBuilder::connection_timeout`]).
    pub fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }
    /// `operationTimeoutInMilliseconds`: the limit on one attempt of one store operation (`None`:
    /// no limit; see [`ConfigBuilder::operation_timeout`]).
    pub fn operation_timeout(&self) -> Option<Duration> {
        self.operation_timeout
    }
    /// The default idle timeout of new sessions.
    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }
    /// The lock TTL (ASP.NET `executionTimeout`): older locks are stale and taken over.
    pub fn lock_ttl(&self) -> Duration {
        self.lock_ttl
    }
    /// The polling interval for stores without a release signal.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
    /// The stores' refresh window (docs/contract.md §1), default 10 % of the session timeout;
    /// attribute `refreshWindowPercent` (0 = ASP.NET's exact sliding).
    pub fn refresh_window(&self) -> RefreshWindow {
        self.refresh_window
    }
    /// Whether the store keeps a near cache (docs/contract.md §2): attribute `nearCache`, URL
    /// parameter `nearCache=true`. Only the Redis store has one; the others refuse the setting.
    pub fn near_cache(&self) -> bool {
        self.near_cache
    }
    /// Whether a request that carries a session's cookie but never opens the session still slides
    /// its expiry (one `touch`), as ASP.NET does: `true` unless the attribute
    /// `skipKeepAliveWhenUnused` is `true`. Owned by the web layer (and
    /// [`SessionManager`](crate::SessionManager) users in other frameworks).
    pub fn keep_alive_when_unused(&self) -> bool {
        self.keep_alive_when_unused
    }
    /// How many requests may wait on one session at once.
    pub fn max_waiters_per_session(&self) -> usize {
        self.max_waiters_per_session
    }
    /// How long a request waits for a lock before giving up.
    pub fn lock_wait_timeout(&self) -> Duration {
        self.lock_wait_timeout
    }
    /// The largest session, in bytes of names plus encoded values.
    pub fn max_session_size(&self) -> usize {
        self.max_session_size
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url.as_deref().map(redact_url))
            .field(
                "redis_configuration",
                &self
                    .redis_configuration
                    .as_deref()
                    .map(redact_stackexchange),
            )
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field(
                "access_key",
                &self.access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("ssl", &self.ssl)
            .field("throw_on_error", &self.throw_on_error)
            .field("retry_timeout", &self.retry_timeout)
            .field("database_id", &self.database_id)
            .field("application_name", &self.application_name)
            .field("connection_timeout", &self.connection_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("session_timeout", &self.session_timeout)
            .field("lock_ttl", &self.lock_ttl)
            .field("poll_interval", &self.poll_interval)
            .field("refresh_window", &self.refresh_window)
            .field("near_cache", &self.near_cache)
            .field("keep_alive_when_unused", &self.keep_alive_when_unused)
            .field("max_waiters_per_session", &self.max_waiters_per_session)
            .field("lock_wait_timeout", &self.lock_wait_timeout)
            .field("max_session_size", &self.max_session_size)
            .finish()
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] validates it.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// A connection URL must start with a scheme (which store it names is not known here).
fn check_url(setting: &str, url: &str) -> Result<()> {
    if url_scheme(url).is_none() {
        return Err(Error::config(
            setting,
            "is not a URL: it must start with a scheme that names the store (`<scheme>:...`)",
        ));
    }
    Ok(())
}

/// A duration setting that must be at least 1 ms (stores keep milliseconds).
fn at_least_1ms(setting: &str, d: Duration) -> Result<Duration> {
    if d < Duration::from_millis(1) {
        return Err(Error::config(setting, "must be at least 1 ms"));
    }
    Ok(d)
}

/// A session timeout: 1 ms to one year.
fn session_timeout(setting: &str, d: Duration) -> Result<Duration> {
    if d < Duration::from_millis(1) || d > MAX_SESSION_TIMEOUT {
        return Err(Error::config(
            setting,
            "must be between 1 ms and one year (525600 minutes)",
        ));
    }
    Ok(d)
}

fn at_least_1(setting: &str, n: u64) -> Result<usize> {
    if n == 0 {
        return Err(Error::config(setting, "must be at least 1"));
    }
    usize::try_from(n).map_err(|_| Error::config(setting, "too large"))
}

impl ConfigBuilder {
    /// `connectionString` / `url` as a URL (replacing a StackExchange configuration).
    /// [`ConfigBuilder::build`] checks only that it starts with a scheme; the `sessions` facade
    /// picks the store by that scheme, and the store checks the rest when it connects. (The
    /// attribute also takes the StackExchange form and environment variable names:
    /// [`Config::from_attributes`].)
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = Some(url.into());
        self.config.redis_configuration = None;
        self
    }
    /// `connectionString` as a StackExchange.Redis configuration string
    /// (`host:port[,host2:port2][,password=...,ssl=True,...]`; replacing a URL): it selects the
    /// Redis store, which parses it. [`ConfigBuilder::build`] checks its shape only (see
    /// [`Config::from_attributes`], step 3).
    pub fn redis_configuration(mut self, configuration: impl Into<String>) -> Self {
        self.config.redis_configuration = Some(configuration.into());
        self.config.url = None;
        self
    }
    /// `host`: the Redis server to connect to when there is no `connectionString` (a URL or a
    /// StackExchange configuration names its own and wins). A host alone selects Redis in the
    /// `sessions` facade; with no host and no `connectionString` there is no store (an error
    /// there, never a silent in-memory store). Read by backend-redis.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.config.host = Some(host.into());
        self
    }
    /// `port`: the server's port when there is no URL (0: the default port). Read by
    /// backend-redis.
    pub fn port(mut self, port: u16) -> Self {
        self.config.port = port;
        self
    }
    /// `user`: the ACL user name when there is no URL (a URL's userinfo wins). Read by
    /// backend-redis.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.config.user = Some(user.into());
        self
    }
    /// `accessKey`: the password when there is no URL (a URL's userinfo wins). Read by
    /// backend-redis; never printed (`Debug` redacts it).
    pub fn access_key(mut self, key: impl Into<String>) -> Self {
        self.config.access_key = Some(key.into());
        self
    }
    /// `ssl`: connect with TLS when the URL does not say (`rediss://` and a URL's TLS mode win).
    /// Read by backend-redis and backend-sql.
    pub fn ssl(mut self, ssl: bool) -> Self {
        self.config.ssl = ssl;
        self
    }
    /// `throwOnError`: `false` makes the manager degrade on a store failure (an empty, unsaved
    /// session and `last_error()`) instead of returning the error. Owned by the manager.
    pub fn throw_on_error(mut self, throw: bool) -> Self {
        self.config.throw_on_error = throw;
        self
    }
    /// `retryTimeoutInMilliseconds`: how long transient failures (`Unavailable`, `Timeout`) of one
    /// operation are retried (zero: never). Owned by the retry decorator that
    /// [`SessionManager::new`](crate::SessionManager::new) adds.
    pub fn retry_timeout(mut self, timeout: Duration) -> Self {
        self.config.retry_timeout = timeout;
        self
    }
    /// `databaseId`: the Redis database when there is no URL (a URL's path wins). Read by
    /// backend-redis.
    pub fn database_id(mut self, id: u32) -> Self {
        self.config.database_id = id;
        self
    }
    /// `applicationName`, already validated: the namespace of the sessions; two applications
    /// never see each other's. Owned by the manager (it is part of every key).
    pub fn application_name(mut self, app: AppName) -> Self {
        self.config.application_name = app;
        self
    }
    /// `connectionTimeoutInMilliseconds`: how long connecting to the server may take (TCP connect,
    /// TLS handshake and login), on every networked store: each Redis connection; on Postgres and
    /// MySQL/MariaDB the first connection, opened when the store connects (the pool's later
    /// connections are bounded by its acquire timeout, backend-sql's `with_pool_acquire_timeout`).
    /// `None` or zero: [`DEFAULT_CONNECTION_TIMEOUT`] (5 s). Memory and SQLite have no network and
    /// ignore it.
    ///
    /// It is not the wait for a free pooled connection: backend-sql names that one
    /// `SqlOptions::with_pool_acquire_timeout`.
    pub fn connection_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.connection_timeout = timeout
            .and_then(non_zero)
            .unwrap_or(DEFAULT_CONNECTION_TIMEOUT);
        self
    }
    /// `operationTimeoutInMilliseconds`: the longest one attempt of one store operation may take.
    /// `None` or zero: no limit per attempt.
    ///
    /// One owner enforces it: the retry layer, [`RetryLayer`](crate::RetryLayer), which
    /// [`SessionManager::new`](crate::SessionManager::new) wraps every store in. An attempt still
    /// running then is abandoned as a transient [`Error::Timeout`], which
    /// `retryTimeoutInMilliseconds` may retry. Backends do not enforce it a second time; a driver
    /// that needs a response timeout of its own derives it from this one in the one way its crate
    /// documents (backend-redis: this plus a 1 s margin, so that the decorator's always fires
    /// first; 5 s when unset).
    pub fn operation_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.operation_timeout = timeout.and_then(non_zero);
        self
    }
    /// `timeout` / `sessionTimeoutInMilliseconds`: the idle (sliding) lifetime of new sessions,
    /// 1 ms to one year. Owned by the manager, stored per session by the backend.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = timeout;
        self
    }
    /// `executionTimeout` / `lockTtlInMilliseconds`: the age at which a lock is stale and taken
    /// over. Owned by the manager.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.config.lock_ttl = ttl;
        self
    }
    /// `pollIntervalInMilliseconds`: how often a waiting request tries the lock again on a store
    /// without a release signal. Owned by the manager.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }
    /// `refreshWindowPercent`: the stores' refresh window (docs/contract.md §1);
    /// [`RefreshWindow::EXACT`] for ASP.NET's exact sliding. Owned by the stores (the `sessions`
    /// facade opens them with it).
    pub fn refresh_window(mut self, window: RefreshWindow) -> Self {
        self.config.refresh_window = window;
        self
    }
    /// `nearCache`: a process-local copy of recently read sessions that reads are answered from
    /// while the server proves it current (docs/contract.md §2). Redis only; owned by the store.
    pub fn near_cache(mut self, on: bool) -> Self {
        self.config.near_cache = on;
        self
    }
    /// `skipKeepAliveWhenUnused`: `true` stops requests that carry a session cookie but do not use
    /// the session from sliding its expiry (default `false`: they slide it, as in ASP.NET).
    pub fn skip_keep_alive_when_unused(mut self, skip: bool) -> Self {
        self.config.keep_alive_when_unused = !skip;
        self
    }
    /// `maxWaitersPerSession` / `requestQueueLimitPerSession`: how many requests may wait on one
    /// session at once before the next fails fast. Owned by the manager.
    pub fn max_waiters_per_session(mut self, limit: usize) -> Self {
        self.config.max_waiters_per_session = limit;
        self
    }
    /// `lockWaitTimeoutInMilliseconds`: how long a request waits for a session's lock before
    /// failing with `Error::WaitTimeout`. Owned by the manager.
    pub fn lock_wait_timeout(mut self, timeout: Duration) -> Self {
        self.config.lock_wait_timeout = timeout;
        self
    }
    /// `maxSessionSizeInBytes`: the largest session (names plus encoded values). Owned by the
    /// manager.
    pub fn max_session_size(mut self, bytes: usize) -> Self {
        self.config.max_session_size = bytes;
        self
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad setting and why.
    pub fn build(self) -> Result<Config> {
        let c = self.config;
        if let Some(url) = &c.url {
            check_url("url", url)?;
        }
        if let Some(configuration) = &c.redis_configuration
            && !is_stackexchange(configuration.trim())
        {
            return Err(Error::config(
                "redis_configuration",
                "is not a StackExchange.Redis configuration: expected comma-separated \
                 host[:port] endpoints (at least one) and key=value options",
            ));
        }
        // Values set through the builder methods; attributes were checked under their own names.
        session_timeout("session_timeout", c.session_timeout)?;
        at_least_1ms("lock_ttl", c.lock_ttl)?;
        at_least_1ms("poll_interval", c.poll_interval)?;
        at_least_1ms("lock_wait_timeout", c.lock_wait_timeout)?;
        at_least_1("max_waiters_per_session", c.max_waiters_per_session as u64)?;
        at_least_1("max_session_size", c.max_session_size as u64)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_setting(r: Result<Config>) -> String {
        match r {
            Err(Error::InvalidConfig { setting, .. }) => setting,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.session_timeout(), Duration::from_secs(1200));
        assert_eq!(c.lock_ttl(), Duration::from_secs(110));
        assert_eq!(c.poll_interval(), Duration::from_millis(500));
        assert_eq!(c.max_waiters_per_session(), 50);
        assert_eq!(c.retry_timeout(), Duration::ZERO);
        assert!(c.throw_on_error());
        assert!(!c.ssl());
        assert_eq!(c.application_name().as_str(), "/");
        assert_eq!(c.url(), None);
        assert_eq!(c.connection_timeout(), DEFAULT_CONNECTION_TIMEOUT);
        assert_eq!(c.operation_timeout(), None);
        assert_eq!(c.refresh_window(), RefreshWindow::DEFAULT);
    }

    #[test]
    fn builder_values_are_validated_under_the_method_name() {
        let bad = |b: ConfigBuilder| bad_setting(b.build());
        assert_eq!(
            bad(Config::builder().session_timeout(Duration::from_micros(10))),
            "session_timeout"
        );
        assert_eq!(bad(Config::builder().lock_ttl(Duration::ZERO)), "lock_ttl");
        assert_eq!(
            bad(Config::builder().max_waiters_per_session(0)),
            "max_waiters_per_session"
        );
        assert_eq!(bad(Config::builder().url("no scheme")), "url");
        assert_eq!(
            bad(Config::builder().redis_configuration("password=x")),
            "redis_configuration"
        );
        assert_eq!(
            bad(Config::builder().redis_configuration("redis://h")),
            "redis_configuration"
        );
    }

    /// The URL is opaque here: any scheme is kept as given (the facade and the backends decide
    /// what it names); only text without a scheme is refused.
    #[test]
    fn urls_are_kept_as_given() {
        for url in [
            "memory://",
            "redis+cluster://u:pw@127.0.0.1:7000,127.0.0.1:7001",
            "sqlite::memory:",
            "MariaDB://u@h/db",
            "gopher://x",
        ] {
            assert_eq!(Config::from_url(url).unwrap().url(), Some(url));
        }
        assert!(Config::from_url("nonsense").is_err());
        assert!(Config::from_url("127.0.0.1:6379").is_err());
    }

    /// Issue 10, bug 2: `Debug` printed a password given in the query string, and a user without a
    /// password as `user:<redacted>`.
    #[test]
    fn debug_never_prints_a_secret() {
        for (url, secret) in [
            ("postgres://u:topsecret@h/db", "topsecret"),
            ("postgres://h/db?password=topsecret", "topsecret"),
            ("mysql://h/db?sslmode=required&PWD=topsecret", "topsecret"),
            ("redis+cluster://:topsecret@a:7000,b:7001", "topsecret"),
            (
                "rediss+cluster://app:topsecret@a:7000,b:7001/0",
                "topsecret",
            ),
            ("postgres://u:top#secret@h/db", "top#secret"),
        ] {
            let c = Config::builder()
                .url(url)
                .access_key("keysecret")
                .build()
                .unwrap();
            let debug = format!("{c:?}");
            assert!(!debug.contains(secret), "{debug}");
            assert!(!debug.contains("keysecret"), "{debug}");
        }
        let c = Config::from_url("redis://app@h:6379").unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("\"redis://app@h:6379\""), "{debug}");
        assert!(!debug.contains("redacted"), "{debug}");
    }
}
