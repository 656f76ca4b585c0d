//! Opening the stores as the tests do, and the conformance suite's trials for a server variant.
//!
//! The Redis store also opens with its near cache on ([`open_redis_near_with`],
//! [`redis_near_factory_with`]), and [`conformance_trials`] runs the suite with it (`near::...`).

use std::sync::Arc;

use backend_redis::{RedisOptions, RedisStore};
use backend_sql::{SqlOptions, SqlStore};
use libtest_mimic::Trial;
use session_core::conformance::{self, StoreFactory};
use session_core::{Config, ConfigBuilder, RefreshWindow, SessionStore};

use crate::servers::{Server, Variant};

/// The Redis store for `url` (standalone, TLS or `redis+cluster://`) with `options`.
///
/// # Errors
/// A bad URL, or the store's connect errors.
pub async fn open_redis(url: &str, options: RedisOptions) -> session_core::Result<RedisStore> {
    open_redis_with(url, options, RefreshWindow::DEFAULT).await
}

/// [`open_redis`] with the refresh window `window` (a [`Config`] setting).
///
/// # Errors
/// A bad URL, or the store's connect errors.
pub async fn open_redis_with(
    url: &str, options: RedisOptions, window: RefreshWindow,
) -> session_core::Result<RedisStore> {
    RedisStore::connect_with(&config_with(url, window)?, options).await
}

/// [`open_redis_with`] with the near cache on (the setting `nearCache`: reads of recently read,
/// unchanged sessions answered from process memory, docs/contract.md §2).
///
/// # Errors
/// A bad URL, or the store's connect errors (over TLS the near cache is refused with
/// `Error::InvalidConfig`).
pub async fn open_redis_near_with(
    url: &str, options: RedisOptions, window: RefreshWindow,
) -> session_core::Result<RedisStore> {
    let config = builder_with(url, window).near_cache(true).build()?;
    RedisStore::connect_with(&config, options).await
}

/// The configuration for `url` with the refresh window `window`, everything else default.
fn config_with(url: &str, window: RefreshWindow) -> session_core::Result<Config> {
    builder_with(url, window).build()
}

/// The configuration builder for `url` with the refresh window `window`.
fn builder_with(url: &str, window: RefreshWindow) -> ConfigBuilder {
    Config::builder().url(url).refresh_window(window)
}

/// The SQL store for `url` (Postgres, MySQL/MariaDB or SQLite), without the background sweeper,
/// so that `purge_expired` runs only when a test calls it.
///
/// # Errors
/// A bad URL, or the store's connect errors (migrations included).
pub async fn open_sql(url: &str) -> session_core::Result<SqlStore> {
    open_sql_with(url, RefreshWindow::DEFAULT).await
}

/// [`open_sql`] with the refresh window `window`.
///
/// # Errors
/// A bad URL, or the store's connect errors (migrations included).
pub async fn open_sql_with(url: &str, window: RefreshWindow) -> session_core::Result<SqlStore> {
    let options = SqlOptions::new().with_sweeper(None);
    SqlStore::connect_with(&config_with(url, window)?, options).await
}

/// A conformance factory opening [`open_redis`]`(url, options)` for each behaviour.
pub fn redis_factory(url: impl Into<String>, options: RedisOptions) -> impl StoreFactory {
    redis_factory_with(url, options, RefreshWindow::DEFAULT)
}

/// [`redis_factory`] with the refresh window `window`.
pub fn redis_factory_with(
    url: impl Into<String>, options: RedisOptions, window: RefreshWindow,
) -> impl StoreFactory {
    redis_factory_of(url.into(), options, window, false)
}

/// [`redis_factory_with`] with the near cache on: a conformance factory opening
/// [`open_redis_near_with`]`(url, options, window)` for each behaviour (and for each second
/// instance a `shared::*` behaviour opens, each with a near cache of its own).
pub fn redis_near_factory_with(
    url: impl Into<String>, options: RedisOptions, window: RefreshWindow,
) -> impl StoreFactory {
    redis_factory_of(url.into(), options, window, true)
}

/// The Redis factories: each call opens a store for `url`, with the near cache on or off.
fn redis_factory_of(
    url: String, options: RedisOptions, window: RefreshWindow, near: bool,
) -> impl StoreFactory {
    move || {
        let (url, options) = (url.clone(), options.clone());
        async move {
            let config = builder_with(&url, window).near_cache(near).build()?;
            let store = RedisStore::connect_with(&config, options).await?;
            Ok(Arc::new(store) as Arc<dyn SessionStore>)
        }
    }
}

