//! Expiry events (ASP.NET `Session_End`): the final items of a session that expired or was removed.
//!
//! - **Detection** (at connect): `CONFIG GET notify-keyspace-events` on every node must report the
//!   keyevent channel (`E`) and expired events (`x`, or `A`). A node that refuses `CONFIG` (an ACL
//!   user without it, a renamed command) counts as unknown: the capability is then not declared.
//! - **Grace period**: a session created while expiry events are declared carries the `EVENTS`
//!   flag: its value outlives its end by [`EXPIRY_GRACE`], and an empty alive marker expires
//!   exactly at its end (`slide_if_due` in `ops/slide.lua`), so the items of a session whose marker
//!   expired are still there for its event. Sessions without the flag pay for neither.
//! - **Listener** (started by the first `expiry_events()` call), on connections of its own, never
//!   the one that carries the store's operations:
//!   - *notifications*: one connection per node (standalone: the server; cluster: every node,
//!     replicas too, so that a promoted replica is already heard) subscribed to
//!     `__keyevent@<db>__:expired`. Each expired alive marker of an application this store serves,
//!     while someone subscribes, goes into a **bounded queue** ([`ExpiryListenerLimits::queue`],
//!     default 65,536 sessions: under 5 MB);
//!   - *takes*: [`ExpiryListenerLimits::takes`] tasks (default 64) drain the queue, each running
//!     `take.lua` (claim the end with `SET NX`, take the items, one script) on a connection of the
//!     same kind as the store's (a cluster one routes each take to its slot's master), so up to 64
//!     takes are in flight, pipelined on the socket. The takes keep pace with the slowest
//!     subscriber that still reads: while one is close to missing events they wait (the items
//!     are safe in Redis for the grace period); one that reads nothing for a second is not
//!     waited for (it misses events, and `ExpiryEvents::missed` says how many);
//!   - *recovery*: a notification that could not be queued (the queue was full) or may have been
//!     missed (a notification connection dropped: Redis disconnects a subscriber that reads too
//!     slowly, at `client-output-buffer-limit pubsub`) is not lost: it sets an alarm, and the
//!     listener **sweeps** (once the notification connections answer again): `SCAN` of every master
//!     for session values within their grace period (`PTTL` at most [`EXPIRY_GRACE`]), each queued
//!     for a take (the sweep waits for room). A take that fails is repeated (three attempts, then
//!     again at every health check) with the same claim token, so a take whose reply was lost
//!     reports the end rather than finding it claimed. A take that fails in a way a repeat would
//!     not cure (the session's value replaced by a key of another type, a reply this version
//!     cannot read) claims the end (`claim_lost.lua`, which never reads the value) and reports it
//!     as `ExpiredItemsLost`; so does a take that finds bytes this layout did not write under the
//!     session's name.
//! - **Removal**: `remove` and `delete` return the final items from their own script when this
//!   store has subscribers, and only that process reports the end.
//!
//! **Delivery guarantee.** Every session with the `EVENTS` flag whose alive marker expires while
//! this store has subscribers (for an application it serves) is reported exactly once per web farm
//! (by the process whose claim succeeds): with its final items (`Expired`) when the take comes
//! within the grace period, which the bounded queue, the parallel takes and the sweep keep it
//! within unless the listener cannot reach Redis for most of it; otherwise as
//! [`EndReason::ExpiredItemsLost`] (the items were gone: evicted, flushed, or the end claimed after
//! the grace period), never as an `Expired` event without its items. Not covered: an end that no
//! process heard or swept while its value existed (every process down or unsubscribed for the whole
//! grace period) is not reported. Each subscriber then gets the events it can keep up with: one more
//! than its buffer (1024 events) behind misses the oldest, counted by
//! [`ExpiryEvents::missed`](session_core::ExpiryEvents::missed). The listener's memory is bounded
//! by the queue and the in-flight takes; [`ExpiryListenerStats`] reports it
//! ([`RedisStore::expiry_listener_stats`](crate::RedisStore::expiry_listener_stats)).
//!
//! The listener's tasks are aborted when the store is dropped; their connections go with them.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Client, ConnectionAddr, ConnectionInfo, PushInfo, PushKind, Value};
use session_core::{AppName, EndReason, ExpiryEvent, ExpiryEvents, SessionId, SessionKey};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::connection::{Connection, OpenError, certificates};
use crate::error::ErrorContext;
use crate::keys::session_of_marker;
use crate::ops;
use crate::ops::take::Taken;

