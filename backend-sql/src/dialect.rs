//! The private `Dialect` trait: what differs per database. Each [`Op`] is one store operation
//! performed atomically in **one round trip** on Postgres and MySQL (one call of a stored routine
//! that the migrations install, see `routines`) and in one transaction on SQLite (a deferred,
//! read-only one where the operation turns out to write nothing). The shared flow in `store`
//! encodes the arguments into the [`Op`] and decodes the [`Reply`] the same way for all.
//!
//! Every dialect implements the same decision per operation, documented once here:
//!
//! | op | decision (a session is *live* while `expires_at > now`, on the database clock) | status |
//! |---|---|---|
//! | read | not live → 0; locked → slide if due, 1 (token, age); else slide if due or `initialize` (clearing it), 2 + items | [`read`] |
//! | acquire | not live → 0; locked by another, younger than ttl → slide if due, 1 (token, age); else (free, ours, stale) lock, slide if due, clear `initialize`, 2 + items | [`acquire`] |
//! | commit | live and held by `token` → apply delta, store timeout, slide, unlock, settle (token, commit, fingerprint), 1; settled with the same (token, commit, fingerprint) → 1, nothing applied; else 0 | [`commit`] |
//! | release | live and held by `token` → unlock, slide if due, 1; else 0 (the settled triple is untouched) | [`release`] |
//! | create | insert if absent (an expired row with this key is deleted first) with `expires_at = now + timeout + w` → 1, else 0 | [`create`] |
//! | remove | not live → 0; held by `token` → delete, 2; else 1 | [`remove`] |
//! | touch | not live → 0; else slide if due, 1 | [`touch`] |
//! | write_concurrent | not live → 0; else apply delta, store timeout, slide, 1 (lock untouched) | [`concurrent`] |
//! | delete | live → delete, 1; else 0 | [`delete`] |
//! | change_id | not live or not held by `token` → 0; new id live → 1; else move (an expired row under the new id is deleted first), 2 | [`change_id`] |
//!
//! The refresh window (docs/contract.md §1), `window` in percent of the session's timeout:
//! "slide" sets `expires_at = now + timeout + w` with `w = timeout_ms * window / 100` (integer
//! division, as `RefreshWindow::window_ms`). A slide is *due* when `expires_at < now + timeout`,
//! or always with `window = 0` (exact sliding). "Slide if due" writes nothing at all — no
//! `UPDATE`, no row lock — when it is not due: a busy session's reads are pure reads. Release and
//! an acquire that takes the lock write the lock, but move `expires_at` only when a slide is due
//! (on Postgres the write then touches no indexed column and can be HOT); create, commit and
//! write_concurrent always slide.
//! Applying a delta: if `cleared`, delete every item; delete `removed`; upsert `set`.
//!
//! The first read of an uninitialized, unlocked session clears the flag (a write, with a slide),
//! and only the operation whose write cleared it reports it (under the row lock), so the flag is
//! reported exactly once even to concurrent readers.
//!
//! The settled triple (`settled_token`, `settled_kind`, `settled_fp`) is the session's last
//! successful commit, so that a retried commit is recognised (docs/contract.md §2, "Repeated
//! calls"). Only the next commit replaces it; acquire and release leave it, so the retry is still
//! recognised after another request acquired and released the lock. A release records nothing: a
//! repeat of it finds the lock gone and gets 0, which the retry layer reads as released. (Earlier
//! versions' releases wrote the triple too, with kind 2: such rows match no commit. On Postgres and
//! MySQL, migration 0002 replaced that release routine; SQLite's is in this crate.)

use std::fmt;

use async_trait::async_trait;
use session_core::{Delta, Items, ReleaseWatch, SessionKey};

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

/// The settled kind a commit stores in `settled_kind`, now the only kind written (the Postgres and
/// MySQL routines write the same literal; only the SQLite dialect names it from Rust). Kind 2, a
/// release, survives only in rows that earlier versions released.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const SETTLED_COMMIT: i16 = 1;

/// The most sessions one purge statement deletes where a session is one row (Postgres and SQLite
/// keep the items in the session's row): 1,000 rows, a few milliseconds of work.
pub(crate) const PURGE_STATEMENT_MAX: usize = 1000;

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

