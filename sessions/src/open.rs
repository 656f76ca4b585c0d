//! One call from a configuration to a store or a manager. The facade owns the dispatch: the URL's
//! scheme, or a StackExchange.Redis `connectionString` or the seed's `host` attribute (Redis),
//! picks the [`Backend`]; a configuration that names no store is an error, never a silent
//! in-memory store; and a backend whose cargo feature is off is a configuration error that names
//! the feature to enable. Each backend crate parses and checks the rest of its URL itself, and
//! lists its own schemes (`backend_redis::SCHEMES`, ...), which a test compares with
//! [`Backend::schemes`].
//!
//! Messages never print a URL or a connection string as given: only a URL's scheme, or the URL
//! through [`redact_url`](session_core::redact_url).

use std::fmt;
use std::sync::Arc;

use session_core::{Config, Error, Result, SessionManager, SessionStore, url_scheme};

/// A store this crate can open, selected by the connection URL's scheme.
///
/// ```
/// use sessions::Backend;
///
/// assert_eq!(Backend::for_url("rediss+cluster://:pw@a:7000,b:7001")?, Backend::Redis);
/// assert_eq!(Backend::for_url("MariaDB://app@db/sessions")?, Backend::Mysql);
/// assert_eq!(Backend::Postgres.feature(), "postgres");
/// assert!(Backend::for_url("gopher://h").is_err());
/// # Ok::<(), sessions::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// `memory://`: in-process (backend-memory, feature `memory`).
    Memory,
    /// `redis://`, `rediss://` (TLS), `redis+cluster://`, `rediss+cluster://` (backend-redis,
    /// feature `redis`).
    Redis,
    /// `postgres://`, `postgresql://` (backend-sql, feature `postgres`).
    Postgres,
    /// `sqlite:path`, `sqlite::memory:` (backend-sql, feature `sqlite`).
    Sqlite,
    /// `mysql://`, `mariadb://` (backend-sql, feature `mysql`).
    Mysql,
}

impl Backend {
    /// Every backend this crate knows, compiled in or not.
    pub const ALL: [Self; 5] = [
        Self::Memory,
        Self::Redis,
        Self::Postgres,
        Self::Sqlite,
        Self::Mysql,
    ];

    /// Its name, which is also the cargo feature of this crate that compiles it in.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
            Self::Mysql => "mysql",
        }
    }

    /// The URL schemes that select it (lowercase; URLs match them case-insensitively). They are
    /// the lists its crate exports, known here also when the crate is compiled out, so that such
    /// a URL is told which feature to enable.
    pub fn schemes(self) -> &'static [&'static str] {
        match self {
            Self::Memory => &["memory"],
            Self::Redis => &["redis", "rediss", "redis+cluster", "rediss+cluster"],
            Self::Postgres => &["postgres", "postgresql"],
            Self::Sqlite => &["sqlite"],
            Self::Mysql => &["mysql", "mariadb"],
        }
    }

    /// Whether this build has it (its cargo feature is on).
    pub fn is_compiled_in(self) -> bool {
        match self {
            Self::Memory => cfg!(feature = "memory"),
            Self::Redis => cfg!(feature = "redis"),
            Self::Postgres => cfg!(feature = "postgres"),
            Self::Sqlite => cfg!(feature = "sqlite"),
            Self::Mysql => cfg!(feature = "mysql"),
        }
    }

    /// The backend `url`'s scheme selects, compiled in or not.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `url` when no backend serves its scheme (the message lists
    /// the schemes that do, and never echoes the URL).
    pub fn for_url(url: &str) -> Result<Self> {
        let Some(scheme) = url_scheme(url) else {
            return Err(Error::config(
                "url",
                format!(
                    "is not a URL: it must start with a scheme ({})",
                    known_schemes()
                ),
            ));
        };
        Self::ALL
            .into_iter()
            .find(|backend| backend.schemes().contains(&scheme.as_str()))
            .ok_or_else(|| {
                Error::config(
                    "url",
                    format!(
                        "scheme {scheme:?} selects no store (known: {})",
                        known_schemes()
                    ),
                )
            })
    }

    /// The backend `config` selects, in this order: its URL's ([`Backend::for_url`]); Redis for a
    /// StackExchange.Redis configuration ([`Config::redis_configuration`], a `connectionString`
    /// such as `cache:6380,password=...,ssl=True`); Redis when the seed's `host` attribute is set.
    /// Nothing else selects a store: the in-process store is chosen by `memory://` (a `web.config`'s
    /// `mode="InProc"`), never by default, so that settings that lost their server fail at start
    /// rather than keep sessions in one process's memory.
    ///
    /// ```
    /// use sessions::{Backend, Config};
    ///
    /// let azure = Config::from_attributes([(
    ///     "connectionString",
    ///     "contoso.redis.cache.windows.net:6380,password=k3y,ssl=True,abortConnect=False",
    /// )])?;
    /// assert_eq!(Backend::for_config(&azure)?, Backend::Redis);
    /// let host = Config::from_attributes([("host", "cache.internal"), ("port", "")])?;
    /// assert_eq!(Backend::for_config(&host)?, Backend::Redis);
    /// assert_eq!(Backend::for_config(&Config::from_url("memory://")?)?, Backend::Memory);
    /// // port, accessKey and ssl name no server: an error, not the memory store.
    /// let no_host = Config::from_attributes([("port", "6380"), ("accessKey", "k3y"), ("ssl", "true")])?;
    /// assert!(Backend::for_config(&no_host).unwrap_err().to_string().contains("no store"));
    /// # Ok::<(), sessions::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Backend::for_url`]; [`Error::InvalidConfig`] naming `connectionString` when the
    /// configuration names no store (the message says what to set).
    pub fn for_config(config: &Config) -> Result<Self> {
        if let Some(url) = config.url() {
            return Self::for_url(url);
        }
        if config.redis_configuration().is_some() || config.host().is_some() {
            return Ok(Self::Redis);
        }
        Err(no_store(config))
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.feature())
    }
}

