//! The PostgreSQL dialect: every operation is one `SELECT` of a PL/pgSQL function installed by
//! `migrations/postgres/` — one statement, one round trip (with sqlx's per-connection statement
//! cache, Bind/Execute/Sync go out together). The functions document their binds and replies;
//! calling them is shared with MySQL (`routines`). Item lists travel as `BYTEA[]` arrays, and a
//! session's items are stored that way too, in its row (migration 0003): a read is one row.
//! `signal`: the release signal (`LISTEN`/`NOTIFY`).

mod signal;

use std::collections::BTreeSet;

use session_core::Items;
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgRow, PgSslMode};
use sqlx::{Executor, Postgres, Row};

use crate::dialect::{ReleaseSignal, Reply};
use crate::migrate::Embedded;
use crate::routines::{Calls, Query, RoutineDb};

impl RoutineDb for Postgres {
    const BACKEND: &'static str = "postgres";

    const MIGRATIONS: &'static [Embedded] = &[
        (
            1,
            "schema",
            include_str!("../../migrations/postgres/0001_schema.sql"),
        ),
        (
            2,
            "release records nothing",
            include_str!("../../migrations/postgres/0002_release_records_nothing.sql"),
        ),
        (
            3,
            "refresh window",
            include_str!("../../migrations/postgres/0003_refresh_window.sql"),
        ),
    ];

    const CALLS: Calls<&'static str> = Calls {
        read: "SELECT * FROM {prefix}read($1, $2, $3)",
        acquire: "SELECT * FROM {prefix}acquire($1, $2, $3, $4, $5)",
        commit: "SELECT {prefix}commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        release: "SELECT {prefix}release($1, $2, $3, $4)",
        create: "SELECT {prefix}create($1, $2, $3, $4, $5, $6, $7)",
        remove: "SELECT {prefix}remove($1, $2, $3)",
        touch: "SELECT {prefix}touch($1, $2, $3)",
        write_concurrent: "SELECT {prefix}write_concurrent($1, $2, $3, $4, $5, $6, $7, $8)",
        delete: "SELECT {prefix}delete($1, $2)",
        change_id: "SELECT {prefix}change_id($1, $2, $3, $4)",
        purge: "SELECT {prefix}purge($1, $2)",
    };

    fn require_tls(options: PgConnectOptions) -> PgConnectOptions {
        options.ssl_mode(PgSslMode::Require)
    }

    /// The functions rely on READ COMMITTED (a fresh snapshot per statement), whatever the
    /// server's `default_transaction_isolation` says. Their statements look rows up by a unique
    /// key, so one generic plan serves every call: planning once per connection, not per call.
    fn pool_options(pool: PoolOptions<Self>) -> PoolOptions<Self> {
        pool.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
                )
                .await?;
                conn.execute("SET plan_cache_mode = force_generic_plan")
                    .await?;
                Ok(())
            })
        })
    }

    /// The key of the transaction-scoped advisory lock that lets one purger run at a time.
    fn purge_lock(prefix: &str) -> Option<i64> {
        Some(lock_key(prefix))
    }

    /// Names and values as two `BYTEA[]`s, in the same order.
    fn bind_set(query: Query<Self>, items: &Items) -> Query<Self> {
        query
            .bind(items.keys().map(|n| n.as_bytes()).collect::<Vec<_>>())
            .bind(items.values().map(|v| v.as_bytes()).collect::<Vec<_>>())
    }

    fn bind_removed(query: Query<Self>, names: &BTreeSet<String>) -> Query<Self> {
        query.bind(names.iter().map(|n| n.as_bytes()).collect::<Vec<_>>())
    }

    /// Statuses are `INT`.
    fn status(row: &PgRow) -> Result<i64, sqlx::Error> {
        row.try_get::<i32, _>(0).map(i64::from)
    }

    /// One row: status, token, age_ms, timeout_ms, initialize, names, values (`BYTEA[]`s).
    fn session(rows: Vec<PgRow>) -> Result<Reply, sqlx::Error> {
        let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
        let names: Option<Vec<Vec<u8>>> = row.try_get(5)?;
        let values: Option<Vec<Vec<u8>>> = row.try_get(6)?;
        let (names, values) = (names.unwrap_or_default(), values.unwrap_or_default());
        if names.len() != values.len() {
            return Err(sqlx::Error::Protocol(
                "item names and values differ in number".into(),
            ));
        }
        Ok(Reply {
            status: Self::status(row)?,
            token: row.try_get(1)?,
            age_ms: row.try_get(2)?,
            timeout_ms: row.try_get(3)?,
            initialize: row.try_get::<Option<bool>, _>(4)?.unwrap_or(false),
            items: names.into_iter().zip(values).collect(),
        })
    }

    fn signal(connect: &PgConnectOptions, prefix: &str) -> Option<Box<dyn ReleaseSignal>> {
        Some(Box::new(signal::PgSignal::new(connect.clone(), prefix)))
    }
}

/// A stable 64-bit advisory-lock key for one table prefix (FNV-1a), so purgers of different
/// prefixes in one database do not wait for each other.
fn lock_key(prefix: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"backend-sql purge ".iter().chain(prefix.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_per_prefix() {
        assert_ne!(lock_key("a_"), lock_key("b_"));
        assert_eq!(lock_key("a_"), lock_key("a_"));
    }
}
