//! The PostgreSQL dialect: every operation is one `SELECT` of a PL/pgSQL function installed by
//! `migrations/postgres/` — one statement, one round trip (with sqlx's per-connection statement
//! cache, Bind/Execute/Sync go out together). The functions document their binds and replies.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{Config, Delta, Items, Operation, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{AssertSqlSafe, Executor, Row};

use crate::dialect::{CallTemplates, Calls};
use crate::dialect::{Dialect, Key, Reply, Token, lock_key};
use crate::error::classify;
use crate::migrate::{self, Embedded};
use crate::options::SqlOptions;

pub(crate) const BACKEND: &str = "postgres";

const MIGRATIONS: &[Embedded] = &[(
    1,
    "schema",
    include_str!("../../migrations/postgres/0001_schema.sql"),
)];

/// The calls to the routines the migration installs (`{prefix}` is spliced in at connect).
const CALLS: CallTemplates = CallTemplates {
    read: "SELECT * FROM {prefix}read($1, $2, $3)",
    acquire: "SELECT * FROM {prefix}acquire($1, $2, $3, $4)",
    commit: "SELECT {prefix}commit($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    release: "SELECT {prefix}release($1, $2, $3)",
    create: "SELECT {prefix}create($1, $2, $3, $4, $5, $6)",
    remove: "SELECT {prefix}remove($1, $2, $3)",
    touch: "SELECT {prefix}touch($1, $2, $3)",
    write_concurrent: "SELECT {prefix}write_concurrent($1, $2, $3, $4, $5, $6, $7)",
    delete: "SELECT {prefix}delete($1, $2)",
    change_id: "SELECT {prefix}change_id($1, $2, $3, $4)",
    purge: "SELECT {prefix}purge($1, $2)",
};

/// The PostgreSQL dialect: a pool, the prefixed calls and the purge lock key.
#[derive(Debug)]
pub(crate) struct PgDialect {
    pool: PgPool,
    sql: Calls,
    purge_lock: i64,
}

fn q(sql: &str) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
}

/// Byte strings bound as one `BYTEA[]`.
type ByteArray<'a> = Vec<&'a [u8]>;

/// A delta as array binds: set names, set values, removed names.
fn arrays(delta: &Delta) -> (ByteArray<'_>, ByteArray<'_>, ByteArray<'_>) {
    let names = delta.set.keys().map(|n| n.as_bytes()).collect();
    let values = delta.set.values().map(|v| v.as_bytes()).collect();
    let removed = delta.removed.iter().map(|n| n.as_bytes()).collect();
    (names, values, removed)
}

fn reply(rows: Vec<PgRow>) -> Result<Reply, sqlx::Error> {
    let mut out = Reply::default();
    for row in rows {
        let name: Option<Vec<u8>> = row.try_get(5)?;
        match name {
            Some(name) => out.items.push((name, row.try_get::<Vec<u8>, _>(6)?)),
            None => {
                out.status = i64::from(row.try_get::<i32, _>(0)?);
                out.token = row.try_get(1)?;
                out.age_ms = row.try_get(2)?;
                out.timeout_ms = row.try_get(3)?;
                out.initialize = row.try_get::<Option<bool>, _>(4)?.unwrap_or(false);
            }
        }
    }
    Ok(out)
}

impl PgDialect {
    pub(crate) async fn connect(url: &str, config: &Config, options: &SqlOptions) -> Result<Self> {
        let err = |e| classify(BACKEND, Operation::Connect, e);
        let mut connect = PgConnectOptions::from_str(url).map_err(err)?;
        if config.ssl() && !crate::dialect::url_sets_ssl_mode(url) {
            connect = connect.ssl_mode(PgSslMode::Require);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections())
            // No ping before each operation: it would be a second round trip on the operation's
            // path. A connection that died while idle fails its next operation as `Unavailable`
            // (transient: retried). (sqlx still pings once when a connection returns to the pool,
            // in the background, after the operation has its reply.)
            .test_before_acquire(false)
            .acquire_timeout(
                config
                    .connection_timeout()
                    .unwrap_or(Duration::from_secs(10)),
            )
            // The functions rely on READ COMMITTED (a fresh snapshot per statement), whatever the
            // server's default_transaction_isolation says.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .map_err(err)?;
        if options.migrate() {
            migrate::on_pool(&pool, MIGRATIONS, options.table_prefix())
                .await
                .map_err(err)?;
        }
        Ok(Self {
            pool,
            sql: Calls::new(options.table_prefix(), &CALLS),
            purge_lock: lock_key(options.table_prefix()),
        })
    }

