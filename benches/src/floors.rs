//! Floors: the raw client doing the least work for the same bytes (a bare moka get/insert, SQL
//! `SELECT`/upsert by primary key on a one-table schema, Redis `GET`/`SET`), so that every backend
//! row reads as a ratio to its physical limit.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{BoxError, redact_url};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{MySqlPool, PgPool, SqlitePool};

use crate::config::BackendSpec;
use crate::error::BenchError;

/// The table the SQL floors use.
pub const FLOOR_TABLE: &str = "bench_floor";

/// A raw client: one read and one write by key, each a single round trip.
#[async_trait]
pub trait Floor: Send + Sync + fmt::Debug {
    /// Reads the value under `key`.
    ///
    /// # Errors
    /// The client's error.
    async fn get(&self, key: &str) -> Result<(), BoxError>;
    /// Writes `value` under `key` (insert or replace).
    ///
    /// # Errors
    /// The client's error.
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), BoxError>;
}

/// A bare moka cache of byte blobs.
#[derive(Debug)]
pub struct MokaFloor(moka::future::Cache<String, Arc<[u8]>>);

#[async_trait]
impl Floor for MokaFloor {
    async fn get(&self, key: &str) -> Result<(), BoxError> {
        std::hint::black_box(self.0.get(key).await);
        Ok(())
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), BoxError> {
        self.0.insert(key.to_owned(), Arc::from(value)).await;
        Ok(())
    }
}

/// A one-table SQL schema, read and upserted by primary key.
#[derive(Debug)]
pub enum SqlFloor {
    /// SQLite.
    Sqlite(SqlitePool),
    /// Postgres.
    Postgres(PgPool),
    /// MySQL / MariaDB.
    Mysql(MySqlPool),
}

#[async_trait]
impl Floor for SqlFloor {
    async fn get(&self, key: &str) -> Result<(), BoxError> {
        match self {
            Self::Sqlite(p) => {
                sqlx::query("SELECT data FROM bench_floor WHERE id = ?")
                    .bind(key)
                    .fetch_optional(p)
                    .await?;
            }
            Self::Postgres(p) => {
                sqlx::query("SELECT data FROM bench_floor WHERE id = $1")
                    .bind(key)
                    .fetch_optional(p)
                    .await?;
            }
            Self::Mysql(p) => {
                sqlx::query("SELECT data FROM bench_floor WHERE id = ?")
                    .bind(key)
                    .fetch_optional(p)
                    .await?;
            }
        }
        Ok(())
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), BoxError> {
        match self {
            Self::Sqlite(p) => {
                sqlx::query("INSERT OR REPLACE INTO bench_floor (id, data) VALUES (?, ?)")
                    .bind(key)
                    .bind(value)
                    .execute(p)
                    .await?;
            }
            Self::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO bench_floor (id, data) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data",
                )
                .bind(key)
                .bind(value)
                .execute(p)
                .await?;
            }
            Self::Mysql(p) => {
                sqlx::query(
                    "INSERT INTO bench_floor (id, data) VALUES (?, ?) \
                     ON DUPLICATE KEY UPDATE data = VALUES(data)",
                )
                .bind(key)
                .bind(value)
                .execute(p)
                .await?;
            }
        }
        Ok(())
    }
}

/// Redis `GET` / `SET … EX` on one multiplexed connection (standalone) or the async cluster client.
#[derive(Clone)]
pub enum RedisFloor {
    /// Standalone.
    Standalone(redis::aio::ConnectionManager),
    /// Cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl fmt::Debug for RedisFloor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Standalone(_) => "RedisFloor::Standalone",
            Self::Cluster(_) => "RedisFloor::Cluster",
        })
    }
}

#[async_trait]
impl Floor for RedisFloor {
    async fn get(&self, key: &str) -> Result<(), BoxError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let v: Option<Vec<u8>> = match self.clone() {
            Self::Standalone(mut c) => cmd.query_async(&mut c).await?,
            Self::Cluster(mut c) => cmd.query_async(&mut c).await?,
        };
        std::hint::black_box(v);
        Ok(())
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), BoxError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("EX").arg(1800);
        match self.clone() {
            Self::Standalone(mut c) => cmd.query_async::<()>(&mut c).await?,
            Self::Cluster(mut c) => cmd.query_async::<()>(&mut c).await?,
        }
        Ok(())
    }
}

/// `redis+cluster://[user:pw@]h1:p1,h2:p2` as one `redis://` URL per node.
fn cluster_nodes(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), rest),
    };
    hosts
        .split(',')
        .map(|h| format!("redis://{auth}{h}"))
        .collect()
}

/// Connects the floor for `spec`, with up to `connections` pooled connections where the client
/// pools (the same count as the backend's pool).
///
/// # Errors
/// [`BenchError::Connect`] naming the backend.
pub async fn connect(spec: &BackendSpec, connections: u32) -> Result<Arc<dyn Floor>, BenchError> {
    let fail = |source: BoxError| BenchError::Connect {
        backend: spec.name(),
        url: spec.url().map(redact_url).unwrap_or_default(),
        source,
    };
    let timeout = Duration::from_secs(5);
    let floor: Arc<dyn Floor> = match spec {
        BackendSpec::Memory => Arc::new(MokaFloor(moka::future::Cache::builder().build())),
        BackendSpec::Sqlite(url) => {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| fail(e.into()))?
                .create_if_missing(true)
                .busy_timeout(Duration::from_secs(5));
            let (options, max) = if in_memory {
                (options, 1)
            } else {
                (options.journal_mode(SqliteJournalMode::Wal), connections)
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .min_connections(u32::from(in_memory))
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options)
                .await
                .map_err(|e| fail(e.into()))?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS bench_floor (id TEXT PRIMARY KEY, data BLOB NOT NULL)",
            )
            .execute(&pool)
            .await
            .map_err(|e| fail(e.into()))?;
            Arc::new(SqlFloor::Sqlite(pool))
        }
        BackendSpec::Postgres(url) => {
            let pool = PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(timeout)
                .connect(url)
                .await
                .map_err(|e| fail(e.into()))?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS bench_floor (id TEXT PRIMARY KEY, data BYTEA NOT NULL)",
            )
            .execute(&pool)
            .await
            .map_err(|e| fail(e.into()))?;
            Arc::new(SqlFloor::Postgres(pool))
        }
        BackendSpec::Mysql(url) => {
            let pool = MySqlPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(timeout)
                .connect(url)
                .await
                .map_err(|e| fail(e.into()))?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS bench_floor \
                 (id VARCHAR(64) PRIMARY KEY, data LONGBLOB NOT NULL)",
            )
            .execute(&pool)
            .await
            .map_err(|e| fail(e.into()))?;
            Arc::new(SqlFloor::Mysql(pool))
        }
        BackendSpec::Redis(url) => {
            let client = redis::Client::open(url.as_str()).map_err(|e| fail(e.into()))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_number_of_retries(0);
            let conn = redis::aio::ConnectionManager::new_with_config(client, config)
                .await
                .map_err(|e| fail(e.into()))?;
            Arc::new(RedisFloor::Standalone(conn))
        }
        BackendSpec::RedisCluster(url) => {
            let client = redis::cluster::ClusterClientBuilder::new(cluster_nodes(url))
                .connection_timeout(timeout)
                .build()
                .map_err(|e| fail(e.into()))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| fail(e.into()))?;
            Arc::new(RedisFloor::Cluster(conn))
        }
    };
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_split_into_nodes() {
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            cluster_nodes("redis+cluster://:pw@h:1,g:2"),
            ["redis://:pw@h:1", "redis://:pw@g:2"]
        );
    }
}