/// How long a session's items outlive it in Redis: the time the expiry listener has to take them
/// after the session expired (the memory this costs: every ended session's items, for this long).
pub const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// How often the listener pings its notification connections, so that a dropped one reconnects
/// (and resubscribes) even though it sends nothing else, and repeats the takes that failed.
const HEALTH_CHECK: Duration = Duration::from_secs(5);

/// Events buffered per subscriber before a slow one starts missing them.
const BUFFER: usize = 1024;

/// Attempts of one take before it waits for the next health check.
const TAKE_ATTEMPTS: u32 = 3;

/// How long the takes wait for a subscriber that reads nothing before they stop waiting for it.
const STALL: Duration = Duration::from_secs(1);

/// Keys a sweep asks each `SCAN` for.
const SCAN_COUNT: usize = 1000;

/// The memory bound of the expiry listener ([`RedisOptions::with_expiry_listener_limits`](crate::RedisOptions::with_expiry_listener_limits)).
///
/// ```
/// use backend_redis::{ExpiryListenerLimits, RedisOptions};
///
/// let options = RedisOptions::new().with_expiry_listener_limits(ExpiryListenerLimits::new(4096, 32));
/// assert_eq!(ExpiryListenerLimits::default().queue(), 65_536);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryListenerLimits {
    queue: usize,
    takes: usize,
}

impl ExpiryListenerLimits {
    /// The default: 65,536 sessions queued (72 bytes each: under 5 MB), 64 takes in flight.
    pub const DEFAULT: Self = Self {
        queue: 65_536,
        takes: 64,
    };

    /// At most `queue` expired sessions waiting for their take, and `takes` takes in flight
    /// (each at least 1).
    pub fn new(queue: usize, takes: usize) -> Self {
        Self {
            queue: queue.max(1),
            takes: takes.max(1),
        }
    }

    /// The most expired sessions waiting for their take; a notification beyond it is not queued,
    /// and a sweep finds its session instead.
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// The most takes in flight at once.
    pub fn takes(&self) -> usize {
        self.takes
    }
}

impl Default for ExpiryListenerLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the expiry listener did since it started
/// ([`RedisStore::expiry_listener_stats`](crate::RedisStore::expiry_listener_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiryListenerStats {
    /// Expired alive markers heard, of applications this store serves, while it had subscribers.
    pub notifications: u64,
    /// Sessions waiting for their take now.
    pub queued: usize,
    /// The most that ever waited at once (at most the queue limit).
    pub queued_max: usize,
    /// Notifications not queued because the queue was full (a sweep finds their sessions).
    pub overflowed: u64,
    /// Notification connections lost (a sweep finds what they missed).
    pub disconnects: u64,
    /// Sweeps run.
    pub sweeps: u64,
    /// Ended sessions the sweeps found (and queued for a take).
    pub swept: u64,
    /// Ends reported as `Expired`, with their final items.
    pub expired: u64,
    /// Ends reported as `ExpiredItemsLost`.
    pub items_lost: u64,
    /// Takes that failed three times (repeated at the next health checks).
    pub take_failures: u64,
}

/// The expiry events of one store.
#[derive(Debug)]
pub(crate) struct Expiry {
    shared: Arc<Shared>,
    /// The nodes to listen on, when every node has keyspace notifications for expired keys.
    nodes: Option<Vec<ConnectionInfo>>,
    settings: Settings,
    /// The listener's tasks, aborted when the store is dropped.
    listener: tokio::sync::Mutex<Option<JoinSet<()>>>,
}

/// What the listener's tasks and the notification connections share.
#[derive(Debug)]
struct Shared {
    sender: broadcast::Sender<ExpiryEvent>,
    /// Applications whose expired sessions this store reports: the configured one and every one it
    /// has served. A farm of another application on the same database keeps its own events.
    apps: RwLock<HashSet<AppName>>,
    limits: ExpiryListenerLimits,
    /// Expired sessions waiting for their take (at most `limits.queue`).
    queue: Mutex<VecDeque<Pending>>,
    /// Takes that failed, repeated at the next health check (at most `limits.queue` are added;
    /// those the queue had no room for at a health check stay for the next, so up to twice that).
    retries: Mutex<Vec<Pending>>,
    /// A session was queued.
    ready: Notify,
    /// A notification may have been lost: sweep.
    alarm: Notify,
    lost: AtomicBool,
    /// This listener's id, the start of every claim token it writes.
    id: String,
    sequence: AtomicU64,
    /// Pacing the takes to the slowest subscriber (`Shared::pace`).
    pace: Mutex<Pace>,
    counts: Counts,
}

