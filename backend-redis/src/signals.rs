//! The release signal: scripts that end a lock `PUBLISH` on the session's channel
//! (`{<sha256 of <app>_<id>>}:released`, keys.rs); [`Signals`] subscribes on the store's own RESP3 connection and wakes
//! the watches of that channel.
//!
//! Regular (not sharded) pub/sub: on a cluster, `PUBLISH` is forwarded to every node, so a
//! subscription on any node hears every session, and redis-rs resubscribes it after a reconnect or
//! a failover. The cost is that each release message crosses the cluster bus to all nodes; sharded
//! pub/sub (`SPUBLISH`, Redis 7) would keep it on the session's shard.
//!
//! A watch may fire spuriously (the contract allows it): every watch is woken when the connection
//! reports a disconnection, since messages published meanwhile may be lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

use crate::connection::Connection;

type Waiters = HashMap<String, Vec<oneshot::Sender<()>>>;

/// The watches of one store, by channel.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    waiters: Arc<Mutex<Waiters>>,
    /// Serialises SUBSCRIBE/UNSUBSCRIBE decisions, so that a channel is never unsubscribed while a
    /// new watch of it is being added.
    subscribing: tokio::sync::Mutex<()>,
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    // A panic while holding this lock cannot leave the map inconsistent (every step is one
    // insert or remove), so a poisoned lock is still usable.
    waiters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Signals {
    /// Dispatches the connection's pushes to the watches until the connection is gone.
    pub(crate) fn spawn_dispatcher(&self, mut pushes: UnboundedReceiver<PushInfo>) {
        let waiters: Weak<Mutex<Waiters>> = Arc::downgrade(&self.waiters);
        tokio::spawn(async move {
            while let Some(push) = pushes.recv().await {
                let Some(waiters) = waiters.upgrade() else {
                    return;
                };
                let woken: Vec<oneshot::Sender<()>> = match push.kind {
                    PushKind::Message => match push.data.first() {
                        Some(Value::BulkString(channel)) => {
                            let channel = String::from_utf8_lossy(channel);
                            // The entry stays (empty): the next `watch` unsubscribes idle channels.
                            lock(&waiters)
                                .get_mut(channel.as_ref())
                                .map(std::mem::take)
                                .unwrap_or_default()
                        }
                        _ => Vec::new(),
                    },
                    PushKind::Disconnection => lock(&waiters)
                        .values_mut()
                        .flat_map(std::mem::take)
                        .collect(),
                    _ => Vec::new(),
                };
                for waiter in woken {
                    let _ = waiter.send(());
                }
            }
        });
    }

    /// Registers a watch of `channel` and subscribes to it; returns once the server confirmed the
    /// subscription, so a release published after this returns is never missed.
    pub(crate) async fn watch(
        &self, conn: &mut Connection, channel: &str,
    ) -> redis::RedisResult<oneshot::Receiver<()>> {
        let _serial = self.subscribing.lock().await;
        let (tx, rx) = oneshot::channel();
        let idle: Vec<String> = {
            let mut waiters = lock(&self.waiters);
            waiters.entry(channel.to_owned()).or_default().push(tx);
            // Channels whose every watch was dropped (the waiter gave up) are unsubscribed.
            let idle: Vec<String> = waiters
                .iter_mut()
                .filter_map(|(name, list)| {
                    list.retain(|w| !w.is_closed());
                    list.is_empty().then(|| name.clone())
                })
                .collect();
            for name in &idle {
                waiters.remove(name);
            }
            idle
        };
        if !idle.is_empty() {
            // Best effort: a stale subscription only costs messages nobody waits for.
            let _ = conn.unsubscribe(&idle).await;
        }
        // SUBSCRIBE to a channel already subscribed is a no-op that is still confirmed.
        if let Err(e) = conn.subscribe(channel).await {
            lock(&self.waiters).remove(channel);
            return Err(e);
        }
        Ok(rx)
    }
}
