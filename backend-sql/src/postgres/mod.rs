//! The PostgreSQL dialect: every operation is one statement, one round trip: [`READ`], [`ACQUIRE`]
//! and [`COMMIT`] are plain SQL that call a function only on their rare paths (migration 0004); the
//! others one `SELECT` of a PL/pgSQL function installed by `migrations/postgres/` (with sqlx's
//! per-connection statement cache, Bind/Execute/Sync go out together). The functions document
//! their binds and replies; calling them is shared with MySQL (`routines`). Item lists travel as `BYTEA[]` arrays, and a
//! session's items are stored that way too, in its row (migration 0003): a read is one row. The
//! purge's index is on the minute `expires_at` falls in (migration 0005), not on `expires_at`, so a
//! commit that slides within the minute changes no indexed column and is a HOT update. The purge
//! (migration 0008) takes one bound per call, the current minute on the database clock, and
//! deletes only from the minutes before it: its index scan reads only rows it deletes, so a call
//! that finds nothing expired is one index probe however many sessions live, and a session is
//! purged at most a minute after it expired. A drain of many expired sessions continues each
//! statement after the last session the previous one took (migration 0009: a cursor on an index of
//! `(expires_bucket, pk)`), so it reads each index entry once instead of stepping over every entry
//! deleted before it.
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
        (
            4,
            "plain statements",
            include_str!("../../migrations/postgres/0004_plain_statements.sql"),
        ),
        (
            5,
            "expiry bucket",
            include_str!("../../migrations/postgres/0005_expiry_bucket.sql"),
        ),
        (
            6,
            "review fixes",
            include_str!("../../migrations/postgres/0006_review_fixes.sql"),
        ),
        (
            7,
            "release signal hides ids",
            include_str!("../../migrations/postgres/0007_release_signal_hides_ids.sql"),
        ),
        (
            8,
            "purge bound",
            include_str!("../../migrations/postgres/0008_purge_bound.sql"),
        ),
        (
            9,
            "purge cursor",
            include_str!("../../migrations/postgres/0009_purge_cursor.sql"),
        ),
    ];

    const CALLS: Calls<&'static str> = Calls {
        read: READ,
        acquire: ACQUIRE,
        commit: COMMIT,
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

    /// One row: status, token, age_ms, timeout_ms, initialize, names, values (`BYTEA[]`s); no row
    /// at all: missing ([`READ`]).
    fn session(rows: Vec<PgRow>) -> Result<Reply, sqlx::Error> {
        let Some(row) = rows.first() else {
            return Ok(Reply::default());
        };
        // Arrays with a NULL element (or more than one dimension) are stored data that does not
        // decode: `Corrupt` naming the session, like a length mismatch (docs/contract.md §4,
        // bad stored data; `tests/fuzz_stored.rs`), not a driver error.
        let undecodable = |e| match e {
            sqlx::Error::ColumnDecode { .. } => crate::dialect::corrupt_data(
                "item names or values are not arrays of byte strings (a NULL element?)",
            ),
            other => other,
        };
        let names: Option<Vec<Vec<u8>>> = row.try_get(5).map_err(undecodable)?;
        let values: Option<Vec<Vec<u8>>> = row.try_get(6).map_err(undecodable)?;
        let (names, values) = (names.unwrap_or_default(), values.unwrap_or_default());
        if names.len() != values.len() {
            return Err(crate::dialect::corrupt_data(
                "item names and values differ in number",
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

/// `read` (binds: app, sid, window percent): one index lookup of one row, a plain `SELECT` while
/// nothing needs writing (docs/contract.md §1). Where a slide is due or the initialize flag must be
/// cleared, the row's `read_write` (migration 0004) writes under the row lock and answers whether
/// the session is still live (0: missing) and whether this read cleared the flag (2: report it).
/// The subquery (`OFFSET 0`: not flattened) evaluates that call once per row. No row: missing. The
/// reply otherwise as [`RoutineDb::session`] reads it; a locked session's items are not sent.
const READ: &str = "\
SELECT CASE WHEN q.w = 0 THEN 0 WHEN q.lock_token IS NULL THEN 2 ELSE 1 END, \
       CASE WHEN q.w <> 0 THEN q.lock_token END, \
       CASE WHEN q.w <> 0 AND q.lock_token IS NOT NULL THEN q.age_ms END, \
       CASE WHEN q.w <> 0 AND q.lock_token IS NULL THEN q.timeout_ms END, \
       q.w = 2 AND q.lock_token IS NULL, \
       CASE WHEN q.w <> 0 AND q.lock_token IS NULL THEN q.names END, \
       CASE WHEN q.w <> 0 AND q.lock_token IS NULL THEN q.vals END \
  FROM (SELECT x.lock_token, x.timeout_ms, x.names, x.vals, \
               greatest(0, (extract(epoch FROM clock_timestamp() - x.locked_at) * 1000)::BIGINT) AS age_ms, \
               CASE WHEN $3 = 0 OR x.expires_at < clock_timestamp() + x.timeout_ms * INTERVAL '1 millisecond' \
                         OR (x.initialize AND x.lock_token IS NULL) \
                    THEN {prefix}read_write(x.pk, $3) ELSE 1 END AS w \
          FROM {prefix}sessions x \
         WHERE x.app = $1 AND x.sid = $2 AND x.expires_at > clock_timestamp() OFFSET 0) q";

/// `acquire` (binds: app, sid, token, lock ttl ms, window percent): one `UPDATE` takes a free, own
/// (a retried acquire: the lock keeps its age) or stale lock of a live, initialized session and
/// returns its items from the locked row version, moving `expires_at` only when a slide is due
/// (otherwise the update changes no indexed column and can be HOT). Where it matches nothing
/// (missing, locked by another, uninitialized), the same statement calls 0003's `acquire`, which
/// decides on the latest row; it never runs otherwise (a one-time filter).
const ACQUIRE: &str = "\
WITH u AS ( \
  UPDATE {prefix}sessions x \
     SET lock_token = $3, \
         locked_at = CASE WHEN x.lock_token = $3 THEN x.locked_at ELSE clock_timestamp() END, \
         expires_at = CASE WHEN $5 = 0 OR x.expires_at < clock_timestamp() + x.timeout_ms * INTERVAL '1 millisecond' \
                           THEN clock_timestamp() + (x.timeout_ms + x.timeout_ms * $5 / 100) * INTERVAL '1 millisecond' \
                           ELSE x.expires_at END \
   WHERE x.app = $1 AND x.sid = $2 AND x.expires_at > clock_timestamp() AND NOT x.initialize \
     AND (x.lock_token IS NULL OR x.lock_token = $3 \
          OR greatest(0, (extract(epoch FROM clock_timestamp() - x.locked_at) * 1000)::BIGINT) >= $4) \
  RETURNING x.timeout_ms, x.names, x.vals) \
SELECT 2 AS r_status, $3 AS r_token, NULL::BIGINT AS r_age_ms, u.timeout_ms AS r_timeout_ms, \
       FALSE AS r_init, u.names AS r_names, u.vals AS r_vals FROM u \
UNION ALL \
SELECT * FROM {prefix}acquire($1, $2, $3, $4, $5) WHERE NOT EXISTS (SELECT FROM u)";

/// `commit` (binds: app, sid, token, fingerprint, timeout ms, window percent, cleared, set names,
/// set values, removed names): one `UPDATE` of the row our lock holds, re-checked on the latest
/// version under its row lock (READ COMMITTED), that merges the delta into the arrays (only the
/// delta travels, docs/contract.md §2): nothing to merge; one existing item changed, replaced in
/// place; otherwise the items without the cleared, removed and set ones, then the set ones. It
/// stores the timeout, slides, unlocks, settles and sends the release signal. Where it matches
/// nothing, `settled` (migration 0004) tells a retry of the settled commit (1) from a lost lock
/// (0). The two arrays come from two evaluations of the same deterministic merge (`unnest` and
/// `UNION ALL` keep their order), so names and values stay paired.
const COMMIT: &str = "\
WITH u AS ( \
  UPDATE {prefix}sessions x \
     SET names = CASE \
             WHEN NOT $7 AND cardinality($10) = 0 AND (cardinality($8) = 0 \
                  OR (cardinality($8) = 1 AND array_position(x.names, $8[1]) IS NOT NULL)) \
             THEN x.names \
             ELSE (SELECT coalesce(array_agg(m.n), '{}') FROM ( \
                     SELECT e.n FROM unnest(x.names) AS e(n) \
                      WHERE NOT $7 AND e.n <> ALL ($10) AND e.n <> ALL ($8) \
                     UNION ALL SELECT d.n FROM unnest($8) AS d(n)) m) END, \
         vals = CASE \
             WHEN NOT $7 AND cardinality($10) = 0 AND cardinality($8) = 0 THEN x.vals \
             WHEN NOT $7 AND cardinality($10) = 0 AND cardinality($8) = 1 \
                  AND array_position(x.names, $8[1]) IS NOT NULL \
             THEN x.vals[1 : array_position(x.names, $8[1]) - 1] || $9 \
                  || x.vals[array_position(x.names, $8[1]) + 1 : cardinality(x.vals)] \
             ELSE (SELECT coalesce(array_agg(m.v), '{}') FROM ( \
                     SELECT e.v FROM unnest(x.names, x.vals) AS e(n, v) \
                      WHERE NOT $7 AND e.n <> ALL ($10) AND e.n <> ALL ($8) \
                     UNION ALL SELECT d.v FROM unnest($9) AS d(v)) m) END, \
         timeout_ms = $5, \
         expires_at = clock_timestamp() + ($5 + $5 * $6 / 100) * INTERVAL '1 millisecond', \
         lock_token = NULL, locked_at = NULL, \
         settled_token = $3, settled_kind = 1, settled_fp = $4 \
   WHERE x.app = $1 AND x.sid = $2 AND x.lock_token = $3 AND x.expires_at > clock_timestamp() \
  RETURNING {prefix}released(x.app, x.sid)) \
SELECT CASE WHEN EXISTS (SELECT FROM u) THEN 1 ELSE {prefix}settled($1, $2, $3, $4) END";

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
