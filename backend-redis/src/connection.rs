//! The one connection every operation uses: a standalone server behind redis-rs's
//! `ConnectionManager` (multiplexed, reconnects after a restart) or a cluster behind the async
//! `ClusterConnection` (follows MOVED/ASK and failovers). Both speak RESP3, so release messages
//! arrive as pushes on the same connection and are resubscribed automatically after a reconnect.

use std::fmt;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, PushInfo, RedisFuture, RedisResult, TlsCertificates, Value};
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

impl Connection {
    /// Connects eagerly, so that a wrong address, password or CA fails here with its own error.
    /// Release messages (RESP3 pushes) go to `pushes`.
    pub(crate) async fn open(
        settings: &Settings, pushes: UnboundedSender<PushInfo>,
    ) -> RedisResult<Self> {
        if settings.tls {
            // redis-rs builds its rustls config with the process-wide default provider, and rustls
            // has none unless exactly one is compiled in. Install `ring` unless the application
            // installed one already (then this does nothing).
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
        }
        // The connect timeout is `connectionTimeoutInMilliseconds`; the response timeout is only
        // the backstop derived from the operation timeout (`config::response_timeout`), which the
        // manager's retry decorator enforces per attempt: one owner per setting.
        if settings.cluster {
            let mut builder = ClusterClientBuilder::new(settings.nodes.clone())
                .connection_timeout(settings.connection_timeout)
                .response_timeout(settings.response_timeout)
                .push_sender(pushes);
            if let Some(certs) = certificates(settings) {
                builder = builder.certs(certs);
            }
            let client = builder.build()?;
            return Ok(Self::Cluster(client.get_async_connection().await?));
        }
        let Some(node) = settings.nodes.first().cloned() else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no server address",
            )));
        };
        let client = match certificates(settings) {
            Some(certs) => Client::build_with_tls(node, certs)?,
            None => Client::open(node)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connection_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            // One connection attempt per reconnect: the core's retry policy (docs/contract.md §4) owns the
            // schedule, and an outage surfaces as `Unavailable` instead of a silent stall.
            .set_number_of_retries(0)
            .set_push_sender(pushes)
            .set_automatic_resubscription();
        Ok(Self::Standalone(
            ConnectionManager::new_with_config(client, config).await?,
        ))
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