/// The slowest subscriber's progress while the takes wait for it.
#[derive(Debug, Default)]
struct Pace {
    /// The fewest unread events seen since the wait began, and when.
    since: Option<(usize, tokio::time::Instant)>,
    /// It made no progress for [`STALL`]: not waited for until it catches up.
    stalled: bool,
}

/// One expired session to take, with the token of the take to repeat, if any.
#[derive(Debug)]
struct Pending {
    key: SessionKey,
    token: Option<String>,
}

#[derive(Debug, Default)]
struct Counts {
    notifications: AtomicU64,
    queued_max: AtomicUsize,
    overflowed: AtomicU64,
    disconnects: AtomicU64,
    sweeps: AtomicU64,
    swept: AtomicU64,
    expired: AtomicU64,
    items_lost: AtomicU64,
    take_failures: AtomicU64,
}

impl Expiry {
    /// Checks the server's `notify-keyspace-events` on every node; never fails (an unknown
    /// configuration leaves the capability undeclared).
    pub(crate) async fn detect(
        conn: &Connection, settings: &Settings, app: &AppName, limits: ExpiryListenerLimits,
    ) -> Self {
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
        let id = SessionId::generate().map_or_else(
            |_| format!("{:x}", std::process::id()),
            |id| id.expose().get(..16).unwrap_or_default().to_owned(),
        );
        Self {
            shared: Arc::new(Shared {
                sender: broadcast::channel(BUFFER).0,
                apps: RwLock::new(HashSet::from([app.clone()])),
                limits,
                queue: Mutex::new(VecDeque::new()),
                retries: Mutex::new(Vec::new()),
                ready: Notify::new(),
                alarm: Notify::new(),
                lost: AtomicBool::new(false),
                id,
                sequence: AtomicU64::new(0),
                pace: Mutex::new(Pace::default()),
                counts: Counts::default(),
            }),
            nodes,
            settings: settings.clone(),
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
        let known = read(&self.shared.apps).contains(key.app());
        if !known {
            write(&self.shared.apps).insert(key.app().clone());
        }
    }

    /// Whether anyone listens: `remove` and `delete` then return the final items.
    pub(crate) fn wanted(&self) -> bool {
        self.enabled() && self.shared.sender.receiver_count() > 0
    }

    /// Reports the end of a session removed by this process.
    pub(crate) fn removed(&self, key: &SessionKey, items: session_core::Items) {
        let _ = self.shared.sender.send(ExpiryEvent::new(
            key.clone(),
            Arc::new(items),
            EndReason::Removed,
        ));
    }

    /// The listener's counters, where the capability is declared.
    pub(crate) fn stats(&self) -> Option<ExpiryListenerStats> {
        self.enabled().then(|| self.shared.stats())
    }

    /// A new subscription; starts the listener on first use and returns once it is subscribed on
    /// every node, so that an expiry after this returns is heard.
    pub(crate) async fn subscribe(
        &self, errors: &ErrorContext,
    ) -> redis::RedisResult<ExpiryEvents> {
        let Some(nodes) = &self.nodes else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "keyspace notifications are disabled",
            )));
        };
        let receiver = self.shared.sender.subscribe();
        let mut listener = self.listener.lock().await;
        if listener.is_none() {
            // The connection drivers hold only a weak reference: the store's drop ends everything.
            let weak: Weak<Shared> = Arc::downgrade(&self.shared);
            let push = move |info: PushInfo| -> Result<(), std::convert::Infallible> {
                if let Some(shared) = weak.upgrade() {
                    shared.on_push(&info);
                }
                Ok(())
            };
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
                    .set_push_sender(push.clone())
                    .set_automatic_resubscription();
                let mut manager = ConnectionManager::new_with_config(client, config).await?;
                manager.subscribe(&channel).await?;
                subscribers.push(manager);
            }
            // The takes' own connection, of the store's kind (a cluster one routes each take to
            // its slot's master); it subscribes to nothing, so its pushes go nowhere.
            let (sink, _) = tokio::sync::mpsc::unbounded_channel();
            let takes = match Connection::open(&mut self.settings.clone(), sink).await {
                Ok(conn) => conn,
                Err(OpenError::Driver(e)) => return Err(e),
                Err(OpenError::Config(e)) => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "the expiry listener's connection",
                        e.to_string(),
                    )));
                }
            };
            let mut tasks = JoinSet::new();
            for _ in 0..self.shared.limits.takes {
                let shared = Arc::clone(&self.shared);
                tasks.spawn(take_loop(shared, takes.clone(), errors.clone()));
            }
            tasks.spawn(control(Arc::clone(&self.shared), subscribers));
            *listener = Some(tasks);
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

