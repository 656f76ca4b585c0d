//! The one public error type. Contract outcomes (`LockLost`, `AlreadyExists`, `Missing`) are return
//! values of the store, not errors; errors are failures, typed so that callers and the retry policy
//! can tell them apart (docs/contract.md §4).

use std::fmt;
use std::time::Duration;

/// A boxed error source, kept so that the cause chain survives.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A store operation, named in errors and tracing spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Connecting or preparing the store.
    Connect,
    /// `read`: data without locking.
    Read,
    /// `acquire`: lock and read.
    Acquire,
    /// `commit`: write the delta and release.
    Commit,
    /// `release`: release without writing.
    Release,
    /// `create`: insert if absent.
    Create,
    /// `remove`: delete by the lock holder.
    Remove,
    /// `touch`: slide the expiry.
    Touch,
    /// `write_concurrent`: lock-free per-item merge.
    WriteConcurrent,
    /// `delete`: administrative delete regardless of locks.
    Delete,
    /// `change_id`: atomic id rotation.
    ChangeId,
    /// `purge_expired`: batched removal of expired sessions.
    PurgeExpired,
    /// Subscribing to the release signal.
    WatchRelease,
    /// Subscribing to expiry events.
    ExpiryEvents,
}

impl Operation {
    /// The operation's name as used in docs/contract.md and in tracing.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Read => "read",
            Self::Acquire => "acquire",
            Self::Commit => "commit",
            Self::Release => "release",
            Self::Create => "create",
            Self::Remove => "remove",
            Self::Touch => "touch",
            Self::WriteConcurrent => "write_concurrent",
            Self::Delete => "delete",
            Self::ChangeId => "change_id",
            Self::PurgeExpired => "purge_expired",
            Self::WatchRelease => "watch_release",
            Self::ExpiryEvents => "expiry_events",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every failure of this framework.
///
/// Store errors name the backend and the operation. [`Error::is_transient`] says which ones the retry
/// policy may retry (docs/contract.md §4).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be reached or the connection broke (transient).
    #[error("{backend}: {operation} failed: store unavailable")]
    Unavailable {
        /// The backend's name.
        backend: &'static str,
        /// The operation that failed.
        operation: Operation,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The operation did not finish within the operation timeout (transient).
    #[error("{backend}: {operation} timed out after {after:?}")]
    Timeout {
        /// The backend's name.
        backend: &'static str,
        /// The operation that timed out.
        operation: Operation,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The store refused the operation for a reason that retrying will not fix (permissions,
    /// authentication, a server-side error).
    #[error("{backend}: {operation} failed")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The operation that failed.
        operation: Operation,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// Stored data could not be decoded (corrupt bytes or an incompatible version). Nothing was
    /// emptied or overwritten.
    #[error("{backend}: corrupt session data for application {app:?}, session {id_prefix}…")]
    Corrupt {
        /// The backend's name.
        backend: &'static str,
        /// The session's application.
        app: String,
        /// The first characters of the session id.
        id_prefix: String,
        /// What was wrong.
        #[source]
        source: BoxError,
    },
    /// A session id that is not in the canonical form (docs/contract.md §1). The input is never echoed.
    #[error("invalid session id: {reason}")]
    InvalidId {
        /// Which rule the id broke.
        reason: &'static str,
    },
    /// A lock token that is not in the canonical form.
    #[error("invalid lock token")]
    InvalidToken,
    /// An application or item name that breaks docs/contract.md §1.
    #[error("invalid {kind}: {reason}")]
    InvalidName {
        /// `"application name"` or `"item name"`.
        kind: &'static str,
        /// Which rule the name broke.
        reason: &'static str,
    },
    /// A configuration setting with a bad value, found when the configuration is built.
    #[error("invalid configuration: {setting}: {reason}")]
    InvalidConfig {
        /// The setting's name, as the user wrote it.
        setting: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend does not support this optional operation (it did not declare the capability).
    #[error("{backend}: {operation} is not supported by this store")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The unsupported operation.
        operation: Operation,
    },
    /// An item value could not be encoded with MessagePack at insert (never deferred to commit).
    #[error("cannot encode session item {item:?}")]
    Encode {
        /// The item's name.
        item: String,
        /// The encoder's error.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// An item value could not be decoded into the requested type.
    #[error("cannot decode session item {item:?} into the requested type")]
    Decode {
        /// The item's name.
        item: String,
        /// The decoder's error.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// The session would exceed the maximum session size.
    #[error("session would be {size} bytes, over the limit of {limit} bytes")]
    SessionTooLarge {
        /// The size the session would have.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The write did not happen: this request's lock was taken over, released or expired, or the
    /// session is gone (docs/contract.md §2 rule 1, §3).
    #[error("{operation} rejected: the session lock was lost, nothing was written")]
    LockLost {
        /// The rejected operation.
        operation: Operation,
    },
    /// A lock-free write found the session gone; nothing was written.
    #[error("{operation} rejected: the session no longer exists, nothing was written")]
    SessionGone {
        /// The rejected operation.
        operation: Operation,
    },
    /// A new session's fresh id already exists in the store (practically impossible with 128 random
    /// bits); nothing was overwritten.
    #[error("a session with the new id already exists; nothing was overwritten")]
    IdCollision,
    /// Too many requests are already waiting for this session's lock.
    #[error("too many requests waiting for one session (limit {limit})")]
    TooManyWaiters {
        /// The configured `max_waiters_per_session`.
        limit: usize,
    },
    /// The lock was not obtained before the waiter's deadline.
    #[error("gave up waiting for the session lock after {waited:?}")]
    WaitTimeout {
        /// How long the request waited.
        waited: Duration,
    },
    /// The session was opened read-only (or is degraded) and cannot be changed.
    #[error("the session is {0} and cannot be changed")]
    NotWritable(&'static str),
    /// The OS random source failed.
    #[error("the OS random source failed")]
    Random {
        /// The OS error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether retrying the same operation may succeed (connection lost, timeout). Drives the retry
    /// policy of docs/contract.md §4.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }

    /// The operation this error names, if any.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Self::Unavailable { operation, .. }
            | Self::Timeout { operation, .. }
            | Self::Backend { operation, .. }
            | Self::Unsupported { operation, .. }
            | Self::LockLost { operation }
            | Self::SessionGone { operation } => Some(*operation),
            _ => None,
        }
    }

    /// Builds an [`Error::InvalidConfig`].
    pub fn config(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

impl Error {
    /// Whether this is a failure of the store itself (unreachable, timed out, refused, corrupt
    /// data), as opposed to a contract outcome or a manager decision. With `throwOnError = false`
    /// these degrade the session instead of failing the request (docs/contract.md §4).
    pub fn is_store_failure(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Timeout { .. }
                | Self::Backend { .. }
                | Self::Corrupt { .. }
                | Self::Random { .. }
        )
    }
}
