//! The private `Dialect` trait: what differs per database. Each method is one store operation
//! performed atomically in **one round trip** on Postgres and MySQL (one call of a stored routine
//! that the migrations install) and in one `BEGIN IMMEDIATE` transaction on SQLite. The shared flow
//! in `store` encodes the arguments ([`Args`]) and decodes the [`Reply`] the same way for all.
//!
//! Every dialect implements the same decision per operation, documented once here:
//!
//! | op | decision (a session is *live* while `expires_at > now`, on the database clock) | status |
//! |---|---|---|
//! | read | not live → 0; locked → slide, 1 (token, age); else slide, clear `initialize`, 2 + items | [`read`] |
//! | acquire | not live → 0; held by `token` → slide, 2 + items; locked younger than ttl → slide, 1; else lock, slide, clear `initialize`, 2 + items | [`acquire`] |
//! | commit | live and held by `token` → apply delta, store timeout, slide, unlock, settle (token, commit, fingerprint), 1; settled with the same (token, commit, fingerprint) → 1, nothing applied; else 0 | [`commit`] |
//! | release | live and held by `token` → unlock, slide, settle (token, release), 1; settled with (token, release) → 1; else 0 | [`release`] |
//! | create | delete an expired row with this key; insert if absent → 1, else 0 | [`create`] |
//! | remove | not live → 0; held by `token` → delete, 2; else 1 | [`remove`] |
//! | touch | not live → 0; else slide, 1 | [`touch`] |
//! | write_concurrent | not live → 0; else apply delta, store timeout, slide, 1 (lock untouched) | [`concurrent`] |
//! | delete | live → delete, 1; else 0 | [`delete`] |
//! | change_id | not live or not held by `token` → 0; new id live → 1; else move (an expired row under the new id is deleted first), 2 | [`change_id`] |
//!
//! "Slide" sets `expires_at = now + timeout_ms`; `read` and `touch` skip it (and write nothing)
//! when refresh throttling says the session has enough life left (`remaining * 1000 > timeout *
//! keep_permille`). Applying a delta: if `cleared`, delete every item; delete `removed`; upsert
//! `set`. The settled triple is kept across later acquires and replaced by the next commit or
//! release, so retried commits and releases are recognised (`SessionStore` contract).

use std::fmt;

use async_trait::async_trait;
use session_core::{Delta, Items, SessionKey};

/// Status codes of each operation, shared by the SQL of every dialect.
pub(crate) mod read {
    pub(crate) const MISSING: i64 = 0;
    pub(crate) const LOCKED: i64 = 1;
    pub(crate) const FOUND: i64 = 2;
}
/// `acquire` statuses.
pub(crate) mod acquire {
    pub(crate) const MISSING: i64 = 0;
    pub(crate) const LOCKED: i64 = 1;
    pub(crate) const ACQUIRED: i64 = 2;
}
/// `commit` statuses.
pub(crate) mod commit {
    pub(crate) const LOCK_LOST: i64 = 0;
    pub(crate) const COMMITTED: i64 = 1;
}
/// `release` statuses.
pub(crate) mod release {
    pub(crate) const LOCK_LOST: i64 = 0;
    pub(crate) const RELEASED: i64 = 1;
}
/// `create` statuses.
pub(crate) mod create {
    pub(crate) const ALREADY_EXISTS: i64 = 0;
    pub(crate) const CREATED: i64 = 1;
}
/// `remove` statuses.
pub(crate) mod remove {
    pub(crate) const MISSING: i64 = 0;
    pub(crate) const LOCK_LOST: i64 = 1;
    pub(crate) const REMOVED: i64 = 2;
}
/// `touch` statuses.
pub(crate) mod touch {
    pub(crate) const MISSING: i64 = 0;
    pub(crate) const TOUCHED: i64 = 1;
}
/// `write_concurrent` statuses.
pub(crate) mod concurrent {
    pub(crate) const MISSING: i64 = 0;
    pub(crate) const COMMITTED: i64 = 1;
}
/// `delete` statuses.
pub(crate) mod delete {
    pub(crate) const MISSING: i64 = 0;
    pub(crate) const REMOVED: i64 = 1;
}
/// `change_id` statuses.
pub(crate) mod change_id {
    pub(crate) const LOCK_LOST: i64 = 0;
    pub(crate) const ALREADY_EXISTS: i64 = 1;
    pub(crate) const CHANGED: i64 = 2;
}

/// The settled kinds stored in `settled_kind` (the Postgres and MySQL routines write the same
/// literals; only the SQLite dialect names them from Rust).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const SETTLED_COMMIT: i16 = 1;
/// See [`SETTLED_COMMIT`].
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const SETTLED_RELEASE: i16 = 2;

/// A session's row key: the application name and the id, both as bytes (binary columns, so
/// comparisons are exact whatever the database's collation).
#[derive(Clone, Copy)]
pub(crate) struct Key<'a> {
    pub(crate) app: &'a [u8],
    pub(crate) sid: &'a [u8],
}

impl<'a> Key<'a> {
    pub(crate) fn of(key: &'a SessionKey) -> Self {
        Self {
            app: key.app().as_str().as_bytes(),
            sid: key.id().expose().as_bytes(),
        }
    }
}

/// A lock token as stored: 16 bytes, big-endian.
pub(crate) type Token = [u8; 16];

