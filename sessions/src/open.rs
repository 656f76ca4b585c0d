//! One call from a configuration to a store or a manager. The facade owns the dispatch: the URL's
//! scheme (or the seed's `host` attribute) picks the [`Backend`], and a backend whose cargo feature
//! is off is a configuration error that names the feature to enable. Each backend crate parses
//! and checks the rest of its URL itself, and lists its own schemes (`backend_redis::SCHEMES`,
//! ...), which a test compares with [`Backend::schemes`].
//!
//! Messages never print a URL as given: only its scheme, or the URL through
//! [`redact_url`](session_core::redact_url).

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

    /// The backend `config` selects: its URL's ([`Backend::for_url`]), else Redis when the seed's
    /// `host` attribute is set, else memory.
    ///
    /// # Errors
    /// As [`Backend::for_url`].
    pub fn for_config(config: &Config) -> Result<Self> {
        match config.url() {
            Some(url) => Self::for_url(url),
            None if config.host().is_some() => Ok(Self::Redis),
            None => Ok(Self::Memory),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.feature())
    }
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
/// when the seed's `host` attribute is set, else memory), with every backend's default options.
/// Networked stores connect here (and the SQL stores run their migrations), so a wrong address or
/// password fails now, not on the first request.
///
/// The store is not wrapped: [`SessionManager::new`] adds the retries and the operation timeout
/// of `config` (`retryTimeoutInMilliseconds`, `operationTimeoutInMilliseconds`).
///
/// # Errors
/// [`Error::InvalidConfig`] for a scheme no backend serves, or naming the cargo feature to
/// enable when the selected backend was not compiled in; the backend's own errors otherwise
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
/// case-insensitive, as copied from a `web.config` `<add .../>` element; see
/// [`Config::from_attributes`]).
///
/// # Errors
/// [`Error::InvalidConfig`] naming a bad attribute; as [`connect`].
pub async fn open_attributes<'a, I>(attributes: I) -> Result<SessionManager>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    open(&Config::from_attributes(attributes)?).await
}