/// One operation as the dialects receive it, its arguments already encoded (milliseconds, token
/// bytes, the refresh window in percent of the timeout: `window`). `Copy`, so that a rolled-back
/// operation can be run again.
#[derive(Clone, Copy)]
pub(crate) enum Op<'a> {
    Read {
        key: Key<'a>,
        window: i32,
    },
    Acquire {
        key: Key<'a>,
        token: Token,
        ttl_ms: i64,
        window: i32,
    },
    /// `fingerprint` is [`Delta::fingerprint`] of `delta` and the timeout.
    Commit {
        key: Key<'a>,
        token: Token,
        delta: &'a Delta,
        timeout_ms: i64,
        fingerprint: i64,
        window: i32,
    },
    Release {
        key: Key<'a>,
        token: Token,
        window: i32,
    },
    Create {
        key: Key<'a>,
        items: &'a Items,
        timeout_ms: i64,
        initialize: bool,
        window: i32,
    },
    Remove {
        key: Key<'a>,
        token: Token,
    },
    Touch {
        key: Key<'a>,
        window: i32,
    },
    WriteConcurrent {
        key: Key<'a>,
        delta: &'a Delta,
        timeout_ms: i64,
        window: i32,
    },
    Delete {
        key: Key<'a>,
    },
    ChangeId {
        key: Key<'a>,
        new_sid: &'a [u8],
        token: Token,
    },
    /// Deletes up to `batch` expired sessions in one statement (`batch` is at most the dialect's
    /// [`Dialect::purge_statement_max`]): oldest expiry first, on the expiry index, bounded by one
    /// timestamp read once per call, so that the statement reads only rows it deletes (on
    /// Postgres oldest expiry minute first, on the bucket index of migration 0005, bounded by the
    /// current minute: migration 0008); one runner at a time across processes, never waiting for
    /// another; the reply's `status` is how many.
    Purge {
        batch: i64,
    },
}

impl<'a> Op<'a> {
    /// The session the operation is about (none for a purge).
    pub(crate) fn key(&self) -> Option<Key<'a>> {
        match *self {
            Op::Read { key, .. }
            | Op::Acquire { key, .. }
            | Op::Commit { key, .. }
            | Op::Release { key, .. }
            | Op::Create { key, .. }
            | Op::Remove { key, .. }
            | Op::Touch { key, .. }
            | Op::WriteConcurrent { key, .. }
            | Op::Delete { key }
            | Op::ChangeId { key, .. } => Some(key),
            Op::Purge { .. } => None,
        }
    }
}

/// Stored data a dialect could not decode (docs/contract.md §4: bad stored data is
/// `Error::Corrupt`, naming the session): carried through sqlx's `Decode` error.
#[derive(Debug)]
pub(crate) struct CorruptData(pub(crate) &'static str);

impl std::fmt::Display for CorruptData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for CorruptData {}

/// The error a dialect returns for undecodable stored data: `what` says what is wrong.
pub(crate) fn corrupt_data(what: &'static str) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(CorruptData(what)))
}

/// One item, raw: its name and value.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) type Item = (Vec<u8>, Vec<u8>);

/// The items of a session's packed `items` column (SQLite, MySQL/MariaDB): for each item
/// `[u32 BE name length][name][u32 BE value length][value]`. A truncated or overlong blob is an
/// error, not a panic.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) fn unpack(mut blob: &[u8]) -> Result<Vec<Item>, sqlx::Error> {
    fn part<'b>(blob: &mut &'b [u8]) -> Option<&'b [u8]> {
        let (len, rest) = blob.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let (part, rest) = (rest.get(..len)?, rest.get(len..)?);
        *blob = rest;
        Some(part)
    }
    let corrupt = || corrupt_data("the packed items are truncated");
    let mut items = Vec::new();
    while !blob.is_empty() {
        let name = part(&mut blob).ok_or_else(corrupt)?.to_vec();
        let value = part(&mut blob).ok_or_else(corrupt)?.to_vec();
        items.push((name, value));
    }
    Ok(items)
}

/// What a dialect answers to an [`Op`]. `status` is one of the op's codes (for a purge, how many
/// sessions it deleted); the other fields are set by `read` and `acquire`, where the table in the
/// module docs says.
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

impl Reply {
    /// A reply that is only a status.
    pub(crate) fn status(status: i64) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }
}

/// One database's SQL. Implementations hold their own pool.
#[async_trait]
pub(crate) trait Dialect: fmt::Debug + Send + Sync + 'static {
    /// The backend name in errors and in `SessionStore::backend`.
    fn backend(&self) -> &'static str;
    /// Performs `op` atomically: one round trip on Postgres and MySQL, one transaction on SQLite.
    async fn run(&self, op: Op<'_>) -> Result<Reply, sqlx::Error>;
    /// The most sessions one purge statement deletes ([`Op::Purge`]'s `batch`): the store splits
    /// a larger `purge_expired` batch into statements of at most this many, one transaction each,
    /// so that no statement holds its locks and writes long enough for a request to wait behind
    /// it (default [`PURGE_STATEMENT_MAX`]).
    fn purge_statement_max(&self) -> usize {
        PURGE_STATEMENT_MAX
    }
    /// Closes the pool.
    async fn close(&self);
    /// The release signal, where the database has one (Postgres `LISTEN`/`NOTIFY`).
    fn signal(&self) -> Option<&dyn ReleaseSignal> {
        None
    }
}

/// A wake-up when a session's lock is released (docs/contract.md §3, "Waiting").
pub(crate) trait ReleaseSignal: fmt::Debug + Send + Sync {
    /// A watch that completes when `key`'s lock is released after this call (or spuriously, for
    /// example when the signal's connection was lost and came back).
    fn watch(&self, key: &SessionKey) -> ReleaseWatch;
}
