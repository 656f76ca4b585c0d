//! One call from a configuration to a store or a manager: the URL's scheme (or the seed's `host`
//! attribute) picks the backend, and a backend whose cargo feature is off is a configuration error
//! that names the feature to enable.

use std::sync::Arc;

use session_core::{BackendKind, Config, Error, Result, SessionManager, SessionStore};

/// Opens the store that `config` selects: its URL's scheme (`memory://`, `redis://`, `rediss://`,
/// `redis+cluster://`, `postgres://`, `sqlite:`, `mysql://`, `mariadb://`), else Redis when the
/// seed's `host` attribute is set, else memory. Networked stores connect here (and the SQL stores
/// run their migrations), so a wrong address or password fails now, not on the first request.
///
/// The store is not wrapped: [`SessionManager::new`] adds the retries and operation timeouts of
/// `config` (`retryTimeoutInMilliseconds`, `operationTimeoutInMilliseconds`).
///
/// # Errors
/// [`Error::InvalidConfig`] naming the cargo feature to enable when the selected backend was not
/// compiled in; the backend's own connect errors otherwise ([`Error::Unavailable`],
/// [`Error::Backend`], [`Error::Timeout`], [`Error::InvalidConfig`]).
pub async fn connect(config: &Config) -> Result<Arc<dyn SessionStore>> {
    let kind = config.backend_kind();
    match kind {
        #[cfg(feature = "memory")]
        BackendKind::Memory => Ok(Arc::new(backend_memory::MemoryStore::new())),
        #[cfg(feature = "redis")]
        BackendKind::Redis | BackendKind::RedisCluster => {
            Ok(Arc::new(backend_redis::RedisStore::connect(config).await?))
        }
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => Ok(Arc::new(backend_sql::SqlStore::connect(config).await?)),
        #[cfg(feature = "sqlite")]
        BackendKind::Sqlite => Ok(Arc::new(backend_sql::SqlStore::connect(config).await?)),
        #[cfg(feature = "mysql")]
        BackendKind::Mysql => Ok(Arc::new(backend_sql::SqlStore::connect(config).await?)),
        // Every variant not matched above is a backend whose feature is off (or a future one).
        #[allow(unreachable_patterns)]
        other => Err(feature_off(config, other)),
    }
}

/// Opens the store that `config` selects (see [`connect`]) and returns a [`SessionManager`] on it
/// with the settings of `config`.
///
/// # Errors
/// As [`connect`].
pub async fn open(config: &Config) -> Result<SessionManager> {
    let store = connect(config).await?;
    Ok(SessionManager::new(store, config))
}

/// [`open`] with a configuration read from `url`, every other setting at its default.
///
/// # Errors
/// [`Error::InvalidConfig`] for a URL without a known scheme; as [`connect`].
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

/// The cargo feature of this crate that compiles `kind` in.
pub fn feature_for(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Memory => "memory",
        BackendKind::Redis | BackendKind::RedisCluster => "redis",
        BackendKind::Postgres => "postgres",
        BackendKind::Sqlite => "sqlite",
        BackendKind::Mysql => "mysql",
        _ => "all-backends",
    }
}

/// The error for `kind`, which `config` selects, compiled out. It names the setting that selected
/// it: `url`, or the seed's `host` attribute when there is no URL (Redis).
fn feature_off(config: &Config, kind: BackendKind) -> Error {
    let feature = feature_for(kind);
    let setting = if config.url().is_none() && config.host().is_some() {
        "host"
    } else {
        "url"
    };
    Error::config(
        setting,
        format!(
            "the {kind:?} backend is not compiled in: enable the \"{feature}\" feature of the \
             sessions crate (sessions = {{ ..., features = [\"{feature}\"] }})"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_names_its_feature() {
        assert_eq!(feature_for(BackendKind::Memory), "memory");
        assert_eq!(feature_for(BackendKind::RedisCluster), "redis");
        assert_eq!(feature_for(BackendKind::Mysql), "mysql");
        let postgres = Config::from_url("postgres://u:p@127.0.0.1/db").unwrap();
        let message = feature_off(&postgres, BackendKind::Postgres).to_string();
        assert!(
            message.contains("enable the \"postgres\" feature of the sessions crate"),
            "{message}"
        );
    }

    #[test]
    fn the_error_names_the_setting_that_selected_the_backend() {
        let setting = |config: &Config| match feature_off(config, config.backend_kind()) {
            Error::InvalidConfig { setting, .. } => setting,
            other => panic!("{other:?}"),
        };
        let by_host = Config::from_attributes([("host", "127.0.0.1")]).unwrap();
        assert_eq!(by_host.backend_kind(), BackendKind::Redis);
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
        refused("redis+cluster://127.0.0.1:7000", "redis").await;
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
}
