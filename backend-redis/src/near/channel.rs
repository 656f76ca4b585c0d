//! The invalidation channel: one connection per node (standalone: the server; cluster: every node,
//! replicas included, so that a promoted replica is already heard) that this crate owns, in RESP3
//! with `CLIENT TRACKING ON BCAST PREFIX {<app>_` for every application the cache serves. The
//! server then pushes `invalidate` with the name of every key of those applications that any
//! client changes, deletes or lets expire, and `invalidate` with null on `FLUSHALL`/`FLUSHDB`.
//!
//! Why a socket of our own, and broadcast mode: a read answered from memory first drains this
//! socket without waiting (`try_read`), so every invalidation the server sent before the read is
//! applied before the copy is looked at; a closed socket (`CLIENT KILL`, a restart, a failover) is
//! seen by the same drain and empties the cache. Broadcast mode ties the proof to this connection
//! alone: the data connections (redis-rs's, which reconnect on their own) need no tracking state.
//! Redis queues broadcast invalidations before the replies of the same event loop turn, so by the
//! time a writer has its reply, the invalidation is on its way to every reader's socket.

use std::collections::{HashSet, VecDeque};
use std::io::{ErrorKind, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::NearCache;
use super::resp::{self, Frame, ParseError};

/// The most unparsed bytes kept: far more than any invalidation message; more means the stream is
/// not what we think it is.
const MAX_BUFFER: usize = 16 << 20;
/// How long the background drain waits after data arrives, so that invalidations arrive in
/// batches (lookups drain at once, whatever this is).
const BATCH: Duration = Duration::from_millis(10);
/// How often the background task sends `PING`, so that a connection that died without a word (a
/// half-open connection behind a NAT or a load balancer) is noticed.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from (a reply, a push) for this long covers nothing: its copies are not used.
const SILENCE: Duration = Duration::from_secs(3);
/// A node not heard from for this long is reconnected.
const DEAD: Duration = Duration::from_secs(10);
/// Reconnect backoff bounds.
const FIRST_RETRY: Duration = Duration::from_millis(50);
const LAST_RETRY: Duration = Duration::from_secs(2);

/// How to reach and authenticate to one node.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) connect_timeout: Duration,
}

impl Endpoint {
    pub(super) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One node's invalidation connection.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) endpoint: Endpoint,
    state: Mutex<NodeState>,
    /// Wakes the node's task when a drain found the connection gone.
    down: Notify,
    /// Removed from the cluster's topology: the task ends.
    retired: AtomicBool,
}

#[derive(Debug, Default)]
struct NodeState {
    /// The connection, once its handshake is done; `None` while down.
    stream: Option<Arc<TcpStream>>,
    client_id: Option<u64>,
    buf: Vec<u8>,
    /// Prefixes the server confirmed for this connection.
    registered: HashSet<String>,
    /// Prefixes asked for (confirmed or not, or refused): asked once per connection.
    requested: HashSet<String>,
    /// The replies still expected, in order.
    pending: VecDeque<Awaited>,
    /// When the server last sent anything.
    heard: Option<Instant>,
}

/// What a reply the connection still expects answers.
#[derive(Debug)]
enum Awaited {
    /// `CLIENT TRACKING ON BCAST PREFIX <prefix>`.
    Prefix(String),
    /// A heartbeat `PING`.
    Ping,
}