impl Shared {
    /// A notification connection's push (called by its driver: never waits).
    fn on_push(&self, push: &PushInfo) {
        match push.kind {
            PushKind::Disconnection => {
                self.counts.disconnects.fetch_add(1, Ordering::Relaxed);
                self.raise_alarm();
            }
            PushKind::Message => {
                let Some(key) = push
                    .data
                    .get(1)
                    .and_then(text)
                    .and_then(|name| session_of_marker(&name))
                else {
                    return;
                };
                let Some(key) = self.served(key) else {
                    return;
                };
                self.counts.notifications.fetch_add(1, Ordering::Relaxed);
                if self.enqueue(Pending { key, token: None }).is_err() {
                    self.counts.overflowed.fetch_add(1, Ordering::Relaxed);
                    self.raise_alarm();
                }
            }
            _ => {}
        }
    }

    /// Whether `key`'s end is this store's to report now: someone subscribes, and the store serves
    /// its application.
    fn wants(&self, key: &SessionKey) -> bool {
        self.sender.receiver_count() > 0 && read(&self.apps).contains(key.app())
    }

    /// `key` with the application name this store already holds (a queued session then costs
    /// no allocation of its own), if its end is this store's to report now.
    fn served(&self, key: SessionKey) -> Option<SessionKey> {
        if self.sender.receiver_count() == 0 {
            return None;
        }
        let app = read(&self.apps).get(key.app())?.clone();
        Some(SessionKey::new(app, *key.id()))
    }

