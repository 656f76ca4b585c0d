//! From `session_core::Config` (the seed's attributes, a URL or a StackExchange.Redis
//! configuration string, read by `config_string`) and [`RedisOptions`] to what the driver needs:
//! the nodes, TLS trust, database and timeouts. This crate parses its own schemes
//! ([`SCHEMES`]; the `sessions` facade dispatches on [`accepts`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
};
use session_core::{Config, Error, Result, redact_url, url_scheme};

use crate::config_string::{self, is_url};
use crate::expiry::ExpiryListenerLimits;
use crate::near::NearCacheLimits;

/// The schemes of Redis URLs: one server (`redis://`, `rediss://` with TLS) or a cluster
/// (`redis+cluster://`, `rediss+cluster://`, with one or more comma-separated seed nodes).
pub const SCHEMES: &[&str] = &["redis", "rediss", "redis+cluster", "rediss+cluster"];

/// Whether `url` names a Redis server or cluster: its scheme (case-insensitive) is one of
/// [`SCHEMES`]. The rest of the URL is checked when the store connects.
pub fn accepts(url: &str) -> bool {
    url_scheme(url).is_some_and(|s| SCHEMES.contains(&s.as_str()))
}

/// The driver's response timeout when `operationTimeoutInMilliseconds` is unset (as
/// StackExchange.Redis's `SyncTimeout`, the ASP.NET meaning of 0). See [`response_timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much longer than `operationTimeoutInMilliseconds` the driver waits for a reply: enough
/// that the manager's retry decorator, which owns the operation timeout, always fires first.
pub const RESPONSE_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// The driver's response timeout (per command), derived in this one way from
/// `operationTimeoutInMilliseconds`, which the manager's retry decorator enforces per attempt:
/// that timeout plus [`RESPONSE_TIMEOUT_MARGIN`], so that the decorator's fires first and the
/// driver's is only a backstop for a store used without a manager; [`DEFAULT_RESPONSE_TIMEOUT`]
/// when it is unset (no limit per attempt in the manager, so the driver's is the only one).
///
/// ```
/// use std::time::Duration;
/// use backend_redis::{DEFAULT_RESPONSE_TIMEOUT, response_timeout};
///
/// assert_eq!(response_timeout(Some(Duration::from_millis(250))), Duration::from_millis(1250));
/// assert_eq!(response_timeout(None), DEFAULT_RESPONSE_TIMEOUT);
/// ```
pub fn response_timeout(operation_timeout: Option<Duration>) -> Duration {
    match operation_timeout {
        Some(timeout) => timeout.saturating_add(RESPONSE_TIMEOUT_MARGIN),
        None => DEFAULT_RESPONSE_TIMEOUT,
    }
}

/// Redis-specific options that have no attribute in the seed's provider.
///
/// ```
/// let options = backend_redis::RedisOptions::new().with_ca_file("/etc/redis/ca.crt");
/// # let _ = options;
/// ```
#[derive(Clone, Default)]
pub struct RedisOptions {
    ca: Option<CaSource>,
    near_limits: NearCacheLimits,
    expiry_limits: ExpiryListenerLimits,
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

    /// The memory bound of the near cache (used when the configuration turns it on with
    /// `nearCache`; default [`NearCacheLimits::DEFAULT`]).
    pub fn with_near_cache_limits(mut self, limits: NearCacheLimits) -> Self {
        self.near_limits = limits;
        self
    }

    /// The near cache's memory bound.
    pub fn near_cache_limits(&self) -> NearCacheLimits {
        self.near_limits
    }

    /// The expiry listener's memory bound: its queue of expired sessions waiting for their take,
    /// and the takes in flight (default [`ExpiryListenerLimits::DEFAULT`]).
    pub fn with_expiry_listener_limits(mut self, limits: ExpiryListenerLimits) -> Self {
        self.expiry_limits = limits;
        self
    }

