//! How sqlx errors become [`session_core::Error`]s. Classified through sqlx's API (error variants,
//! and the servers' documented error codes where sqlx has no kind for them), never by message text.

use session_core::{Error, Operation};

/// Maps a driver error of `operation` on `backend`.
///
/// - Connection and I/O failures, pool timeouts, and the server saying it cannot serve right now
///   (see `server_says_transient`: shutting down, starting up, too many connections, connection
///   killed; SQLite busy) are [`Error::Unavailable`]: transient, the retry policy may try again.
/// - Everything else the server or driver reports (permissions, a missing table, a failed
///   statement, TLS or configuration problems, authentication) is [`Error::Backend`], including
///   a TLS handshake that fails at connect (a certificate the CA does not vouch for).
pub(crate) fn classify(backend: &'static str, operation: Operation, err: sqlx::Error) -> Error {
    let transient = match &err {
        // rustls reports a failed handshake (an untrusted or mismatched certificate, a TLS alert)
        // as an I/O error of kind `InvalidData`: at connect that is a TLS problem, not an
        // unreachable server, and trying again cannot fix it. On an established connection it
        // is a broken stream like any other.
        sqlx::Error::Io(io) if operation == Operation::Connect => {
            io.kind() != std::io::ErrorKind::InvalidData
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        // Closed by `SqlStore::close`: nothing will succeed again.
        sqlx::Error::PoolClosed => false,
        sqlx::Error::Database(db) => server_says_transient(db.as_ref()),
        _ => false,
    };
    if transient {
        Error::Unavailable {
            backend,
            operation,
            source: Box::new(err),
        }
    } else {
        Error::Backend {
            backend,
            operation,
            source: Box::new(err),
        }
    }
}

/// Whether `err`, an operation's failure on a connection, means that the connection is gone: an
/// I/O failure (reset, broken pipe, end of stream), or the server closing it as it goes away
/// ([`server_going_away`]). The server may be down: `health` probes it.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => server_going_away(db.as_ref()),
        _ => false,
    }
}

/// Whether the server says that it is going away or cannot take connections now, so that the
/// connection (or the attempt) is over, sqlx having no `ErrorKind` for it. The documented codes:
/// Postgres SQLSTATE class `08` (connection exception), `57P01` (admin shutdown), `57P02` (crash
/// shutdown), `57P03` (cannot connect now: starting up or shutting down); MySQL/MariaDB 1053
/// (server shutdown in progress) and 1927 (connection killed). Too many connections is not one:
/// the server is up, and the connections already open still serve.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn server_going_away(db: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "postgres")]
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = pg.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(my.number(), 1053 | 1927);
    }
    false
}

/// Whether the database rolled the whole transaction back as the victim of a deadlock or a
/// serialization failure, so that running it again is safe. sqlx classifies neither
/// (`ErrorKind` has no such kind), so the documented codes are named here: Postgres SQLSTATE
/// `40P01` (deadlock_detected) and `40001` (serialization_failure); MySQL/MariaDB error 1213
/// (`ER_LOCK_DEADLOCK`, which rolls back the transaction; a lock wait timeout does not, and is not
/// retried).
#[allow(unused_variables)]
pub(crate) fn rolled_back(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    #[cfg(feature = "postgres")]
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return matches!(pg.code(), "40P01" | "40001");
    }
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return my.number() == 1213;
    }
    false
}

/// Whether the database reports a condition that passes by itself. sqlx gives these no
/// `ErrorKind`, so the documented codes are named:
/// - Postgres SQLSTATE class `08` (connection exception), `57P01`/`57P02`/`57P03` (admin or crash
///   shutdown, cannot connect now: a restart), `53300` (too many connections). Authentication
///   (`28…`) and a missing database (`3D000`) stay permanent, at connect or later.
/// - MySQL/MariaDB 1040 (too many connections), 1053 (server shutdown in progress), 1927
///   (connection killed).
/// - SQLite `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6), with their extended codes, after the busy
///   timeout.
#[allow(unused_variables)]
fn server_says_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "postgres")]
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = pg.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300");
    }
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(my.number(), 1040 | 1053 | 1927);
    }
    #[cfg(feature = "sqlite")]
    if let Some(lite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        let primary = sqlx::error::DatabaseError::code(lite)
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        return matches!(primary, Some(5 | 6));
    }
    false
}

/// [`corrupt`] for a session known by its stored key bytes (the dialects' view).
pub(crate) fn corrupt_raw(
    backend: &'static str, key: crate::dialect::Key<'_>, what: &str,
) -> Error {
    let id_prefix = std::str::from_utf8(key.sid)
        .ok()
        .and_then(|sid| session_core::SessionId::parse(sid).ok())
        .map(|id| id.prefix().to_owned())
        .unwrap_or_default();
    Error::Corrupt {
        backend,
        app: String::from_utf8_lossy(key.app).into_owned(),
        id_prefix,
        source: what.to_owned().into(),
    }
}

/// [`Error::Corrupt`] for a stored row that cannot be decoded.
pub(crate) fn corrupt(backend: &'static str, key: &session_core::SessionKey, what: &str) -> Error {
    Error::Corrupt {
        backend,
        app: key.app().as_str().to_owned(),
        id_prefix: key.id().prefix().to_owned(),
        source: what.to_owned().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_is_transient_and_configuration_is_not() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(classify("postgres", Operation::Read, io).is_transient());
        assert!(classify("postgres", Operation::Read, sqlx::Error::PoolTimedOut).is_transient());
        // A pool closed by `SqlStore::close` never comes back: retrying would only wait.
        assert!(!classify("postgres", Operation::Read, sqlx::Error::PoolClosed).is_transient());
        let conf = sqlx::Error::Configuration("bad".into());
        let e = classify("postgres", Operation::Connect, conf);
        assert!(matches!(e, Error::Backend { .. }));
        assert!(
            std::error::Error::source(&e).is_some(),
            "the source is kept"
        );
        // A rejected certificate (rustls: `InvalidData`) at connect is not transient.
        let tls = || sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, "cert"));
        assert!(matches!(
            classify("postgres", Operation::Connect, tls()),
            Error::Backend { .. }
        ));
        assert!(classify("postgres", Operation::Read, tls()).is_transient());
        let refused = sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(classify("postgres", Operation::Connect, refused).is_transient());
    }
}
