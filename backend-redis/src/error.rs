//! How driver errors become `session_core::Error`s (docs/style.md H5). Classified through redis-rs's error
//! API (`is_timeout`, `is_connection_dropped`, `kind()`, the typed source chain), never by message
//! text: connection and cluster-topology failures are transient (`Unavailable`, retried by the core),
//! authentication, permissions and TLS trust are permanent (`Backend`), each with its own cause.

use std::sync::Arc;
use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use session_core::{Error, Operation, SessionKey};

/// The backend's name in errors and tracing.
pub(crate) const BACKEND: &str = "redis";

/// Why the Redis store failed, as the `source` of a `session_core::Error`. Each variant says in
/// plain words what to check; the driver's error stays underneath.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    /// Nothing listens at the address (closed port, server down).
    #[error("connection refused: no Redis server listening at {addr}")]
    Refused {
        addr: String,
        #[source]
        source: RedisError,
    },
    /// The connection broke or could not be made.
    #[error("connection to Redis failed or was lost")]
    Connection(#[source] RedisError),
    /// The cluster is failing over or resharding; retrying later succeeds.
    #[error("the Redis cluster is changing topology (failover or resharding)")]
    Topology(#[source] RedisError),
    /// The server is running a long script (`BUSY`); retrying later succeeds.
    #[error("the Redis server is busy running a script")]
    Busy(#[source] RedisError),
    /// Wrong password (`accessKey`) or ACL user.
    #[error("authentication failed: wrong password (accessKey) or ACL user")]
    Auth(#[source] RedisError),
    /// The ACL user may not run a command or touch a key.
    #[error(
        "permission denied by the server's ACL (the user needs ~{{* keys, &* channels, EVALSHA, EVAL, SCRIPT LOAD, SUBSCRIBE)"
    )]
    NoPermission(#[source] RedisError),
    /// The server's TLS certificate was not accepted.
    #[error("TLS: the server's certificate is not trusted (wrong CA, or the name does not match)")]
    Certificate(#[source] RedisError),
    /// Any other TLS failure (plain-text server, protocol mismatch).
    #[error("TLS handshake with the Redis server failed")]
    Tls(#[source] RedisError),
    /// Anything else the server or the driver reported.
    #[error("Redis error")]
    Other(#[source] RedisError),
    /// A script's reply had a shape this crate does not produce.
    #[error("unexpected reply from a session script: {0}")]
    Reply(&'static str),
}

/// A rustls error somewhere in the driver error's source chain (TLS errors arrive as an
/// `io::Error` wrapping a `rustls::Error`).
fn rustls_error(err: &RedisError) -> Option<rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        // redis-rs keeps its inner errors as `Arc<dyn Error>`, and `io::Error::source` skips the
        // custom error it wraps: look inside both explicitly.
        let inner: Option<&(dyn std::error::Error + 'static)> = e
            .downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>()
            .map(|a| &**a as &(dyn std::error::Error + 'static));
        let io = inner
            .and_then(|i| i.downcast_ref::<std::io::Error>())
            .or_else(|| e.downcast_ref::<std::io::Error>());
        if let Some(tls) = io
            .and_then(std::io::Error::get_ref)
            .and_then(|custom| custom.downcast_ref::<rustls::Error>())
        {
            return Some(tls.clone());
        }
        next = inner
            .and_then(std::error::Error::source)
            .or_else(|| e.source());
    }
    None
}

/// Classifies a driver error; `addr` names the server for a refused connection.
pub(crate) fn classify(err: RedisError, addr: &str) -> (bool, BackendError) {
    if let Some(tls) = rustls_error(&err) {
        let cause = match tls {
            rustls::Error::InvalidCertificate(_) => BackendError::Certificate(err),
            _ => BackendError::Tls(err),
        };
        return (false, cause);
    }
    // `WRONGPASS` (Redis 6+ AUTH/HELLO) arrives as a server error code the driver does not map to
    // a kind of its own; the code is part of the error's structure, not its message.
    if err.code() == Some("WRONGPASS") {
        return (false, BackendError::Auth(err));
    }
    // `BUSY`: another script is running past `busy-reply-threshold`; it ends (or is killed) by
    // itself, so this is worth a retry. Also a code without a driver kind.
    if err.code() == Some("BUSY") {
        return (true, BackendError::Busy(err));
    }
    match err.kind() {
        ErrorKind::AuthenticationFailed => return (false, BackendError::Auth(err)),
        ErrorKind::Server(ServerErrorKind::NoPerm) => {
            return (false, BackendError::NoPermission(err));
        }
        ErrorKind::Server(
            ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::BusyLoading
            // A demoted master after a failover refuses writes until the client re-routes.
            | ServerErrorKind::ReadOnly,
        )
        | ErrorKind::ClusterConnectionNotFound => return (true, BackendError::Topology(err)),
        _ => {}
    }
    if err.is_connection_refusal() {
        return (
            true,
            BackendError::Refused {
                addr: addr.to_owned(),
                source: err,
            },
        );
    }
    if err.is_connection_dropped() || err.is_io_error() {
        return (true, BackendError::Connection(err));
    }
    (false, BackendError::Other(err))
}

/// The error context of one store: where it connects and how long an operation may take.
#[derive(Debug, Clone)]
pub(crate) struct ErrorContext {
    pub(crate) addr: String,
    pub(crate) response_timeout: Duration,
}

impl ErrorContext {
    /// Maps a driver error of `operation`.
    pub(crate) fn map(&self, operation: Operation, err: RedisError) -> Error {
        if err.is_timeout() {
            return Error::Timeout {
                backend: BACKEND,
                operation,
                after: self.response_timeout,
            };
        }
        let (transient, cause) = classify(err, &self.addr);
        let source = Box::new(cause);
        if transient {
            Error::Unavailable {
                backend: BACKEND,
                operation,
                source,
            }
        } else {
            Error::Backend {
                backend: BACKEND,
                operation,
                source,
            }
        }
    }

    /// Maps a driver error of `operation` on `key`'s session: as [`ErrorContext::map`], but a
    /// `WRONGTYPE` reply (the session's key holds a list, a hash or any other type than the string
    /// this layout writes, so the script's first read of it failed) is `Error::Corrupt` naming the
    /// session (docs/contract.md §2): not this layout's bytes, like any other value it did not
    /// write. Classified by the reply's error code, which Redis 7 keeps for an error raised inside a
    /// script (Redis 6 reports such an error as `ERR`, and it stays `Error::Backend` there).
    pub(crate) fn map_on(&self, operation: Operation, key: &SessionKey, err: RedisError) -> Error {
        if err.code() == Some("WRONGTYPE") {
            return corrupt(
                key,
                "the session's key holds another Redis type than a string",
            );
        }
        self.map(operation, err)
    }
}

/// A reply of the wrong shape: a bug or a foreign script with our SHA, never retried.
pub(crate) fn bad_reply(operation: Operation, what: &'static str) -> Error {
    Error::Backend {
        backend: BACKEND,
        operation,
        source: Box::new(BackendError::Reply(what)),
    }
}

/// Undecodable stored data for `key` (docs/contract.md §4): named by application and id prefix; nothing is
/// emptied or overwritten.
pub(crate) fn corrupt(key: &SessionKey, what: &'static str) -> Error {
    Error::Corrupt {
        backend: BACKEND,
        app: key.app().as_str().to_owned(),
        id_prefix: key.id().prefix().to_owned(),
        source: what.into(),
    }
}
