//! The one connection every operation uses: a standalone server behind redis-rs's
//! `ConnectionManager` (multiplexed, reconnects after a restart) or a cluster behind the async
//! `ClusterConnection` (follows MOVED/ASK and failovers). Both speak RESP3, so release messages
//! arrive as pushes on the same connection and are resubscribed automatically after a reconnect.
//! Which of the two a configuration that does not say is decided by the server (cluster
//! detection, [`Connection::open`]).

use std::fmt;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, ErrorKind, Pipeline, PushInfo, RedisError,
    RedisFuture, RedisResult, TlsCertificates, Value,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::Settings;

/// A standalone server or a cluster: one code path for every operation (docs/style.md H7).
#[derive(Clone)]
pub(crate) enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Standalone(_) => "Connection::Standalone",
            Self::Cluster(_) => "Connection::Cluster",
        })
    }
}

pub(crate) fn certificates(settings: &Settings) -> Option<TlsCertificates> {
    settings.ca_pem.as_ref().map(|pem| TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.clone()),
    })
}

/// Why a connect failed: the driver's error, or a configuration the server showed to be wrong
/// (a database other than 0 on a cluster found by detection).
#[derive(Debug)]
pub(crate) enum OpenError {
    Driver(RedisError),
    Config(session_core::Error),
}

impl From<RedisError> for OpenError {
    fn from(e: RedisError) -> Self {
        Self::Driver(e)
    }
}

impl Connection {
    /// Connects eagerly, so that a wrong address, password or CA fails here with its own error.
    /// Release messages (RESP3 pushes) go to `pushes`.
    ///
    /// **Cluster detection.** A configuration that does not say cluster (`host`/`port`, a
    /// `redis://` or `rediss://` URL, a configuration string with one endpoint) connects to its
    /// node as a standalone server and asks `INFO cluster`; a node that reports
    /// `cluster_enabled:1` is a cluster's, and the store connects again as a cluster client with
    /// that node as the seed, as StackExchange.Redis does for Azure's clustered caches.
    /// `settings.cluster` is then set, so that everything opened after this (expiry events, the
    /// near cache) sees the cluster. A database other than 0 there is an error naming the setting
    /// that chose it. A node that refuses `INFO` (an ACL user without it, a renamed command) is
    /// taken for a standalone server, with a warning.
    pub(crate) async fn open(
        settings: &mut Settings, pushes: UnboundedSender<PushInfo>,
    ) -> Result<Self, OpenError> {
        if settings.tls {
            // redis-rs builds its rustls config with the process-wide default provider, and rustls
            // has none unless exactly one is compiled in. Install `ring` unless the application
            // installed one already (then this does nothing).
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
        }
        if !settings.cluster {
            let mut manager = match standalone(settings, pushes.clone()).await {
                Ok(manager) => manager,
                // `SELECT n` with n > 0 fails on a cluster node: say why, not what.
                Err(_) if settings.database() != 0 && probe(settings).await == Some(true) => {
                    return Err(OpenError::Config(cluster_database(settings)));
                }
                Err(e) => return Err(e.into()),
            };
            if !is_cluster_node(&mut manager, settings).await? {
                return Ok(Self::Standalone(manager));
            }
            drop(manager);
            if settings.database() != 0 {
                return Err(OpenError::Config(cluster_database(settings)));
            }
            tracing::info!(
                node = %settings.addr,
                "the Redis server is a cluster node: connecting as a cluster client"
            );
            settings.cluster = true;
        }
        Ok(Self::Cluster(cluster(settings, pushes).await?))
    }

    /// Subscribes to `channel`; returns once the server confirmed it.
    pub(crate) async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Self::Standalone(c) => c.subscribe(channel).await,
            Self::Cluster(c) => c.subscribe(channel).await,
        }
    }

    /// Unsubscribes from `channels`.
    pub(crate) async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Standalone(c) => c.unsubscribe(channels).await,
            Self::Cluster(c) => c.unsubscribe(channels).await,
        }
    }
}

/// How many times the cluster driver repeats a command after a redirect or a refused node.
const CLUSTER_RETRIES: u32 = 3;
/// The shortest wait before such a repeat, in milliseconds.
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 10;
/// The longest wait before such a repeat, in milliseconds.
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 100;