/// A conformance factory opening the Redis store for `attributes` (name/value pairs, as a
/// `web.config` `<add .../>` gives them: `host`, `port`, a StackExchange `connectionString`, ...)
/// with `options` and the refresh window `window`, for each behaviour. The configuration is
/// checked when the factory is first called.
pub fn redis_attributes_factory_with(
    attributes: Vec<(String, String)>, options: RedisOptions, window: RefreshWindow,
) -> impl StoreFactory {
    move || {
        let (attributes, options) = (attributes.clone(), options.clone());
        async move {
            let mut builder = Config::builder().refresh_window(window);
            for (name, value) in &attributes {
                builder = builder.attribute(name, value)?;
            }
            let store = RedisStore::connect_with(&builder.build()?, options).await?;
            Ok(Arc::new(store) as Arc<dyn SessionStore>)
        }
    }
}

/// A conformance factory opening [`open_sql`]`(url)` for each behaviour (SQLite too).
pub fn sql_factory(url: impl Into<String>) -> impl StoreFactory {
    sql_factory_with(url, RefreshWindow::DEFAULT)
}

/// [`sql_factory`] with the refresh window `window`.
pub fn sql_factory_with(url: impl Into<String>, window: RefreshWindow) -> impl StoreFactory {
    let url = url.into();
    move || {
        let url = url.clone();
        async move { Ok(Arc::new(open_sql_with(&url, window).await?) as Arc<dyn SessionStore>) }
    }
}

/// The suite with the store's default refresh window, named `{prefix}<behaviour>`, then its
/// expiry behaviours once more with exact sliding (`w = 0`), named `{prefix}exact::<behaviour>`
/// (docs/contract.md §5: both windows on every backend).
pub fn both_windows<F: StoreFactory>(
    prefix: &str, factory: impl Fn(RefreshWindow) -> F,
) -> Vec<Trial> {
    let mut trials = conformance::trials_with_prefix(prefix, factory(RefreshWindow::DEFAULT));
    trials.extend(conformance::expiry_trials(
        &format!("{prefix}exact::"),
        factory(RefreshWindow::EXACT),
    ));
    trials
}

/// [`both_windows`], then the behaviours of two instances sharing one server
/// ([`conformance::shared_trials`], named `{prefix}shared::<behaviour>`) with the default window:
/// for a factory whose instances share one server (a Redis server, a database, a SQLite file).
pub fn both_windows_and_shared<F: StoreFactory>(
    prefix: &str, factory: impl Fn(RefreshWindow) -> F,
) -> Vec<Trial> {
    let mut trials = both_windows(prefix, &factory);
    trials.extend(conformance::shared_trials(
        prefix,
        factory(RefreshWindow::DEFAULT),
    ));
    trials
}

/// The conformance suite against `backend`'s server, every trial named `{prefix}<behaviour>`:
/// [`both_windows_and_shared`] (the suite with both refresh windows, then the `shared::*`
/// behaviours). For standalone Redis and Redis Cluster all of it once more with the near cache on
/// ([`redis_near_factory_with`]), named `near::{prefix}<behaviour>` (docs/contract.md §5: an
/// optional feature that changes how an operation is served runs the whole suite); not over TLS,
/// where the store refuses the near cache.
///
/// Without its server, the same trials ignored with the reason, or (required, see
/// [`Unconfigured::trials`](crate::Unconfigured::trials)) one failing `<backend>::configured`.
pub fn conformance_trials(backend: Variant, prefix: &str) -> Vec<Trial> {
    let near = format!("near::{prefix}");
    let redis = |url: &str| {
        let mut trials =
            both_windows_and_shared(prefix, |w| redis_factory_with(url, RedisOptions::new(), w));
        trials.extend(both_windows_and_shared(&near, |w| {
            redis_near_factory_with(url, RedisOptions::new(), w)
        }));
        trials
    };
    match backend.server() {
        Ok(Server::Redis(s)) => redis(s.url()),
        Ok(Server::RedisCluster(s)) => redis(s.url()),
        Ok(Server::RedisTls(s)) => {
            both_windows_and_shared(prefix, |w| redis_factory_with(s.url(), s.options(), w))
        }
        Ok(Server::Postgres(s) | Server::Mysql(s)) => {
            both_windows_and_shared(prefix, |w| sql_factory_with(s.url(), w))
        }
        Err(unconfigured) => {
            let prefixes: &[&str] = match backend {
                Variant::Redis | Variant::RedisCluster => &[prefix, &near],
                _ => &[prefix],
            };
            unconfigured.trials(prefixes.iter().flat_map(|prefix| {
                conformance::behaviour_names()
                    .into_iter()
                    .map(move |name| format!("{prefix}{name}"))
            }))
        }
    }
}