    /// Waits while a subscriber that is still reading is close to missing events: a take removes
    /// the items from Redis, where they are safe for the grace period, so they are not taken
    /// faster than the slowest subscriber reads. A subscriber that reads nothing for
    /// [`STALL`] is not waited for (it misses events, counted by `ExpiryEvents::missed`) until
    /// it catches up.
    async fn pace(&self) {
        let room = BUFFER.saturating_sub(self.limits.takes).max(BUFFER / 2);
        loop {
            let behind = self.sender.len();
            let now = tokio::time::Instant::now();
            {
                let mut pace = lock(&self.pace);
                if behind < room {
                    pace.stalled = false;
                    pace.since = None;
                    return;
                }
                if pace.stalled {
                    return;
                }
                match pace.since {
                    Some((least, _)) if behind < least => pace.since = Some((behind, now)),
                    Some((_, since)) if now.duration_since(since) >= STALL => {
                        pace.stalled = true;
                        tracing::warn!(
                            "an expiry event subscriber stopped reading: it misses events \
                             (ExpiryEvents::missed) until it catches up"
                        );
                        return;
                    }
                    Some(_) => {}
                    None => pace.since = Some((behind, now)),
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Queues a take, or gives it back when the queue is full.
    fn enqueue(&self, pending: Pending) -> Result<(), Pending> {
        let mut queue = lock(&self.queue);
        if queue.len() >= self.limits.queue {
            return Err(pending);
        }
        queue.push_back(pending);
        self.counts
            .queued_max
            .fetch_max(queue.len(), Ordering::Relaxed);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a take, waiting for room.
    async fn enqueue_waiting(&self, mut pending: Pending) {
        loop {
            match self.enqueue(pending) {
                Ok(()) => return,
                Err(back) => pending = back,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pop(&self) -> Option<Pending> {
        lock(&self.queue).pop_front()
    }

    /// Something may have been missed: the control task sweeps.
    fn raise_alarm(&self) {
        self.lost.store(true, Ordering::Release);
        self.alarm.notify_one();
    }

    /// A new claim token: this listener's id and a sequence number.
    fn token(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:x}", self.id)
    }

    /// Takes one session's end and reports it; repeats a failed take, then leaves it for the
    /// next health check.
    async fn take(&self, conn: &mut Connection, errors: &ErrorContext, pending: Pending) {
        let Pending { key, token } = pending;
        if !self.wants(&key) {
            return;
        }
        let token = token.unwrap_or_else(|| self.token());
        self.pace().await;
        let mut attempt = 0;
        loop {
            let (items, reason) = match ops::take::run(conn, errors, &key, &token).await {
                Ok(Taken::NotOurs) => return,
                Ok(Taken::Items(items)) => {
                    self.counts.expired.fetch_add(1, Ordering::Relaxed);
                    (items, EndReason::Expired)
                }
                Ok(Taken::Lost) => {
                    self.counts.items_lost.fetch_add(1, Ordering::Relaxed);
                    (session_core::Items::new(), EndReason::ExpiredItemsLost)
                }
                Err(e) => {
                    attempt += 1;
                    if e.is_transient() && attempt < TAKE_ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(50 << (2 * attempt))).await;
                        continue;
                    }
                    self.counts.take_failures.fetch_add(1, Ordering::Relaxed);
                    let failed = if e.is_transient() {
                        e
                    } else {
                        // A repeat would fail the same way (the session's value of another
                        // type, a reply this version cannot read): the end is claimed without
                        // its items and reported as lost, unless it is not ours to report.
                        match ops::take::claim_lost(conn, errors, &key, &token).await {
                            Ok(true) => {
                                tracing::warn!(
                                    app = key.app().as_str(),
                                    id = key.id().prefix(),
                                    error = %e,
                                    "the final items of an expired session could not be taken: \
                                     reported as ExpiredItemsLost"
                                );
                                self.counts.items_lost.fetch_add(1, Ordering::Relaxed);
                                let _ = self.sender.send(ExpiryEvent::new(
                                    key,
                                    Arc::new(session_core::Items::new()),
                                    EndReason::ExpiredItemsLost,
                                ));
                                return;
                            }
                            Ok(false) => return,
                            Err(claim) => claim,
                        }
                    };
                    self.keep_for_retry(key, token, &failed);
                    return;
                }
            };
            let _ = self
                .sender
                .send(ExpiryEvent::new(key, Arc::new(items), reason));
            return;
        }
    }

    /// Keeps a take that failed for the next health check, where the failure may pass; otherwise
    /// (or with no room) says that the end is not reported.
    fn keep_for_retry(&self, key: SessionKey, token: String, failed: &session_core::Error) {
        let mut retries = lock(&self.retries);
        // Up to twice the queue: those a full queue sent back at the last health check, and as
        // many new ones.
        if failed.is_transient() && retries.len() < self.limits.queue.saturating_mul(2) {
            tracing::warn!(
                app = key.app().as_str(),
                id = key.id().prefix(),
                error = %failed,
                "could not take the final items of an expired session (repeated at the next \
                 health check)"
            );
            retries.push(Pending {
                key,
                token: Some(token),
            });
        } else {
            tracing::warn!(
                app = key.app().as_str(),
                id = key.id().prefix(),
                error = %failed,
                "the end of an expired session may have been claimed and is not reported: its \
                 take cannot be repeated"
            );
        }
    }

    fn stats(&self) -> ExpiryListenerStats {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExpiryListenerStats {
            notifications: get(&c.notifications),
            queued: lock(&self.queue).len(),
            queued_max: c.queued_max.load(Ordering::Relaxed),
            overflowed: get(&c.overflowed),
            disconnects: get(&c.disconnects),
            sweeps: get(&c.sweeps),
            swept: get(&c.swept),
            expired: get(&c.expired),
            items_lost: get(&c.items_lost),
            take_failures: get(&c.take_failures),
        }
    }
}

/// One of the take tasks: drains the queue.
async fn take_loop(shared: Arc<Shared>, mut conn: Connection, errors: ErrorContext) {
    loop {
        match shared.pop() {
            Some(pending) => shared.take(&mut conn, &errors, pending).await,
            // `notify_one` leaves a permit when no task waits: a session queued between the
            // look and the wait is not missed.
            None => shared.ready.notified().await,
        }
    }
}

/// The control task: pings the notification connections (a dropped one reconnects and
/// resubscribes), repeats failed takes, and sweeps after an alarm once every node answers.
async fn control(shared: Arc<Shared>, mut subscribers: Vec<ConnectionManager>) {
    let mut health = tokio::time::interval(HEALTH_CHECK);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = health.tick() => {}
            () = shared.alarm.notified() => {}
        }
        let mut up = true;
        for s in &mut subscribers {
            // A failed PING makes the manager reconnect, and then resubscribe.
            let ping: redis::RedisResult<Value> = redis::cmd("PING").query_async(s).await;
            up &= ping.is_ok();
        }
        {
            // A storm's queue gives its memory back once drained.
            let mut queue = lock(&shared.queue);
            if queue.is_empty() && queue.capacity() > 1024 {
                queue.shrink_to(1024);
            }
        }
        // Without waiting for room: while the takes drain a full queue, the pings go on, and
        // what does not fit waits for the next health check.
        let retries = std::mem::take(&mut *lock(&shared.retries));
        let mut kept = Vec::new();
        for pending in retries {
            if let Err(back) = shared.enqueue(pending) {
                kept.push(back);
            }
        }
        lock(&shared.retries).extend(kept);
        if !shared.lost.swap(false, Ordering::AcqRel) || shared.sender.receiver_count() == 0 {
            // Nothing missed, or nobody to report it to.
            continue;
        }
        if !up {
            // Sweep once the nodes answer (and are subscribed) again.
            shared.lost.store(true, Ordering::Release);
            continue;
        }
        if let Err(e) = sweep(&shared, &mut subscribers).await {
            tracing::warn!(error = %e, "the expiry listener's sweep failed (repeated)");
            shared.lost.store(true, Ordering::Release);
        }
    }
}

/// Finds the ended sessions whose notification may have been missed: every master's session
/// values within their grace period, of applications this store serves, each queued for a take
/// (which reports it unless another take already did).
async fn sweep(shared: &Shared, subscribers: &mut [ConnectionManager]) -> redis::RedisResult<()> {
    shared.counts.sweeps.fetch_add(1, Ordering::Relaxed);
    let grace = i64::try_from(EXPIRY_GRACE.as_millis()).unwrap_or(i64::MAX);
    let mut found = 0u64;
    for node in subscribers.iter_mut() {
        if !is_master(node).await {
            continue;
        }
        let mut cursor = 0u64;
        loop {
            // Names as bytes: another application's binary key name must not stop the sweep.
            let (next, names): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("*:v2")
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg("string")
                .query_async(node)
                .await?;
            let served: Vec<(String, SessionKey)> = names
                .into_iter()
                .filter_map(|name| {
                    let name = String::from_utf8(name).ok()?;
                    let key = shared.served(session_of_value(&name)?)?;
                    Some((name, key))
                })
                .collect();
            if !served.is_empty() {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for (name, _) in &served {
                    pipe.cmd("PTTL").arg(name);
                }
                // A key whose slot moved to another node meanwhile answers MOVED: skipped (its
                // new node's notification was heard, or the next sweep finds it there).
                let ttls: Vec<redis::RedisResult<i64>> = pipe.query_async(node).await?;
                for ((_, key), ttl) in served.into_iter().zip(ttls) {
                    if matches!(ttl, Ok(ms) if ms > 0 && ms <= grace) {
                        found += 1;
                        shared.enqueue_waiting(Pending { key, token: None }).await;
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    shared.counts.swept.fetch_add(found, Ordering::Relaxed);
    if found > 0 {
        tracing::info!(
            found,
            "the expiry listener's sweep found ended sessions whose notification was missed"
        );
    }
    Ok(())
}

/// Whether a node is a master (`ROLE`); one that refuses `ROLE` is swept anyway.
async fn is_master(node: &mut ConnectionManager) -> bool {
    let role: redis::RedisResult<Value> = redis::cmd("ROLE").query_async(node).await;
    match role {
        Ok(Value::Array(parts)) => parts
            .first()
            .and_then(text)
            .is_none_or(|r| r.eq_ignore_ascii_case("master")),
        _ => true,
    }
}

/// The session whose value is `name` (`{<app>_<id>}:v2`): its alive marker's name is the value's
/// with `:alive` appended (`keys.rs`).
fn session_of_value(name: &str) -> Option<SessionKey> {
    session_of_marker(&format!("{name}:alive"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every change is one push or pop: a poisoned lock is still consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    fn a_session_is_found_from_its_value_name() {
        let id = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let key = SessionKey::new(AppName::new("/shop").unwrap(), id);
        let keys = crate::keys::Keys::new(&key);
        let found = session_of_value(&keys.session).unwrap();
        assert_eq!(found.app().as_str(), "/shop");
        assert_eq!(found.id().expose(), key.id().expose());
        assert!(session_of_value(&keys.alive).is_none());
        assert!(session_of_value(&keys.ended()).is_none());
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
