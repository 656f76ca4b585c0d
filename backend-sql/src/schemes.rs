//! Which database a connection URL names (this crate parses its own schemes; the `sessions` facade
//! dispatches on [`accepts`]), and the first connection, made under the configured connect timeout.

use session_core::{Error, Result, url_scheme};

/// The schemes of PostgreSQL URLs (cargo feature `postgres`).
pub const POSTGRES_SCHEMES: &[&str] = &["postgres", "postgresql"];
/// The scheme of SQLite URLs, `sqlite:path` or `sqlite::memory:` (cargo feature `sqlite`).
pub const SQLITE_SCHEMES: &[&str] = &["sqlite"];
/// The schemes of MySQL and MariaDB URLs (cargo feature `mysql`).
pub const MYSQL_SCHEMES: &[&str] = &["mysql", "mariadb"];

/// Whether this build of the crate serves `url`: its scheme (case-insensitive) names a database
/// whose cargo feature is on.
pub fn accepts(url: &str) -> bool {
    Database::from_url(url).is_ok()
}

/// A database this build serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Database {
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "sqlite")]
    Sqlite,
    #[cfg(feature = "mysql")]
    Mysql,
}

impl Database {
    /// The database `url`'s scheme names.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `url` for a scheme that is no SQL database's, or one whose
    /// cargo feature is off (the message names the feature).
    pub(crate) fn from_url(url: &str) -> Result<Self> {
        let scheme = url_scheme(url).unwrap_or_default();
        let feature = [
            (POSTGRES_SCHEMES, "postgres"),
            (SQLITE_SCHEMES, "sqlite"),
            (MYSQL_SCHEMES, "mysql"),
        ]
        .into_iter()
        .find(|(schemes, _)| schemes.contains(&scheme.as_str()))
        .map(|(_, feature)| feature);
        match feature {
            #[cfg(feature = "postgres")]
            Some("postgres") => Ok(Self::Postgres),
            #[cfg(feature = "sqlite")]
            Some("sqlite") => Ok(Self::Sqlite),
            #[cfg(feature = "mysql")]
            Some("mysql") => Ok(Self::Mysql),
            Some(feature) => Err(Error::config(
                "url",
                format!(
                    "backend-sql was built without its {feature:?} feature, which serves \
                     {scheme}: URLs"
                ),
            )),
            None => Err(Error::config(
                "url",
                format!(
                    "scheme {scheme:?} is not a SQL database's (expected postgres://, \
                     postgresql://, sqlite:, mysql:// or mariadb://)"
                ),
            )),
        }
    }
}

/// Opens one connection with `options` and closes it again, so that a wrong address, password,
/// database or TLS setting fails at connect with its own error. The connection must be made
/// within `timeout` (`connectionTimeoutInMilliseconds`), else [`Error::Timeout`]. Later
/// connections are opened by the pool, within its acquire timeout
/// ([`SqlOptions::with_pool_acquire_timeout`](crate::SqlOptions::with_pool_acquire_timeout)):
/// sqlx has no connect timeout of its own; `health` bounds by `timeout` how long an operation
/// waits for them when the server does not answer.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn check_connect<O>(
    options: &O, timeout: std::time::Duration, backend: &'static str,
) -> Result<()>
where
    O: sqlx::ConnectOptions,
    O::Connection: Sized,
{
    match tokio::time::timeout(timeout, options.connect()).await {
        Ok(Ok(conn)) => {
            // Closing politely is a courtesy to the server; a failure changes nothing here.
            let _ = sqlx::Connection::close(conn).await;
            Ok(())
        }
        Ok(Err(e)) => Err(crate::error::classify(
            backend,
            session_core::Operation::Connect,
            e,
        )),
        Err(_) => Err(Error::Timeout {
            backend,
            operation: session_core::Operation::Connect,
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each scheme names its database, or, in a build without that database's feature, an error
    /// that says so.
    #[test]
    fn each_database_is_named_by_its_schemes() {
        let (postgres, sqlite, mysql) = (
            cfg!(feature = "postgres"),
            cfg!(feature = "sqlite"),
            cfg!(feature = "mysql"),
        );
        for (url, database, built) in [
            ("postgres://u:p@h/db", "Postgres", postgres),
            ("PostgreSQL://h/db", "Postgres", postgres),
            ("sqlite::memory:", "Sqlite", sqlite),
            ("sqlite:/tmp/x.db", "Sqlite", sqlite),
            ("mysql://u@h/db", "Mysql", mysql),
            ("MariaDB://u@h/db", "Mysql", mysql),
        ] {
            match Database::from_url(url) {
                Ok(found) if built => assert_eq!(format!("{found:?}"), database, "{url}"),
                Err(e) if !built => assert!(e.to_string().contains("built without"), "{e}"),
                other => panic!("{url}: {other:?}"),
            }
            assert_eq!(accepts(url), built, "{url}");
        }
        for other in ["redis://h", "memory://", "sqlite3:x.db", "nonsense", ""] {
            assert!(!accepts(other), "{other}");
            let Err(Error::InvalidConfig { setting, .. }) = Database::from_url(other) else {
                panic!("{other} accepted");
            };
            assert_eq!(setting, "url");
        }
    }

    /// `connectionTimeoutInMilliseconds` bounds the first connection on the networked databases:
    /// a server that accepts TCP but never answers fails at connect with `Timeout` after it, not
    /// after the (much longer) pool acquire timeout.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[tokio::test]
    async fn the_connect_timeout_bounds_the_first_connection() {
        use std::time::{Duration, Instant};

        use session_core::{Config, Operation};

        use crate::{SqlOptions, SqlStore};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and holds every connection, never saying a word.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let timeout = Duration::from_millis(300);
        let urls = [
            format!("postgres://u:pw@127.0.0.1:{port}/db?sslmode=disable"),
            format!("mysql://u:pw@127.0.0.1:{port}/db?ssl-mode=disabled"),
        ];
        for url in urls.into_iter().filter(|url| accepts(url)) {
            let config = Config::builder()
                .url(&url)
                .connection_timeout(Some(timeout))
                .build()
                .unwrap();
            let options = SqlOptions::new()
                .with_pool_acquire_timeout(Duration::from_secs(30))
                .with_sweeper(None);
            let started = Instant::now();
            let err = SqlStore::connect_with(&config, options).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Timeout { operation: Operation::Connect, after, .. } if after == timeout
                ),
                "{url}: {err:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(5), "{url}");
        }
        silent.abort();
    }

    /// The pool's acquire timeout is `SqlOptions::with_pool_acquire_timeout`, not the connect
    /// timeout (sqlx's pool prints it as `connect_timeout`).
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn the_pool_waits_for_the_pool_acquire_timeout() {
        use std::time::Duration;

        use session_core::Config;

        use crate::{SqlOptions, SqlStore};

        let config = Config::builder()
            .url("sqlite::memory:")
            .connection_timeout(Some(Duration::from_millis(4321)))
            .build()
            .unwrap();
        let options = SqlOptions::new()
            .with_pool_acquire_timeout(Duration::from_millis(1234))
            .with_sweeper(None);
        let store = SqlStore::connect_with(&config, options).await.unwrap();
        let debug = format!("{store:?}");
        assert!(debug.contains("connect_timeout: 1.234s"), "{debug}");
        assert!(!debug.contains("4.321s"), "{debug}");
        let default = SqlStore::connect_with(&config, SqlOptions::new().with_sweeper(None))
            .await
            .unwrap();
        let debug = format!("{default:?}");
        assert!(debug.contains("connect_timeout: 30s"), "{debug}");
    }
}
