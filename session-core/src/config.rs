//! Configuration (SPEC §4): the settings of the ASP.NET Redis provider with the same meanings, plus
//! the session module's settings. Read from `web.config`-style attributes, from a URL, or built in
//! code; bad settings are rejected when the configuration is built, naming the setting.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::names::AppName;

/// Longest session timeout accepted: one year, as ASP.NET's InProc limit.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(525_600 * 60);

/// The store a connection URL selects, from its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// `memory://`: in-process (backend-memory).
    Memory,
    /// `redis://` or `rediss://` (TLS): one Redis server.
    Redis,
    /// `redis+cluster://` or `rediss+cluster://`: a Redis Cluster.
    RedisCluster,
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite:` (a file, or `sqlite::memory:`).
    Sqlite,
    /// `mysql://` or `mariadb://`.
    Mysql,
}

impl BackendKind {
    /// The backend a URL's scheme selects.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a URL without a known scheme.
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(|| Error::config("url", "has no scheme (expected memory://, redis://, rediss://, redis+cluster://, postgres://, sqlite:, mysql://)"))?;
        Ok(match scheme.as_str() {
            "memory" => Self::Memory,
            "redis" | "rediss" => Self::Redis,
            "redis+cluster" | "rediss+cluster" => Self::RedisCluster,
            "postgres" | "postgresql" => Self::Postgres,
            "sqlite" => Self::Sqlite,
            "mysql" | "mariadb" => Self::Mysql,
            other => {
                return Err(Error::config(
                    "url",
                    format!(
                        "unknown scheme {other:?} (expected memory, redis, rediss, redis+cluster, rediss+cluster, postgres, sqlite, mysql)"
                    ),
                ));
            }
        })
    }
}

/// Every setting of a session store and its manager.
///
/// Build one with [`Config::builder`], [`Config::from_attributes`] or [`Config::from_url`]. Every
/// value has been validated. `Debug` redacts the access key and the URL's password.
///
/// As in the ASP.NET provider (where `host` is used only without a `connectionString`), the
/// connection settings `host`, `port`, `accessKey`, `user`, `ssl` and `databaseId` describe the
/// server when no URL is given; a URL carries its own (its scheme, credentials, port, database
/// and TLS), which the backend reads and which win. Their accessors return what was set, not
/// what a URL contains.
#[derive(Clone)]
pub struct Config {
    url: Option<String>,
    host: Option<String>,
    port: u16,
    user: Option<String>,
    access_key: Option<String>,
    ssl: bool,
    throw_on_error: bool,
    retry_timeout: Duration,
    database_id: u32,
    application_name: AppName,
    connection_timeout: Option<Duration>,
    operation_timeout: Option<Duration>,
    session_timeout: Duration,
    lock_ttl: Duration,
    poll_interval: Duration,
    max_waiters_per_session: usize,
    lock_wait_timeout: Duration,
    max_session_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            url: None,
            host: None,
            port: 0,
            user: None,
            access_key: None,
            ssl: false,
            throw_on_error: true,
            retry_timeout: Duration::ZERO,
            database_id: 0,
            application_name: AppName::default(),
            connection_timeout: None,
            operation_timeout: None,
            session_timeout: Duration::from_secs(20 * 60),
            lock_ttl: Duration::from_secs(110),
            poll_interval: Duration::from_millis(500),
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
    /// [`Error::InvalidConfig`] for a URL without a known scheme.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::builder().url(url).build()
    }

    /// Reads the seed's provider attributes as key/value pairs (names case-insensitive), as copied
    /// from a `web.config` `<add .../>` element.
    ///
    /// | attribute | meaning | default |
    /// |---|---|---|
    /// | `connectionString` or `url` | connection URL (`redis://`, `postgres://`, `memory://` ...) | none |
    /// | `host`, `port` | server address (port 0: the backend's default) | backend's |
    /// | `accessKey`, `user` | password, ACL user name | none |
    /// | `ssl` | TLS (`true`/`false`) | `false` |
    /// | `databaseId` | Redis database number | 0 |
    /// | `applicationName` | namespace of the sessions | `/` |
    /// | `throwOnError` | `false`: degrade instead of failing | `true` |
    /// | `retryTimeoutInMilliseconds` | retry budget for transient failures, 0 = none | 0 |
    /// | `connectionTimeoutInMilliseconds`, `operationTimeoutInMilliseconds` | 0 = backend default | 0 |
    /// | `timeout` (minutes) or `sessionTimeoutInMilliseconds` | idle lifetime of a session | 20 min |
    /// | `executionTimeout` (seconds) or `lockTtlInMilliseconds` | age at which a lock is stale | 110 s |
    /// | `pollIntervalInMilliseconds` | lock polling where the store has no release signal | 500 |
    /// | `maxWaitersPerSession` or `requestQueueLimitPerSession` | waiters on one session | 50 |
    /// | `lockWaitTimeoutInMilliseconds` | how long a request waits for a lock | 120000 |
    /// | `maxSessionSizeInBytes` | largest session (names + encoded values) | 16 MiB |
    ///
    /// `name`, `type` and `description` (the provider element's own attributes) are ignored.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the attribute for an unknown name, an unparsable value or a
    /// value out of range.
    pub fn from_attributes<'a, I>(attributes: I) -> Result<Self>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut b = Self::builder();
        for (name, value) in attributes {
            b = b.attribute(name, value)?;
        }
        b.build()
    }

    /// The connection URL, if any.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }
    /// The backend the URL selects (memory when there is no URL and no host).
    pub fn backend_kind(&self) -> BackendKind {
        match &self.url {
            Some(url) => BackendKind::from_url(url).unwrap_or(BackendKind::Memory),
            None if self.host.is_some() => BackendKind::Redis,
            None => BackendKind::Memory,
        }
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
    /// `connectionTimeoutInMilliseconds` (`None`: the backend's default).
    pub fn connection_timeout(&self) -> Option<Duration> {
        self.connection_timeout
    }
    /// `operationTimeoutInMilliseconds` (`None`: no timeout beyond the backend's own).
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
            .field("max_waiters_per_session", &self.max_waiters_per_session)
            .field("lock_wait_timeout", &self.lock_wait_timeout)
            .field("max_session_size", &self.max_session_size)
            .finish()
    }
}

