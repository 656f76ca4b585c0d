//! Opening the stores as the tests do, and the conformance suite's trials for a server variant.

use std::sync::Arc;

use backend_redis::{RedisOptions, RedisStore};
use backend_sql::{SqlOptions, SqlStore};
use libtest_mimic::Trial;
use session_core::conformance::{self, StoreFactory};
use session_core::{Config, SessionStore};

use crate::servers::{Server, Variant};

/// The Redis store for `url` (standalone, TLS or `redis+cluster://`) with `options`.
///
/// # Errors
/// A bad URL, or the store's connect errors.
pub async fn open_redis(url: &str, options: RedisOptions) -> session_core::Result<RedisStore> {
    RedisStore::connect_with(&Config::from_url(url)?, options).await
}

/// The SQL store for `url` (Postgres, MySQL/MariaDB or SQLite), without the background sweeper,
/// so that `purge_expired` runs only when a test calls it.
///
/// # Errors
/// A bad URL, or the store's connect errors (migrations included).
pub async fn open_sql(url: &str) -> session_core::Result<SqlStore> {
    let options = SqlOptions::new().with_sweeper(None);
    SqlStore::connect_with(&Config::from_url(url)?, options).await
}

/// A conformance factory opening [`open_redis`]`(url, options)` for each behaviour.
pub fn redis_factory(url: impl Into<String>, options: RedisOptions) -> impl StoreFactory {
    let url = url.into();
    move || {
        let (url, options) = (url.clone(), options.clone());
        async move { Ok(Arc::new(open_redis(&url, options).await?) as Arc<dyn SessionStore>) }
    }
}

/// A conformance factory opening [`open_sql`]`(url)` for each behaviour (SQLite too).
pub fn sql_factory(url: impl Into<String>) -> impl StoreFactory {
    let url = url.into();
    move || {
        let url = url.clone();
        async move { Ok(Arc::new(open_sql(&url).await?) as Arc<dyn SessionStore>) }
    }
}

/// The conformance suite against `backend`'s server, every trial named `{prefix}<behaviour>`.
///
/// Without its server, the same trials ignored with the reason, or (required, see
/// [`Unconfigured::trials`](crate::Unconfigured::trials)) one failing `<backend>::configured`.
pub fn conformance_trials(backend: Variant, prefix: &str) -> Vec<Trial> {
    match backend.server() {
        Ok(Server::Redis(s)) => {
            conformance::trials_with_prefix(prefix, redis_factory(s.url(), RedisOptions::new()))
        }
        Ok(Server::RedisTls(s)) => {
            conformance::trials_with_prefix(prefix, redis_factory(s.url(), s.options()))
        }
        Ok(Server::RedisCluster(s)) => {
            conformance::trials_with_prefix(prefix, redis_factory(s.url(), RedisOptions::new()))
        }
        Ok(Server::Postgres(s) | Server::Mysql(s)) => {
            conformance::trials_with_prefix(prefix, sql_factory(s.url()))
        }
        Err(unconfigured) => unconfigured.trials(
            conformance::behaviour_names()
                .into_iter()
                .map(|name| format!("{prefix}{name}")),
        ),
    }
}
