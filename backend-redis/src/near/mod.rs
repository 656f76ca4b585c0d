//! The near cache (docs/contract.md §2, "near cache"): process-local copies of recently read
//! sessions that a `read` answers from without a round trip, only while the server proves them
//! current.
//!
//! A copy is used only when all of these hold:
//! - the invalidation channel (`channel.rs`) of every node is up, covers the session's
//!   application, and has been up since the copy's read was sent (one generation number, bumped by
//!   every loss, reconnect, `FLUSHALL` or topology change, which also empties the cache);
//! - no invalidation for the session arrived since that read was sent: the read leaves a
//!   placeholder (a ticket) before it is sent, an invalidation removes the placeholder or the copy,
//!   and the reply is installed only over its own placeholder;
//! - the read itself wrote nothing (no slide, no initialize flag reported) and no slide is due
//!   under the refresh window now (docs/contract.md §1): the copy knows the session's expiry as a
//!   deadline on this process's clock, measured from the instant the read was sent (never later
//!   than the server's);
//! - before looking, the channel's sockets are drained without waiting, so an invalidation the
//!   server sent before this read began is applied first.
//!
//! Writes by this process drop the copy before and after they run (their invalidation also
//! arrives). The cache is bounded in entries and bytes (16 shards, a clock sweep each).
//!
//! Which applications are covered: the configured one (`applicationName`) by the connect itself,
//! which returns only once every node's handshake has confirmed its prefix (a node it cannot reach
//! covers nothing until its task brings it up), so a fresh store keeps copies from its first read.
//! An application first met by a read is asked for by that lookup without waiting (a read stays
//! one round trip, docs/contract.md §2): its reads go to the server (misses, always safe) until a
//! later lookup finds every node's confirmation, on a loaded cluster possibly tens of milliseconds
//! later.

mod channel;
mod resp;
mod stats;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ConnectionAddr, ConnectionInfo, Value};
use session_core::{
    AppName, Error, LockInfo, LockToken, ReadOutcome, RefreshWindow, Result, Snapshot,
};
use tokio::task::AbortHandle;

pub use stats::{NearCacheLimits, NearCacheStats};

use crate::config::Settings;
use crate::connection::Connection;
use channel::{Endpoint, HandshakeError, Node};

const SHARDS: usize = 16;
/// Bytes counted per entry besides its items (key, bookkeeping, the map's share).
const ENTRY_OVERHEAD: usize = 160;
/// How often a cluster's node list is compared with the invalidation connections.
const TOPOLOGY_EVERY: Duration = Duration::from_secs(2);

/// What a read found out about a session, as the near read script reports it, ready to keep.
pub(crate) enum NearCopy {
    /// The session's data.
    Found(Snapshot),
    /// Locked by another request: the holder and the lock's age at the reply.
    Locked(LockInfo),
}

/// The proof a read needs to install its reply: the placeholder it left, under the generation it
/// saw, and when it was sent.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: u64,
    generation: u64,
    sent: Instant,
}

/// A lookup's answer.
pub(crate) enum Lookup {
    /// Answered from memory.
    Hit(ReadOutcome),
    /// Go to the server; with a ticket, the reply may be installed.
    Miss(Option<Ticket>),
}

struct Copy {
    generation: u64,
    state: CopyState,
    /// When the session's expiry is due, on this process's clock (never later than the server's).
    deadline: Instant,
    timeout: Duration,
    bytes: usize,
    referenced: bool,
}

enum CopyState {
    Found(Snapshot),
    Locked {
        token: LockToken,
        age: Duration,
        at: Instant,
    },
}

enum Slot {
    Pending { ticket: u64, generation: u64 },
    Ready(Copy),
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, Slot>,
    /// Clock order of the keys (may hold keys already gone, and duplicates).
    clock: VecDeque<Box<str>>,
    bytes: usize,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    flushes: AtomicU64,
    evictions: AtomicU64,
}

