//! The SQLite dialect. SQLite runs in-process, so "one round trip" does not apply: an operation
//! that writes is one `BEGIN IMMEDIATE` transaction (it takes the write lock up front, so two
//! operations never both read and then both try to upgrade; the second waits on `busy_timeout`).
//! `read`, `touch` and `acquire` first try one plain `SELECT` (its own read transaction, no write
//! lock), which answers them whenever nothing needs writing (docs/contract.md §1, the refresh
//! window): only when a slide is due, the initialize flag must be cleared or the lock may be taken
//! do they run the writing transaction, which decides again on what it finds. The decision per
//! operation is the one documented in `dialect`, written here as Rust around small statements.
//!
//! A session's items live in its own row, packed into one `BLOB` ([`pack`], migration 0002), so a
//! read is one row. A commit takes only the delta and merges it into the blob in Rust inside its
//! write transaction (docs/contract.md §2: SQLite runs in process, so the read-merge-write is one
//! transaction under the write lock, and no bytes cross a network).
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

use crate::dialect::{self, Dialect, Key, Op, Reply, SETTLED_COMMIT, Token, unpack};
use crate::error::classify;
use crate::migrate::{self, Embedded, migrator, with_prefix};
use crate::options::SqlOptions;

const BACKEND: &str = "sqlite";

const MIGRATIONS: &[Embedded] = &[
    (
        1,
        "schema",
        include_str!("../../migrations/sqlite/0001_schema.sql"),
    ),
    (
        2,
        "items in the session row",
        include_str!("../../migrations/sqlite/0002_items_in_row.sql"),
    ),
];

/// The database clock in milliseconds since the Unix epoch.
const NOW: &str = "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

/// The statements, with the prefix spliced in once at connect.
#[derive(Debug)]
struct Sql {
    /// The pure read: the clock, the session's header and its items in one row.
    peek: String,
    live: String,
    slide: String,
    clear_init: String,
    lock: String,
    settle: String,
    release: String,
    write_items: String,
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
            // One row: the clock, the header, and the packed items (NULL unless asked for and
            // the session is unlocked).
            // (SQLite evaluates `'now'` once per statement: both clocks read the same instant.)
            peek: p(&format!(
                "SELECT ({NOW}), expires_at, timeout_ms, lock_token, locked_at, initialize, \
                        CASE WHEN ? AND lock_token IS NULL THEN items END \
                   FROM {{prefix}}sessions WHERE app = ? AND sid = ? AND expires_at > ({NOW})"
            )),
            live: p(
                "SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, \
                     settled_token, settled_kind, settled_fp, items FROM {prefix}sessions \
                     WHERE app = ? AND sid = ? AND expires_at > ?",
            ),
            // now + timeout + w, with w = timeout * window / 100 (integer division).
            slide: p(
                "UPDATE {prefix}sessions SET expires_at = ? + timeout_ms + timeout_ms * ? / 100 \
                 WHERE pk = ?",
            ),
            clear_init: p("UPDATE {prefix}sessions SET initialize = 0 WHERE pk = ?"),
            lock: p("UPDATE {prefix}sessions SET lock_token = ?, locked_at = ? WHERE pk = ?"),
            settle: p(
                "UPDATE {prefix}sessions SET lock_token = NULL, locked_at = NULL, \
                       settled_token = ?, settled_kind = ?, settled_fp = ? WHERE pk = ?",
            ),
            // The settled triple stays (the rule in `dialect`'s docs).
            release: p(
                "UPDATE {prefix}sessions SET lock_token = NULL, locked_at = NULL WHERE pk = ?",
            ),
            // The merged items, the new timeout and the slide (computed by the caller).
            write_items: p(
                "UPDATE {prefix}sessions SET items = ?, timeout_ms = ?, expires_at = ? WHERE pk = ?",
            ),
            delete_expired: p(
                "DELETE FROM {prefix}sessions WHERE app = ? AND sid = ? AND expires_at <= ?",
            ),
            insert: p("INSERT INTO {prefix}sessions \
                        (app, sid, expires_at, timeout_ms, initialize, created_at, items) \
                       VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (app, sid) DO NOTHING"),
            delete_pk: p("DELETE FROM {prefix}sessions WHERE pk = ?"),
            exists_live: p(
                "SELECT 1 FROM {prefix}sessions WHERE app = ? AND sid = ? AND expires_at > ?",
            ),
            move_id: p("UPDATE {prefix}sessions SET sid = ? WHERE pk = ?"),
            // rowid IN (... LIMIT n): SQLite's DELETE has no LIMIT unless compiled with it. The
            // subquery walks the expiry index up to one bound, the transaction's clock read once
            // (a parameter, so an index bound: `SEARCH ... (expires_at<?)`), and stops after n: it
            // reads only entries it deletes, one when nothing expired (test
            // `purge_searches_the_expiry_index`).
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
    /// The packed items ([`pack`]).
    items: Vec<u8>,
}