/// `scheme://user:password@host` → `scheme://user:<redacted>@host`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:<redacted>@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] validates it.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

fn parse_bool(setting: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::config(setting, "expected true or false")),
    }
}

fn parse_u64(setting: &str, value: &str) -> Result<u64> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| Error::config(setting, "expected a non-negative whole number"))
}

fn parse_millis(setting: &str, value: &str) -> Result<Duration> {
    parse_u64(setting, value).map(Duration::from_millis)
}

fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
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
    /// Applies one attribute by its seed name (case-insensitive); see [`Config::from_attributes`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the attribute.
    pub fn attribute(mut self, name: &str, value: &str) -> Result<Self> {
        let c = &mut self.config;
        match name.trim().to_ascii_lowercase().as_str() {
            "name" | "type" | "description" => {}
            "connectionstring" | "url" => {
                BackendKind::from_url(value).map_err(|_| {
                    Error::config(name, "is not a URL with a known scheme (memory://, redis://, rediss://, redis+cluster://, postgres://, sqlite:, mysql://)")
                })?;
                c.url = Some(value.to_owned());
            }
            "host" => {
                if value.trim().is_empty() {
                    return Err(Error::config(name, "must not be empty"));
                }
                c.host = Some(value.trim().to_owned());
            }
            "port" => {
                c.port = value
                    .trim()
                    .parse::<u16>()
                    .map_err(|_| Error::config(name, "expected a port number 0..=65535"))?;
            }
            "user" => c.user = Some(value.to_owned()),
            "accesskey" => c.access_key = Some(value.to_owned()),
            "ssl" => c.ssl = parse_bool(name, value)?,
            "throwonerror" => c.throw_on_error = parse_bool(name, value)?,
            "retrytimeoutinmilliseconds" => c.retry_timeout = parse_millis(name, value)?,
            "databaseid" => {
                c.database_id = value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| Error::config(name, "expected a non-negative database number"))?;
            }
            "applicationname" => {
                c.application_name =
                    AppName::new(value).map_err(|e| Error::config(name, e.to_string()))?;
            }
            "connectiontimeoutinmilliseconds" => {
                c.connection_timeout = non_zero(parse_millis(name, value)?);
            }
            "operationtimeoutinmilliseconds" => {
                c.operation_timeout = non_zero(parse_millis(name, value)?);
            }
            "timeout" => {
                let minutes = parse_u64(name, value)?;
                c.session_timeout =
                    session_timeout(name, Duration::from_secs(minutes.saturating_mul(60)))?;
            }
            "sessiontimeoutinmilliseconds" => {
                c.session_timeout = session_timeout(name, parse_millis(name, value)?)?;
            }
            "executiontimeout" => {
                c.lock_ttl = at_least_1ms(name, Duration::from_secs(parse_u64(name, value)?))?;
            }
            "lockttlinmilliseconds" => c.lock_ttl = at_least_1ms(name, parse_millis(name, value)?)?,
            "pollintervalinmilliseconds" => {
                c.poll_interval = at_least_1ms(name, parse_millis(name, value)?)?;
            }
            "maxwaiterspersession" | "requestqueuelimitpersession" => {
                c.max_waiters_per_session = at_least_1(name, parse_u64(name, value)?)?;
            }
            "lockwaittimeoutinmilliseconds" => {
                c.lock_wait_timeout = at_least_1ms(name, parse_millis(name, value)?)?;
            }
            "maxsessionsizeinbytes" => {
                c.max_session_size = at_least_1(name, parse_u64(name, value)?)?;
            }
            _ => return Err(Error::config(name, "unknown setting")),
        }
        Ok(self)
    }

    /// The connection URL; its scheme selects the backend (checked by [`ConfigBuilder::build`]).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = Some(url.into());
        self
    }
    /// `host`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.config.host = Some(host.into());
        self
    }
    /// `port` (0: the backend's default).
    pub fn port(mut self, port: u16) -> Self {
        self.config.port = port;
        self
    }
    /// The ACL user name.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.config.user = Some(user.into());
        self
    }
    /// `accessKey`: the password.
    pub fn access_key(mut self, key: impl Into<String>) -> Self {
        self.config.access_key = Some(key.into());
        self
    }
    /// `ssl`.
    pub fn ssl(mut self, ssl: bool) -> Self {
        self.config.ssl = ssl;
        self
    }
    /// `throwOnError`.
    pub fn throw_on_error(mut self, throw: bool) -> Self {
        self.config.throw_on_error = throw;
        self
    }
    /// `retryTimeoutInMilliseconds` (zero: no retries).
    pub fn retry_timeout(mut self, timeout: Duration) -> Self {
        self.config.retry_timeout = timeout;
        self
    }
    /// `databaseId`.
    pub fn database_id(mut self, id: u32) -> Self {
        self.config.database_id = id;
        self
    }
    /// `applicationName`, already validated.
    pub fn application_name(mut self, app: AppName) -> Self {
        self.config.application_name = app;
        self
    }
    /// `connectionTimeoutInMilliseconds` (`None`: the backend's default).
    pub fn connection_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.connection_timeout = timeout;
        self
    }
    /// `operationTimeoutInMilliseconds` (`None`: none).
    pub fn operation_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.operation_timeout = timeout;
        self
    }
    /// The default idle timeout of new sessions.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = timeout;
        self
    }
    /// The lock TTL.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.config.lock_ttl = ttl;
        self
    }
    /// The polling interval.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }
    /// The per-session waiter limit.
    pub fn max_waiters_per_session(mut self, limit: usize) -> Self {
        self.config.max_waiters_per_session = limit;
        self
    }
    /// How long a request waits for a lock.
    pub fn lock_wait_timeout(mut self, timeout: Duration) -> Self {
        self.config.lock_wait_timeout = timeout;
        self
    }
    /// The largest session in bytes.
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
            BackendKind::from_url(url)?;
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

    fn attrs(pairs: &[(&'static str, &'static str)]) -> Result<Config> {
        Config::from_attributes(pairs.iter().copied())
    }

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
        assert_eq!(c.backend_kind(), BackendKind::Memory);
    }

    #[test]
    fn every_seed_attribute_is_read_case_insensitively() {
        let c = attrs(&[
            ("name", "MySessionStateStore"),
            ("type", "Microsoft.Web.Redis.RedisSessionStateProvider"),
            ("HOST", "cache.example"),
            ("Port", "6380"),
            ("accessKey", "s3cret"),
            ("ssl", "True"),
            ("throwOnError", "FALSE"),
            ("retryTimeoutInMilliseconds", "5000"),
            ("databaseId", "3"),
            ("applicationName", "/shop"),
            ("connectionTimeoutInMilliseconds", "1500"),
            ("operationTimeoutInMilliseconds", "250"),
            ("timeout", "30"),
            ("executionTimeout", "90"),
            ("pollIntervalInMilliseconds", "100"),
            ("requestQueueLimitPerSession", "7"),
            ("lockWaitTimeoutInMilliseconds", "2000"),
            ("maxSessionSizeInBytes", "65536"),
            ("user", "app"),
        ])
        .unwrap();
        assert_eq!(c.host(), Some("cache.example"));
        assert_eq!(c.port(), 6380);
        assert_eq!(c.access_key(), Some("s3cret"));
        assert!(c.ssl());
        assert!(!c.throw_on_error());
        assert_eq!(c.retry_timeout(), Duration::from_secs(5));
        assert_eq!(c.database_id(), 3);
        assert_eq!(c.application_name().as_str(), "/shop");
        assert_eq!(c.connection_timeout(), Some(Duration::from_millis(1500)));
        assert_eq!(c.operation_timeout(), Some(Duration::from_millis(250)));
        assert_eq!(c.session_timeout(), Duration::from_secs(1800));
        assert_eq!(c.lock_ttl(), Duration::from_secs(90));
        assert_eq!(c.poll_interval(), Duration::from_millis(100));
        assert_eq!(c.max_waiters_per_session(), 7);
        assert_eq!(c.lock_wait_timeout(), Duration::from_secs(2));
        assert_eq!(c.max_session_size(), 65536);
        assert_eq!(c.user(), Some("app"));
        assert_eq!(c.backend_kind(), BackendKind::Redis);
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn zero_timeouts_mean_backend_default() {
        let c = attrs(&[
            ("connectionTimeoutInMilliseconds", "0"),
            ("operationTimeoutInMilliseconds", "0"),
        ])
        .unwrap();
        assert_eq!(c.connection_timeout(), None);
        assert_eq!(c.operation_timeout(), None);
    }

    #[test]
    fn bad_values_name_the_setting() {
        assert_eq!(bad_setting(attrs(&[("port", "70000")])), "port");
        assert_eq!(bad_setting(attrs(&[("port", "-1")])), "port");
        assert_eq!(bad_setting(attrs(&[("ssl", "yes")])), "ssl");
        assert_eq!(bad_setting(attrs(&[("throwOnError", "1")])), "throwOnError");
        assert_eq!(
            bad_setting(attrs(&[("retryTimeoutInMilliseconds", "soon")])),
            "retryTimeoutInMilliseconds"
        );
        assert_eq!(bad_setting(attrs(&[("databaseId", "-3")])), "databaseId");
        assert_eq!(
            bad_setting(attrs(&[("applicationName", "{tag}")])),
            "applicationName"
        );
        assert_eq!(
            bad_setting(attrs(&[("applicationName", "")])),
            "applicationName"
        );
        assert_eq!(bad_setting(attrs(&[("timeout", "0")])), "timeout");
        assert_eq!(bad_setting(attrs(&[("hots", "x")])), "hots");
        assert_eq!(bad_setting(attrs(&[("host", " ")])), "host");
        assert_eq!(
            bad_setting(attrs(&[("connectionString", "ftp://x")])),
            "connectionString"
        );
        assert_eq!(
            bad_setting(attrs(&[("executionTimeout", "0")])),
            "executionTimeout"
        );
        assert_eq!(
            bad_setting(attrs(&[("lockWaitTimeoutInMilliseconds", "0")])),
            "lockWaitTimeoutInMilliseconds"
        );
        assert_eq!(
            bad_setting(attrs(&[("maxSessionSizeInBytes", "0")])),
            "maxSessionSizeInBytes"
        );
        assert_eq!(
            bad_setting(attrs(&[("pollIntervalInMilliseconds", "0")])),
            "pollIntervalInMilliseconds"
        );
        assert_eq!(
            bad_setting(attrs(&[("maxWaitersPerSession", "0")])),
            "maxWaitersPerSession"
        );
        assert_eq!(bad_setting(attrs(&[("timeout", "525601")])), "timeout");
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
        assert_eq!(bad(Config::builder().url("gopher://x")), "url");
    }

    #[test]
    fn urls_select_backends() {
        for (url, kind) in [
            ("memory://", BackendKind::Memory),
            ("redis://127.0.0.1:6379/0", BackendKind::Redis),
            ("rediss://:pw@host:6380", BackendKind::Redis),
            ("redis+cluster://127.0.0.1:7000", BackendKind::RedisCluster),
            ("postgres://u:p@h/db", BackendKind::Postgres),
            ("postgresql://h/db", BackendKind::Postgres),
            ("sqlite::memory:", BackendKind::Sqlite),
            ("mysql://u@h/db", BackendKind::Mysql),
            ("MariaDB://u@h/db", BackendKind::Mysql),
        ] {
            assert_eq!(Config::from_url(url).unwrap().backend_kind(), kind, "{url}");
        }
        assert!(Config::from_url("nonsense").is_err());
        assert!(Config::from_url("http://x").is_err());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://user:pw@host:1/0"),
            "redis://user:<redacted>@host:1/0"
        );
        assert_eq!(redact_url("rediss://:pw@host"), "rediss://:<redacted>@host");
        assert_eq!(redact_url("memory://"), "memory://");
        let c = Config::from_url("postgres://u:topsecret@h/db").unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
