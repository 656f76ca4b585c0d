//! What the Postgres and MySQL dialects share. On both, every operation is one call of a stored
//! routine that the migrations install: one statement, one round trip, the decision (the table in
//! `dialect`) taken inside the database. The routines of the two databases take the same arguments
//! in the same order and answer the same rows, so connecting, binding, running and decoding are
//! written once, here, in [`RoutineDialect`]; what differs (the call statements, how a list of
//! items travels, the column types of a reply, TLS, session settings) is each database's
//! [`RoutineDb`] implementation, in `postgres/` and `mysql/`.
//!
//! The rows a routine answers: `read` and `acquire` a session reply, which each database decodes
//! itself ([`RoutineDb::session`]: one row with the items as arrays on Postgres, as one packed
//! blob on MySQL); every other routine one row whose first column is its status (a purge: how
//! many sessions it deleted).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::str::FromStr;

use async_trait::async_trait;
use session_core::{Config, Delta, Items, Operation, Result};
use sqlx::pool::PoolOptions;
use sqlx::{AssertSqlSafe, Pool, Row};

use crate::dialect::{Dialect, Key, Op, ReleaseSignal, Reply, Token};
use crate::error::classify;
use crate::health::Health;
use crate::migrate::{self, Embedded};
use crate::options::SqlOptions;

/// A query of `DB` being bound.
pub(crate) type Query<DB> = sqlx::query::Query<'static, DB, <DB as sqlx::Database>::Arguments>;

/// The connect options of `DB`'s connections.
pub(crate) type ConnectOptions<DB> =
    <<DB as sqlx::Database>::Connection as sqlx::Connection>::Options;

/// The statement that calls each operation's routine: as a database writes it, with a `{prefix}`
/// placeholder (`Calls<&'static str>`), and with the table prefix spliced in, once, at connect
/// (`Calls<String>`).
#[derive(Debug)]
pub(crate) struct Calls<S> {
    pub(crate) read: S,
    pub(crate) acquire: S,
    pub(crate) commit: S,
    pub(crate) release: S,
    pub(crate) create: S,
    pub(crate) remove: S,
    pub(crate) touch: S,
    pub(crate) write_concurrent: S,
    pub(crate) delete: S,
    pub(crate) change_id: S,
    pub(crate) purge: S,
}

impl Calls<&'static str> {
    fn with_prefix(&self, prefix: &str) -> Calls<String> {
        let p = |s: &str| migrate::with_prefix(s, prefix);
        Calls {
            read: p(self.read),
            acquire: p(self.acquire),
            commit: p(self.commit),
            release: p(self.release),
            create: p(self.create),
            remove: p(self.remove),
            touch: p(self.touch),
            write_concurrent: p(self.write_concurrent),
            delete: p(self.delete),
            change_id: p(self.change_id),
            purge: p(self.purge),
        }
    }
}

/// What one database whose operations are stored routines says for itself.
pub(crate) trait RoutineDb:
    sqlx::Database<Connection: sqlx::migrate::Migrate, Arguments: sqlx::IntoArguments<Self>>
{
    /// The backend name in errors and in `SessionStore::backend`.
    const BACKEND: &'static str;
    /// The migrations that install the tables and routines (`migrations/<database>/`).
    const MIGRATIONS: &'static [Embedded];
    /// How each routine is called.
    const CALLS: Calls<&'static str>;

    /// `url` as sqlx reads it (default: unchanged).
    fn url(url: &str) -> Cow<'_, str> {
        Cow::Borrowed(url)
    }

    /// `options` requiring TLS (encrypted, the certificate not checked): `Config::ssl` on a URL
    /// that does not choose its TLS mode itself.
    fn require_tls(options: ConnectOptions<Self>) -> ConnectOptions<Self>;

    /// Pool settings of this database's own (default: none).
    fn pool_options(pool: PoolOptions<Self>) -> PoolOptions<Self> {
        pool
    }

    /// The most sessions one purge statement deletes ([`Dialect::purge_statement_max`]).
    const PURGE_STATEMENT_MAX: usize = crate::dialect::PURGE_STATEMENT_MAX;

    /// The argument the purge routine takes before the batch size, if it takes one, for tables
    /// under `prefix` (default: none).
    fn purge_lock(_prefix: &str) -> Option<i64> {
        None
    }

    /// Binds the items to set (names and values).
    fn bind_set(query: Query<Self>, items: &Items) -> Query<Self>;

    /// Binds the names of the items to remove.
    fn bind_removed(query: Query<Self>, names: &BTreeSet<String>) -> Query<Self>;

    /// The status: the first column of a reply row.
    fn status(row: &Self::Row) -> Result<i64, sqlx::Error>;

    /// The reply of `read` and `acquire`, from the rows of their call.
    fn session(rows: Vec<Self::Row>) -> Result<Reply, sqlx::Error>;

    /// The release signal of stores with table prefix `prefix` on the database `connect` names,
    /// where the database has one (default: none).
    fn signal(_connect: &ConnectOptions<Self>, _prefix: &str) -> Option<Box<dyn ReleaseSignal>> {
        None
    }
}

