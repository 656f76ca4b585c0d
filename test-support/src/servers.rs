//! The server variants under test, one typed description each, read from the `SESSION_TEST_*`
//! variables (the table in the crate docs).

use std::path::{Path, PathBuf};

use backend_redis::RedisOptions;

use crate::require::Unconfigured;

/// A variable's value; unset and empty are the same.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `var`, or [`Unconfigured`] for `backend`.
fn needed(backend: Variant, var: &str) -> Result<String, Unconfigured> {
    env(var).ok_or_else(|| Unconfigured::missing(backend, var))
}

/// A server variant the tests run against, named as in `SESSION_TEST_REQUIRE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// A standalone Redis (`redis`).
    Redis,
    /// Redis over TLS, with an ACL user and a private CA (`redis-tls`).
    RedisTls,
    /// A Redis Cluster (`redis-cluster`).
    RedisCluster,
    /// Postgres (`postgres`).
    Postgres,
    /// MySQL or MariaDB (`mysql`).
    Mysql,
}

impl Variant {
    /// Every variant, in the order the runners list them.
    pub const ALL: [Self; 5] = [
        Self::Redis,
        Self::RedisTls,
        Self::RedisCluster,
        Self::Postgres,
        Self::Mysql,
    ];

    /// Its name in `SESSION_TEST_REQUIRE` (and in the name of its "configured" trial).
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::RedisTls => "redis-tls",
            Self::RedisCluster => "redis-cluster",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }

    /// The variant's server, from the environment.
    ///
    /// # Errors
    /// [`Unconfigured`] when a variable it needs is unset or malformed.
    pub fn server(self) -> Result<Server, Unconfigured> {
        Ok(match self {
            Self::Redis => Server::Redis(redis()?),
            Self::RedisTls => Server::RedisTls(redis_tls()?),
            Self::RedisCluster => Server::RedisCluster(redis_cluster()?),
            Self::Postgres => Server::Postgres(postgres()?),
            Self::Mysql => Server::Mysql(mysql()?),
        })
    }
}

/// The server of one variant.
#[derive(Debug, Clone)]
pub enum Server {
    /// See [`redis`].
    Redis(Redis),
    /// See [`redis_tls`].
    RedisTls(RedisTls),
    /// See [`redis_cluster`].
    RedisCluster(RedisCluster),
    /// See [`postgres`].
    Postgres(SqlServer),
    /// See [`mysql`].
    Mysql(SqlServer),
}

impl Server {
    /// Its variant.
    pub fn backend(&self) -> Variant {
        match self {
            Self::Redis(_) => Variant::Redis,
            Self::RedisTls(_) => Variant::RedisTls,
            Self::RedisCluster(_) => Variant::RedisCluster,
            Self::Postgres(_) => Variant::Postgres,
            Self::Mysql(_) => Variant::Mysql,
        }
    }

    /// The connection URL, as `Config::from_url` reads it (a cluster as one
    /// `redis+cluster://` URL).
    pub fn url(&self) -> &str {
        match self {
            Self::Redis(s) => s.url(),
            Self::RedisTls(s) => s.url(),
            Self::RedisCluster(s) => s.url(),
            Self::Postgres(s) | Self::Mysql(s) => s.url(),
        }
    }
}

/// A standalone Redis server: `SESSION_TEST_REDIS_URL`.
#[derive(Debug, Clone)]
pub struct Redis {
    url: String,
}

/// The standalone Redis server (`SESSION_TEST_REDIS_URL`).
///
/// # Errors
/// [`Unconfigured`] when the variable is unset.
pub fn redis() -> Result<Redis, Unconfigured> {
    Ok(Redis {
        url: needed(Variant::Redis, "SESSION_TEST_REDIS_URL")?,
    })
}

impl Redis {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of its database `db` (the URL's own path and query replaced by `/{db}`).
    pub fn database(&self, db: u32) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("redis", &self.url));
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        format!("{scheme}://{authority}/{db}")
    }
}

/// A Redis server over TLS: `SESSION_TEST_REDIS_TLS_URL` (`rediss://user:pw@host:port`, an ACL
/// user) and the CA file that signed its certificate, `SESSION_TEST_REDIS_CA`; optionally an
/// unrelated CA, `SESSION_TEST_REDIS_OTHER_CA`.
#[derive(Debug, Clone)]
pub struct RedisTls {
    url: String,
    ca: PathBuf,
    other_ca: Option<PathBuf>,
}

