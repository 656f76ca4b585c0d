//! The SQLite dialect. SQLite runs in-process, so "one round trip" does not apply: each operation
//! is one `BEGIN IMMEDIATE` transaction (it takes the write lock up front, so two operations never
//! both read and then both try to upgrade; the second waits on `busy_timeout`). The decision per
//! operation is the one documented in `dialect`, written here as Rust around small statements.
//!
//! `sqlite::memory:` uses a single pooled connection that is never recycled: the database lives
//! exactly as long as the store.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{Config, Delta, Items, Operation, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use crate::dialect::{self, Dialect, Key, Reply, SETTLED_COMMIT, SETTLED_RELEASE, Token};
use crate::error::classify;
use crate::migrate::{self, Embedded, migrator, with_prefix};
use crate::options::SqlOptions;

pub(crate) const BACKEND: &str = "sqlite";

const MIGRATIONS: &[Embedded] = &[(
    1,
    "schema",
    include_str!("../../migrations/sqlite/0001_schema.sql"),
)];

/// The database clock in milliseconds since the Unix epoch.
const NOW: &str = "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

/// The statements, with the prefix spliced in once at connect.
#[derive(Debug)]
struct Sql {
    live: String,
    slide: String,
    clear_init: String,
    items: String,
    lock: String,
    unlock: String,
    delete_items: String,
    delete_item: String,
    upsert_item: String,
    set_timeout: String,
    delete_expired: String,
    insert: String,
    delete_pk: String,
    exists_live: String,
    move_id: String,
    purge: String,
}

impl Sql {
    fn new(prefix: &str) -> Self {
        let p = |s: &str| with_prefix(s, prefix);
        Self {
            live: p(
                "SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, \
                     settled_token, settled_kind, settled_fp FROM {prefix}sessions \
                     WHERE app = ? AND sid = ? AND expires_at > ?",
            ),
            slide: p("UPDATE {prefix}sessions SET expires_at = ? + timeout_ms WHERE pk = ?"),
            clear_init: p("UPDATE {prefix}sessions SET initialize = 0 WHERE pk = ?"),
            items: p("SELECT name, value FROM {prefix}items WHERE session_pk = ?"),
            lock: p("UPDATE {prefix}sessions SET lock_token = ?, locked_at = ? WHERE pk = ?"),
            unlock: p(
                "UPDATE {prefix}sessions SET lock_token = NULL, locked_at = NULL, \
                       settled_token = ?, settled_kind = ?, settled_fp = ? WHERE pk = ?",
            ),
            delete_items: p("DELETE FROM {prefix}items WHERE session_pk = ?"),
            delete_item: p("DELETE FROM {prefix}items WHERE session_pk = ? AND name = ?"),
            upsert_item: p(
                "INSERT INTO {prefix}items (session_pk, name, value) VALUES (?, ?, ?) \
                            ON CONFLICT (session_pk, name) DO UPDATE SET value = excluded.value",
            ),
            set_timeout: p("UPDATE {prefix}sessions SET timeout_ms = ? WHERE pk = ?"),
            delete_expired: p(
                "DELETE FROM {prefix}sessions WHERE app = ? AND sid = ? AND expires_at <= ?",
            ),
            insert: p(
                "INSERT INTO {prefix}sessions (app, sid, expires_at, timeout_ms, initialize, created_at) \
                       VALUES (?, ?, ? + ?, ?, ?, ?) ON CONFLICT (app, sid) DO NOTHING",
            ),
            delete_pk: p("DELETE FROM {prefix}sessions WHERE pk = ?"),
            exists_live: p(
                "SELECT 1 FROM {prefix}sessions WHERE app = ? AND sid = ? AND expires_at > ?",
            ),
            move_id: p("UPDATE {prefix}sessions SET sid = ? WHERE pk = ?"),
            // rowid IN (... LIMIT n): SQLite's DELETE has no LIMIT unless compiled with it; the
            // subquery walks the expiry index.
            purge: p(
                "DELETE FROM {prefix}sessions WHERE pk IN (SELECT pk FROM {prefix}sessions \
                      WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
            ),
        }
    }
}

/// A live session row.
struct Live {
    pk: i64,
    expires_at: i64,
    timeout_ms: i64,
    lock_token: Option<Vec<u8>>,
    locked_at: Option<i64>,
    initialize: bool,
    settled_token: Option<Vec<u8>>,
    settled_kind: Option<i64>,
    settled_fp: Option<i64>,
}