/// The near cache of one store.
pub(crate) struct NearCache {
    shards: Box<[Mutex<Shard>]>,
    generation: AtomicU64,
    tickets: AtomicU64,
    max_entries: usize,
    max_bytes: usize,
    /// Slots held in all shards (copies and placeholders), and the bytes of the copies: the
    /// bound is on these totals, so an unevenly filled shard costs nothing.
    held: AtomicUsize,
    held_bytes: AtomicUsize,
    window: RefreshWindow,
    counters: Counters,
    /// The invalidation connections, one per node.
    nodes: RwLock<Arc<Vec<Arc<Node>>>>,
    /// Every application prefix asked for, registered again on every new connection, in order: of
    /// two that start alike the shorter goes first (Redis refuses overlapping prefixes; a longer
    /// one that a registered one starts is covered by it).
    prefixes: Mutex<BTreeSet<String>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a few map or field updates: a panic cannot tear them.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn shard_of(key: &[u8]) -> usize {
    // FNV-1a: the key is short, and the map hashes it again with its own hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

impl Drop for NearCache {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl NearCache {
    /// Opens the invalidation connection of every node (waiting for each handshake, so that a
    /// server that refuses tracking fails here) and starts the tasks that keep them up.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when a node's invalidation connection cannot be opened.
    /// The configuration's application is tracked from the start, so that a server that refuses
    /// `CLIENT TRACKING` (a version before 6, an ACL user without it) fails the connect.
    pub(crate) async fn open(
        conn: &Connection, settings: &Settings, window: RefreshWindow, limits: NearCacheLimits,
        app: &AppName,
    ) -> Result<Arc<Self>> {
        let cache = Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            generation: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
            max_entries: limits.max_entries(),
            max_bytes: limits.max_bytes(),
            held: AtomicUsize::new(0),
            held_bytes: AtomicUsize::new(0),
            window,
            counters: Counters::default(),
            nodes: RwLock::new(Arc::new(Vec::new())),
            prefixes: Mutex::new(BTreeSet::from([format!("{{{}_", app.as_str())])),
            tasks: Mutex::new(Vec::new()),
        });
        let endpoints = match conn {
            Connection::Standalone(_) => settings
                .nodes
                .first()
                .and_then(|n| endpoint(n, n, settings))
                .into_iter()
                .collect(),
            Connection::Cluster(c) => cluster_endpoints(&mut c.clone(), settings).await?,
        };
        // Every node at once (each handshake is bounded by twice the connect timeout). A node that
        // refuses (a wrong password, tracking not allowed) fails the connect; one that cannot be
        // reached now is retried in the background, and covers nothing until it is up.
        let mut handshakes = tokio::task::JoinSet::new();
        for endpoint in endpoints {
            let prefixes = cache.prefixes();
            handshakes.spawn(async move {
                let result = channel::handshake(&endpoint, &prefixes).await;
                (endpoint, result)
            });
        }
        while let Some(joined) = handshakes.join_next().await {
            let Ok((endpoint, result)) = joined else {
                continue;
            };
            match result {
                Ok(established) => cache.start_node(endpoint, Some(established)),
                Err(HandshakeError {
                    message,
                    refused: true,
                }) => {
                    return Err(Error::Unavailable {
                        backend: crate::error::BACKEND,
                        operation: session_core::Operation::Connect,
                        source: format!(
                            "the near cache's invalidation connection to {}: {message}",
                            endpoint.addr()
                        )
                        .into(),
                    });
                }
                Err(HandshakeError { message, .. }) => {
                    tracing::warn!(
                        node = %endpoint.addr(),
                        error = %message,
                        "near cache: no invalidation connection yet; reads go to the server until \
                         it is up"
                    );
                    cache.start_node(endpoint, None);
                }
            }
        }
        if let Connection::Cluster(c) = conn {
            let task = tokio::spawn(watch_topology(
                Arc::downgrade(&cache),
                c.clone(),
                settings.clone(),
            ));
            lock(&cache.tasks).push(task.abort_handle());
        }
        Ok(cache)
    }

    /// Adds the node of `endpoint`, up at once with `established` (so that the store's first
    /// reads are covered) or connected by its task.
    fn start_node(self: &Arc<Self>, endpoint: Endpoint, established: Option<channel::Established>) {
        let node = Node::new(endpoint);
        let up = established.map(|(stream, id, registered)| node.go_up(stream, id, registered));
        let task = tokio::spawn(channel::run(Arc::downgrade(self), Arc::clone(&node), up));
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
        drop(tasks);
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = Vec::clone(&nodes);
        next.push(node);
        *nodes = Arc::new(next);
    }

    fn nodes(&self) -> Arc<Vec<Arc<Node>>> {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn prefixes(&self) -> Vec<String> {
        lock(&self.prefixes).iter().cloned().collect()
    }

    fn remember_prefix(&self, prefix: &str) {
        let mut prefixes = lock(&self.prefixes);
        if !prefixes.contains(prefix) {
            prefixes.insert(prefix.to_owned());
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        lock(&self.shards[shard_of(key)])
    }

    /// Looks `key` (the session's Redis key) up; `prefix` is its application's key prefix.
    pub(crate) fn lookup(&self, key: &str, prefix: &str) -> Lookup {
        if self.window.is_exact() {
            // Every read slides: nothing could ever be answered from memory.
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss(None);
        }
        // The generation first: a loss found by the drains below bumps it, and a copy of an
        // older generation is never used.
        let generation = self.generation.load(Ordering::Acquire);
        let nodes = self.nodes();
        let mut covered = !nodes.is_empty();
        for node in nodes.iter() {
            // Drain every node even when one is down: each applies what it has.
            covered &= node.drain_covers(self, prefix);
        }
        covered &= self.generation.load(Ordering::Acquire) == generation;
        let now = Instant::now();
        let mut shard = self.shard(key.as_bytes());
        if covered && let Some(Slot::Ready(copy)) = shard.map.get_mut(key) {
            let remaining = copy.deadline.saturating_duration_since(now);
            if copy.generation == generation && !self.window.slide_due(remaining, copy.timeout) {
                copy.referenced = true;
                let outcome = match &copy.state {
                    CopyState::Found(snapshot) => ReadOutcome::Found(snapshot.clone()),
                    CopyState::Locked { token, age, at } => ReadOutcome::Locked(LockInfo::new(
                        *token,
                        *age + now.saturating_duration_since(*at),
                    )),
                };
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Hit(outcome);
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        if !covered {
            self.remove(&mut shard, key);
            return Lookup::Miss(None);
        }
        if let Some(Slot::Pending {
            ticket,
            generation: g,
        }) = shard.map.get(key)
            && *g == generation
        {
            // Another read of this session is on its way: share its placeholder. Its survival
            // proves that nothing changed since it was placed, before this read is sent; the
            // first reply installs, the others find the copy there.
            return Lookup::Miss(Some(Ticket {
                id: *ticket,
                generation,
                sent: now,
            }));
        }
        let id = self.tickets.fetch_add(1, Ordering::Relaxed);
        self.remove(&mut shard, key);
        self.held.fetch_add(1, Ordering::Relaxed);
        shard.map.insert(
            key.into(),
            Slot::Pending {
                ticket: id,
                generation,
            },
        );
        shard.clock.push_back(key.into());
        self.evict(&mut shard);
        Lookup::Miss(Some(Ticket {
            id,
            generation,
            sent: now,
        }))
    }

    /// Installs what the read of `ticket` found, if nothing changed since it was sent. `left` is
    /// the time before the session's expiry the server reported, `timeout` its timeout.
    pub(crate) fn install(
        &self, key: &str, ticket: Ticket, copy: NearCopy, left: Duration, timeout: Duration,
    ) {
        let mut shard = self.shard(key.as_bytes());
        match shard.map.get(key) {
            Some(Slot::Pending { ticket: t, .. }) if *t == ticket.id => {}
            _ => return,
        }
        if self.generation.load(Ordering::Acquire) != ticket.generation {
            self.remove(&mut shard, key);
            return;
        }
        let (state, items) = match copy {
            NearCopy::Found(snapshot) => {
                let size = session_core::items_size(&snapshot.items);
                (CopyState::Found(snapshot), size)
            }
            NearCopy::Locked(info) => (
                CopyState::Locked {
                    token: info.token,
                    age: info.age,
                    at: Instant::now(),
                },
                0,
            ),
        };
        let bytes = ENTRY_OVERHEAD + key.len() + items;
        if bytes > self.max_bytes {
            self.remove(&mut shard, key);
            return;
        }
        shard.bytes += bytes;
        self.held_bytes.fetch_add(bytes, Ordering::Relaxed);
        shard.map.insert(
            key.into(),
            Slot::Ready(Copy {
                generation: ticket.generation,
                state,
                deadline: ticket.sent + left,
                timeout,
                bytes,
                referenced: false,
            }),
        );
        self.evict(&mut shard);
    }

    /// Gives up the placeholder of `ticket` (the read failed or found nothing to keep).
    pub(crate) fn abandon(&self, key: &str, ticket: Ticket) {
        let mut shard = self.shard(key.as_bytes());
        if matches!(shard.map.get(key), Some(Slot::Pending { ticket: t, .. }) if *t == ticket.id) {
            self.remove(&mut shard, key);
        }
    }

    /// Drops this process's copy of `key` (before and after a write by this process).
    pub(crate) fn forget(&self, key: &str) {
        self.remove(&mut self.shard(key.as_bytes()), key);
    }

    /// The server reported a change of `key`.
    fn invalidate(&self, key: &[u8]) {
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        if self.remove(&mut self.shard(key.as_bytes()), key) {
            self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Empties the cache, and makes every earlier placeholder and copy unusable.
    fn flush(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            self.held.fetch_sub(shard.map.len(), Ordering::Relaxed);
            self.held_bytes.fetch_sub(shard.bytes, Ordering::Relaxed);
            shard.map.clear();
            shard.clock.clear();
            shard.bytes = 0;
        }
    }

    fn evict(&self, shard: &mut Shard) {
        // The totals are over the bound: evict from this shard (it holds at least the slot just
        // added), oldest unreferenced first.
        let mut spins = 2 * shard.clock.len() + 1;
        while self.held.load(Ordering::Relaxed) > self.max_entries
            || self.held_bytes.load(Ordering::Relaxed) > self.max_bytes
        {
            let Some(key) = shard.clock.pop_front() else {
                break;
            };
            spins = spins.saturating_sub(1);
            match shard.map.get_mut(&key) {
                Some(Slot::Ready(copy)) if copy.referenced && spins > 0 => {
                    copy.referenced = false;
                    shard.clock.push_back(key);
                }
                // A read on its way is passed over while there are copies to evict.
                Some(Slot::Pending { .. }) if spins > 0 => shard.clock.push_back(key),
                Some(_) => {
                    self.remove(shard, &key);
                    self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
                None => {}
            }
        }
        if shard.clock.len() > 2 * shard.map.len() + 64 {
            let Shard { map, clock, .. } = shard;
            clock.retain(|k| map.contains_key(k));
        }
    }

    /// Removes `key`'s slot; whether it held a copy.
    fn remove(&self, shard: &mut Shard, key: &str) -> bool {
        let Some(slot) = shard.map.remove(key) else {
            return false;
        };
        self.held.fetch_sub(1, Ordering::Relaxed);
        match slot {
            Slot::Ready(copy) => {
                shard.bytes -= copy.bytes;
                self.held_bytes.fetch_sub(copy.bytes, Ordering::Relaxed);
                true
            }
            Slot::Pending { .. } => false,
        }
    }

    /// The counters, and what the cache holds now.
    pub(crate) fn stats(&self) -> NearCacheStats {
        let (mut entries, mut bytes) = (0, 0);
        for shard in self.shards.iter() {
            let shard = lock(shard);
            entries += shard
                .map
                .values()
                .filter(|s| matches!(s, Slot::Ready(_)))
                .count() as u64;
            bytes += shard.bytes as u64;
        }
        let c = &self.counters;
        NearCacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }

    /// The server's client ids of the invalidation connections that are up.
    pub(crate) fn client_ids(&self) -> Vec<u64> {
        self.nodes().iter().filter_map(|n| n.client_id()).collect()
    }

    /// Applies whatever the invalidation connections have received, without waiting (tests, and
    /// callers that want the counters current).
    pub(crate) fn drain(&self) {
        for node in self.nodes().iter() {
            node.drain(self);
        }
    }
}

/// The invalidation endpoint for the node at `addr_of`'s address, with `auth_of`'s credentials.
fn endpoint(
    addr_of: &ConnectionInfo, auth_of: &ConnectionInfo, settings: &Settings,
) -> Option<Endpoint> {
    let ConnectionAddr::Tcp(host, port) = addr_of.addr() else {
        return None;
    };
    let redis = auth_of.redis_settings();
    Some(Endpoint {
        host: host.clone(),
        port: *port,
        user: redis.username().map(str::to_owned),
        password: redis.password().map(str::to_owned),
        connect_timeout: settings.connection_timeout,
    })
}

/// Every node of the cluster, masters and replicas (`CLUSTER NODES` from any node; nodes marked
/// failed, without an address or still in handshake are left out).
async fn cluster_endpoints(
    conn: &mut redis::cluster_async::ClusterConnection, settings: &Settings,
) -> Result<Vec<Endpoint>> {
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
    let reply = conn
        .route_command(redis::cmd("CLUSTER").arg("NODES").clone(), routing)
        .await
        .map_err(|e| Error::Unavailable {
            backend: crate::error::BACKEND,
            operation: session_core::Operation::Connect,
            source: format!("the near cache could not list the cluster's nodes: {e}").into(),
        })?;
    let Some(seed) = settings.nodes.first() else {
        return Ok(Vec::new());
    };
    let text = match reply {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::VerbatimString { text, .. } => text,
        Value::SimpleString(s) => s,
        _ => return Ok(Vec::new()),
    };
    let mut endpoints: Vec<Endpoint> = cluster_nodes(&text)
        .into_iter()
        .filter_map(|(host, port)| {
            let info = seed.clone().set_addr(ConnectionAddr::Tcp(host, port));
            endpoint(&info, seed, settings)
        })
        .collect();
    endpoints.sort_by_key(Endpoint::addr);
    endpoints.dedup_by_key(|e| e.addr());
    Ok(endpoints)
}

/// The reachable nodes' addresses in a `CLUSTER NODES` reply.
fn cluster_nodes(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_id, addr, flags) = (fields.next()?, fields.next()?, fields.next()?);
            if flags
                .split(',')
                .any(|f| matches!(f, "fail" | "fail?" | "noaddr" | "handshake"))
            {
                return None;
            }
            // ip:port@cport[,hostname]
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
        })
        .collect()
}

/// Keeps a cluster's invalidation connections in step with its nodes: a node that joined gets
/// one (and the cache is emptied, since a copy may have come from it), a node that left loses its.
async fn watch_topology(
    cache: std::sync::Weak<NearCache>, mut conn: redis::cluster_async::ClusterConnection,
    settings: Settings,
) {
    loop {
        tokio::time::sleep(TOPOLOGY_EVERY).await;
        let Ok(endpoints) = cluster_endpoints(&mut conn, &settings).await else {
            continue;
        };
        let Some(cache) = cache.upgrade() else {
            return;
        };
        let known = cache.nodes();
        let wanted: HashSet<String> = endpoints.iter().map(Endpoint::addr).collect();
        let mut changed = false;
        let left: Vec<Arc<Node>> = known
            .iter()
            .filter(|n| !wanted.contains(&n.endpoint.addr()))
            .cloned()
            .collect();
        for node in &left {
            node.retire(&cache);
            changed = true;
        }
        if !left.is_empty() {
            let mut nodes = cache.nodes.write().unwrap_or_else(PoisonError::into_inner);
            let next: Vec<Arc<Node>> = nodes
                .iter()
                .filter(|n| wanted.contains(&n.endpoint.addr()))
                .cloned()
                .collect();
            *nodes = Arc::new(next);
        }
        let have: HashSet<String> = known.iter().map(|n| n.endpoint.addr()).collect();
        for endpoint in endpoints {
            if !have.contains(&endpoint.addr()) {
                cache.start_node(endpoint, None);
                changed = true;
            }
        }
        if changed {
            cache.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lists_reachable_nodes() {
        let text = "a 127.0.0.1:7001@17001 master - 0 1 1 connected 5461-10922\n\
                    b 127.0.0.1:7003@17003,host.example slave a 0 1 1 connected\n\
                    c 127.0.0.1:7009@17009 master,fail - 0 1 1 disconnected\n\
                    d :0@0 master,noaddr - 0 1 1 disconnected\n\
                    e 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n";
        assert_eq!(
            cluster_nodes(text),
            [
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7003),
                ("127.0.0.1".to_owned(), 7000)
            ]
        );
    }
}