/// Packs items as `[u32 BE name length][name][u32 BE value length][value]…`, the layout of the
/// `items` column (migration 0002 writes the same from SQL).
fn pack<'a>(items: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in items {
        for part in [name, value] {
            // Names are at most 256 bytes and values bounded by the maximum session size; a part
            // over 4 GiB cannot come from a valid session.
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// `packed` items after `delta` (docs/contract.md §2: cleared first, then removed, then set).
fn merge(packed: &[u8], delta: &Delta) -> Result<Vec<u8>, sqlx::Error> {
    let mut items = if delta.cleared {
        Vec::new()
    } else {
        unpack(packed)?
    };
    // A name that is not UTF-8 matches no delta name (and no store writes one).
    items.retain(|(name, _)| {
        !std::str::from_utf8(name)
            .is_ok_and(|n| delta.removed.contains(n) || delta.set.contains_key(n))
    });
    let kept = items.iter().map(|(n, v)| (&n[..], &v[..]));
    let set = delta.set.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    Ok(pack(kept.chain(set)))
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
        let row = q(&self.sql.peek)
            .bind(items)
            .bind(key.app)
            .bind(key.sid)
            .fetch_optional(&self.pool)
            .await?;
        let Some(first) = row else {
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
                let packed: Option<&[u8]> = first.try_get(6)?;
                let items = unpack(packed.unwrap_or_default())?;
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
                items: r.try_get(9)?,
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
        let items = unpack(&s.items)?;
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

    /// `now + timeout + w` for `timeout_ms` and `window` (docs/contract.md §1).
    fn slid(&self, timeout_ms: i64, window: i32) -> i64 {
        self.now
            .saturating_add(timeout_ms)
            .saturating_add(timeout_ms.saturating_mul(i64::from(window)) / 100)
    }

    /// Merges `delta` into `s`'s items, stores the timeout and slides: one `UPDATE`.
    async fn apply(
        &mut self, s: &Live, delta: &Delta, timeout_ms: i64, window: i32,
    ) -> Result<(), sqlx::Error> {
        q(&self.sql.write_items)
            .bind(merge(&s.items, delta)?)
            .bind(timeout_ms)
            .bind(self.slid(timeout_ms, window))
            .bind(s.pk)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
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
                self.apply(&s, delta, timeout_ms, window).await?;
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
            .bind(self.slid(timeout_ms, window))
            .bind(timeout_ms)
            .bind(initialize)
            .bind(self.now)
            .bind(pack(
                items.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            ))
            .execute(&mut *self.conn)
            .await?;
        if inserted.rows_affected() == 0 {
            return Ok(dialect::create::ALREADY_EXISTS);
        }
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
        self.apply(&s, delta, timeout_ms, window).await?;
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

#[cfg(test)]
mod tests {
    use session_core::ItemValue;

    use super::*;

    fn items(pairs: &[(&str, &[u8])]) -> Items {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), ItemValue::from_bytes(v.to_vec())))
            .collect()
    }

    fn packed(items: &Items) -> Vec<u8> {
        pack(items.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn unpacked(blob: &[u8]) -> Items {
        unpack(blob)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), ItemValue::from_bytes(v)))
            .collect()
    }

    #[test]
    fn pack_is_length_prefixed_and_round_trips() {
        let blob = pack([(&b"ab"[..], &b""[..])]);
        assert_eq!(blob, b"\0\0\0\x02ab\0\0\0\0");
        let stored = items(&[("", b""), ("a\0'", b"\0two"), ("b", &[0xff; 300])]);
        assert_eq!(unpacked(&packed(&stored)), stored);
        assert!(unpack(b"").unwrap().is_empty());
    }

    #[test]
    fn truncated_blobs_are_errors() {
        let blob = packed(&items(&[("name", b"value")]));
        for end in 1..blob.len() {
            assert!(unpack(&blob[..end]).is_err(), "{end}");
        }
        assert!(unpack(&[0xff, 0xff, 0xff, 0xff, 1]).is_err());
    }

    /// The purge's plan, on a migrated database: the subquery searches the expiry index with
    /// the bound as its range (`expires_at<?`), never a scan of the table or of the whole index,
    /// and the delete finds each candidate by rowid.
    #[tokio::test]
    async fn purge_searches_the_expiry_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("plan.db").display());
        let options = SqlOptions::new()
            .with_table_prefix("plan_")
            .unwrap()
            .with_sweeper(None);
        let dialect = SqliteDialect::connect(&url, &options).await.unwrap();
        let rows = q(&format!("EXPLAIN QUERY PLAN {}", dialect.sql.purge))
            .bind(0i64)
            .bind(10i64)
            .fetch_all(&dialect.pool)
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect();
        let text = plan.join("\n");
        assert!(
            plan.iter().any(|d| d.starts_with(
                "SEARCH plan_sessions USING COVERING INDEX plan_sessions_expires (expires_at<?)"
            )),
            "{text}"
        );
        assert!(
            plan.iter()
                .any(|d| d.starts_with("SEARCH plan_sessions USING INTEGER PRIMARY KEY")),
            "{text}"
        );
        assert!(!plan.iter().any(|d| d.starts_with("SCAN")), "{text}");
        dialect.close().await;
    }

    #[test]
    fn merge_applies_the_delta_like_apply_to() {
        let stored = items(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
        let deltas = [
            Delta::new(),
            Delta::new().with_set("b", ItemValue::from_bytes(b"x".to_vec())),
            Delta::new()
                .with_removed("a")
                .with_set("d", ItemValue::from_bytes(b"4".to_vec())),
            Delta::new()
                .with_cleared()
                .with_set("c", ItemValue::from_bytes(b"y".to_vec())),
        ];
        for delta in deltas {
            let mut want = stored.clone();
            delta.apply_to(&mut want);
            let merged = merge(&packed(&stored), &delta).unwrap();
            assert_eq!(unpacked(&merged), want, "{delta:?}");
        }
    }
}

#[cfg(test)]
mod fuzz;
