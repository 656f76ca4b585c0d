//! The PostgreSQL dialect: every operation is one `SELECT` of a PL/pgSQL function installed by
//! `migrations/postgres/` — one statement, one round trip (with sqlx's per-connection statement
//! cache, Bind/Execute/Sync go out together). The functions document their binds and replies;
//! calling them is shared with MySQL (`routines`). Item lists travel as `BYTEA[]` arrays.

use std::collections::BTreeSet;

use session_core::Items;
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgRow, PgSslMode};
use sqlx::{Executor, Postgres, Row};

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
    ];

    const CALLS: Calls<&'static str> = Calls {
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

    fn require_tls(options: PgConnectOptions) -> PgConnectOptions {
        options.ssl_mode(PgSslMode::Require)
    }

    /// The functions rely on READ COMMITTED (a fresh snapshot per statement), whatever the
    /// server's `default_transaction_isolation` says.
    fn pool_options(pool: PoolOptions<Self>) -> PoolOptions<Self> {
        pool.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
                )
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

    /// `initialize` is a `BOOLEAN`.
    fn initialize(row: &PgRow) -> Result<bool, sqlx::Error> {
        Ok(row.try_get::<Option<bool>, _>(4)?.unwrap_or(false))
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