    /// The expiry listener's memory bound.
    pub fn expiry_listener_limits(&self) -> ExpiryListenerLimits {
        self.expiry_limits
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
        f.debug_struct("RedisOptions")
            .field("ca", &ca)
            .field("near_limits", &self.near_limits)
            .field("expiry_limits", &self.expiry_limits)
            .finish()
    }
}

/// Everything needed to open the connection, resolved and validated.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// One node (standalone) or the cluster's seed nodes.
    pub(crate) nodes: Vec<ConnectionInfo>,
    /// Whether the nodes are a cluster's. `false` until the server says so when the configuration
    /// did not (`host`, `redis://`, a configuration string with one endpoint): the connect asks
    /// the first node and then sets it (`Connection::open`, cluster detection).
    pub(crate) cluster: bool,
    pub(crate) tls: bool,
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// `connectionTimeoutInMilliseconds` (or a configuration string's `connectTimeout`), for
    /// each connection (TCP, TLS, `HELLO`/`AUTH`).
    pub(crate) connection_timeout: Duration,
    /// The driver's per-command timeout: [`response_timeout`] of the operation timeout, or a
    /// configuration string's `asyncTimeout`/`syncTimeout`.
    pub(crate) response_timeout: Duration,
    /// `host:port` of the first node, for error messages.
    pub(crate) addr: String,
    /// The near cache: attribute `nearCache` or URL parameter `nearCache=true`.
    pub(crate) near_cache: bool,
    /// The setting that chose the database, for the error when a cluster has it non-zero
    /// (`databaseId`, `defaultDatabase` or `url`).
    pub(crate) database_setting: &'static str,
}

/// The nodes and what the configuration says about them, before the common checks.
struct Source {
    nodes: Vec<ConnectionInfo>,
    /// The configuration says cluster (`+cluster` URL, several endpoints).
    cluster: bool,
    database_setting: &'static str,
    connection_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
}

impl Source {
    fn of(nodes: Vec<ConnectionInfo>, cluster: bool, database_setting: &'static str) -> Self {
        Self {
            nodes,
            cluster,
            database_setting,
            connection_timeout: None,
            response_timeout: None,
        }
    }
}

impl Settings {
    pub(crate) fn resolve(config: &Config, options: &RedisOptions) -> Result<Self> {
        let mut near_cache = config.near_cache();
        // A URL given where a configuration string is expected (`Config::url` without `://`) is
        // read as one too: only `scheme://` makes a URL here.
        let config_string = config
            .redis_configuration()
            .or(config.url().filter(|url| !is_url(url)));
        let source = match (config_string, config.url()) {
            (Some(text), _) => from_config_string(text, config)?,
            (None, Some(url)) => {
                let (url, near) = take_near_cache(url)?;
                // The URL's parameter, when given, decides (it is the more specific setting).
                near_cache = near.unwrap_or(near_cache);
                let (nodes, cluster) = from_url(&url)?;
                Source::of(nodes, cluster, "url")
            }
            (None, None) => Source::of(vec![from_attributes(config)?], false, "databaseId"),
        };
        let Source {
            nodes,
            cluster,
            database_setting,
            ..
        } = source;
        let tls = nodes
            .iter()
            .any(|n| matches!(n.addr(), ConnectionAddr::TcpTls { .. }));
        if cluster && nodes.iter().any(|n| n.redis_settings().db() != 0) {
            return Err(Error::config(
                database_setting,
                "Redis Cluster has only database 0 (a cluster URL, or several endpoints, names a \
                 cluster)",
            ));
        }
        if near_cache && tls {
            return Err(Error::config(
                "nearCache",
                "the near cache does not support TLS connections (rediss://, ssl=true) yet",
            ));
        }
        let ca_pem = options.ca_pem()?;
        if ca_pem.is_some() && !tls {
            return Err(Error::config(
                "ca",
                "a CA certificate was given but TLS is off (set ssl=true or use rediss://)",
            ));
        }
        let addr = nodes.first().map(address).unwrap_or_default();
        Ok(Self {
            nodes,
            cluster,
            tls,
            ca_pem,
            connection_timeout: source
                .connection_timeout
                .unwrap_or_else(|| config.connection_timeout()),
            response_timeout: source
                .response_timeout
                .unwrap_or_else(|| response_timeout(config.operation_timeout())),
            addr,
            near_cache,
            database_setting,
        })
    }

