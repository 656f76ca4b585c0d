//! Expiry events (ASP.NET `Session_End`): the final items of a session that expired or was removed.
//!
//! - **Detection** (at connect): `CONFIG GET notify-keyspace-events` on every node must report the
//!   keyevent channel (`E`) and expired events (`x`, or `A`). A node that refuses `CONFIG` (an ACL
//!   user without it, a renamed command) counts as unknown: the capability is then not declared.
//! - **Grace period**: a session created while expiry events are declared carries the `EVENTS`
//!   flag: its value outlives its end by [`EXPIRY_GRACE`], and an empty alive marker expires
//!   exactly at its end (`slide_if_due` in `ops/slide.lua`), so the items of a session whose marker
//!   expired are still there for its event. Sessions without the flag pay for neither.
//! - **Listener** (started by the first `expiry_events()` call): one connection per node
//!   (standalone: the server; cluster: every node, replicas too, so that a promoted replica is
//!   already heard) subscribed to `__keyevent@<db>__:expired`. For each expired alive marker of an
//!   application this store serves, while someone subscribes, `take.lua` claims the end (`SET NX`)
//!   and takes the items in one script: exactly one process of a web farm reports each expiry.
//! - **Removal**: `remove` and `delete` return the final items from their own script when this
//!   store has subscribers, and only that process reports the end.
//!
//! The listener task is aborted when the store is dropped; its connections go with it.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Client, ConnectionAddr, ConnectionInfo, PushInfo, PushKind, Value};
use session_core::{AppName, EndReason, ExpiryEvent, ExpiryEvents, Items, SessionKey};
use tokio::sync::broadcast;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::Settings;
use crate::connection::{Connection, certificates};
use crate::error::ErrorContext;
use crate::keys::session_of_marker;
use crate::ops;

/// How long a session's items outlive it in Redis: the time the expiry listener has to take them
/// after the session expired (the memory this costs: every ended session's items, for this long).
pub const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// How often the listener pings its connections, so that a dropped one reconnects (and
/// resubscribes) even though it sends nothing else.
const HEALTH_CHECK: Duration = Duration::from_secs(5);

/// Events buffered per subscriber before a slow one starts missing them.
const BUFFER: usize = 1024;

/// The expiry events of one store.
#[derive(Debug)]
pub(crate) struct Expiry {
    sender: broadcast::Sender<ExpiryEvent>,
    /// The nodes to listen on, when every node has keyspace notifications for expired keys.
    nodes: Option<Vec<ConnectionInfo>>,
    settings: Settings,
    /// Applications whose expired sessions this store reports: the configured one and every one it
    /// has served. A farm of another application on the same database keeps its own events.
    apps: Arc<RwLock<HashSet<AppName>>>,
    listener: tokio::sync::Mutex<Option<AbortOnDrop>>,
}

/// Aborts the listener task when the store is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Expiry {
    /// Checks the server's `notify-keyspace-events` on every node; never fails (an unknown
    /// configuration leaves the capability undeclared).
    pub(crate) async fn detect(conn: &Connection, settings: &Settings, app: &AppName) -> Self {
        let nodes = match enabled_nodes(conn, settings).await {
            Ok(Some(nodes)) => Some(nodes),
            Ok(None) => {
                tracing::info!(
                    "keyspace notifications for expired keys are off (notify-keyspace-events \
                     needs E and x on every node): expiry events are not declared"
                );
                None
            }
            Err(e) => {
                tracing::info!(
                    error = %e,
                    "CONFIG GET notify-keyspace-events failed: expiry events are not declared"
                );
                None
            }
        };
        Self {
            sender: broadcast::channel(BUFFER).0,
            nodes,
            settings: settings.clone(),
            apps: Arc::new(RwLock::new(HashSet::from([app.clone()]))),
            listener: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the capability is declared.
    pub(crate) fn enabled(&self) -> bool {
        self.nodes.is_some()
    }

    /// Records that this store serves `key`'s application.
    pub(crate) fn serve(&self, key: &SessionKey) {
        if !self.enabled() {
            return;
        }
        let known = read(&self.apps).contains(key.app());
        if !known {
            write(&self.apps).insert(key.app().clone());
        }
    }

    /// Whether anyone listens: `remove` and `delete` then return the final items.
    pub(crate) fn wanted(&self) -> bool {
        self.enabled() && self.sender.receiver_count() > 0
    }

    /// Reports the end of a session removed by this process.
    pub(crate) fn removed(&self, key: &SessionKey, items: Items) {
        let _ = self.sender.send(ExpiryEvent::new(
            key.clone(),
            Arc::new(items),
            EndReason::Removed,
        ));
    }

    /// A new subscription; starts the listener on first use and returns once it is subscribed on
    /// every node, so that an expiry after this returns is heard.
    pub(crate) async fn subscribe(
        &self, conn: &Connection, errors: &ErrorContext,
    ) -> redis::RedisResult<ExpiryEvents> {
        let Some(nodes) = &self.nodes else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "keyspace notifications are disabled",
            )));
        };
        let receiver = self.sender.subscribe();
        let mut listener = self.listener.lock().await;
        if listener.is_none() {
            let (pushes, received) = tokio::sync::mpsc::unbounded_channel();
            let mut subscribers = Vec::with_capacity(nodes.len());
            let channel = format!("__keyevent@{}__:expired", self.db());
            for node in nodes {
                let client = match certificates(&self.settings) {
                    Some(certs) => Client::build_with_tls(node.clone(), certs)?,
                    None => Client::open(node.clone())?,
                };
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.settings.connection_timeout))
                    .set_response_timeout(Some(self.settings.response_timeout))
                    .set_push_sender(pushes.clone())
                    .set_automatic_resubscription();
                let mut manager = ConnectionManager::new_with_config(client, config).await?;
                manager.subscribe(&channel).await?;
                subscribers.push(manager);
            }
            let task = tokio::spawn(listen(
                received,
                subscribers,
                conn.clone(),
                self.sender.clone(),
                Arc::clone(&self.apps),
                errors.clone(),
            ));
            *listener = Some(AbortOnDrop(task.abort_handle()));
        }
        Ok(ExpiryEvents::new(receiver))
    }

    fn db(&self) -> i64 {
        self.settings
            .nodes
            .first()
            .map_or(0, |n| n.redis_settings().db())
    }
}