/// What `read` and `acquire` return. `status` is one of the op's codes; the other fields are set
/// where the table in the module docs says.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub(crate) status: i64,
    /// The holder's token (`Locked`) or ours (`Acquired`).
    pub(crate) token: Option<Vec<u8>>,
    /// Lock age in milliseconds on the database clock (`Locked`).
    pub(crate) age_ms: Option<i64>,
    pub(crate) timeout_ms: Option<i64>,
    pub(crate) initialize: bool,
    /// Item names and values, raw.
    pub(crate) items: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One database's SQL. Implementations hold their own pool.
#[async_trait]
pub(crate) trait Dialect: fmt::Debug + Send + Sync + 'static {
    /// `read`; `keep` is the refresh throttle in per mille (1000: always slide).
    async fn read(&self, key: Key<'_>, keep: i32) -> Result<Reply, sqlx::Error>;
    /// `acquire`.
    async fn acquire(&self, key: Key<'_>, token: Token, ttl_ms: i64) -> Result<Reply, sqlx::Error>;
    /// `commit`; `fingerprint` is [`Delta::fingerprint`] of `delta` and the timeout.
    async fn commit(
        &self,
        key: Key<'_>,
        token: Token,
        delta: &Delta,
        timeout_ms: i64,
        fingerprint: i64,
    ) -> Result<i64, sqlx::Error>;
    /// `release`.
    async fn release(&self, key: Key<'_>, token: Token) -> Result<i64, sqlx::Error>;
    /// `create`.
    async fn create(
        &self,
        key: Key<'_>,
        items: &Items,
        timeout_ms: i64,
        initialize: bool,
    ) -> Result<i64, sqlx::Error>;
    /// `remove`.
    async fn remove(&self, key: Key<'_>, token: Token) -> Result<i64, sqlx::Error>;
    /// `touch`.
    async fn touch(&self, key: Key<'_>, keep: i32) -> Result<i64, sqlx::Error>;
    /// `write_concurrent`.
    async fn write_concurrent(
        &self,
        key: Key<'_>,
        delta: &Delta,
        timeout_ms: i64,
    ) -> Result<i64, sqlx::Error>;
    /// `delete`.
    async fn delete(&self, key: Key<'_>) -> Result<i64, sqlx::Error>;
    /// `change_id`.
    async fn change_id(
        &self,
        key: Key<'_>,
        new_sid: &[u8],
        token: Token,
    ) -> Result<i64, sqlx::Error>;
    /// Deletes up to `batch` expired sessions (oldest expiry first, on the expiry index), one
    /// runner at a time across processes; returns how many.
    async fn purge(&self, batch: i64) -> Result<u64, sqlx::Error>;
    /// Closes the pool.
    async fn close(&self);
}

/// Packs byte strings as `[u32 BE length][bytes]…`, for dialects without array parameters.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) fn pack<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
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

/// A stable 64-bit advisory-lock key for one table prefix (FNV-1a), so purgers of different
/// prefixes in one database do not wait for each other.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn lock_key(prefix: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"backend-sql purge ".iter().chain(prefix.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Whether a Postgres or MySQL URL chooses its TLS mode itself: sqlx reads both `sslmode` and
/// `ssl-mode` in the query, for either database. A URL's own setting wins over `Config::ssl`.
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
pub(crate) fn url_sets_ssl_mode(url: &str) -> bool {
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

    #[test]
    fn pack_is_length_prefixed() {
        assert_eq!(
            pack([&b"ab"[..], b""]),
            [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0]
        );
    }

    #[test]
    fn lock_keys_differ_per_prefix() {
        assert_ne!(lock_key("a_"), lock_key("b_"));
        assert_eq!(lock_key("a_"), lock_key("a_"));
    }
}

/// The statement that calls each operation's stored routine, per dialect, before the table prefix
/// is spliced in (Postgres and MySQL install one routine per operation).
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Debug)]
pub(crate) struct CallTemplates {
    pub(crate) read: &'static str,
    pub(crate) acquire: &'static str,
    pub(crate) commit: &'static str,
    pub(crate) release: &'static str,
    pub(crate) create: &'static str,
    pub(crate) remove: &'static str,
    pub(crate) touch: &'static str,
    pub(crate) write_concurrent: &'static str,
    pub(crate) delete: &'static str,
    pub(crate) change_id: &'static str,
    pub(crate) purge: &'static str,
}

/// [`CallTemplates`] with the table prefix spliced in, once, at connect.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Debug)]
pub(crate) struct Calls {
    pub(crate) read: String,
    pub(crate) acquire: String,
    pub(crate) commit: String,
    pub(crate) release: String,
    pub(crate) create: String,
    pub(crate) remove: String,
    pub(crate) touch: String,
    pub(crate) write_concurrent: String,
    pub(crate) delete: String,
    pub(crate) change_id: String,
    pub(crate) purge: String,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl Calls {
    pub(crate) fn new(prefix: &str, t: &CallTemplates) -> Self {
        let p = |s: &str| crate::migrate::with_prefix(s, prefix);
        Self {
            read: p(t.read),
            acquire: p(t.acquire),
            commit: p(t.commit),
            release: p(t.release),
            create: p(t.create),
            remove: p(t.remove),
            touch: p(t.touch),
            write_concurrent: p(t.write_concurrent),
            delete: p(t.delete),
            change_id: p(t.change_id),
            purge: p(t.purge),
        }
    }
}