/// The SQLite dialect: a pool and the prefixed statements.
#[derive(Debug)]
pub(crate) struct SqliteDialect {
    pool: SqlitePool,
    sql: Sql,
}

fn q(sql: &str) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
}

impl SqliteDialect {
    pub(crate) async fn connect(url: &str, config: &Config, options: &SqlOptions) -> Result<Self> {
        let err = |e| classify(BACKEND, Operation::Connect, e);
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(err)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(options.max_connections())
        };
        let connect = if in_memory {
            connect
        } else {
            connect
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
        };
        let pool = pool
            .acquire_timeout(
                config
                    .connection_timeout()
                    .unwrap_or(Duration::from_secs(30)),
            )
            .connect_with(connect)
            .await
            .map_err(err)?;
        if options.migrate() {
            // BEGIN IMMEDIATE first: two processes migrating one file serialise on the write lock
            // (sqlx's SQLite migrator has no lock of its own); the migrator's own transactions
            // become savepoints inside this one.
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
            migrate::run(&migrator(MIGRATIONS, options.table_prefix()), &mut *tx)
                .await
                .map_err(|e| err(sqlx::Error::Migrate(Box::new(e))))?;
            tx.commit().await.map_err(err)?;
        }
        Ok(Self {
            pool,
            sql: Sql::new(options.table_prefix()),
        })
    }

    async fn now(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(NOW).fetch_one(conn).await
    }

    async fn live(
        &self,
        conn: &mut SqliteConnection,
        key: Key<'_>,
        now: i64,
    ) -> Result<Option<Live>, sqlx::Error> {
        let row = q(&self.sql.live)
            .bind(key.app)
            .bind(key.sid)
            .bind(now)
            .fetch_optional(conn)
            .await?;
        row.map(|r| {
            Ok(Live {
                pk: r.try_get(0)?,
                expires_at: r.try_get(1)?,
                timeout_ms: r.try_get(2)?,
                lock_token: r.try_get(3)?,
                locked_at: r.try_get(4)?,
                initialize: r.try_get(5)?,
                settled_token: r.try_get(6)?,
                settled_kind: r.try_get(7)?,
                settled_fp: r.try_get(8)?,
            })
        })
        .transpose()
    }

    async fn items(
        &self,
        conn: &mut SqliteConnection,
        pk: i64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, sqlx::Error> {
        let rows = q(&self.sql.items).bind(pk).fetch_all(conn).await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn exec(
        &self,
        conn: &mut SqliteConnection,
        sql: &str,
        pk: i64,
    ) -> Result<u64, sqlx::Error> {
        Ok(q(sql).bind(pk).execute(conn).await?.rows_affected())
    }

    async fn slide(
        &self,
        conn: &mut SqliteConnection,
        now: i64,
        pk: i64,
    ) -> Result<(), sqlx::Error> {
        q(&self.sql.slide).bind(now).bind(pk).execute(conn).await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut SqliteConnection,
        pk: i64,
        delta: &Delta,
        timeout_ms: i64,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        if delta.cleared {
            self.exec(conn, &self.sql.delete_items, pk).await?;
        }
        for name in &delta.removed {
            q(&self.sql.delete_item)
                .bind(pk)
                .bind(name.as_bytes())
                .execute(&mut *conn)
                .await?;
        }
        for (name, value) in &delta.set {
            q(&self.sql.upsert_item)
                .bind(pk)
                .bind(name.as_bytes())
                .bind(value.as_bytes())
                .execute(&mut *conn)
                .await?;
        }
        q(&self.sql.set_timeout)
            .bind(timeout_ms)
            .bind(pk)
            .execute(&mut *conn)
            .await?;
        self.slide(conn, now, pk).await
    }
}

/// Runs `$body` (an async block using `$conn: &mut SqliteConnection` and `$now`) in one
/// `BEGIN IMMEDIATE` transaction, committing if it returns `Ok`. Dropping the future rolls back.
macro_rules! in_tx {
    ($self:ident, |$conn:ident, $now:ident| $body:expr) => {{
        let mut tx = $self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let out = {
            let $conn: &mut SqliteConnection = &mut tx;
            let $now = SqliteDialect::now($conn).await?;
            $body
        };
        tx.commit().await?;
        Ok(out)
    }};
}

#[async_trait]
impl Dialect for SqliteDialect {
    async fn read(&self, key: Key<'_>, keep: i32) -> Result<Reply, sqlx::Error> {
        in_tx!(self, |conn, now| {
            match self.live(conn, key, now).await? {
                None => Reply::default(),
                Some(s) => {
                    let remaining = s.expires_at - now;
                    if remaining * 1000 <= s.timeout_ms * i64::from(keep) {
                        self.slide(conn, now, s.pk).await?;
                    }
                    match s.lock_token {
                        Some(token) => Reply {
                            status: dialect::read::LOCKED,
                            token: Some(token),
                            age_ms: Some(now - s.locked_at.unwrap_or(now)),
                            ..Reply::default()
                        },
                        None => {
                            if s.initialize {
                                self.slide(conn, now, s.pk).await?;
                                self.exec(conn, &self.sql.clear_init, s.pk).await?;
                            }
                            Reply {
                                status: dialect::read::FOUND,
                                timeout_ms: Some(s.timeout_ms),
                                initialize: s.initialize,
                                items: self.items(conn, s.pk).await?,
                                ..Reply::default()
                            }
                        }
                    }
                }
            }
        })
    }

    async fn acquire(&self, key: Key<'_>, token: Token, ttl_ms: i64) -> Result<Reply, sqlx::Error> {
        in_tx!(self, |conn, now| {
            match self.live(conn, key, now).await? {
                None => Reply::default(),
                Some(s) => {
                    self.slide(conn, now, s.pk).await?;
                    let age = now - s.locked_at.unwrap_or(now);
                    match s.lock_token {
                        Some(holder) if holder != token && age < ttl_ms => Reply {
                            status: dialect::acquire::LOCKED,
                            token: Some(holder),
                            age_ms: Some(age),
                            ..Reply::default()
                        },
                        held => {
                            // Ours already (a retried acquire: the lock keeps its age), or free, or
                            // stale and taken over in this same transaction.
                            if held.as_deref() != Some(&token[..]) {
                                q(&self.sql.lock)
                                    .bind(&token[..])
                                    .bind(now)
                                    .bind(s.pk)
                                    .execute(&mut *conn)
                                    .await?;
                            }
                            if s.initialize {
                                self.exec(conn, &self.sql.clear_init, s.pk).await?;
                            }
                            Reply {
                                status: dialect::acquire::ACQUIRED,
                                timeout_ms: Some(s.timeout_ms),
                                initialize: s.initialize,
                                items: self.items(conn, s.pk).await?,
                                ..Reply::default()
                            }
                        }
                    }
                }
            }
        })
    }

    async fn commit(
        &self,
        key: Key<'_>,
        token: Token,
        delta: &Delta,
        timeout_ms: i64,
        fingerprint: i64,
    ) -> Result<i64, sqlx::Error> {
        in_tx!(self, |conn, now| {
            match self.live(conn, key, now).await? {
                Some(s) if s.lock_token.as_deref() == Some(&token[..]) => {
                    self.apply(conn, s.pk, delta, timeout_ms, now).await?;
                    q(&self.sql.unlock)
                        .bind(&token[..])
                        .bind(SETTLED_COMMIT)
                        .bind(fingerprint)
                        .bind(s.pk)
                        .execute(&mut *conn)
                        .await?;
                    dialect::commit::COMMITTED
                }
                Some(s)
                    if s.settled_token.as_deref() == Some(&token[..])
                        && s.settled_kind == Some(i64::from(SETTLED_COMMIT))
                        && s.settled_fp == Some(fingerprint) =>
                {
                    dialect::commit::COMMITTED
                }
                _ => dialect::commit::LOCK_LOST,
            }
        })
    }

    async fn release(&self, key: Key<'_>, token: Token) -> Result<i64, sqlx::Error> {
        in_tx!(self, |conn, now| {
            match self.live(conn, key, now).await? {
                Some(s) if s.lock_token.as_deref() == Some(&token[..]) => {
                    self.slide(conn, now, s.pk).await?;
                    q(&self.sql.unlock)
                        .bind(&token[..])
                        .bind(SETTLED_RELEASE)
                        .bind(None::<i64>)
                        .bind(s.pk)
                        .execute(&mut *conn)
                        .await?;
                    dialect::release::RELEASED
                }
                Some(s)
                    if s.settled_token.as_deref() == Some(&token[..])
                        && s.settled_kind == Some(i64::from(SETTLED_RELEASE)) =>
                {
                    dialect::release::RELEASED
                }
                _ => dialect::release::LOCK_LOST,
            }
        })
    }

    async fn create(
        &self,
        key: Key<'_>,
        items: &Items,
        timeout_ms: i64,
        initialize: bool,
    ) -> Result<i64, sqlx::Error> {
        in_tx!(self, |conn, now| {
            // An expired row under this key is dead: replace it (SPEC: it does not exist).
            q(&self.sql.delete_expired)
                .bind(key.app)
                .bind(key.sid)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            let inserted = q(&self.sql.insert)
                .bind(key.app)
                .bind(key.sid)
                .bind(now)
                .bind(timeout_ms)
                .bind(timeout_ms)
                .bind(initialize)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            if inserted.rows_affected() == 0 {
                dialect::create::ALREADY_EXISTS
            } else {
                let pk = inserted.last_insert_rowid();
                for (name, value) in items {
                    q(&self.sql.upsert_item)
                        .bind(pk)
                        .bind(name.as_bytes())
                        .bind(value.as_bytes())
                        .execute(&mut *conn)
                        .await?;
                }
                dialect::create::CREATED
            }
        })
    }

    async fn remove(&self, key: Key<'_>, token: Token) -> Result<i64, sqlx::Error> {
        in_tx!(self, |conn, now| {
            match self.live(conn, key, now).await? {
                None => dialect::remove::MISSING,
                Some(s) if s.lock_token.as_deref() == Some(&token[..]) => {
                    self.exec(conn, &self.sql.delete_pk, s.pk).await?;
                    dialect::remove::REMOVED
                }
                Some(_) => dialect::remove::LOCK_LOST,
            }
        })
    }

    async fn touch(&self, key: Key<'_>, keep: i32) -> Result<i64, sqlx::Error> {
        in_tx!(self, |conn, now| {
            match self.live(conn, key, now).await? {
                None => dialect::touch::MISSING,
                Some(s) => {
                    if (s.expires_at - now) * 1000 <= s.timeout_ms * i64::from(keep) {
                        self.slide(conn, now, s.pk).await?;
                    }
                    dialect::touch::TOUCHED
                }
            }
        })
    }

    async fn write_concurrent(
        &self,
        key: Key<'_>,
        delta: &Delta,
        timeout_ms: i64,
    ) -> Result<i64, sqlx::Error> {
        in_tx!(self, |conn, now| {
            match self.live(conn, key, now).await? {
                None => dialect::concurrent::MISSING,
                Some(s) => {
                    self.apply(conn, s.pk, delta, timeout_ms, now).await?;
                    dialect::concurrent::COMMITTED
                }
            }
        })
    }

    async fn delete(&self, key: Key<'_>) -> Result<i64, sqlx::Error> {
        in_tx!(self, |conn, now| {
            match self.live(conn, key, now).await? {
                None => dialect::delete::MISSING,
                Some(s) => {
                    self.exec(conn, &self.sql.delete_pk, s.pk).await?;
                    dialect::delete::REMOVED
                }
            }
        })
    }

    async fn change_id(
        &self,
        key: Key<'_>,
        new_sid: &[u8],
        token: Token,
    ) -> Result<i64, sqlx::Error> {
        in_tx!(self, |conn, now| {
            match self.live(conn, key, now).await? {
                Some(s) if s.lock_token.as_deref() == Some(&token[..]) => {
                    let taken = q(&self.sql.exists_live)
                        .bind(key.app)
                        .bind(new_sid)
                        .bind(now)
                        .fetch_optional(&mut *conn)
                        .await?
                        .is_some();
                    if taken {
                        dialect::change_id::ALREADY_EXISTS
                    } else {
                        q(&self.sql.delete_expired)
                            .bind(key.app)
                            .bind(new_sid)
                            .bind(now)
                            .execute(&mut *conn)
                            .await?;
                        q(&self.sql.move_id)
                            .bind(new_sid)
                            .bind(s.pk)
                            .execute(&mut *conn)
                            .await?;
                        dialect::change_id::CHANGED
                    }
                }
                _ => dialect::change_id::LOCK_LOST,
            }
        })
    }

    async fn purge(&self, batch: i64) -> Result<u64, sqlx::Error> {
        // One writer at a time is SQLite's own rule; the transaction is the "one runner" lock.
        in_tx!(self, |conn, now| {
            q(&self.sql.purge)
                .bind(now)
                .bind(batch)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        })
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