fn read(apps: &RwLock<HashSet<AppName>>) -> std::sync::RwLockReadGuard<'_, HashSet<AppName>> {
    // Every change is one insert: a poisoned lock is still consistent.
    apps.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(apps: &RwLock<HashSet<AppName>>) -> std::sync::RwLockWriteGuard<'_, HashSet<AppName>> {
    apps.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The nodes to listen on if every node sends expired keyevents, else `None`.
async fn enabled_nodes(
    conn: &Connection, settings: &Settings,
) -> redis::RedisResult<Option<Vec<ConnectionInfo>>> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("notify-keyspace-events");
    match conn.clone() {
        Connection::Standalone(mut c) => {
            let reply: Value = cmd.query_async(&mut c).await?;
            let node = settings.nodes.first().cloned();
            Ok(node.filter(|_| notifies_expired(&reply)).map(|n| vec![n]))
        }
        Connection::Cluster(mut c) => {
            let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllNodes, None));
            let Value::Map(replies) = c.route_command(cmd, routing).await? else {
                return Ok(None);
            };
            let Some(seed) = settings.nodes.first() else {
                return Ok(None);
            };
            let mut nodes = Vec::with_capacity(replies.len());
            for (addr, reply) in replies {
                if !notifies_expired(&reply) {
                    return Ok(None);
                }
                let Some(addr) = text(&addr) else {
                    return Ok(None);
                };
                let Some((host, port)) = addr.rsplit_once(':') else {
                    return Ok(None);
                };
                let Ok(port) = port.parse::<u16>() else {
                    return Ok(None);
                };
                let host = host.to_owned();
                let addr = match seed.addr() {
                    ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: *insecure,
                        tls_params: tls_params.clone(),
                    },
                    _ => ConnectionAddr::Tcp(host, port),
                };
                nodes.push(seed.clone().set_addr(addr));
            }
            Ok((!nodes.is_empty()).then_some(nodes))
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s.clone()),
        _ => None,
    }
}

/// `CONFIG GET notify-keyspace-events` (a map in RESP3, a pair in RESP2) includes `E` and `x`.
fn notifies_expired(reply: &Value) -> bool {
    let flags = match reply {
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| text(v)),
        Value::Array(pair) => pair.get(1).and_then(text),
        _ => None,
    };
    flags.is_some_and(|f| f.contains('E') && (f.contains('x') || f.contains('A')))
}

/// The listener: takes each expired session of a served application and reports it.
async fn listen(
    mut pushes: UnboundedReceiver<PushInfo>, mut subscribers: Vec<ConnectionManager>,
    mut conn: Connection, sender: broadcast::Sender<ExpiryEvent>,
    apps: Arc<RwLock<HashSet<AppName>>>, errors: ErrorContext,
) {
    let mut health = tokio::time::interval(HEALTH_CHECK);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let push = tokio::select! {
            push = pushes.recv() => push,
            _ = health.tick() => {
                for s in &mut subscribers {
                    // A failed PING makes the manager reconnect, and then resubscribe.
                    let _: redis::RedisResult<Value> = redis::cmd("PING").query_async(s).await;
                }
                continue;
            }
        };
        let Some(push) = push else { return };
        if push.kind != PushKind::Message {
            continue;
        }
        let Some(key) = push
            .data
            .get(1)
            .and_then(text)
            .and_then(|name| session_of_marker(&name))
        else {
            continue;
        };
        if sender.receiver_count() == 0 || !read(&apps).contains(key.app()) {
            continue;
        }
        match ops::take::run(&mut conn, &errors, &key).await {
            Ok(Some(items)) => {
                let _ = sender.send(ExpiryEvent::new(key, Arc::new(items), EndReason::Expired));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                app = key.app().as_str(),
                id = key.id().prefix(),
                error = %e,
                "could not take the final items of an expired session"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_use_the_same_grace_period() {
        let consts = include_str!("ops/consts.lua");
        let line = format!("local GRACE_MS = {}\n", EXPIRY_GRACE.as_millis());
        assert!(consts.contains(&line), "consts.lua must declare {line}");
    }

    #[test]
    fn flags_must_include_keyevents_for_expired_keys() {
        let reply = |flags: &str| {
            Value::Map(vec![(
                Value::BulkString(b"notify-keyspace-events".to_vec()),
                Value::BulkString(flags.as_bytes().to_vec()),
            )])
        };
        assert!(notifies_expired(&reply("xE")));
        assert!(notifies_expired(&reply("gxE")));
        assert!(notifies_expired(&reply("AE")));
        assert!(!notifies_expired(&reply("")));
        assert!(!notifies_expired(&reply("Kx")));
        assert!(!notifies_expired(&reply("Eg")));
        let resp2 = Value::Array(vec![
            Value::BulkString(b"notify-keyspace-events".to_vec()),
            Value::BulkString(b"Egx".to_vec()),
        ]);
        assert!(notifies_expired(&resp2));
    }
}
