//! From `session_core::Config` (the seed's attributes or a URL) and [`RedisOptions`] to what the
//! driver needs: the nodes, TLS trust, database and timeouts.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
};
use session_core::{BackendKind, Config, Error, Result};

/// The connect timeout when `connectionTimeoutInMilliseconds` is 0 (StackExchange.Redis's default,
/// which the ASP.NET provider inherits).
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The per-command response timeout when `operationTimeoutInMilliseconds` is 0 (as
/// StackExchange.Redis's `SyncTimeout`).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Redis-specific options that have no attribute in the seed's provider.
///
/// ```
/// let options = backend_redis::RedisOptions::new().with_ca_file("/etc/redis/ca.crt");
/// # let _ = options;
/// ```
#[derive(Clone, Default)]
pub struct RedisOptions {
    ca: Option<CaSource>,
}

#[derive(Clone)]
enum CaSource {
    Pem(Vec<u8>),
    File(PathBuf),
}

impl RedisOptions {
    /// No options: TLS trusts the system's root certificates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts only this CA certificate (PEM) for TLS instead of the system roots.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(CaSource::Pem(pem.into()));
        self
    }

    /// Trusts only the CA certificate (PEM) in this file, read at connect.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(CaSource::File(path.into()));
        self
    }

    /// The CA certificate's PEM bytes, if one was given.
    pub(crate) fn ca_pem(&self) -> Result<Option<Vec<u8>>> {
        match &self.ca {
            None => Ok(None),
            Some(CaSource::Pem(pem)) => Ok(Some(pem.clone())),
            Some(CaSource::File(path)) => std::fs::read(path).map(Some).map_err(|e| {
                Error::config(
                    "ca_file",
                    format!("cannot read CA certificate {}: {e}", path.display()),
                )
            }),
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ca = match &self.ca {
            None => "system roots".to_owned(),
            Some(CaSource::Pem(_)) => "PEM".to_owned(),
            Some(CaSource::File(p)) => p.display().to_string(),
        };
        f.debug_struct("RedisOptions").field("ca", &ca).finish()
    }
}

/// Everything needed to open the connection, resolved and validated.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// One node (standalone) or the cluster's seed nodes.
    pub(crate) nodes: Vec<ConnectionInfo>,
    pub(crate) cluster: bool,
    pub(crate) tls: bool,
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) connection_timeout: Duration,
    pub(crate) response_timeout: Duration,
    /// `host:port` of the first node, for error messages.
    pub(crate) addr: String,
}

impl Settings {
    pub(crate) fn resolve(config: &Config, options: &RedisOptions) -> Result<Self> {
        let (nodes, cluster) = match config.url() {
            Some(url) => from_url(url)?,
            None => (vec![from_attributes(config)?], false),
        };
        let tls = nodes
            .iter()
            .any(|n| matches!(n.addr(), ConnectionAddr::TcpTls { .. }));
        if cluster && nodes.iter().any(|n| n.redis_settings().db() != 0) {
            return Err(Error::config(
                "databaseId",
                "Redis Cluster has only database 0",
            ));
        }
        let ca_pem = options.ca_pem()?;
        if ca_pem.is_some() && !tls {
            return Err(Error::config(
                "ca",
                "a CA certificate was given but TLS is off (set ssl=true or use rediss://)",
            ));
        }
        let addr = nodes
            .first()
            .map(|n| match n.addr() {
                ConnectionAddr::Tcp(h, p)
                | ConnectionAddr::TcpTls {
                    host: h, port: p, ..
                } => {
                    format!("{h}:{p}")
                }
                other => other.to_string(),
            })
            .unwrap_or_default();
        Ok(Self {
            nodes,
            cluster,
            tls,
            ca_pem,
            connection_timeout: config
                .connection_timeout()
                .unwrap_or(DEFAULT_CONNECTION_TIMEOUT),
            response_timeout: config
                .operation_timeout()
                .unwrap_or(DEFAULT_OPERATION_TIMEOUT),
            addr,
        })
    }
}

/// RESP3: the release signal arrives as push messages on the same multiplexed connection.
fn resp3(info: ConnectionInfo) -> ConnectionInfo {
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    info.set_redis_settings(redis)
}

