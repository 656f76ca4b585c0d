//! The MySQL / MariaDB dialect: every operation is one `CALL` of a stored procedure installed by
//! `migrations/mysql/` — one prepared statement, one round trip, one transaction inside. Deltas
//! travel packed ([`pack`]) because MySQL has no array parameters.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{Config, Delta, Items, Operation, Result};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode};
use sqlx::{AssertSqlSafe, Row};

use crate::dialect::{CallTemplates, Calls};
use crate::dialect::{Dialect, Key, Reply, Token, pack};
use crate::error::classify;
use crate::migrate::{self, Embedded};
use crate::options::SqlOptions;

pub(crate) const BACKEND: &str = "mysql";

const MIGRATIONS: &[Embedded] = &[(
    1,
    "schema",
    include_str!("../../migrations/mysql/0001_schema.sql"),
)];

/// The calls to the routines the migration installs (`{prefix}` is spliced in at connect).
const CALLS: CallTemplates = CallTemplates {
    read: "CALL {prefix}read(?, ?, ?)",
    acquire: "CALL {prefix}acquire(?, ?, ?, ?)",
    commit: "CALL {prefix}commit(?, ?, ?, ?, ?, ?, ?, ?)",
    release: "CALL {prefix}release(?, ?, ?)",
    create: "CALL {prefix}create(?, ?, ?, ?, ?)",
    remove: "CALL {prefix}remove(?, ?, ?)",
    touch: "CALL {prefix}touch(?, ?, ?)",
    write_concurrent: "CALL {prefix}write_concurrent(?, ?, ?, ?, ?, ?)",
    delete: "CALL {prefix}delete(?, ?)",
    change_id: "CALL {prefix}change_id(?, ?, ?, ?)",
    purge: "CALL {prefix}purge(?)",
};

/// The MySQL dialect: a pool and the prefixed calls.
#[derive(Debug)]
pub(crate) struct MysqlDialect {
    pool: MySqlPool,
    sql: Calls,
}

type Query = sqlx::query::Query<'static, sqlx::MySql, sqlx::mysql::MySqlArguments>;

fn q(sql: &str) -> Query {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
}

fn packed_set(items: &Items) -> Vec<u8> {
    pack(items.iter().flat_map(|(n, v)| [n.as_bytes(), v.as_bytes()]))
}

fn packed_removed(delta: &Delta) -> Vec<u8> {
    pack(delta.removed.iter().map(|n| n.as_bytes()))
}

fn reply(rows: Vec<MySqlRow>) -> Result<Reply, sqlx::Error> {
    let mut out = Reply::default();
    for row in rows {
        let name: Option<Vec<u8>> = row.try_get(5)?;
        match name {
            Some(name) => out.items.push((name, row.try_get::<Vec<u8>, _>(6)?)),
            None => {
                out.status = row.try_get(0)?;
                out.token = row.try_get(1)?;
                out.age_ms = row.try_get(2)?;
                out.timeout_ms = row.try_get(3)?;
                out.initialize = row.try_get::<Option<i64>, _>(4)?.unwrap_or(0) != 0;
            }
        }
    }
    Ok(out)
}

impl MysqlDialect {
    pub(crate) async fn connect(url: &str, config: &Config, options: &SqlOptions) -> Result<Self> {
        let err = |e| classify(BACKEND, Operation::Connect, e);
        // sqlx reads `mysql://`; `mariadb://` is the same protocol.
        let url = match url.get(..10) {
            Some(s) if s.eq_ignore_ascii_case("mariadb://") => format!("mysql://{}", &url[10..]),
            _ => url.to_owned(),
        };
        let mut connect = MySqlConnectOptions::from_str(&url).map_err(err)?;
        if config.ssl() && !crate::dialect::url_sets_ssl_mode(&url) {
            connect = connect.ssl_mode(MySqlSslMode::Required);
        }
        let pool = MySqlPoolOptions::new()
            .max_connections(options.max_connections())
            // No ping before each operation (see the Postgres dialect).
            .test_before_acquire(false)
            .acquire_timeout(
                config
                    .connection_timeout()
                    .unwrap_or(Duration::from_secs(10)),
            )
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
        })
    }

    async fn rows(&self, query: Query) -> Result<Vec<MySqlRow>, sqlx::Error> {
        query.fetch_all(&self.pool).await
    }

    async fn status(&self, query: Query) -> Result<i64, sqlx::Error> {
        let rows = self.rows(query).await?;
        match rows.first() {
            Some(row) => row.try_get(0),
            None => Err(sqlx::Error::RowNotFound),
        }
    }
}