fn lock(state: &Mutex<NodeState>) -> MutexGuard<'_, NodeState> {
    // Every change under this lock is a few field assignments: a panic cannot leave it torn.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Node {
    pub(super) fn new(endpoint: Endpoint) -> Arc<Self> {
        Arc::new(Self {
            endpoint,
            state: Mutex::new(NodeState::default()),
            down: Notify::new(),
            retired: AtomicBool::new(false),
        })
    }

    pub(super) fn retire(&self, cache: &NearCache) {
        self.retired.store(true, Ordering::Release);
        let mut state = lock(&self.state);
        self.go_down(&mut state, cache, "the node left the cluster");
    }

    pub(super) fn client_id(&self) -> Option<u64> {
        let state = lock(&self.state);
        state.stream.as_ref().and(state.client_id)
    }

    /// Applies everything the server has sent so far, without waiting, and tells whether this
    /// connection covers `prefix` now (up, and the prefix confirmed). A prefix not yet asked for
    /// is asked for (the answer arrives with a later drain).
    pub(super) fn drain_covers(&self, cache: &NearCache, prefix: &str) -> bool {
        let mut state = lock(&self.state);
        if !self.drain_locked(&mut state, cache) {
            return false;
        }
        if state.heard.is_none_or(|at| at.elapsed() > SILENCE) {
            return false;
        }
        if state
            .registered
            .iter()
            .any(|p| prefix.starts_with(p.as_str()))
        {
            return true;
        }
        if !state.requested.contains(prefix) {
            self.request(&mut state, cache, prefix);
        }
        false
    }

    /// Drains without asking for anything; whether the connection is up.
    pub(super) fn drain(&self, cache: &NearCache) -> bool {
        let mut state = lock(&self.state);
        self.drain_locked(&mut state, cache)
    }

    fn drain_locked(&self, state: &mut NodeState, cache: &NearCache) -> bool {
        let Some(stream) = state.stream.as_ref().map(Arc::clone) else {
            return false;
        };
        // Straight from the socket, not through tokio's `try_read`: that one answers `WouldBlock`
        // from the reactor's last readiness without asking the kernel, so data already on this
        // machine would wait for the reactor's next turn.
        let socket = SockRef::from(&*stream);
        let mut chunk = [0u8; 8192];
        loop {
            match (&*socket).read(&mut chunk) {
                Ok(0) => {
                    self.go_down(state, cache, "the server closed it");
                    return false;
                }
                // Read on until the socket is empty: the end of the connection (a read of 0) may
                // follow what was waiting, and must be seen by this drain.
                Ok(n) => {
                    state.buf.extend_from_slice(&chunk[..n]);
                    state.heard = Some(Instant::now());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.go_down(state, cache, &e.to_string());
                    return false;
                }
            }
        }
        let mut used = 0;
        loop {
            match resp::parse(&state.buf[used..]) {
                Ok((frame, n)) => {
                    used += n;
                    self.apply(state, cache, frame);
                }
                Err(ParseError::Incomplete) => break,
                Err(ParseError::Invalid) => {
                    self.go_down(state, cache, "it sent something that is not RESP3");
                    return false;
                }
            }
        }
        state.buf.drain(..used);
        if state.buf.is_empty() && state.buf.capacity() > 1 << 20 {
            // Give back what a burst took.
            state.buf = Vec::new();
        }
        if state.buf.len() > MAX_BUFFER {
            self.go_down(state, cache, "an unparsable frame grew too large");
            return false;
        }
        true
    }

    fn apply(&self, state: &mut NodeState, cache: &NearCache, frame: Frame) {
        match frame {
            Frame::Push(parts) => match parts.as_slice() {
                [Frame::Str(kind), keys] if kind.as_slice() == b"invalidate" => match keys {
                    Frame::Array(keys) => {
                        for key in keys {
                            if let Frame::Str(key) = key {
                                cache.invalidate(key);
                            }
                        }
                    }
                    // `FLUSHALL`/`FLUSHDB`, or the server dropped its tracking state.
                    _ => cache.flush(),
                },
                _ => {}
            },
            reply => {
                let prefix = match state.pending.pop_front() {
                    Some(Awaited::Prefix(prefix)) => prefix,
                    Some(Awaited::Ping) => return,
                    None => {
                        // A reply nobody asked for: the stream is out of step with us.
                        self.go_down(state, cache, "a reply arrived that was not asked for");
                        return;
                    }
                };
                match reply {
                    Frame::Str(ok) if ok.as_slice() == b"OK" => {
                        state.registered.insert(prefix);
                    }
                    other => tracing::warn!(
                        node = %self.endpoint.addr(),
                        prefix = %prefix,
                        reply = ?other,
                        "the server refused to track this application's keys: its sessions are \
                         read from the server, never from the near cache"
                    ),
                }
            }
        }
    }

    /// Sends `CLIENT TRACKING ON BCAST PREFIX <prefix>` without waiting (a few dozen bytes: the
    /// socket's buffer takes them). If the socket cannot take them now, the next lookup asks again.
    fn request(&self, state: &mut NodeState, cache: &NearCache, prefix: &str) {
        let Some(stream) = state.stream.as_ref().map(Arc::clone) else {
            return;
        };
        cache.remember_prefix(prefix);
        let command = tracking(prefix);
        match stream.try_write(&command) {
            Ok(n) if n == command.len() => {
                state.requested.insert(prefix.to_owned());
                state.pending.push_back(Awaited::Prefix(prefix.to_owned()));
            }
            Ok(_) => self.go_down(state, cache, "a command was cut short"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => self.go_down(state, cache, &e.to_string()),
        }
    }

    /// Sends a heartbeat `PING` (without waiting); goes down after [`DEAD`] without a word.
    fn heartbeat(&self, cache: &NearCache) {
        let mut state = lock(&self.state);
        let Some(stream) = state.stream.as_ref().map(Arc::clone) else {
            return;
        };
        if state.heard.is_none_or(|at| at.elapsed() > DEAD) {
            self.go_down(&mut state, cache, "the server stopped answering");
            return;
        }
        let ping = resp::command(&[b"PING"]);
        match stream.try_write(&ping) {
            Ok(n) if n == ping.len() => state.pending.push_back(Awaited::Ping),
            Ok(_) => self.go_down(&mut state, cache, "a command was cut short"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => self.go_down(&mut state, cache, &e.to_string()),
        }
    }

    fn go_down(&self, state: &mut NodeState, cache: &NearCache, why: &str) {
        if state.stream.take().is_some() {
            tracing::info!(
                node = %self.endpoint.addr(),
                reason = why,
                "near cache: the invalidation connection is gone; the cache is emptied"
            );
        }
        state.client_id = None;
        state.heard = None;
        state.buf.clear();
        state.registered.clear();
        state.requested.clear();
        state.pending.clear();
        cache.flush();
        self.down.notify_one();
    }

    pub(super) fn go_up(
        &self, stream: TcpStream, client_id: u64, registered: HashSet<String>,
    ) -> Arc<TcpStream> {
        let stream = Arc::new(stream);
        let mut state = lock(&self.state);
        state.stream = Some(Arc::clone(&stream));
        state.client_id = Some(client_id);
        state.heard = Some(Instant::now());
        state.buf.clear();
        state.requested = registered.clone();
        state.registered = registered;
        state.pending.clear();
        stream
    }
}

fn tracking(prefix: &str) -> Vec<u8> {
    resp::command(&[
        b"CLIENT",
        b"TRACKING",
        b"ON",
        b"BCAST",
        b"PREFIX",
        prefix.as_bytes(),
    ])
}

/// An open, prepared invalidation connection: the stream, its client id, the prefixes tracked.
pub(super) type Established = (TcpStream, u64, HashSet<String>);

/// Why a handshake failed.
#[derive(Debug)]
pub(super) struct HandshakeError {
    pub(super) message: String,
    /// The server answered and refused (a wrong password, tracking not allowed or not known):
    /// retrying will not help.
    pub(super) refused: bool,
}

impl HandshakeError {
    fn io(message: String) -> Self {
        Self {
            message,
            refused: false,
        }
    }

    fn refused(message: String) -> Self {
        Self {
            message,
            refused: true,
        }
    }
}

/// Connects and prepares one invalidation connection: `HELLO 3` (with `AUTH`), a client name,
/// its id, and tracking of every prefix in `prefixes`. Returns the stream, the id and the
/// prefixes the server accepted.
pub(super) async fn handshake(
    endpoint: &Endpoint, prefixes: &[String],
) -> Result<Established, HandshakeError> {
    let work = async {
        let mut stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| HandshakeError::io(format!("cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        // The heartbeat notices a silent connection; keepalive makes the kernel give up on it too.
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5));
        let _ = SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let mut out = Vec::new();
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = &endpoint.password {
            hello.push(b"AUTH");
            hello.push(endpoint.user.as_deref().unwrap_or("default").as_bytes());
            hello.push(password.as_bytes());
        }
        out.extend(resp::command(&hello));
        out.extend(resp::command(&[
            b"CLIENT",
            b"SETNAME",
            b"sessions-near-cache",
        ]));
        out.extend(resp::command(&[b"CLIENT", b"ID"]));
        for prefix in prefixes {
            out.extend(tracking(prefix));
        }
        stream
            .write_all(&out)
            .await
            .map_err(|e| HandshakeError::io(format!("cannot write: {e}")))?;
        let mut buf = Vec::new();
        let mut replies = Vec::new();
        while replies.len() < 3 + prefixes.len() {
            match resp::parse(&buf) {
                Ok((frame, n)) => {
                    buf.drain(..n);
                    if !matches!(frame, Frame::Push(_)) {
                        replies.push(frame);
                    }
                }
                Err(ParseError::Invalid) => {
                    return Err(HandshakeError::refused(
                        "the server's reply is not RESP3".into(),
                    ));
                }
                Err(ParseError::Incomplete) => {
                    let mut chunk = [0u8; 4096];
                    let n = stream
                        .read(&mut chunk)
                        .await
                        .map_err(|e| HandshakeError::io(format!("cannot read: {e}")))?;
                    if n == 0 {
                        return Err(HandshakeError::io(
                            "the server closed the connection".into(),
                        ));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        for (what, reply) in ["HELLO 3", "CLIENT SETNAME", "CLIENT ID"]
            .iter()
            .zip(&replies)
        {
            if let Frame::Error(e) = reply {
                return Err(HandshakeError::refused(format!("{what} failed: {e}")));
            }
        }
        let Frame::Int(id) = replies[2] else {
            return Err(HandshakeError::refused(
                "CLIENT ID did not answer a number".into(),
            ));
        };
        let mut registered = HashSet::new();
        for (prefix, reply) in prefixes.iter().zip(&replies[3..]) {
            match reply {
                Frame::Str(ok) if ok.as_slice() == b"OK" => {
                    registered.insert(prefix.clone());
                }
                Frame::Error(e) if registered.is_empty() && prefix == &prefixes[0] => {
                    return Err(HandshakeError::refused(format!(
                        "CLIENT TRACKING failed: {e}"
                    )));
                }
                _ => {}
            }
        }
        Ok((stream, u64::try_from(id).unwrap_or(0), registered))
    };
    match tokio::time::timeout(endpoint.connect_timeout * 2, work).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::io(format!(
            "no answer within {:?}",
            endpoint.connect_timeout * 2
        ))),
    }
}

/// Brings `node` up with an established connection and keeps it up: drains whatever arrives,
/// and reconnects (with backoff) when it goes down, until the node is retired or the cache is
/// dropped.
pub(super) async fn run(cache: Weak<NearCache>, node: Arc<Node>, mut up: Option<Arc<TcpStream>>) {
    let mut retry = FIRST_RETRY;
    loop {
        if node.retired.load(Ordering::Acquire) {
            return;
        }
        let stream = match up.take() {
            Some(stream) => stream,
            None => {
                let prefixes = match cache.upgrade() {
                    Some(cache) => cache.prefixes(),
                    None => return,
                };
                match handshake(&node.endpoint, &prefixes).await {
                    Ok((stream, id, registered)) => node.go_up(stream, id, registered),
                    Err(HandshakeError { message: e, .. }) => {
                        tracing::debug!(node = %node.endpoint.addr(), error = %e,
                            "near cache: reconnecting the invalidation connection failed");
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(LAST_RETRY);
                        continue;
                    }
                }
            }
        };
        retry = FIRST_RETRY;
        if node.retired.load(Ordering::Acquire) {
            if let Some(cache) = cache.upgrade() {
                node.retire(&cache);
            }
            return;
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = async { heartbeat.tick().await; } => {
                    let Some(cache) = cache.upgrade() else {
                        return;
                    };
                    node.heartbeat(&cache);
                }
                ready = stream.readable() => {
                    if ready.is_err() {
                        if let Some(cache) = cache.upgrade() {
                            let mut state = lock(&node.state);
                            node.go_down(&mut state, &cache, "the socket failed");
                        }
                        break;
                    }
                    // Every lookup drains the socket itself before it answers, so correctness
                    // never waits for this task: it only keeps the socket from filling up and
                    // notices a lost connection while nobody reads. A short pause turns a burst
                    // of writes (each one an invalidation) into one read instead of a wake-up each.
                    tokio::select! {
                        () = tokio::time::sleep(BATCH) => {}
                        () = node.down.notified() => {}
                    }
                }
                () = node.down.notified() => {}
            }
            let Some(cache) = cache.upgrade() else {
                return;
            };
            // Drained inside `try_io`, whose `WouldBlock` clears the reactor's readiness (lookups
            // read the socket directly and leave it set), unless new data arrived meanwhile.
            let mut up = None;
            let _ = stream.try_io(Interest::READABLE, || {
                up = Some(node.drain(&cache));
                Err::<(), _>(ErrorKind::WouldBlock.into())
            });
            if !up.unwrap_or_else(|| node.drain(&cache)) {
                break;
            }
        }
    }
}