/// The error for `backend`, which `config` selects, compiled out. It names the setting that
/// selected it: `url`, or the seed's `host` attribute when there is no URL (Redis).
fn feature_off(config: &Config, backend: Backend) -> Error {
    let feature = backend.feature();
    let setting = if config.url().is_none() && config.host().is_some() {
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
mod tests {
    use super::*;

    /// The facade's scheme lists are the backend crates' own (the dev-dependencies have every
    /// backend, whatever this build's features), and each crate accepts exactly its own.
    #[test]
    fn the_schemes_are_the_backend_crates_own() {
        assert_eq!(Backend::Memory.schemes(), backend_memory::SCHEMES);
        assert_eq!(Backend::Redis.schemes(), backend_redis::SCHEMES);
        assert_eq!(Backend::Postgres.schemes(), backend_sql::POSTGRES_SCHEMES);
        assert_eq!(Backend::Sqlite.schemes(), backend_sql::SQLITE_SCHEMES);
        assert_eq!(Backend::Mysql.schemes(), backend_sql::MYSQL_SCHEMES);
        for backend in Backend::ALL {
            for scheme in backend.schemes() {
                let url = format!("{}://h/x", scheme.to_ascii_uppercase());
                assert_eq!(Backend::for_url(&url).unwrap(), backend, "{url}");
                let accepted = [
                    (Backend::Memory, backend_memory::accepts(&url)),
                    (Backend::Redis, backend_redis::accepts(&url)),
                    (
                        backend,
                        matches!(
                            backend,
                            Backend::Postgres | Backend::Sqlite | Backend::Mysql
                        ) && backend_sql::accepts(&url),
                    ),
                ];
                let takers: Vec<Backend> = accepted
                    .into_iter()
                    .filter_map(|(b, yes)| yes.then_some(b))
                    .collect();
                assert_eq!(takers, [backend], "{url}: taken by {takers:?}");
            }
        }
    }

    #[test]
    fn urls_select_backends() {
        for (url, backend) in [
            ("memory://", Backend::Memory),
            ("redis://127.0.0.1:6379/0", Backend::Redis),
            ("rediss://:pw@host:6380", Backend::Redis),
            (
                "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
                Backend::Redis,
            ),
            ("Rediss+Cluster://:pw@a:1,b:2", Backend::Redis),
            ("postgres://u:p@h/db", Backend::Postgres),
            ("postgresql://h/db", Backend::Postgres),
            ("sqlite::memory:", Backend::Sqlite),
            ("mysql://u@h/db", Backend::Mysql),
            ("MariaDB://u@h/db", Backend::Mysql),
        ] {
            assert_eq!(Backend::for_url(url).unwrap(), backend, "{url}");
            let config = Config::from_url(url).unwrap();
            assert_eq!(Backend::for_config(&config).unwrap(), backend, "{url}");
        }
        let by_host = Config::from_attributes([("host", "127.0.0.1")]).unwrap();
        assert_eq!(Backend::for_config(&by_host).unwrap(), Backend::Redis);
        assert_eq!(
            Backend::for_config(&Config::default()).unwrap(),
            Backend::Memory
        );
    }

    #[test]
    fn an_unknown_scheme_is_refused_without_echoing_the_url() {
        for url in [
            "gopher://u:topsecret@h",
            "http://h?password=topsecret",
            "nonsense",
        ] {
            let Err(Error::InvalidConfig { setting, reason }) = Backend::for_url(url) else {
                panic!("{url} selected a backend");
            };
            assert_eq!(setting, "url");
            assert!(!reason.contains("topsecret"), "{reason}");
            assert!(reason.contains("redis+cluster"), "{reason}");
        }
    }

    #[tokio::test]
    async fn an_unknown_scheme_fails_at_open() {
        let Err(err) = open_url("gopher://h").await else {
            panic!("gopher:// opened");
        };
        assert!(
            matches!(&err, Error::InvalidConfig { setting, .. } if setting == "url"),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"gopher\""), "{err}");
    }

    #[test]
    fn every_backend_names_its_feature() {
        assert_eq!(Backend::Memory.feature(), "memory");
        assert_eq!(Backend::Redis.to_string(), "redis");
        assert_eq!(Backend::Mysql.feature(), "mysql");
        let postgres = Config::from_url("postgres://u:p@127.0.0.1/db").unwrap();
        let message = feature_off(&postgres, Backend::Postgres).to_string();
        assert!(
            message.contains("enable the \"postgres\" feature of the sessions crate"),
            "{message}"
        );
        assert_eq!(
            Backend::ALL.map(Backend::is_compiled_in),
            [
                cfg!(feature = "memory"),
                cfg!(feature = "redis"),
                cfg!(feature = "postgres"),
                cfg!(feature = "sqlite"),
                cfg!(feature = "mysql"),
            ]
        );
    }

    #[test]
    fn the_error_names_the_setting_that_selected_the_backend() {
        let setting =
            |config: &Config| match feature_off(config, Backend::for_config(config).unwrap()) {
                Error::InvalidConfig { setting, .. } => setting,
                other => panic!("{other:?}"),
            };
        let by_host = Config::from_attributes([("host", "127.0.0.1")]).unwrap();
        assert_eq!(setting(&by_host), "host");
        let by_url = Config::from_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(setting(&by_url), "url");
    }

    /// Asserts that `url` is refused with a configuration error naming `feature`.
    #[allow(dead_code)]
    async fn refused(url: &str, feature: &str) {
        let Err(err) = open_url(url).await else {
            panic!("{url} opened although its feature is off");
        };
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        let expected = format!("enable the \"{feature}\" feature of the sessions crate");
        assert!(err.to_string().contains(&expected), "{err}");
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn redis_url_without_the_feature_names_it() {
        refused("redis://127.0.0.1:6379", "redis").await;
        refused("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", "redis").await;
        refused("rediss+cluster://:pw@127.0.0.1:7000", "redis").await;
        // The seed's host attribute selects Redis too.
        let Err(err) = open_attributes([("host", "127.0.0.1")]).await else {
            panic!("host opened Redis although its feature is off");
        };
        assert!(err.to_string().contains("\"redis\" feature"), "{err}");
    }

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn postgres_url_without_the_feature_names_it() {
        refused("postgres://u:p@127.0.0.1/db", "postgres").await;
    }

    #[cfg(not(feature = "sqlite"))]
    #[tokio::test]
    async fn sqlite_url_without_the_feature_names_it() {
        refused("sqlite::memory:", "sqlite").await;
    }

    #[cfg(not(feature = "mysql"))]
    #[tokio::test]
    async fn mysql_url_without_the_feature_names_it() {
        refused("mysql://u@127.0.0.1/db", "mysql").await;
        refused("mariadb://u@127.0.0.1/db", "mysql").await;
    }

    #[cfg(not(feature = "memory"))]
    #[tokio::test]
    async fn memory_url_without_the_feature_names_it() {
        refused("memory://", "memory").await;
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn memory_opens_from_a_url_and_from_attributes() {
        let manager = open_url("memory://").await.unwrap();
        assert_eq!(manager.store().backend(), "memory");
        let manager = open_attributes([("applicationName", "/shop")])
            .await
            .unwrap();
        assert_eq!(manager.application().as_str(), "/shop");
        let mut s = manager
            .open(None, session_core::Access::Exclusive)
            .await
            .unwrap();
        s.insert("n", &1u8).unwrap();
        s.end().await.unwrap();
    }

    /// The memory store checks its own URL: the facade passes it on.
    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn the_backend_checks_the_rest_of_its_url() {
        let Err(err) = open_url("memory://cache-host:6379").await else {
            panic!("memory:// with a host opened");
        };
        assert!(
            matches!(&err, Error::InvalidConfig { setting, .. } if setting == "url"),
            "{err:?}"
        );
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn options_reach_the_selected_backend() {
        let options = StoreOptions::new()
            .with_memory(backend_memory::MemoryOptions::new().with_max_sessions(1));
        let store = connect_with(&Config::from_url("memory://").unwrap(), &options)
            .await
            .unwrap();
        assert_eq!(store.backend(), "memory");
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_opens_from_a_url() {
        let manager = open_url("sqlite::memory:").await.unwrap();
        let mut s = manager
            .open(None, session_core::Access::Exclusive)
            .await
            .unwrap();
        s.insert("n", &1u8).unwrap();
        let id = s.id().expose().to_owned();
        s.end().await.unwrap();
        let s = manager
            .open(Some(&id), session_core::Access::ReadOnly)
            .await
            .unwrap();
        assert_eq!(s.get::<u8>("n").unwrap(), Some(1));
    }

    /// The SQL options given to the facade are the ones the store runs with: its tables carry
    /// the prefix given.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sql_options_reach_the_sql_store() {
        use backend_sql::{SqlOptions, SqlStore};
        let path = std::env::temp_dir().join(format!("sessions-open-{}.db", std::process::id()));
        let config = Config::from_url(&format!("sqlite:{}", path.display())).unwrap();
        let options = |prefix: &str| {
            SqlOptions::new()
                .with_table_prefix(prefix)
                .unwrap()
                .with_sweeper(None)
        };
        let store = connect_with(&config, &StoreOptions::new().with_sql(options("facade_")))
            .await
            .unwrap();
        store.purge_expired(100).await.unwrap();
        let probe = |prefix: &'static str| {
            let config = config.clone();
            async move {
                let store = SqlStore::connect_with(&config, options(prefix).with_migrate(false))
                    .await
                    .unwrap();
                store.purge_expired(100).await
            }
        };
        assert!(probe("facade_").await.is_ok(), "the tables have the prefix");
        assert!(
            probe("other_").await.is_err(),
            "no tables under another prefix"
        );
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
