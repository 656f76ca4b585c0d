//! How sqlx errors become [`session_core::Error`]s. Classified through sqlx's API (error variants,
//! and for Postgres the server's severity), never by message text.

use session_core::{Error, Operation};

/// Maps a driver error of `operation` on `backend`.
///
/// - Connection and I/O failures, pool timeouts and a server that terminates the connection
///   (Postgres `FATAL`/`PANIC` during an operation: shutdown, restart, admin kill) are
///   [`Error::Unavailable`]: transient, the retry policy may try again.
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
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            terminated_connection(db.as_ref()) && operation != Operation::Connect
        }
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

/// Whether the server ended the session with this error (Postgres severity `FATAL` or `PANIC`).
#[allow(unused_variables)]
fn terminated_connection(db: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "postgres")]
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        use sqlx::postgres::PgSeverity;
        return matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic);
    }
    false
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