/// The cluster client over `settings.nodes` (the seeds).
async fn cluster(
    settings: &Settings, pushes: UnboundedSender<PushInfo>,
) -> RedisResult<ClusterConnection> {
    // The connect timeout is `connectionTimeoutInMilliseconds`; the response timeout is only
    // the backstop derived from the operation timeout (`config::response_timeout`), which the
    // manager's retry decorator enforces per attempt: one owner per setting.
    // The driver's own retries follow redirects (`MOVED`, `ASK`) and a topology refresh; a node
    // that refuses connections (a master that died, until its replica is promoted) must fail the
    // operation within milliseconds as `Unavailable`, like a standalone server, so a few quick
    // retries (about 20, 40 and 80 ms apart) instead of the driver's 16 from 1.28 s up: the
    // core's retry policy owns the schedule of anything longer (docs/contract.md §4).
    let mut builder = ClusterClientBuilder::new(settings.nodes.clone())
        .connection_timeout(settings.connection_timeout)
        .response_timeout(settings.response_timeout)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
        .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
        .push_sender(pushes);
    if let Some(certs) = certificates(settings) {
        builder = builder.certs(certs);
    }
    builder.build()?.get_async_connection().await
}

/// The driver's client for the first node.
fn client(settings: &Settings, node: ConnectionInfo) -> RedisResult<Client> {
    match certificates(settings) {
        Some(certs) => Client::build_with_tls(node, certs),
        None => Client::open(node),
    }
}

fn first_node(settings: &Settings) -> RedisResult<ConnectionInfo> {
    settings
        .nodes
        .first()
        .cloned()
        .ok_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "no server address")))
}

/// The reconnecting connection to the first node.
async fn standalone(
    settings: &Settings, pushes: UnboundedSender<PushInfo>,
) -> RedisResult<ConnectionManager> {
    let client = client(settings, first_node(settings)?)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connection_timeout))
        .set_response_timeout(Some(settings.response_timeout))
        // One connection attempt per reconnect: the core's retry policy (docs/contract.md §4) owns the
        // schedule, and an outage surfaces as `Unavailable` instead of a silent stall.
        .set_number_of_retries(0)
        .set_push_sender(pushes)
        .set_automatic_resubscription();
    ConnectionManager::new_with_config(client, config).await
}

/// Whether the server behind `conn` runs in cluster mode (`INFO cluster` reports
/// `cluster_enabled:1`). A refused `INFO` counts as standalone; a broken connection or a timeout
/// fails the connect.
async fn is_cluster_node(conn: &mut impl ConnectionLike, settings: &Settings) -> RedisResult<bool> {
    // `HELLO` first: the store speaks RESP3, so every user it runs as may send it, and its reply
    // says `mode` (`cluster` or `standalone`); `INFO` is in `@dangerous`, which least-privilege
    // ACLs leave out.
    match redis::cmd("HELLO").arg(3).query_async::<Value>(conn).await {
        Ok(reply) => {
            if let Some(mode) = hello_mode(&reply) {
                return Ok(mode.eq_ignore_ascii_case("cluster"));
            }
        }
        Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
            return Err(e);
        }
        Err(_) => {}
    }
    let reply: RedisResult<String> = redis::cmd("INFO").arg("cluster").query_async(conn).await;
    match reply {
        Ok(info) => Ok(cluster_enabled(&info)),
        Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => Err(e),
        Err(e) => {
            tracing::warn!(
                node = %settings.addr,
                error = %e,
                "INFO cluster was refused: taking the server for a standalone one (if it is a \
                 cluster node, use a redis+cluster:// URL)"
            );
            Ok(false)
        }
    }
}

/// The `mode` field of a `HELLO` reply (a map in RESP3, a flat list in RESP2).
fn hello_mode(reply: &Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    };
    match reply {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).is_some_and(|k| k.eq_ignore_ascii_case("mode")))
            .and_then(|(_, v)| text(v)),
        Value::Array(items) => items
            .chunks(2)
            .find(|kv| text(&kv[0]).is_some_and(|k| k.eq_ignore_ascii_case("mode")))
            .and_then(|kv| kv.get(1).and_then(text)),
        _ => None,
    }
}

/// Whether the first node, on database 0, is a cluster node (`None`: it could not be asked).
async fn probe(settings: &Settings) -> Option<bool> {
    let node = first_node(settings).ok()?;
    let redis = node.redis_settings().clone().set_db(0);
    let client = client(settings, node.set_redis_settings(redis)).ok()?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connection_timeout))
        .set_response_timeout(Some(settings.response_timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()?;
    is_cluster_node(&mut conn, settings).await.ok()
}

/// `cluster_enabled:1` in an `INFO cluster` reply.
fn cluster_enabled(info: &str) -> bool {
    info.lines().any(|line| line.trim() == "cluster_enabled:1")
}

/// The error for a database other than 0 on a node that turned out to be a cluster's.
fn cluster_database(settings: &Settings) -> session_core::Error {
    session_core::Error::config(
        settings.database_setting,
        format!(
            "the Redis server at {} is a cluster node, and Redis Cluster has only database 0",
            settings.addr
        ),
    )
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_mode_is_read_from_info() {
        assert!(cluster_enabled("# Cluster\r\ncluster_enabled:1\r\n"));
        assert!(!cluster_enabled("# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(!cluster_enabled(""));
    }
}
