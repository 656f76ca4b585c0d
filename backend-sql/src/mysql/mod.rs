//! The MySQL / MariaDB dialect: every operation is one `CALL` of a stored procedure installed by
//! `migrations/mysql/` — one prepared statement, one round trip, one transaction inside. Calling
//! them is shared with Postgres (`routines`). Item lists travel packed ([`pack`]) because MySQL
//! has no array parameters, and a session's items are stored the same way, in its own row
//! (migration 0005: the `items` column; a commit's delta is merged into it by `merge_items`, in
//! the server). The purge (migration 0004) is one `DELETE` per call of the first `n` sessions by
//! expiry, found by a range scan of the expiry index up to one bound `t` (the clock, read once per
//! call) and deleted by primary key: it reads as many index entries as it deletes sessions (none
//! past the first when nothing expired); a statement deletes at most
//! [`PURGE_STATEMENT_MAX`](crate::dialect::PURGE_STATEMENT_MAX) sessions.

use std::borrow::Cow;
use std::collections::BTreeSet;

use session_core::Items;
use sqlx::mysql::{MySqlConnectOptions, MySqlRow, MySqlSslMode};
use sqlx::{MySql, Row};

use crate::dialect::{Reply, unpack};
use crate::migrate::Embedded;
use crate::routines::{Calls, Query, RoutineDb};

impl RoutineDb for MySql {
    const BACKEND: &'static str = "mysql";

    const MIGRATIONS: &'static [Embedded] = &[
        (
            1,
            "schema",
            include_str!("../../migrations/mysql/0001_schema.sql"),
        ),
        (
            2,
            "release records nothing",
            include_str!("../../migrations/mysql/0002_release_records_nothing.sql"),
        ),
        (
            3,
            "refresh window",
            include_str!("../../migrations/mysql/0003_refresh_window.sql"),
        ),
        (
            4,
            "purge bound",
            include_str!("../../migrations/mysql/0004_purge_bound.sql"),
        ),
        (
            5,
            "items in row",
            include_str!("../../migrations/mysql/0005_items_in_row.sql"),
        ),
    ];

    /// A session is one row (its items in it, migration 0005).
    const PURGE_STATEMENT_MAX: usize = crate::dialect::PURGE_STATEMENT_MAX;

    const CALLS: Calls<&'static str> = Calls {
        read: "CALL {prefix}read(?, ?, ?)",
        acquire: "CALL {prefix}acquire(?, ?, ?, ?, ?)",
        commit: "CALL {prefix}commit(?, ?, ?, ?, ?, ?, ?, ?, ?)",
        release: "CALL {prefix}release(?, ?, ?, ?)",
        create: "CALL {prefix}create(?, ?, ?, ?, ?, ?)",
        remove: "CALL {prefix}remove(?, ?, ?)",
        touch: "CALL {prefix}touch(?, ?, ?)",
        write_concurrent: "CALL {prefix}write_concurrent(?, ?, ?, ?, ?, ?, ?)",
        delete: "CALL {prefix}delete(?, ?)",
        change_id: "CALL {prefix}change_id(?, ?, ?, ?)",
        purge: "CALL {prefix}purge(?)",
    };

    /// sqlx reads `mysql://`; `mariadb://` is the same protocol.
    fn url(url: &str) -> Cow<'_, str> {
        match url.split_at_checked(10) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb://") => {
                Cow::Owned(format!("mysql://{rest}"))
            }
            _ => Cow::Borrowed(url),
        }
    }

    fn require_tls(options: MySqlConnectOptions) -> MySqlConnectOptions {
        options.ssl_mode(MySqlSslMode::Required)
    }

    /// Names and values packed alternately into one string.
    fn bind_set(query: Query<Self>, items: &Items) -> Query<Self> {
        query.bind(pack(
            items.iter().flat_map(|(n, v)| [n.as_bytes(), v.as_bytes()]),
        ))
    }

    fn bind_removed(query: Query<Self>, names: &BTreeSet<String>) -> Query<Self> {
        query.bind(pack(names.iter().map(|n| n.as_bytes())))
    }

    fn status(row: &MySqlRow) -> Result<i64, sqlx::Error> {
        row.try_get(0)
    }

    /// Rows of (status, token, age_ms, timeout_ms, init, items), over one or two result sets
    /// (migration 0003: the fast path's, possibly empty, then the locking path's; 0005: the items
    /// packed, [`unpack`]): the first row carries the reply (`init` a `SIGNED` 0 or 1).
    fn session(rows: Vec<MySqlRow>) -> Result<Reply, sqlx::Error> {
        let Some(row) = rows.first() else {
            return Err(sqlx::Error::RowNotFound);
        };
        let mut reply = Reply {
            status: row.try_get(0)?,
            token: row.try_get(1)?,
            age_ms: row.try_get(2)?,
            timeout_ms: row.try_get(3)?,
            initialize: row.try_get::<Option<i64>, _>(4)?.unwrap_or(0) != 0,
            items: Vec::new(),
        };
        if let Some(packed) = row.try_get::<Option<Vec<u8>>, _>(5)? {
            reply.items = unpack(&packed)?;
        }
        Ok(reply)
    }
}

/// Packs byte strings as `[u32 BE length][bytes]…`, for a database without array parameters.
fn pack<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        // Names are ≤ 256 bytes and values are bounded by the maximum session size; a part over
        // 4 GiB cannot come from a valid session.
        let len = u32::try_from(p.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_is_length_prefixed() {
        assert_eq!(
            pack([&b"ab"[..], b""]),
            [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0]
        );
    }

    #[test]
    fn mariadb_urls_are_read_as_mysql() {
        assert_eq!(MySql::url("MariaDB://u@h/db"), "mysql://u@h/db");
        assert_eq!(MySql::url("mysql://u@h/db"), "mysql://u@h/db");
        assert_eq!(MySql::url("maria"), "maria");
    }
}