/// The Redis server over TLS (`SESSION_TEST_REDIS_TLS_URL`, `SESSION_TEST_REDIS_CA`).
///
/// # Errors
/// [`Unconfigured`] when either variable is unset.
pub fn redis_tls() -> Result<RedisTls, Unconfigured> {
    Ok(RedisTls {
        url: needed(Variant::RedisTls, "SESSION_TEST_REDIS_TLS_URL")?,
        ca: needed(Variant::RedisTls, "SESSION_TEST_REDIS_CA")?.into(),
        other_ca: env("SESSION_TEST_REDIS_OTHER_CA").map(PathBuf::from),
    })
}

impl RedisTls {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA file that signed the server's certificate.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// An unrelated CA file, whose trust must not let a client in, if configured.
    pub fn other_ca(&self) -> Option<&Path> {
        self.other_ca.as_deref()
    }

    /// The store options that trust [`RedisTls::ca`].
    pub fn options(&self) -> RedisOptions {
        RedisOptions::new().with_ca_file(&self.ca)
    }
}

/// A Redis Cluster: its seed nodes, `SESSION_TEST_REDIS_CLUSTER_URLS` (comma-separated
/// `redis://host:port`), and the directory where `scripts/redis/start.sh` left each node's pidfile
/// and start command, `SESSION_TEST_REDIS_RUN_DIR` (default `/tmp/ci-redis`).
#[derive(Debug, Clone)]
pub struct RedisCluster {
    seeds: Vec<String>,
    url: String,
    run_dir: PathBuf,
}

/// The Redis Cluster (`SESSION_TEST_REDIS_CLUSTER_URLS`).
///
/// # Errors
/// [`Unconfigured`] when the variable is unset, or not a list of `redis://` URLs (which fails
/// whether or not the variant is required).
pub fn redis_cluster() -> Result<RedisCluster, Unconfigured> {
    const VAR: &str = "SESSION_TEST_REDIS_CLUSTER_URLS";
    let list = needed(Variant::RedisCluster, VAR)?;
    let url = cluster_url(&list)
        .map_err(|why| Unconfigured::malformed(Variant::RedisCluster, VAR, &why))?;
    Ok(RedisCluster {
        seeds: list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        url,
        run_dir: env("SESSION_TEST_REDIS_RUN_DIR")
            .unwrap_or_else(|| "/tmp/ci-redis".to_owned())
            .into(),
    })
}