    /// The database the nodes select.
    pub(crate) fn database(&self) -> i64 {
        self.nodes.first().map_or(0, |n| n.redis_settings().db())
    }
}

/// `host:port` (`[v6]:port`) of a node, for messages.
fn address(node: &ConnectionInfo) -> String {
    match node.addr() {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            if h.contains(':') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            }
        }
        other => other.to_string(),
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
        (0, true) => config_string::DEFAULT_TLS_PORT,
        (0, false) => config_string::DEFAULT_PORT,
        (p, _) => p,
    };
    let db = i64::from(config.database_id());
    let mut redis = RedisConnectionInfo::default().set_db(db);
    if let Some(user) = config.user() {
        redis = redis.set_username(user);
    }
    if let Some(key) = config.access_key() {
        redis = redis.set_password(key);
    }
    node(host, port, config.ssl(), redis, "host")
}

/// One node at `host:port`, with TLS or not, speaking RESP3 with `redis`'s credentials and
/// database; a bad address is an error naming `setting`.
fn node(
    host: String, port: u16, tls: bool, redis: RedisConnectionInfo, setting: &str,
) -> Result<ConnectionInfo> {
    let addr = if tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    let info = addr
        .into_connection_info()
        .map_err(|e| Error::config(setting, e.to_string()))?
        .set_redis_settings(redis);
    Ok(resp3(info))
}

/// A StackExchange.Redis configuration string (`crate::config_string`): one node per endpoint,
/// each with the string's TLS, user and password, and the database `defaultDatabase`, else the
/// attribute `databaseId` (the ASP.NET provider selects `DefaultDatabase ?? DatabaseId`). The
/// attributes `host`, `port`, `accessKey`, `user` and `ssl` are not read, as the provider ignores
/// them with a connection string. Several endpoints are a cluster's seed nodes; one endpoint
/// leaves it to the server (cluster detection at connect).
fn from_config_string(text: &str, config: &Config) -> Result<Source> {
    let parsed = config_string::parse(text)?;
    let (db, database_setting) = match parsed.database {
        Some(db) => (db, "defaultDatabase"),
        None => (config.database_id(), "databaseId"),
    };
    let mut redis = RedisConnectionInfo::default().set_db(i64::from(db));
    if let Some(user) = &parsed.user {
        redis = redis.set_username(user);
    }
    if let Some(password) = &parsed.password {
        redis = redis.set_password(password);
    }
    let nodes = parsed
        .endpoints
        .iter()
        .map(|(host, port)| {
            node(
                host.clone(),
                *port,
                parsed.ssl,
                redis.clone(),
                "connectionString",
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Source {
        cluster: nodes.len() > 1,
        nodes,
        database_setting,
        connection_timeout: parsed.connect_timeout,
        response_timeout: parsed.response_timeout,
    })
}

/// The URL of each node that a Redis URL names, for clients that take one URL per node (the
/// driver's cluster client, a benchmark's raw client): `redis://` and `rediss://` name one server,
/// `redis+cluster://` and `rediss+cluster://` one or more comma-separated seed nodes. Each node's
/// URL keeps the TLS of the whole URL (`rediss+cluster://` gives `rediss://` nodes), its userinfo
/// (user and password) and its path and parameters; the scheme is written in lowercase.
///
/// The host list is split here, not by `url` (which the driver parses each node's URL with): it
/// takes `a:1,b:2` for one host with a bad port. The authority ends, as `url` reads it, at the
/// first `/`, `?` or `#`, and the userinfo at the authority's last `@`.
///
/// ```
/// use backend_redis::node_urls;
///
/// assert_eq!(
///     node_urls("rediss+cluster://app:pw@10.0.0.1:7000,10.0.0.2:7001")?,
///     ["rediss://app:pw@10.0.0.1:7000", "rediss://app:pw@10.0.0.2:7001"],
/// );
/// assert_eq!(node_urls("redis://127.0.0.1:6379/2")?, ["redis://127.0.0.1:6379/2"]);
/// assert!(node_urls("redis://a:1,b:2").is_err());
/// # Ok::<(), session_core::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidConfig`] naming `url` for a scheme not in [`SCHEMES`], a URL that names no
/// host, or several hosts behind a scheme without `+cluster`. The messages never echo the URL.
/// The nodes' URLs are not checked further: the driver does that when it parses them.
pub fn node_urls(url: &str) -> Result<Vec<String>> {
    let bad = |reason: String| Error::config("url", reason);
    let scheme = url_scheme(url).unwrap_or_default();
    if !SCHEMES.contains(&scheme.as_str()) {
        return Err(bad(format!(
            "scheme {scheme:?} is not Redis's (expected redis://, rediss://, redis+cluster:// or \
             rediss+cluster://)"
        )));
    }
    let (cluster, scheme) = match scheme.strip_suffix("+cluster") {
        Some(single) => (true, single),
        None => (false, scheme.as_str()),
    };
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad(format!("expected {scheme}://host")))?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}{tail}"))
        .collect();
    if nodes.is_empty() {
        return Err(bad("names no host".into()));
    }
    if !cluster && nodes.len() > 1 {
        return Err(bad(
            "several hosts need a cluster URL (redis+cluster://h1:p1,h2:p2)".into(),
        ));
    }
    Ok(nodes)
}