/// `host`, `port`, `accessKey`, `user`, `ssl`, `databaseId` (the seed's host/port path).
fn from_attributes(config: &Config) -> Result<ConnectionInfo> {
    let host = config.host().unwrap_or("127.0.0.1").to_owned();
    // Port 0: the default port, 6380 with TLS as on Azure Cache for Redis, else 6379.
    let port = match (config.port(), config.ssl()) {
        (0, true) => 6380,
        (0, false) => 6379,
        (p, _) => p,
    };
    let addr = if config.ssl() {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    let db = i64::from(config.database_id());
    let mut redis = RedisConnectionInfo::default().set_db(db);
    if let Some(user) = config.user() {
        redis = redis.set_username(user);
    }
    if let Some(key) = config.access_key() {
        redis = redis.set_password(key);
    }
    let info = addr
        .into_connection_info()
        .map_err(|e| Error::config("host", e.to_string()))?
        .set_redis_settings(redis);
    Ok(resp3(info))
}

/// `redis://`, `rediss://` (one server) or `redis+cluster://`, `rediss+cluster://` with one or more
/// comma-separated seed nodes: `redis+cluster://user:pw@h1:7000,h2:7001`.
fn from_url(url: &str) -> Result<(Vec<ConnectionInfo>, bool)> {
    let bad = |reason: String| Error::config("url", reason);
    let cluster = match BackendKind::from_url(url)? {
        BackendKind::Redis => false,
        BackendKind::RedisCluster => true,
        _ => {
            return Err(bad(
                "not a Redis URL (redis://, rediss://, redis+cluster://, rediss+cluster://)".into(),
            ));
        }
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected scheme://host".into()))?;
    let scheme = scheme.to_ascii_lowercase().replace("+cluster", "");
    let (userinfo, hosts_and_path) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let split = hosts_and_path
        .find(['/', '?'])
        .unwrap_or(hosts_and_path.len());
    let (hosts, tail) = hosts_and_path.split_at(split);
    let mut nodes = Vec::new();
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        let node = match userinfo {
            Some(u) => format!("{scheme}://{u}@{host}{tail}"),
            None => format!("{scheme}://{host}{tail}"),
        };
        let info = node
            .as_str()
            .into_connection_info()
            // The driver's message names what is wrong without echoing the password.
            .map_err(|e| bad(format!("{}: {e}", session_core::redact_url(&node))))?;
        nodes.push(resp3(info));
    }
    if nodes.is_empty() {
        return Err(bad("names no host".into()));
    }
    if !cluster && nodes.len() > 1 {
        return Err(bad(
            "several hosts need a cluster URL (redis+cluster://h1:p1,h2:p2)".into(),
        ));
    }
    Ok((nodes, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(config: Config) -> Settings {
        Settings::resolve(&config, &RedisOptions::new()).unwrap()
    }

    #[test]
    fn attributes_describe_the_server() {
        let c = Config::from_attributes([
            ("host", "cache.example"),
            ("accessKey", "pw"),
            ("user", "app"),
            ("ssl", "true"),
            ("databaseId", "3"),
            ("operationTimeoutInMilliseconds", "250"),
        ])
        .unwrap();
        let s = settings(c);
        assert!(s.tls && !s.cluster);
        assert_eq!(s.addr, "cache.example:6380");
        let r = s.nodes[0].redis_settings();
        assert_eq!(
            (r.db(), r.username(), r.password()),
            (3, Some("app"), Some("pw"))
        );
        assert_eq!(s.response_timeout, Duration::from_millis(250));
        assert_eq!(s.connection_timeout, DEFAULT_CONNECTION_TIMEOUT);
        let plain = settings(Config::from_attributes([("host", "h")]).unwrap());
        assert_eq!((plain.addr.as_str(), plain.tls), ("h:6379", false));
    }

    #[test]
    fn urls_select_standalone_or_cluster() {
        let s = settings(Config::from_url("rediss://u:p@localhost:6390/2").unwrap());
        assert!(s.tls && !s.cluster);
        assert_eq!(s.nodes[0].redis_settings().db(), 2);
        let s = settings(
            Config::from_url("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001").unwrap(),
        );
        assert!(s.cluster && !s.tls);
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.nodes[1].redis_settings().password(), Some("pw"));
        let bad = Config::from_url("redis://a:1,b:2").unwrap();
        assert!(Settings::resolve(&bad, &RedisOptions::new()).is_err());
        let bad = Config::from_url("redis+cluster://a:1/3").unwrap();
        assert!(Settings::resolve(&bad, &RedisOptions::new()).is_err());
        let plain_with_ca = Config::from_url("redis://a:1").unwrap();
        let ca = RedisOptions::new().with_ca_pem(b"x".to_vec());
        assert!(Settings::resolve(&plain_with_ca, &ca).is_err());
    }
}