    async fn status(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<i64, sqlx::Error> {
        let row = query.fetch_one(&self.pool).await?;
        Ok(i64::from(row.try_get::<i32, _>(0)?))
    }
}

#[async_trait]
impl Dialect for PgDialect {
    async fn read(&self, key: Key<'_>, keep: i32) -> Result<Reply, sqlx::Error> {
        let rows = q(&self.sql.read)
            .bind(key.app)
            .bind(key.sid)
            .bind(keep)
            .fetch_all(&self.pool)
            .await?;
        reply(rows)
    }

    async fn acquire(&self, key: Key<'_>, token: Token, ttl_ms: i64) -> Result<Reply, sqlx::Error> {
        let rows = q(&self.sql.acquire)
            .bind(key.app)
            .bind(key.sid)
            .bind(&token[..])
            .bind(ttl_ms)
            .fetch_all(&self.pool)
            .await?;
        reply(rows)
    }

    async fn commit(
        &self,
        key: Key<'_>,
        token: Token,
        delta: &Delta,
        timeout_ms: i64,
        fingerprint: i64,
    ) -> Result<i64, sqlx::Error> {
        let (names, values, removed) = arrays(delta);
        self.status(
            q(&self.sql.commit)
                .bind(key.app)
                .bind(key.sid)
                .bind(&token[..])
                .bind(fingerprint)
                .bind(timeout_ms)
                .bind(delta.cleared)
                .bind(names)
                .bind(values)
                .bind(removed),
        )
        .await
    }

    async fn release(&self, key: Key<'_>, token: Token) -> Result<i64, sqlx::Error> {
        self.status(
            q(&self.sql.release)
                .bind(key.app)
                .bind(key.sid)
                .bind(&token[..]),
        )
        .await
    }

    async fn create(
        &self,
        key: Key<'_>,
        items: &Items,
        timeout_ms: i64,
        initialize: bool,
    ) -> Result<i64, sqlx::Error> {
        let names: Vec<&[u8]> = items.keys().map(|n| n.as_bytes()).collect();
        let values: Vec<&[u8]> = items.values().map(|v| v.as_bytes()).collect();
        self.status(
            q(&self.sql.create)
                .bind(key.app)
                .bind(key.sid)
                .bind(timeout_ms)
                .bind(initialize)
                .bind(names)
                .bind(values),
        )
        .await
    }

    async fn remove(&self, key: Key<'_>, token: Token) -> Result<i64, sqlx::Error> {
        self.status(
            q(&self.sql.remove)
                .bind(key.app)
                .bind(key.sid)
                .bind(&token[..]),
        )
        .await
    }

    async fn touch(&self, key: Key<'_>, keep: i32) -> Result<i64, sqlx::Error> {
        self.status(q(&self.sql.touch).bind(key.app).bind(key.sid).bind(keep))
            .await
    }

    async fn write_concurrent(
        &self,
        key: Key<'_>,
        delta: &Delta,
        timeout_ms: i64,
    ) -> Result<i64, sqlx::Error> {
        let (names, values, removed) = arrays(delta);
        self.status(
            q(&self.sql.write_concurrent)
                .bind(key.app)
                .bind(key.sid)
                .bind(timeout_ms)
                .bind(delta.cleared)
                .bind(names)
                .bind(values)
                .bind(removed),
        )
        .await
    }

    async fn delete(&self, key: Key<'_>) -> Result<i64, sqlx::Error> {
        self.status(q(&self.sql.delete).bind(key.app).bind(key.sid))
            .await
    }

    async fn change_id(
        &self,
        key: Key<'_>,
        new_sid: &[u8],
        token: Token,
    ) -> Result<i64, sqlx::Error> {
        self.status(
            q(&self.sql.change_id)
                .bind(key.app)
                .bind(key.sid)
                .bind(new_sid)
                .bind(&token[..]),
        )
        .await
    }

    async fn purge(&self, batch: i64) -> Result<u64, sqlx::Error> {
        let row = q(&self.sql.purge)
            .bind(self.purge_lock)
            .bind(batch)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
