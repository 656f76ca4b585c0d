//! The SQLite dialect. SQLite runs in-process, so "one round trip" does not apply: an operation
//! that writes is one `BEGIN IMMEDIATE` transaction (it takes the write lock up front, so two
//! operations never both read and then both try to upgrade; the second waits on `busy_timeout`).
//! `read`, `touch` and `acquire` first try one plain `SELECT` (its own read transaction, no write
//! lock), which answers them whenever nothing needs writing (docs/contract.md §1, the refresh
//! window): only when a slide is due, the initialize flag must be cleared or the lock may be taken
//! do they run the writing transaction, which decides again on what it finds. The decision per
//! operation is the one documented in `dialect`, written here as Rust around small statements.
//!
//! `sqlite::memory:` uses a single pooled connection that is never recycled: the database lives
//! exactly as long as the store.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{Delta, Items, Operation, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use crate::dialect::{self, Dialect, Key, Op, Reply, SETTLED_COMMIT, Token};
use crate::error::classify;
use crate::migrate::{self, Embedded, migrator, with_prefix};
use crate::options::SqlOptions;

const BACKEND: &str = "sqlite";

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
    /// The pure read: the clock, the session's header and its items in one statement.
    peek: String,
    live: String,
    slide: String,
    clear_init: String,
    items: String,
    lock: String,
    settle: String,
    release: String,
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
            // One row per item (one row with NULL name and value for a session without items or
            // a locked one), each carrying the clock and the header.
            peek: p(&format!(
                "WITH c(now) AS ({NOW}) \
                 SELECT c.now, s.expires_at, s.timeout_ms, s.lock_token, s.locked_at, s.initialize, \
                        i.name, i.value \
                   FROM c JOIN {{prefix}}sessions s ON s.app = ? AND s.sid = ? AND s.expires_at > c.now \
                   LEFT JOIN {{prefix}}items i ON i.session_pk = s.pk AND ? AND s.lock_token IS NULL"
            )),
            live: p(
                "SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, \
                     settled_token, settled_kind, settled_fp FROM {prefix}sessions \
                     WHERE app = ? AND sid = ? AND expires_at > ?",
            ),
            // now + timeout + w, with w = timeout * window / 100 (integer division).
            slide: p(
                "UPDATE {prefix}sessions SET expires_at = ? + timeout_ms + timeout_ms * ? / 100 \
                 WHERE pk = ?",
            ),
            clear_init: p("UPDATE {prefix}sessions SET initialize = 0 WHERE pk = ?"),
            items: p("SELECT name, value FROM {prefix}items WHERE session_pk = ?"),
            lock: p("UPDATE {prefix}sessions SET lock_token = ?, locked_at = ? WHERE pk = ?"),
            settle: p(
                "UPDATE {prefix}sessions SET lock_token = NULL, locked_at = NULL, \
                       settled_token = ?, settled_kind = ?, settled_fp = ? WHERE pk = ?",
            ),
            // The settled triple stays (the rule in `dialect`'s docs).
            release: p(
                "UPDATE {prefix}sessions SET lock_token = NULL, locked_at = NULL WHERE pk = ?",
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
                       VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (app, sid) DO NOTHING",
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
    /// SQLite has no network: `connectionTimeoutInMilliseconds` does not apply; the pool acquire
    /// timeout bounds opening the file.
    pub(crate) async fn connect(url: &str, options: &SqlOptions) -> Result<Self> {
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
            .acquire_timeout(options.pool_acquire_timeout_for(true))
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
}

impl SqliteDialect {
    /// The pure path of `read`, `touch` and `acquire` (docs/contract.md §1): one `SELECT`, in its
    /// own read transaction, answers them when nothing needs writing: the session is missing, or
    /// no slide is due and neither the initialize flag must be cleared (read) nor the lock may be
    /// taken (acquire, locked by another). `None`: run the writing transaction.
    async fn peek(&self, op: Op<'_>) -> Result<Option<Reply>, sqlx::Error> {
        let (key, window, items, acquire) = match op {
            Op::Read { key, window } => (key, window, true, None),
            Op::Touch { key, window } => (key, window, false, None),
            Op::Acquire {
                key,
                token,
                ttl_ms,
                window,
            } => (key, window, false, Some((token, ttl_ms))),
            _ => return Ok(None),
        };
        let rows = q(&self.sql.peek)
            .bind(key.app)
            .bind(key.sid)
            .bind(items)
            .fetch_all(&self.pool)
            .await?;
        let Some(first) = rows.first() else {
            // Missing: the same status (0) for all three.
            return Ok(Some(Reply::default()));
        };
        let now: i64 = first.try_get(0)?;
        let expires_at: i64 = first.try_get(1)?;
        let timeout_ms: i64 = first.try_get(2)?;
        let lock_token: Option<Vec<u8>> = first.try_get(3)?;
        let locked_at: Option<i64> = first.try_get(4)?;
        let initialize: bool = first.try_get(5)?;
        if slide_due(window, expires_at, timeout_ms, now) {
            return Ok(None);
        }
        let age = now - locked_at.unwrap_or(now);
        let locked = |status| Reply {
            status,
            token: lock_token.clone(),
            age_ms: Some(age),
            ..Reply::default()
        };
        Ok(match (op, acquire) {
            (Op::Touch { .. }, _) => Some(Reply::status(dialect::touch::TOUCHED)),
            (_, Some((token, ttl_ms))) => match &lock_token {
                Some(holder) if holder[..] != token[..] && age < ttl_ms => {
                    Some(locked(dialect::acquire::LOCKED))
                }
                _ => None,
            },
            _ if lock_token.is_some() => Some(locked(dialect::read::LOCKED)),
            _ if initialize => None,
            _ => {
                let items = rows
                    .iter()
                    .filter_map(|r| match r.try_get::<Option<Vec<u8>>, _>(6) {
                        Ok(Some(name)) => Some(r.try_get(7).map(|value| (name, value))),
                        Ok(None) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<_, sqlx::Error>>()?;
                Some(Reply {
                    status: dialect::read::FOUND,
                    timeout_ms: Some(timeout_ms),
                    items,
                    ..Reply::default()
                })
            }
        })
    }
}

/// Whether an access at `now` must write a slide (docs/contract.md §1): always with `window` 0,
/// otherwise when less than the timeout is left.
fn slide_due(window: i32, expires_at: i64, timeout_ms: i64, now: i64) -> bool {
    window == 0 || expires_at < now.saturating_add(timeout_ms)
}

#[async_trait]
impl Dialect for SqliteDialect {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// Answers `op` from one plain `SELECT` where it writes nothing ([`SqliteDialect::peek`]),
    /// otherwise runs it in one `BEGIN IMMEDIATE` transaction, committed if it succeeds (dropping
    /// the future rolls it back).
    async fn run(&self, op: Op<'_>) -> Result<Reply, sqlx::Error> {
        if let Some(reply) = self.peek(op).await? {
            return Ok(reply);
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let conn: &mut SqliteConnection = &mut tx;
        let now = sqlx::query_scalar(NOW).fetch_one(&mut *conn).await?;
        let mut t = Tx {
            conn,
            now,
            sql: &self.sql,
        };
        let reply = match op {
            Op::Read { key, window } => t.read(key, window).await?,
            Op::Acquire {
                key,
                token,
                ttl_ms,
                window,
            } => t.acquire(key, token, ttl_ms, window).await?,
            Op::Commit {
                key,
                token,
                delta,
                timeout_ms,
                fingerprint,
                window,
            } => Reply::status(
                t.commit(key, token, delta, timeout_ms, fingerprint, window)
                    .await?,
            ),
            Op::Release { key, token, window } => {
                Reply::status(t.release(key, token, window).await?)
            }
            Op::Create {
                key,
                items,
                timeout_ms,
                initialize,
                window,
            } => Reply::status(t.create(key, items, timeout_ms, initialize, window).await?),
            Op::Remove { key, token } => Reply::status(t.remove(key, token).await?),
            Op::Touch { key, window } => Reply::status(t.touch(key, window).await?),
            Op::WriteConcurrent {
                key,
                delta,
                timeout_ms,
                window,
            } => Reply::status(t.write_concurrent(key, delta, timeout_ms, window).await?),
            Op::Delete { key } => Reply::status(t.delete(key).await?),
            Op::ChangeId {
                key,
                new_sid,
                token,
            } => Reply::status(t.change_id(key, new_sid, token).await?),
            Op::Purge { batch } => Reply::status(t.purge(batch).await?),
        };
        tx.commit().await?;
        Ok(reply)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// One operation's transaction: its connection, the database clock when it began, the statements.
struct Tx<'t> {
    conn: &'t mut SqliteConnection,
    now: i64,
    sql: &'t Sql,
}

/// The shared steps.
impl Tx<'_> {
    async fn live(&mut self, key: Key<'_>) -> Result<Option<Live>, sqlx::Error> {
        let row = q(&self.sql.live)
            .bind(key.app)
            .bind(key.sid)
            .bind(self.now)
            .fetch_optional(&mut *self.conn)
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

    /// The reply of a `read` or `acquire` that found the session: its timeout, `initialize` flag
    /// (cleared in the row: it is reported once) and items.
    async fn found(&mut self, status: i64, s: &Live) -> Result<Reply, sqlx::Error> {
        if s.initialize {
            self.exec(&self.sql.clear_init, s.pk).await?;
        }
        let rows = q(&self.sql.items)
            .bind(s.pk)
            .fetch_all(&mut *self.conn)
            .await?;
        let items = rows
            .into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Reply {
            status,
            timeout_ms: Some(s.timeout_ms),
            initialize: s.initialize,
            items,
            ..Reply::default()
        })
    }

    /// Runs `sql`, whose one parameter is a session's `pk`.
    async fn exec(&mut self, sql: &str, pk: i64) -> Result<u64, sqlx::Error> {
        Ok(q(sql)
            .bind(pk)
            .execute(&mut *self.conn)
            .await?
            .rows_affected())
    }

    /// Slides to `now + timeout + w` (the row's timeout).
    async fn slide(&mut self, pk: i64, window: i32) -> Result<(), sqlx::Error> {
        q(&self.sql.slide)
            .bind(self.now)
            .bind(window)
            .bind(pk)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    /// Whether an access to `s` must write a slide.
    fn due(&self, s: &Live, window: i32) -> bool {
        slide_due(window, s.expires_at, s.timeout_ms, self.now)
    }

    async fn upsert_items(&mut self, pk: i64, items: &Items) -> Result<(), sqlx::Error> {
        for (name, value) in items {
            q(&self.sql.upsert_item)
                .bind(pk)
                .bind(name.as_bytes())
                .bind(value.as_bytes())
                .execute(&mut *self.conn)
                .await?;
        }
        Ok(())
    }

    async fn apply(
        &mut self, pk: i64, delta: &Delta, timeout_ms: i64, window: i32,
    ) -> Result<(), sqlx::Error> {
        if delta.cleared {
            self.exec(&self.sql.delete_items, pk).await?;
        }
        for name in &delta.removed {
            q(&self.sql.delete_item)
                .bind(pk)
                .bind(name.as_bytes())
                .execute(&mut *self.conn)
                .await?;
        }
        self.upsert_items(pk, &delta.set).await?;
        q(&self.sql.set_timeout)
            .bind(timeout_ms)
            .bind(pk)
            .execute(&mut *self.conn)
            .await?;
        self.slide(pk, window).await
    }

    /// Deletes an expired row under (`app`, `sid`): it is dead, and a new one may take its key.
    async fn delete_expired(&mut self, app: &[u8], sid: &[u8]) -> Result<(), sqlx::Error> {
        q(&self.sql.delete_expired)
            .bind(app)
            .bind(sid)
            .bind(self.now)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}

/// The operations, each the decision documented in `dialect`.
impl Tx<'_> {
    async fn read(&mut self, key: Key<'_>, window: i32) -> Result<Reply, sqlx::Error> {
        let Some(s) = self.live(key).await? else {
            return Ok(Reply::default());
        };
        // Clearing `initialize` (unlocked: reported here, once) is a write: it slides with it.
        if self.due(&s, window) || (s.initialize && s.lock_token.is_none()) {
            self.slide(s.pk, window).await?;
        }
        match s.lock_token {
            Some(token) => Ok(Reply {
                status: dialect::read::LOCKED,
                token: Some(token),
                age_ms: Some(self.now - s.locked_at.unwrap_or(self.now)),
                ..Reply::default()
            }),
            None => self.found(dialect::read::FOUND, &s).await,
        }
    }

    async fn acquire(
        &mut self, key: Key<'_>, token: Token, ttl_ms: i64, window: i32,
    ) -> Result<Reply, sqlx::Error> {
        let Some(s) = self.live(key).await? else {
            return Ok(Reply::default());
        };
        let age = self.now - s.locked_at.unwrap_or(self.now);
        match &s.lock_token {
            Some(holder) if holder[..] != token[..] && age < ttl_ms => {
                if self.due(&s, window) {
                    self.slide(s.pk, window).await?;
                }
                Ok(Reply {
                    status: dialect::acquire::LOCKED,
                    token: Some(holder.clone()),
                    age_ms: Some(age),
                    ..Reply::default()
                })
            }
            held => {
                // Ours already (a retried acquire: the lock keeps its age), or free, or stale and
                // taken over in this same transaction. The expiry moves only when a slide is due,
                // as for every access (docs/contract.md §1).
                if self.due(&s, window) {
                    self.slide(s.pk, window).await?;
                }
                if held.as_deref() != Some(&token[..]) {
                    q(&self.sql.lock)
                        .bind(&token[..])
                        .bind(self.now)
                        .bind(s.pk)
                        .execute(&mut *self.conn)
                        .await?;
                }
                self.found(dialect::acquire::ACQUIRED, &s).await
            }
        }
    }

    async fn commit(
        &mut self, key: Key<'_>, token: Token, delta: &Delta, timeout_ms: i64, fingerprint: i64,
        window: i32,
    ) -> Result<i64, sqlx::Error> {
        Ok(match self.live(key).await? {
            Some(s) if s.lock_token.as_deref() == Some(&token[..]) => {
                self.apply(s.pk, delta, timeout_ms, window).await?;
                q(&self.sql.settle)
                    .bind(&token[..])
                    .bind(SETTLED_COMMIT)
                    .bind(fingerprint)
                    .bind(s.pk)
                    .execute(&mut *self.conn)
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
        })
    }

    async fn release(
        &mut self, key: Key<'_>, token: Token, window: i32,
    ) -> Result<i64, sqlx::Error> {
        Ok(match self.live(key).await? {
            Some(s) if s.lock_token.as_deref() == Some(&token[..]) => {
                self.exec(&self.sql.release, s.pk).await?;
                if self.due(&s, window) {
                    self.slide(s.pk, window).await?;
                }
                dialect::release::RELEASED
            }
            _ => dialect::release::LOCK_LOST,
        })
    }

    async fn create(
        &mut self, key: Key<'_>, items: &Items, timeout_ms: i64, initialize: bool, window: i32,
    ) -> Result<i64, sqlx::Error> {
        // An expired row under this key is dead: replace it (docs/contract.md §1, "Timeout": it
        // does not exist).
        self.delete_expired(key.app, key.sid).await?;
        let inserted = q(&self.sql.insert)
            .bind(key.app)
            .bind(key.sid)
            .bind(self.now + timeout_ms + timeout_ms * i64::from(window) / 100)
            .bind(timeout_ms)
            .bind(initialize)
            .bind(self.now)
            .execute(&mut *self.conn)
            .await?;
        if inserted.rows_affected() == 0 {
            return Ok(dialect::create::ALREADY_EXISTS);
        }
        self.upsert_items(inserted.last_insert_rowid(), items)
            .await?;
        Ok(dialect::create::CREATED)
    }

    async fn remove(&mut self, key: Key<'_>, token: Token) -> Result<i64, sqlx::Error> {
        Ok(match self.live(key).await? {
            None => dialect::remove::MISSING,
            Some(s) if s.lock_token.as_deref() == Some(&token[..]) => {
                self.exec(&self.sql.delete_pk, s.pk).await?;
                dialect::remove::REMOVED
            }
            Some(_) => dialect::remove::LOCK_LOST,
        })
    }

    async fn touch(&mut self, key: Key<'_>, window: i32) -> Result<i64, sqlx::Error> {
        let Some(s) = self.live(key).await? else {
            return Ok(dialect::touch::MISSING);
        };
        if self.due(&s, window) {
            self.slide(s.pk, window).await?;
        }
        Ok(dialect::touch::TOUCHED)
    }

    async fn write_concurrent(
        &mut self, key: Key<'_>, delta: &Delta, timeout_ms: i64, window: i32,
    ) -> Result<i64, sqlx::Error> {
        let Some(s) = self.live(key).await? else {
            return Ok(dialect::concurrent::MISSING);
        };
        self.apply(s.pk, delta, timeout_ms, window).await?;
        Ok(dialect::concurrent::COMMITTED)
    }

    async fn delete(&mut self, key: Key<'_>) -> Result<i64, sqlx::Error> {
        let Some(s) = self.live(key).await? else {
            return Ok(dialect::delete::MISSING);
        };
        self.exec(&self.sql.delete_pk, s.pk).await?;
        Ok(dialect::delete::REMOVED)
    }

    async fn change_id(
        &mut self, key: Key<'_>, new_sid: &[u8], token: Token,
    ) -> Result<i64, sqlx::Error> {
        let Some(s) = self.live(key).await? else {
            return Ok(dialect::change_id::LOCK_LOST);
        };
        if s.lock_token.as_deref() != Some(&token[..]) {
            return Ok(dialect::change_id::LOCK_LOST);
        }
        let taken = q(&self.sql.exists_live)
            .bind(key.app)
            .bind(new_sid)
            .bind(self.now)
            .fetch_optional(&mut *self.conn)
            .await?
            .is_some();
        if taken {
            return Ok(dialect::change_id::ALREADY_EXISTS);
        }
        self.delete_expired(key.app, new_sid).await?;
        q(&self.sql.move_id)
            .bind(new_sid)
            .bind(s.pk)
            .execute(&mut *self.conn)
            .await?;
        Ok(dialect::change_id::CHANGED)
    }

    /// One writer at a time is SQLite's own rule; the transaction is the "one runner" lock.
    async fn purge(&mut self, batch: i64) -> Result<i64, sqlx::Error> {
        let purged = q(&self.sql.purge)
            .bind(self.now)
            .bind(batch)
            .execute(&mut *self.conn)
            .await?
            .rows_affected();
        Ok(i64::try_from(purged).unwrap_or(i64::MAX))
    }
}