#[async_trait]
impl Dialect for MysqlDialect {
    async fn read(&self, key: Key<'_>, keep: i32) -> Result<Reply, sqlx::Error> {
        let q = q(&self.sql.read)
            .bind(key.app.to_vec())
            .bind(key.sid.to_vec())
            .bind(keep);
        reply(self.rows(q).await?)
    }

    async fn acquire(&self, key: Key<'_>, token: Token, ttl_ms: i64) -> Result<Reply, sqlx::Error> {
        let q = q(&self.sql.acquire)
            .bind(key.app.to_vec())
            .bind(key.sid.to_vec())
            .bind(token.to_vec())
            .bind(ttl_ms);
        reply(self.rows(q).await?)
    }

    async fn commit(
        &self,
        key: Key<'_>,
        token: Token,
        delta: &Delta,
        timeout_ms: i64,
        fingerprint: i64,
    ) -> Result<i64, sqlx::Error> {
        self.status(
            q(&self.sql.commit)
                .bind(key.app.to_vec())
                .bind(key.sid.to_vec())
                .bind(token.to_vec())
                .bind(fingerprint)
                .bind(timeout_ms)
                .bind(delta.cleared)
                .bind(packed_set(&delta.set))
                .bind(packed_removed(delta)),
        )
        .await
    }

    async fn release(&self, key: Key<'_>, token: Token) -> Result<i64, sqlx::Error> {
        self.status(
            q(&self.sql.release)
                .bind(key.app.to_vec())
                .bind(key.sid.to_vec())
                .bind(token.to_vec()),
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
        self.status(
            q(&self.sql.create)
                .bind(key.app.to_vec())
                .bind(key.sid.to_vec())
                .bind(timeout_ms)
                .bind(initialize)
                .bind(packed_set(items)),
        )
        .await
    }

    async fn remove(&self, key: Key<'_>, token: Token) -> Result<i64, sqlx::Error> {
        self.status(
            q(&self.sql.remove)
                .bind(key.app.to_vec())
                .bind(key.sid.to_vec())
                .bind(token.to_vec()),
        )
        .await
    }

    async fn touch(&self, key: Key<'_>, keep: i32) -> Result<i64, sqlx::Error> {
        self.status(
            q(&self.sql.touch)
                .bind(key.app.to_vec())
                .bind(key.sid.to_vec())
                .bind(keep),
        )
        .await
    }

    async fn write_concurrent(
        &self,
        key: Key<'_>,
        delta: &Delta,
        timeout_ms: i64,
    ) -> Result<i64, sqlx::Error> {
        self.status(
            q(&self.sql.write_concurrent)
                .bind(key.app.to_vec())
                .bind(key.sid.to_vec())
                .bind(timeout_ms)
                .bind(delta.cleared)
                .bind(packed_set(&delta.set))
                .bind(packed_removed(delta)),
        )
        .await
    }

    async fn delete(&self, key: Key<'_>) -> Result<i64, sqlx::Error> {
        self.status(
            q(&self.sql.delete)
                .bind(key.app.to_vec())
                .bind(key.sid.to_vec()),
        )
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
                .bind(key.app.to_vec())
                .bind(key.sid.to_vec())
                .bind(new_sid.to_vec())
                .bind(token.to_vec()),
        )
        .await
    }

    async fn purge(&self, batch: i64) -> Result<u64, sqlx::Error> {
        let n = self.status(q(&self.sql.purge).bind(batch)).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