/// The error for a configuration that names no store: what to set, and, when Redis settings were
/// given without a server (`port`, `accessKey`, `ssl`, ... and no `host`), which ones.
fn no_store(config: &Config) -> Error {
    let defaults = Config::default();
    let orphans: Vec<&str> = [
        ("port", config.port() != defaults.port()),
        ("accessKey", config.access_key().is_some()),
        ("user", config.user().is_some()),
        ("ssl", config.ssl() != defaults.ssl()),
        ("databaseId", config.database_id() != defaults.database_id()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    let mut reason = String::from(
        "no store: set connectionString or host (Redis), a URL (postgres://, mysql://, \
         sqlite:...), or memory:// (web.config: mode=\"InProc\") for the in-process store",
    );
    if !orphans.is_empty() {
        reason.push_str(&format!(
            "; {} {} given without host, and describe no server on their own",
            orphans.join(", "),
            if orphans.len() == 1 { "is" } else { "are" }
        ));
    }
    Error::config("connectionString", reason)
}

/// Every scheme, for messages: `memory, redis, rediss, ...`.
fn known_schemes() -> String {
    Backend::ALL
        .iter()
        .flat_map(|b| b.schemes().iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The options of the compiled-in backends that have no attribute in [`Config`] (a CA for Redis
/// TLS, the SQL pool, the memory store's capacity, ...). Only the selected backend's are used.
///
/// ```
/// # #[cfg(feature = "memory")] {
/// use sessions::StoreOptions;
/// use sessions::memory::MemoryOptions;
///
/// let options = StoreOptions::new().with_memory(MemoryOptions::new().with_max_sessions(10_000));
/// # let _ = options;
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    #[cfg(feature = "memory")]
    memory: backend_memory::MemoryOptions,
    #[cfg(feature = "redis")]
    redis: backend_redis::RedisOptions,
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
    sql: backend_sql::SqlOptions,
}

impl StoreOptions {
    /// Every backend's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The memory store's options.
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    pub fn with_memory(mut self, options: backend_memory::MemoryOptions) -> Self {
        self.memory = options;
        self
    }

    /// The Redis store's options.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn with_redis(mut self, options: backend_redis::RedisOptions) -> Self {
        self.redis = options;
        self
    }

    /// The SQL stores' options (Postgres, SQLite, MySQL/MariaDB).
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
    #[cfg_attr(
        docsrs,
        doc(cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql")))
    )]
    pub fn with_sql(mut self, options: backend_sql::SqlOptions) -> Self {
        self.sql = options;
        self
    }
}

/// Opens the store that `config` selects ([`Backend::for_config`]: its URL's scheme, else Redis
/// for a StackExchange.Redis `connectionString` or the seed's `host` attribute; no store named is
/// an error), with every backend's default options.
/// Networked stores connect here (and the SQL stores run their migrations), so a wrong address or
/// password fails now, not on the first request.
///
/// The store is not wrapped: [`SessionManager::new`] adds the retries and the operation timeout
/// of `config` (`retryTimeoutInMilliseconds`, `operationTimeoutInMilliseconds`).
///
/// # Errors
/// [`Error::InvalidConfig`] for a configuration that names no store or a scheme no backend
/// serves, or naming the cargo feature to enable when the selected backend was not compiled in;
/// the backend's own errors otherwise
/// ([`Error::InvalidConfig`] for the rest of its URL, [`Error::Unavailable`],
/// [`Error::Backend`], [`Error::Timeout`]).
pub async fn connect(config: &Config) -> Result<Arc<dyn SessionStore>> {
    connect_with(config, &StoreOptions::new()).await
}

/// [`connect`] with backend options.
///
/// # Errors
/// As [`connect`].
pub async fn connect_with(
    config: &Config, options: &StoreOptions,
) -> Result<Arc<dyn SessionStore>> {
    // Unused when no backend that takes options is compiled in.
    let _ = options;
    let backend = Backend::for_config(config)?;
    match backend {
        #[cfg(feature = "memory")]
        Backend::Memory => Ok(Arc::new(backend_memory::MemoryStore::from_config(
            config,
            options.memory,
        )?)),
        #[cfg(feature = "redis")]
        Backend::Redis => Ok(Arc::new(
            backend_redis::RedisStore::connect_with(config, options.redis.clone()).await?,
        )),
        #[cfg(feature = "postgres")]
        Backend::Postgres => sql(config, options).await,
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => sql(config, options).await,
        #[cfg(feature = "mysql")]
        Backend::Mysql => sql(config, options).await,
        // Every variant not matched above is a backend whose feature is off.
        #[allow(unreachable_patterns)]
        other => Err(feature_off(config, other)),
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
async fn sql(config: &Config, options: &StoreOptions) -> Result<Arc<dyn SessionStore>> {
    Ok(Arc::new(
        backend_sql::SqlStore::connect_with(config, options.sql.clone()).await?,
    ))
}

/// Opens the store that `config` selects (see [`connect`]) and returns a [`SessionManager`] on it
/// with the settings of `config`.
///
/// # Errors
/// As [`connect`].
pub async fn open(config: &Config) -> Result<SessionManager> {
    open_with(config, &StoreOptions::new()).await
}

/// [`open`] with backend options.
///
/// # Errors
/// As [`connect`].
pub async fn open_with(config: &Config, options: &StoreOptions) -> Result<SessionManager> {
    let store = connect_with(config, options).await?;
    Ok(SessionManager::new(store, config))
}

/// [`open`] with a configuration read from `url`, every other setting at its default.
///
/// # Errors
/// [`Error::InvalidConfig`] for a URL without a scheme; as [`connect`].
pub async fn open_url(url: &str) -> Result<SessionManager> {
    open(&Config::from_url(url)?).await
}

/// [`open`] with a configuration read from the seed provider's attributes (names
/// case-insensitive, as copied from a `web.config` `<add .../>` element; empty values are the
/// defaults, a `connectionString` may be a URL, a StackExchange.Redis configuration or the name
/// of an environment variable holding one; see [`Config::from_attributes`]). The attributes must
/// name a store: `connectionString`/`url`, or `host` for Redis.
///
/// ```no_run
/// # async fn demo() -> sessions::Result<()> {
/// let manager = sessions::open_attributes([
///     ("connectionString", "contoso.redis.cache.windows.net:6380,password=...,ssl=True,abortConnect=False"),
///     ("applicationName", "/my app"),
/// ])
/// .await?;
/// # let _ = manager; Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidConfig`] naming a bad attribute, or `connectionString` when none names a
/// store; as [`connect`].
pub async fn open_attributes<'a, I>(attributes: I) -> Result<SessionManager>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    open(&Config::from_attributes(attributes)?).await
}

/// The error for `backend`, which `config` selects, compiled out. It names the setting that
/// selected it: `url`, else `connectionString` (a StackExchange configuration) or the seed's
/// `host` attribute (Redis).
fn feature_off(config: &Config, backend: Backend) -> Error {
    let feature = backend.feature();
    let setting = if config.url().is_some() {
        "url"
    } else if config.redis_configuration().is_some() {
        "connectionString"
    } else if config.host().is_some() {
        "host"
    } else {
        "url"
    };
    Error::config(
        setting,
        format!(
            "the {backend} backend is not compiled in: enable the \"{feature}\" feature of the \
             sessions crate (sessions = {{ ..., features = [\"{feature}\"] }})"
        ),
    )
}

#[cfg(test)]
mod tests;