/// Takes the parameter `nearCache` (`true`/`false`, name case-insensitive) out of `url`'s query,
/// which the driver would not know: the URL without it, and its value (`None` when absent).
fn take_near_cache(url: &str) -> Result<(String, Option<bool>)> {
    let Some((base, rest)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (rest, None),
    };
    let mut near = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name.eq_ignore_ascii_case("nearcache") {
            near = match value.to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => return Err(Error::config("nearCache", "expected true or false")),
            };
        } else {
            kept.push(pair);
        }
    }
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Ok((out, near))
}

/// `redis://`, `rediss://` (one server) or `redis+cluster://`, `rediss+cluster://` with one or more
/// comma-separated seed nodes ([`node_urls`]): `redis+cluster://user:pw@h1:7000,h2:7001`.
fn from_url(url: &str) -> Result<(Vec<ConnectionInfo>, bool)> {
    let cluster = url_scheme(url).is_some_and(|scheme| scheme.ends_with("+cluster"));
    let nodes = node_urls(url)?
        .into_iter()
        .map(|node| {
            node.as_str()
                .into_connection_info()
                .map(resp3)
                // The driver's message names what is wrong without echoing the password.
                .map_err(|e| Error::config("url", format!("{}: {e}", redact_url(&node))))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((nodes, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(config: Config) -> Settings {
        Settings::resolve(&config, &RedisOptions::new()).unwrap()
    }

    fn stackexchange(text: &str) -> Config {
        Config::builder().redis_configuration(text).build().unwrap()
    }

    fn resolve_err(config: &Config) -> (String, String) {
        match Settings::resolve(config, &RedisOptions::new()) {
            Err(Error::InvalidConfig { setting, reason }) => (setting, reason),
            Err(other) => panic!("not InvalidConfig: {other}"),
            Ok(_) => panic!("{config:?} was accepted"),
        }
    }

    /// The Azure form: one TLS node on 6380 with the password; not (yet) a cluster: the server
    /// decides at connect.
    #[test]
    fn stackexchange_strings_describe_the_server() {
        let s = settings(stackexchange(
            "contoso.redis.cache.windows.net:6380,password=abc,ssl=True,abortConnect=False",
        ));
        assert!(s.tls && !s.cluster);
        assert_eq!(s.addr, "contoso.redis.cache.windows.net:6380");
        let r = s.nodes[0].redis_settings();
        assert_eq!((r.db(), r.username(), r.password()), (0, None, Some("abc")));
        assert_eq!(r.protocol(), ProtocolVersion::RESP3);
        assert_eq!(
            s.connection_timeout,
            session_core::DEFAULT_CONNECTION_TIMEOUT
        );
        assert_eq!(s.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        let s = settings(stackexchange("[::1]:6379"));
        assert_eq!((s.addr.as_str(), s.tls), ("[::1]:6379", false));
        let s = settings(stackexchange("cache,ssl=true,user=app,password=pw"));
        assert_eq!(s.addr, "cache:6380");
        let r = s.nodes[0].redis_settings();
        assert_eq!((r.username(), r.password()), (Some("app"), Some("pw")));
    }

    /// As in the ASP.NET provider: the string's `defaultDatabase` wins over `databaseId`, which
    /// applies without it; `host`, `port`, `accessKey`, `user` and `ssl` are not read.
    #[test]
    fn stackexchange_strings_take_the_database_and_ignore_the_host_attributes() {
        let with = |text: &str, extra: &[(&str, &str)]| {
            let mut b = Config::builder().redis_configuration(text);
            for (name, value) in extra {
                b = b.attribute(name, value).unwrap();
            }
            settings(b.build().unwrap())
        };
        let db = |s: &Settings| s.nodes[0].redis_settings().db();
        assert_eq!(db(&with("h,defaultDatabase=3", &[("databaseId", "5")])), 3);
        assert_eq!(db(&with("h", &[("databaseId", "5")])), 5);
        let s = with(
            "h:1",
            &[
                ("host", "other"),
                ("port", "2"),
                ("accessKey", "k"),
                ("user", "u"),
                ("ssl", "true"),
            ],
        );
        assert_eq!((s.addr.as_str(), s.tls), ("h:1", false));
        let r = s.nodes[0].redis_settings();
        assert_eq!((r.username(), r.password()), (None, None));
    }

    /// Several endpoints are a cluster's seeds, with database 0 only.
    #[test]
    fn several_endpoints_are_cluster_seeds() {
        let s = settings(stackexchange("127.0.0.1:7000,127.0.0.1:7001,password=pw"));
        assert!(s.cluster);
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.nodes[1].redis_settings().password(), Some("pw"));
        let (setting, reason) = resolve_err(&stackexchange("a:1,b:2,defaultDatabase=2"));
        assert_eq!(setting, "defaultDatabase");
        assert!(reason.contains("database 0"), "{reason}");
        let databases = Config::builder()
            .redis_configuration("a:1,b:2")
            .database_id(1)
            .build()
            .unwrap();
        assert_eq!(resolve_err(&databases).0, "databaseId");
    }

    /// `connectTimeout` is the connect timeout; `asyncTimeout` (else `syncTimeout`) the
    /// driver's per-command timeout; 0 or absent leaves the attributes' values.
    #[test]
    fn stackexchange_timeouts_map_to_the_drivers() {
        let s = settings(stackexchange("h,connectTimeout=1500,syncTimeout=2500"));
        assert_eq!(s.connection_timeout, Duration::from_millis(1500));
        assert_eq!(s.response_timeout, Duration::from_millis(2500));
        let c = Config::builder()
            .redis_configuration("h,connectTimeout=0")
            .connection_timeout(Some(Duration::from_millis(700)))
            .operation_timeout(Some(Duration::from_millis(300)))
            .build()
            .unwrap();
        let s = settings(c);
        assert_eq!(s.connection_timeout, Duration::from_millis(700));
        assert_eq!(
            s.response_timeout,
            response_timeout(Some(Duration::from_millis(300)))
        );
    }

    #[test]
    fn stackexchange_errors_name_the_option_and_hide_the_password() {
        for (config, setting) in [
            (stackexchange("h,password=s3cret,bogus=1"), "bogus"),
            (
                stackexchange("h,password=s3cret,serviceName=m"),
                "serviceName",
            ),
            (
                stackexchange("10.0.0.1,ssl=true,sslHost=cache,password=s3cret"),
                "sslHost",
            ),
            // A bad endpoint fails the core's shape check; as a "URL" without `//` it gets here.
            (
                Config::from_url("h:x,password=s3cret").unwrap(),
                "connectionString",
            ),
        ] {
            let (got, reason) = resolve_err(&config);
            assert_eq!(got, setting, "{reason}");
            assert!(!reason.contains("s3cret"), "{reason}");
        }
        // TLS and the near cache, the CA without TLS: the same checks as for URLs.
        let near = Config::builder()
            .redis_configuration("h,ssl=true")
            .near_cache(true)
            .build()
            .unwrap();
        assert_eq!(resolve_err(&near).0, "nearCache");
        let ca = RedisOptions::new().with_ca_pem(b"x".to_vec());
        assert!(Settings::resolve(&stackexchange("h"), &ca).is_err());
    }

    #[test]
    fn near_cache_comes_from_the_attribute_or_the_url() {
        assert!(!settings(Config::from_url("redis://h:1").unwrap()).near_cache);
        let on = settings(Config::from_url("redis://h:1/2?nearCache=true").unwrap());
        assert!(on.near_cache);
        assert_eq!(on.nodes[0].redis_settings().db(), 2);
        let cluster = settings(
            Config::from_url("redis+cluster://:pw@a:1,b:2?NearCache=TRUE&protocol=resp3").unwrap(),
        );
        assert!(cluster.near_cache && cluster.cluster && cluster.nodes.len() == 2);
        let attr = Config::builder()
            .url("redis://h:1")
            .near_cache(true)
            .build()
            .unwrap();
        assert!(settings(attr).near_cache);
        let attributes = Config::from_attributes([("host", "h"), ("nearCache", "true")]).unwrap();
        assert!(settings(attributes).near_cache);
        let tls = Config::from_url("rediss://h:1?nearCache=true").unwrap();
        let err = Settings::resolve(&tls, &RedisOptions::new()).unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        let bad = Config::from_url("redis://h:1?nearCache=maybe").unwrap();
        let err = Settings::resolve(&bad, &RedisOptions::new()).unwrap_err();
        assert!(err.to_string().contains("nearCache"), "{err}");
        assert_eq!(
            take_near_cache("redis://h:1?a=1&nearcache=0&b=2#f").unwrap(),
            ("redis://h:1?a=1&b=2#f".to_owned(), Some(false))
        );
        let off = Config::builder()
            .url("redis://h:1?nearCache=false")
            .near_cache(true)
            .build()
            .unwrap();
        assert!(!settings(off).near_cache, "the URL's parameter decides");
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
        assert_eq!(s.response_timeout, Duration::from_millis(1250));
        assert_eq!(
            s.connection_timeout,
            session_core::DEFAULT_CONNECTION_TIMEOUT
        );
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

    /// One owner per setting: the connect timeout is `connectionTimeoutInMilliseconds` with the
    /// core's one default; the driver's response timeout is derived from the operation timeout
    /// (which the manager's retry decorator enforces) plus the margin, never equal to it.
    #[test]
    fn timeouts_map_from_the_settings_in_one_way() {
        let s = settings(Config::from_url("redis://h:1").unwrap());
        assert_eq!(
            s.connection_timeout,
            session_core::DEFAULT_CONNECTION_TIMEOUT
        );
        assert_eq!(s.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        let s = settings(
            Config::from_attributes([
                ("url", "redis://h:1"),
                ("connectionTimeoutInMilliseconds", "1500"),
                ("operationTimeoutInMilliseconds", "300"),
            ])
            .unwrap(),
        );
        assert_eq!(s.connection_timeout, Duration::from_millis(1500));
        assert_eq!(
            s.response_timeout,
            Duration::from_millis(300) + RESPONSE_TIMEOUT_MARGIN
        );
        assert!(s.response_timeout > Duration::from_millis(300));
        assert_eq!(response_timeout(Some(Duration::MAX)), Duration::MAX);
    }

    #[test]
    fn schemes_are_this_crates_own() {
        for url in [
            "redis://h",
            "REDISS://h:6380",
            "redis+cluster://a:1,b:2",
            "rediss+cluster://:pw@a:1,b:2",
        ] {
            assert!(accepts(url), "{url}");
        }
        for url in [
            "postgres://h/db",
            "memory://",
            "redis",
            "redis-cluster://h",
            "",
        ] {
            assert!(!accepts(url), "{url}");
        }
        let not_redis = Config::from_url("postgres://u:pw@h/db").unwrap();
        let Err(Error::InvalidConfig { setting, reason }) =
            Settings::resolve(&not_redis, &RedisOptions::new())
        else {
            panic!("a Postgres URL was taken for Redis");
        };
        assert_eq!(setting, "url");
        assert!(reason.contains("\"postgres\""), "{reason}");
    }

    /// Each node's URL keeps the TLS, userinfo, path and parameters of the whole URL; the
    /// authority ends where `url` ends it, so an `@` or `,` in the parameters is no host.
    #[test]
    fn urls_split_into_node_urls() {
        let ok = |url: &str| node_urls(url).unwrap();
        assert_eq!(ok("redis://127.0.0.1:6379"), ["redis://127.0.0.1:6379"]);
        assert_eq!(ok("REDISS://u:p@h:6380/2"), ["rediss://u:p@h:6380/2"]);
        assert_eq!(
            ok("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            ok("Rediss+Cluster://app:s3cret@a:7000,b:7001,"),
            ["rediss://app:s3cret@a:7000", "rediss://app:s3cret@b:7001"]
        );
        assert_eq!(
            ok("redis+cluster://:pw@a:1,b:2/0?protocol=resp3"),
            [
                "redis://:pw@a:1/0?protocol=resp3",
                "redis://:pw@b:2/0?protocol=resp3"
            ]
        );
        assert_eq!(
            ok("redis://h:1/0?client=a@b,c"),
            ["redis://h:1/0?client=a@b,c"]
        );
        for url in [
            "postgres://u:s3cret@h/db",
            "redis://u:s3cret@a:1,b:2",
            "redis+cluster://u:s3cret@",
            "redis+cluster://",
            "rediss+cluster:///0",
            "redis:h",
        ] {
            let Err(Error::InvalidConfig { setting, reason }) = node_urls(url) else {
                panic!("{url} was split");
            };
            assert_eq!(setting, "url");
            assert!(!reason.contains("s3cret"), "{url}: {reason}");
        }
    }

    /// A cluster URL names several hosts, which `url` cannot parse as one authority: each seed
    /// node gets the userinfo, TLS and path of the whole URL.
    #[test]
    fn cluster_urls_with_passwords_reach_every_node() {
        let s = settings(
            Config::from_url("rediss+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001").unwrap(),
        );
        assert!(s.cluster && s.tls);
        assert_eq!(s.addr, "10.0.0.1:7000");
        assert_eq!(s.nodes.len(), 2);
        for node in &s.nodes {
            let r = node.redis_settings();
            assert_eq!((r.username(), r.password()), (Some("app"), Some("s3cret")));
        }
        let bad = Config::from_url("redis+cluster://app:s3cret@a:1,b:notaport").unwrap();
        let Err(e) = Settings::resolve(&bad, &RedisOptions::new()) else {
            panic!("a bad port was accepted");
        };
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