/// One argument of a routine call.
#[derive(Clone, Copy)]
enum Arg<'a> {
    /// The session's application and id: two parameters.
    Key(Key<'a>),
    Token(Token),
    Bytes(&'a [u8]),
    Int(i32),
    BigInt(i64),
    Bool(bool),
    /// Items to set: see [`RoutineDb::bind_set`].
    Set(&'a Items),
    /// A delta: `cleared`, the items to set, the names to remove ([`RoutineDb::bind_removed`]).
    Delta(&'a Delta),
}

/// What a routine answers (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `read`, `acquire`: the session's row (status, header, items).
    Session,
    /// One row, the status first.
    Status,
    /// One row, a `BIGINT` count first (purge).
    Count,
}

/// A database whose operations are stored routines: its pool, the server's health (`health`: fast
/// failure while the server cannot be reached), the prefixed calls, and the purge routine's
/// leading argument.
#[derive(Debug)]
pub(crate) struct RoutineDialect<DB: RoutineDb> {
    pool: Pool<DB>,
    health: Health<DB>,
    sql: Calls<String>,
    purge_lock: Option<i64>,
    signal: Option<Box<dyn ReleaseSignal>>,
}

impl<DB: RoutineDb> RoutineDialect<DB> {
    /// Connects to the database `url` names: checks that one connection can be made within the
    /// connect timeout, builds the pool (which opens its own connections lazily) and its health
    /// (probes connect with the same options, within the same timeout), and runs the migrations.
    pub(crate) async fn connect(url: &str, config: &Config, options: &SqlOptions) -> Result<Self> {
        let err = |e| classify(DB::BACKEND, Operation::Connect, e);
        let url = DB::url(url);
        let mut connect = ConnectOptions::<DB>::from_str(&url).map_err(err)?;
        if config.ssl() && !url_sets_ssl_mode(&url) {
            connect = DB::require_tls(connect);
        }
        crate::schemes::check_connect(&connect, config.connection_timeout(), DB::BACKEND).await?;
        let signal = DB::signal(&connect, options.table_prefix());
        let pool = DB::pool_options(PoolOptions::new())
            .max_connections(options.max_connections())
            // No ping before each operation: it would be a second round trip on the operation's
            // path. A connection that died while idle fails its next operation as `Unavailable`
            // (transient: retried), and `health` then closes the other idle ones. (sqlx still
            // pings once when a connection returns to the pool, in the background, after the
            // operation has its reply.)
            .test_before_acquire(false)
            .acquire_timeout(options.pool_acquire_timeout_for(false))
            .connect_lazy_with(connect.clone());
        let health = Health::new(pool.clone(), connect, config.connection_timeout());
        if options.migrate() {
            migrate::on_pool(&pool, DB::MIGRATIONS, options.table_prefix())
                .await
                .map_err(err)?;
        }
        Ok(Self {
            pool,
            health,
            sql: DB::CALLS.with_prefix(options.table_prefix()),
            purge_lock: DB::purge_lock(options.table_prefix()),
            signal,
        })
    }

    /// The call `op` makes: the statement and its arguments, in the routine's order.
    fn call<'a>(&self, op: Op<'a>) -> (&str, Vec<Arg<'a>>) {
        let sql = &self.sql;
        match op {
            Op::Read { key, window } => (&sql.read, vec![Arg::Key(key), Arg::Int(window)]),
            Op::Acquire {
                key,
                token,
                ttl_ms,
                window,
            } => (
                &sql.acquire,
                vec![
                    Arg::Key(key),
                    Arg::Token(token),
                    Arg::BigInt(ttl_ms),
                    Arg::Int(window),
                ],
            ),
            Op::Commit {
                key,
                token,
                delta,
                timeout_ms,
                fingerprint,
                window,
            } => (
                &sql.commit,
                vec![
                    Arg::Key(key),
                    Arg::Token(token),
                    Arg::BigInt(fingerprint),
                    Arg::BigInt(timeout_ms),
                    Arg::Int(window),
                    Arg::Delta(delta),
                ],
            ),
            Op::Release { key, token, window } => (
                &sql.release,
                vec![Arg::Key(key), Arg::Token(token), Arg::Int(window)],
            ),
            Op::Create {
                key,
                items,
                timeout_ms,
                initialize,
                window,
            } => (
                &sql.create,
                vec![
                    Arg::Key(key),
                    Arg::BigInt(timeout_ms),
                    Arg::Int(window),
                    Arg::Bool(initialize),
                    Arg::Set(items),
                ],
            ),
            Op::Remove { key, token } => (&sql.remove, vec![Arg::Key(key), Arg::Token(token)]),
            Op::Touch { key, window } => (&sql.touch, vec![Arg::Key(key), Arg::Int(window)]),
            Op::WriteConcurrent {
                key,
                delta,
                timeout_ms,
                window,
            } => (
                &sql.write_concurrent,
                vec![
                    Arg::Key(key),
                    Arg::BigInt(timeout_ms),
                    Arg::Int(window),
                    Arg::Delta(delta),
                ],
            ),
            Op::Delete { key } => (&sql.delete, vec![Arg::Key(key)]),
            Op::ChangeId {
                key,
                new_sid,
                token,
            } => (
                &sql.change_id,
                vec![Arg::Key(key), Arg::Bytes(new_sid), Arg::Token(token)],
            ),
            Op::Purge { batch } => (
                &sql.purge,
                self.purge_lock
                    .into_iter()
                    .chain([batch])
                    .map(Arg::BigInt)
                    .collect(),
            ),
        }
    }
}

/// The bounds are the sqlx encodings, decodings and executor that the shared flow uses, named once
/// here: Postgres and MySQL have them all.
#[async_trait]
impl<DB> Dialect for RoutineDialect<DB>
where
    DB: RoutineDb,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i32: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> Vec<u8>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    async fn run(&self, op: Op<'_>) -> Result<Reply, sqlx::Error> {
        let answer = match op {
            Op::Read { .. } | Op::Acquire { .. } => Answer::Session,
            Op::Purge { .. } => Answer::Count,
            _ => Answer::Status,
        };
        let (sql, args) = self.call(op);
        // One statement: bind every argument, run it, decode the rows.
        let mut query: Query<DB> = sqlx::query(AssertSqlSafe(sql.to_owned()));
        for arg in args {
            query = match arg {
                Arg::Key(key) => query.bind(key.app).bind(key.sid),
                Arg::Token(token) => query.bind(&token[..]),
                Arg::Bytes(bytes) => query.bind(bytes),
                Arg::Int(n) => query.bind(n),
                Arg::BigInt(n) => query.bind(n),
                Arg::Bool(b) => query.bind(b),
                Arg::Set(items) => DB::bind_set(query, items),
                Arg::Delta(delta) => {
                    let query = DB::bind_set(query.bind(delta.cleared), &delta.set);
                    DB::bind_removed(query, &delta.removed)
                }
            };
        }
        // The connection through `health`: while the server cannot be reached, this fails at
        // once rather than after the pool's acquire timeout.
        let mut conn = self.health.connection().await?;
        let rows = query.fetch_all(&mut *conn).await;
        self.health.after(conn, &rows);
        let rows = rows?;
        if answer == Answer::Session {
            return DB::session(rows);
        }
        let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
        Ok(Reply::status(match answer {
            Answer::Count => row.try_get(0)?,
            _ => DB::status(row)?,
        }))
    }

    fn purge_statement_max(&self) -> usize {
        DB::PURGE_STATEMENT_MAX
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn signal(&self) -> Option<&dyn ReleaseSignal> {
        self.signal.as_deref()
    }
}

/// Whether a Postgres or MySQL URL chooses its TLS mode itself: sqlx reads both `sslmode` and
/// `ssl-mode` in the query, for either database. A URL's own setting wins over `Config::ssl`.
fn url_sets_ssl_mode(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').any(|pair| {
        matches!(
            pair.split_once('=').map_or(pair, |(k, _)| k),
            "sslmode" | "ssl-mode"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_mode_in_either_spelling() {
        assert!(url_sets_ssl_mode("postgres://h/db?sslmode=disable"));
        assert!(url_sets_ssl_mode("postgres://h/db?a=1&ssl-mode=disable"));
        assert!(url_sets_ssl_mode("mysql://h/db?sslmode=DISABLED"));
        assert!(!url_sets_ssl_mode("mysql://h/db?ssl-ca=/x.crt"));
        assert!(!url_sets_ssl_mode("mysql://u:sslmode=@h/db"));
        assert!(!url_sets_ssl_mode("postgres://h/db"));
    }
}