impl RedisCluster {
    /// The seed nodes' URLs, as listed (`redis://host:port`).
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// The cluster as one URL: `redis+cluster://h1:p1,h2:p2` (see [`cluster_url`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where each node's `<port>/redis.pid` and `<port>/start.sh` are.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

/// A list of seed URLs (`redis://a:1, redis://b:2`) as the one URL the Redis store reads for a
/// cluster (`redis+cluster://a:1,b:2`; `rediss://` seeds give `rediss+cluster://`). Credentials
/// (`redis://user:pw@a:1`) are kept once, in front of the hosts; each seed's path is dropped.
///
/// # Errors
/// A message when the list is empty, a seed has no `redis://` or `rediss://` scheme, or the seeds
/// disagree on the scheme or the credentials.
pub fn cluster_url(seeds: &str) -> Result<String, String> {
    let mut first: Option<(&str, &str)> = None;
    let mut hosts = Vec::new();
    for seed in seeds.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (scheme, rest) = seed
            .split_once("://")
            .ok_or_else(|| format!("{seed:?} has no scheme (expected redis://host:port)"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "redis" && scheme != "rediss" {
            return Err(format!("{seed:?} is not a redis:// or rediss:// URL"));
        }
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        let (auth, host) = authority.rsplit_once('@').unwrap_or(("", authority));
        if host.is_empty() {
            return Err(format!("{seed:?} has no host"));
        }
        let scheme = if scheme == "redis" { "redis" } else { "rediss" };
        match first {
            None => first = Some((scheme, auth)),
            Some(f) if f != (scheme, auth) => {
                return Err(format!(
                    "{seed:?}: every seed must have the same scheme and credentials"
                ));
            }
            Some(_) => {}
        }
        hosts.push(host);
    }
    let (scheme, auth) = first.ok_or("no seed URL")?;
    let auth = if auth.is_empty() {
        String::new()
    } else {
        format!("{auth}@")
    };
    Ok(format!("{scheme}+cluster://{auth}{}", hosts.join(",")))
}

/// A SQL server: Postgres (`SESSION_TEST_POSTGRES_URL`) or MySQL/MariaDB
/// (`SESSION_TEST_MYSQL_URL`).
#[derive(Debug, Clone)]
pub struct SqlServer {
    backend: Variant,
    url: String,
}

/// The Postgres server (`SESSION_TEST_POSTGRES_URL`).
///
/// # Errors
/// [`Unconfigured`] when the variable is unset.
pub fn postgres() -> Result<SqlServer, Unconfigured> {
    sql(Variant::Postgres, "SESSION_TEST_POSTGRES_URL")
}

/// The MySQL or MariaDB server (`SESSION_TEST_MYSQL_URL`).
///
/// # Errors
/// [`Unconfigured`] when the variable is unset.
pub fn mysql() -> Result<SqlServer, Unconfigured> {
    sql(Variant::Mysql, "SESSION_TEST_MYSQL_URL")
}

fn sql(backend: Variant, var: &str) -> Result<SqlServer, Unconfigured> {
    Ok(SqlServer {
        backend,
        url: needed(backend, var)?,
    })
}

impl SqlServer {
    /// [`Variant::Postgres`] or [`Variant::Mysql`].
    pub fn backend(&self) -> Variant {
        self.backend
    }

    /// Its URL (`scripts/sql/start.sh` writes plain connections: `sslmode=disable`,
    /// `ssl-mode=disabled`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA files for its TLS tests (`SESSION_TEST_SQL_CA`, `SESSION_TEST_SQL_OTHER_CA`).
    ///
    /// # Errors
    /// [`Unconfigured`] for this server's variant when either variable is unset.
    pub fn tls(&self) -> Result<SqlTls, Unconfigured> {
        Ok(SqlTls {
            ca: needed(self.backend, "SESSION_TEST_SQL_CA")?.into(),
            other_ca: needed(self.backend, "SESSION_TEST_SQL_OTHER_CA")?.into(),
        })
    }
}

/// The CA files of the SQL servers' TLS: the one that signed both servers' certificate
/// (`DNS:localhost`, `IP:127.0.0.1`), and an unrelated one that must be rejected.
#[derive(Debug, Clone)]
pub struct SqlTls {
    ca: PathBuf,
    other_ca: PathBuf,
}

impl SqlTls {
    /// The CA that signed the servers' certificate.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// An unrelated CA.
    pub fn other_ca(&self) -> &Path {
        &self.other_ca
    }
}

/// A local Postgres cluster that tests may stop and start: its URL, its data directory
/// (`SESSION_TEST_POSTGRES_DATA`) and the directory of its `pg_ctl` (`SESSION_TEST_POSTGRES_BIN`).
#[derive(Debug, Clone)]
pub struct PostgresCluster {
    url: String,
    data: PathBuf,
    bin: PathBuf,
}

/// The restartable Postgres cluster (`SESSION_TEST_POSTGRES_URL`, `SESSION_TEST_POSTGRES_DATA`,
/// `SESSION_TEST_POSTGRES_BIN`).
///
/// # Errors
/// [`Unconfigured`] (variant `postgres`) when any of them is unset.
pub fn postgres_cluster() -> Result<PostgresCluster, Unconfigured> {
    Ok(PostgresCluster {
        url: postgres()?.url,
        data: needed(Variant::Postgres, "SESSION_TEST_POSTGRES_DATA")?.into(),
        bin: needed(Variant::Postgres, "SESSION_TEST_POSTGRES_BIN")?.into(),
    })
}

impl PostgresCluster {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its data directory (`pg_ctl -D`).
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The directory holding `pg_ctl`.
    pub fn bin(&self) -> &Path {
        &self.bin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists_become_one_cluster_url() {
        assert_eq!(
            cluster_url("redis://127.0.0.1:7000,redis://127.0.0.1:7001").as_deref(),
            Ok("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
        );
        assert_eq!(
            cluster_url(" rediss://h:1/ , rediss://g:2/0,").as_deref(),
            Ok("rediss+cluster://h:1,g:2")
        );
        assert_eq!(
            cluster_url("redis://u:pw@h:1,redis://u:pw@g:2").as_deref(),
            Ok("redis+cluster://u:pw@h:1,g:2")
        );
    }

    #[test]
    fn bad_seed_lists_are_errors() {
        for bad in [
            "",
            " , ",
            "127.0.0.1:7000",
            "postgres://h:1",
            "redis://",
            "redis://h:1,rediss://g:2",
            "redis://a:pw@h:1,redis://g:2",
        ] {
            assert!(cluster_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_database_replaces_the_path() {
        let redis = |url: &str| Redis { url: url.into() };
        assert_eq!(redis("redis://h:1").database(5), "redis://h:1/5");
        assert_eq!(redis("redis://h:1/").database(9), "redis://h:1/9");
        assert_eq!(
            redis("redis://:pw@h:1/0?x=1").database(2),
            "redis://:pw@h:1/2"
        );
    }

    #[test]
    fn backends_have_their_require_names() {
        let names: Vec<_> = Variant::ALL.iter().map(|b| b.name()).collect();
        assert_eq!(
            names,
            ["redis", "redis-tls", "redis-cluster", "postgres", "mysql"]
        );
    }
}
