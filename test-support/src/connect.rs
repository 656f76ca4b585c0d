//! Opening the stores as the tests do, and the conformance suite's trials for a server variant.

use std::sync::Arc;

use backend_redis::{RedisOptions, RedisStore};
use backend_sql::{SqlOptions, SqlStore};
use libtest_mimic::Trial;
use session_core::conformance::{self, StoreFactory};
use session_core::{Config, RefreshWindow, SessionStore};

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

/// The configuration for `url` with the refresh window `window`, everything else default.
fn config_with(url: &str, window: RefreshWindow) -> session_core::Result<Config> {
    Config::builder().url(url).refresh_window(window).build()
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
    let url = url.into();
    move || {
        let (url, options) = (url.clone(), options.clone());
        async move {
            let store = open_redis_with(&url, options, window).await?;
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

/// The conformance suite against `backend`'s server, every trial named `{prefix}<behaviour>`.
///
/// Without its server, the same trials ignored with the reason, or (required, see
/// [`Unconfigured::trials`](crate::Unconfigured::trials)) one failing `<backend>::configured`.
pub fn conformance_trials(backend: Variant, prefix: &str) -> Vec<Trial> {
    match backend.server() {
        Ok(Server::Redis(s)) => both_windows(prefix, |w| {
            redis_factory_with(s.url(), RedisOptions::new(), w)
        }),
        Ok(Server::RedisCluster(s)) => both_windows(prefix, |w| {
            redis_factory_with(s.url(), RedisOptions::new(), w)
        }),
        Ok(Server::RedisTls(s)) => {
            both_windows(prefix, |w| redis_factory_with(s.url(), s.options(), w))
        }
        Ok(Server::Postgres(s) | Server::Mysql(s)) => {
            both_windows(prefix, |w| sql_factory_with(s.url(), w))
        }
        Err(unconfigured) => unconfigured.trials(
            conformance::behaviour_names()
                .into_iter()
                .map(|name| format!("{prefix}{name}")),
        ),
    }
}
