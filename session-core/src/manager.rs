//! The session manager (docs/contract.md §3): ASP.NET's session module done once. It opens a
//! session per request with the chosen access mode, waits for locks, and ends the request with
//! exactly one store operation from the decision table.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::config::{Config, MAX_SESSION_TIMEOUT};
use crate::data::SessionData;
use crate::error::{Error, Operation, Result};
use crate::id::{LockToken, SessionId};
use crate::layer::Layered;
use crate::model::{
    AcquireOutcome, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, Items, LockInfo,
    ReadOutcome, ReleaseOutcome, RemoveOutcome, Snapshot, TouchOutcome,
};
use crate::names::{AppName, SessionKey};
use crate::retry::{RetryLayer, RetryPolicy};
use crate::store::SessionStore;

/// The first poll of a waiter on a store without a release signal; each next one doubles, up to
/// the poll interval (docs/contract.md §3).
const FIRST_POLL: Duration = Duration::from_millis(2);

/// How a request uses its session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Lock the session for the request; wait while another request holds the lock (the default).
    #[default]
    Exclusive,
    /// Read without locking; wait while a writer holds the lock; never write (only the expiry
    /// slides). Changing the session is an error.
    ReadOnly,
    /// No lock: concurrent requests do not wait for each other, and saving merges per item
    /// (`write_concurrent`, last writer wins per item). A session locked by an `Exclusive` request
    /// is waited for, as in `ReadOnly`, so that a half-finished exclusive request is never read.
    Concurrent,
}

/// What [`Session::end`] did: the row of the decision table of docs/contract.md §3 that applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndOutcome {
    /// Nothing to store: a read-only session, an unchanged lock-free session, or a new session that
    /// was never written (or abandoned).
    Nothing,
    /// A new session was stored.
    Created,
    /// The changes were stored (and, for an exclusive session, the lock released).
    Committed,
    /// Nothing changed; the lock was released.
    Released,
    /// Nothing changed, and the lock had already been taken over or released by someone else.
    LockWasLost,
    /// The session was abandoned and deleted.
    Removed,
    /// The session was degraded, or the store failed with `throwOnError = false`: nothing was
    /// stored; [`EndReport::last_error`] holds the cause (see [`Session::end_report`]).
    NotSaved,
}

/// What [`Session::end_report`] answers: the row of the decision table that applied, and the
/// store failure this request's session absorbed with `throwOnError = false`, if any (ASP.NET's
/// per-request `LastException`).
#[derive(Debug, Clone)]
pub struct EndReport {
    outcome: EndOutcome,
    last_error: Option<Arc<Error>>,
}

impl EndReport {
    /// What [`Session::end`] did.
    pub fn outcome(&self) -> EndOutcome {
        self.outcome
    }

    /// Why nothing was saved: the store failure that degraded the session when it was opened, or
    /// the one that failed its end. `Some` exactly when the outcome is [`EndOutcome::NotSaved`];
    /// it is this request's own error, never another request's.
    pub fn last_error(&self) -> Option<&Arc<Error>> {
        self.last_error.as_ref()
    }
}

struct Inner {
    store: Arc<dyn SessionStore>,
    /// The same store, one attempt at a time, bounded by the operation timeout, never retried: for
    /// [`SessionManager::keep_alive`] (a keep-alive never holds a response for the retry budget
    /// during an outage) and for releasing orphaned locks on a schedule of its own.
    keep_alive_store: Arc<dyn SessionStore>,
    app: AppName,
    session_timeout: Duration,
    lock_ttl: Duration,
    poll_interval: Duration,
    max_waiters: usize,
    wait_timeout: Duration,
    max_size: usize,
    throw_on_error: bool,
    /// Whether [`SessionManager::keep_alive`] touches (`skipKeepAliveWhenUnused` is not set).
    keep_alive: bool,
    /// Waiting requests per session, in arrival order, and how to wake them when a request of this
    /// manager lets the session's lock go or leaves the queue. A std mutex: it is held only to
    /// queue, dequeue, check a turn or wake, never across an `.await`.
    waiters: Mutex<HashMap<SessionKey, LocalWaiters>>,
    /// How many requests wait on any session: while none does, `open` skips the queue's mutex.
    queued: AtomicUsize,
    last_error: Mutex<Option<Arc<Error>>>,
}

/// The requests of one manager waiting on one session, in arrival order (docs/contract.md §3,
/// fair waiting).
struct LocalWaiters {
    /// The waiting requests, oldest first.
    queue: VecDeque<Waiting>,
    /// The ticket of the next request to arrive.
    next_ticket: u64,
}

/// One request in a [`LocalWaiters`] queue.
struct Waiting {
    ticket: u64,
    access: Access,
    /// Wakes this request (a permit is kept if it is not waiting at that moment).
    wake: Arc<tokio::sync::Notify>,
}

impl LocalWaiters {
    /// The requests that may look at the store now: the first in line and, when it does not want
    /// the lock, the read-only and concurrent requests right behind it (they do not exclude each
    /// other). The others wait for their turn without looking.
    fn heads(&self) -> impl Iterator<Item = &Waiting> {
        let shared = self
            .queue
            .front()
            .is_some_and(|w| w.access != Access::Exclusive);
        self.queue
            .iter()
            .enumerate()
            .take_while(move |(at, w)| *at == 0 || (shared && w.access != Access::Exclusive))
            .map(|(_, w)| w)
    }

    /// Whether the request holding `ticket` may look at the store now.
    fn turn_of(&self, ticket: u64) -> bool {
        self.heads().any(|w| w.ticket == ticket) || !self.queue.iter().any(|w| w.ticket == ticket)
    }

    /// Wakes the requests whose turn it is.
    fn wake_heads(&self) {
        for w in self.heads() {
            w.wake.notify_one();
        }
    }
}

impl Inner {
    /// Wakes this manager's requests waiting on `key`: a request of this manager has just let the
    /// session's lock go (commit, release, remove). Waiters in this process then look at once,
    /// whatever the store's signal (docs/contract.md §3); other processes' waiters rely on the
    /// store's release signal or their polling.
    fn wake_local(&self, key: &SessionKey) {
        if self.queued.load(Ordering::Acquire) == 0 {
            return;
        }
        let waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = waiters.get(key) {
            w.wake_heads();
        }
    }

    /// Keeps `err`, absorbed with `throwOnError = false`, as the manager's latest error, and
    /// answers it for the request that absorbed it, whose own error it is (docs/contract.md §3).
    fn record(&self, err: Error) -> Arc<Error> {
        let err = Arc::new(err);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&err));
        err
    }
}

/// Opens and ends sessions on a store, per request (docs/contract.md §3). Cheap to clone; share
/// one per application.
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("store", &self.inner.store.backend())
            .field("app", &self.inner.app)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// A manager for `store` with the settings of `config`. The store is wrapped in a
    /// [`RetryLayer`] with the configured retry timeout and operation timeout.
    pub fn new(store: Arc<dyn SessionStore>, config: &Config) -> Self {
        let keep_alive_store: Arc<dyn SessionStore> = Arc::new(Layered::new(
            Arc::clone(&store),
            RetryLayer::new(RetryPolicy::new(Duration::ZERO), config.operation_timeout()),
        ));
        let store: Arc<dyn SessionStore> = Arc::new(Layered::new(
            store,
            RetryLayer::new(
                RetryPolicy::new(config.retry_timeout()),
                config.operation_timeout(),
            ),
        ));
        Self {
            inner: Arc::new(Inner {
                store,
                keep_alive_store,
                app: config.application_name().clone(),
                session_timeout: config.session_timeout(),
                lock_ttl: config.lock_ttl(),
                poll_interval: config.poll_interval(),
                max_waiters: config.max_waiters_per_session(),
                wait_timeout: config.lock_wait_timeout(),
                max_size: config.max_session_size(),
                throw_on_error: config.throw_on_error(),
                keep_alive: config.keep_alive_when_unused(),
                waiters: Mutex::new(HashMap::new()),
                queued: AtomicUsize::new(0),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// The (wrapped) store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.store
    }

    /// The application whose sessions this manager opens.
    pub fn application(&self) -> &AppName {
        &self.inner.app
    }

    /// The latest store failure absorbed by **any** request of this manager instead of being
    /// returned (with `throwOnError = false`: a degraded session, an [`EndOutcome::NotSaved`], a
    /// failed [`keep_alive`](Self::keep_alive)), if any; it is never cleared. For health checks
    /// and metrics only: with concurrent requests it may be another request's error. A request's
    /// own error is on its session ([`Session::last_error`], [`EndReport::last_error`]), as
    /// ASP.NET's `LastException` belongs to the request. Errors that were returned to the caller
    /// are not recorded here.
    pub fn last_error(&self) -> Option<Arc<Error>> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests of this manager are waiting for the lock of session `id` right now (0 for
    /// a malformed id). For metrics and tests.
    pub fn waiting_on(&self, id: &str) -> usize {
        let Ok(id) = SessionId::parse(id) else {
            return 0;
        };
        let key = SessionKey::new(self.inner.app.clone(), id);
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .map_or(0, |w| w.queue.len())
    }

    /// Opens the session for one request.
    ///
    /// `id` is the value the client sent (the cookie), if any. No id, a malformed id, or an id with
    /// no live session gives a **new** session with a fresh id: a client-chosen id is never adopted.
    /// `Exclusive` and `ReadOnly` wait while another request holds the lock: they wake on the store's
    /// release signal where it has one, else poll every `poll_interval`; a lock older than the lock
    /// TTL is taken over (exclusive) or force-released (read-only, as ASP.NET does).
    ///
    /// # Errors
    /// [`Error::TooManyWaiters`] when `max_waiters_per_session` requests already wait on this
    /// session; [`Error::WaitTimeout`] after the lock wait timeout; store failures, unless
    /// `throwOnError = false`, in which case the session is [degraded](Session::is_degraded) and
    /// [`Session::last_error`] holds the cause.
    pub async fn open(&self, id: Option<&str>, access: Access) -> Result<Session> {
        let parsed = id.and_then(|text| SessionId::parse(text).ok());
        match self.open_inner(parsed, access).await {
            Ok(session) => Ok(session),
            Err(err) if err.is_store_failure() && !self.inner.throw_on_error => {
                tracing::warn!(error = %err, "session store failed; handing out a degraded session");
                let err = self.inner.record(err);
                // Keep the client's id: a passing outage must not log the user out for good.
                let id = match parsed {
                    Some(id) => id,
                    None => SessionId::generate()?,
                };
                let mut session = self.session(id, State::Degraded(access), None);
                session.last_error = Some(err);
                Ok(session)
            }
            Err(err) => Err(err),
        }
    }

    /// Keeps session `id` alive for a request that carries its cookie but does not open it (a
    /// route that never uses the session): one `touch`, which slides the session's expiry as
    /// ASP.NET's session module does for such requests (`ResetItemTimeout`), so that a user busy
    /// on session-less pages is not logged out. The store writes only when the slide is due (its
    /// refresh window, docs/contract.md §1). Call it instead of [`open`](Self::open), never as
    /// well: opening already slides the expiry. The axum layer of the `sessions` crate calls it
    /// after every handler that took no session extractor; other frameworks call it likewise.
    ///
    /// Returns whether a live session's expiry was slid. `false`, with no store call, when the
    /// configuration sets `skipKeepAliveWhenUnused` or `id` is malformed; `false` when no live
    /// session has this id (nothing is created, and the client keeps its cookie); `false` for a
    /// store failure absorbed with `throwOnError = false` (logged, and kept as the manager's
    /// [`last_error`](Self::last_error)). One attempt, bounded by `operationTimeoutInMilliseconds`
    /// and never retried, whatever `retryTimeoutInMilliseconds` says: a keep-alive is not worth
    /// holding a response for the retry budget during an outage.
    ///
    /// # Errors
    /// Store failures, with `throwOnError = true` (the default).
    pub async fn keep_alive(&self, id: &str) -> Result<bool> {
        if !self.inner.keep_alive {
            return Ok(false);
        }
        let Ok(id) = SessionId::parse(id) else {
            return Ok(false);
        };
        let key = SessionKey::new(self.inner.app.clone(), id);
        match self.inner.keep_alive_store.touch(&key).await {
            Ok(outcome) => Ok(outcome == TouchOutcome::Touched),
            Err(err) if err.is_store_failure() && !self.inner.throw_on_error => {
                tracing::warn!(error = %err, "session store failed; the session was not kept alive");
                self.inner.record(err);
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Deletes the session `id` regardless of locks (log out everywhere). Returns whether it existed.
    ///
    /// # Errors
    /// [`Error::InvalidId`] for a malformed id; store failures.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        let key = SessionKey::new(self.inner.app.clone(), SessionId::parse(id)?);
        let outcome = self.inner.store.delete(&key).await?;
        self.inner.wake_local(&key);
        Ok(outcome == RemoveOutcome::Removed)
    }

    /// A session `id` in `state`, with the data of `snapshot` (else empty, with the configured
    /// timeout).
    fn session(&self, id: SessionId, state: State, snapshot: Option<Snapshot>) -> Session {
        let (items, timeout, initial_access) = match snapshot {
            Some(s) => (s.items, s.timeout, s.initialize),
            None => (Arc::new(Items::new()), self.inner.session_timeout, false),
        };
        Session {
            inner: Arc::clone(&self.inner),
            key: SessionKey::new(self.inner.app.clone(), id),
            state,
            data: SessionData::new(items, self.inner.max_size),
            timeout,
            new_timeout: None,
            initial_access,
            abandoned: false,
            last_error: None,
        }
    }

    async fn open_inner(&self, id: Option<SessionId>, access: Access) -> Result<Session> {
        let new = || -> Result<Session> {
            Ok(self.session(SessionId::generate()?, State::New(access), None))
        };
        let Some(id) = id else {
            return new();
        };
        let key = SessionKey::new(self.inner.app.clone(), id);
        // One token for this request's acquisition: an attempt whose reply was lost and a later
        // attempt are the same acquisition, so the later one finds its own lock (SessionStore).
        // The session keeps this token, the one the manager generated, not the store's echo.
        let token = LockToken::generate()?;
        let Some(snapshot) = self.wait_for(&key, access, token).await? else {
            return new();
        };
        let state = match access {
            Access::Exclusive => State::Locked(token),
            Access::ReadOnly => State::ReadOnly,
            Access::Concurrent => State::Unlocked,
        };
        Ok(self.session(id, state, Some(snapshot)))
    }

    /// One attempt to open: `Ok(Ok(snapshot or missing))` or `Ok(Err(lock info))` when locked.
    async fn attempt(
        &self, key: &SessionKey, access: Access, token: LockToken,
    ) -> Result<std::result::Result<Option<Snapshot>, LockInfo>> {
        let store = &self.inner.store;
        Ok(match access {
            Access::Exclusive => {
                // Dropped before the store answers (the request was cancelled, or its wait cut at
                // the deadline), the store may take the lock for `token`: the guard releases it
                // in the background.
                let acquired = AcquireGuard::new(&self.inner, key, token).answer().await;
                match acquired.inspect_err(|err| {
                    if err.is_store_failure() {
                        // The store may have applied it: that lock must not outlive the outage.
                        release_orphan(&self.inner, key.clone(), token, Operation::Acquire);
                    }
                })? {
                    AcquireOutcome::Acquired(s) => Ok(Some(s)),
                    AcquireOutcome::Locked(info) => Err(info),
                    _ => Ok(None),
                }
            }
            Access::ReadOnly | Access::Concurrent => match store.read(key).await? {
                ReadOutcome::Found(s) => Ok(Some(s)),
                ReadOutcome::Locked(info) => Err(info),
                _ => Ok(None),
            },
        })
    }

    async fn wait_for(
        &self, key: &SessionKey, access: Access, token: LockToken,
    ) -> Result<Option<Snapshot>> {
        let inner = &self.inner;
        let start = Instant::now();
        let deadline = start + inner.wait_timeout;
        let signal = inner.store.capabilities().release_signal;
        // A request that arrives while others of this manager wait on the session queues behind
        // them before it looks: it must not take the session from under them (fair waiting,
        // docs/contract.md §3).
        let mut waiter = WaiterGuard::join_if_queued(inner, key, access)?;
        let mut watch = None;
        let mut backoff = FIRST_POLL;
        // Whether this request was last woken by this manager (a request letting the lock go, or
        // its turn coming): then it looks before subscribing to the store's signal, which it
        // needs only if the lock turns out to be held (by another process) after all.
        let mut woke_here = false;
        // Whether this request has waited (napped) yet: from then on its store calls are cut at
        // the deadline (`by_deadline`); its first looks are the open itself and run in full.
        let mut waited = false;
        loop {
            // Listen before looking, so that this manager's own requests letting the lock go (or
            // leaving the queue) between the look and the wait wake us.
            let local = waiter.as_ref().map(|w| Arc::clone(&w.wake));
            let mut released_here = local.as_deref().map(|wake| Box::pin(wake.notified()));
            if let Some(n) = released_here.as_mut() {
                n.as_mut().enable();
            }
            if waiter.as_ref().is_some_and(|w| !w.has_turn()) {
                // Requests that came first are still waiting: this one does not look until they
                // have been served (or have given up). The poll interval is only a safety net.
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::WaitTimeout {
                        waited: now - start,
                    });
                }
                let nap = inner.poll_interval.min(deadline - now);
                if let Some(n) = released_here {
                    woke_here = tokio::time::timeout(nap, n).await.is_ok();
                }
                waited = true;
                continue;
            }
            // Likewise, subscribe to the store's signal before looking.
            if signal && waiter.is_some() && watch.is_none() && !woke_here {
                let subscribed = inner.store.watch_release(key);
                watch = Some(by_deadline(waited, start, deadline, subscribed).await?);
            }
            let looked = self.attempt(key, access, token);
            let info = match by_deadline(waited, start, deadline, looked).await? {
                Ok(found) => {
                    if let Some(w) = waiter.as_mut() {
                        // Served holding the lock: its release wakes the next in line, who
                        // would only find it locked if woken now.
                        w.holds_lock = access == Access::Exclusive && found.is_some();
                    }
                    return Ok(found);
                }
                Err(info) => info,
            };
            if waiter.is_none() {
                // Queued (and subscribed) after the first look: look once more before waiting.
                waiter = Some(WaiterGuard::register(inner, key, access)?);
                continue;
            }
            if signal && watch.is_none() {
                // Woken here, yet still locked: subscribe, then look once more before waiting.
                woke_here = false;
                continue;
            }
            if access != Access::Exclusive && info.age >= inner.lock_ttl {
                // A stale writer: force its release with its token, as ASP.NET's module does.
                let forced = inner.store.release(key, info.token);
                by_deadline(waited, start, deadline, forced).await?;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::WaitTimeout {
                    waited: now - start,
                });
            }
            let until_stale = inner.lock_ttl.saturating_sub(info.age);
            // Without a signal, poll with a backoff from a few milliseconds up to the poll
            // interval, so a quick release is never followed by a whole interval of waiting
            // (docs/contract.md §3). With one, the interval is only a safety net.
            let step = if watch.is_some() {
                inner.poll_interval
            } else {
                let step = backoff.min(inner.poll_interval);
                backoff = backoff.saturating_mul(2);
                step
            };
            let nap = step
                .min(until_stale)
                .min(deadline - now)
                .max(Duration::from_millis(1));
            let here = async {
                match released_here {
                    Some(n) => n.await,
                    None => std::future::pending().await,
                }
            };
            let store_signal = async {
                match watch.take() {
                    Some(w) => w.await,
                    None => std::future::pending().await,
                }
            };
            // The release signals wake us at once; the poll interval is only a safety net.
            woke_here = false;
            tokio::select! {
                () = here => {
                    backoff = FIRST_POLL;
                    woke_here = true;
                }
                () = store_signal => {}
                () = tokio::time::sleep(nap) => {}
            }
            waited = true;
        }
    }
}

/// `call`, cut at `deadline` once the request has `waited` (docs/contract.md §3): a store call
/// still in flight then (a slow server, or the retries of one call) ends the wait with
/// `WaitTimeout` instead of running past it; an acquire it may have made is released in the
/// background by its guard ([`AcquireGuard`]). A call due at or after the deadline is not made
/// at all (it could only be cut at once, after its request had gone out). Before the first wait
/// the call runs in full: it is the open's own look, bounded by the operation timeout, not a
/// wait.
async fn by_deadline<T>(
    waited: bool, start: Instant, deadline: Instant, call: impl Future<Output = Result<T>>,
) -> Result<T> {
    if !waited {
        return call.await;
    }
    let timed_out = || Error::WaitTimeout {
        waited: start.elapsed(),
    };
    if Instant::now() >= deadline {
        return Err(timed_out());
    }
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// One waiting request in its session's queue (docs/contract.md §3, fair waiting); it leaves the
/// queue, and lets the next in line look, when the guard drops: served, failed or gone.
struct WaiterGuard {
    inner: Arc<Inner>,
    key: SessionKey,
    ticket: u64,
    wake: Arc<tokio::sync::Notify>,
    /// Set when the request leaves holding the session's lock: the release of that lock wakes the
    /// next in line (`Inner::wake_local`), so leaving does not.
    holds_lock: bool,
}

impl WaiterGuard {
    /// Queues a request on `key`, last in line, or fails with [`Error::TooManyWaiters`].
    fn register(inner: &Arc<Inner>, key: &SessionKey, access: Access) -> Result<Self> {
        let mut waiters = inner.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        Self::join(inner, &mut waiters, key, access)
    }

    /// Queues a request on `key` only if requests of this manager already wait on it. While no
    /// request waits on any session, this costs one atomic load.
    fn join_if_queued(
        inner: &Arc<Inner>, key: &SessionKey, access: Access,
    ) -> Result<Option<Self>> {
        if inner.queued.load(Ordering::Acquire) == 0 {
            return Ok(None);
        }
        let mut waiters = inner.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if !waiters.contains_key(key) {
            return Ok(None);
        }
        Self::join(inner, &mut waiters, key, access).map(Some)
    }

    fn join(
        inner: &Arc<Inner>, waiters: &mut HashMap<SessionKey, LocalWaiters>, key: &SessionKey,
        access: Access,
    ) -> Result<Self> {
        let entry = waiters.entry(key.clone()).or_insert_with(|| LocalWaiters {
            queue: VecDeque::new(),
            next_ticket: 0,
        });
        if entry.queue.len() >= inner.max_waiters {
            return Err(Error::TooManyWaiters {
                limit: inner.max_waiters,
            });
        }
        let ticket = entry.next_ticket;
        entry.next_ticket += 1;
        let wake = Arc::new(tokio::sync::Notify::new());
        entry.queue.push_back(Waiting {
            ticket,
            access,
            wake: Arc::clone(&wake),
        });
        inner.queued.fetch_add(1, Ordering::AcqRel);
        Ok(Self {
            inner: Arc::clone(inner),
            key: key.clone(),
            ticket,
            wake,
            holds_lock: false,
        })
    }

    /// Whether this request may look at the store now ([`LocalWaiters::heads`]).
    fn has_turn(&self) -> bool {
        let waiters = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        waiters
            .get(&self.key)
            .is_none_or(|w| w.turn_of(self.ticket))
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let mut waiters = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(w) = waiters.get_mut(&self.key) else {
            return;
        };
        let was_head = w.heads().any(|h| h.ticket == self.ticket);
        if let Some(at) = w.queue.iter().position(|h| h.ticket == self.ticket) {
            w.queue.remove(at);
            self.inner.queued.fetch_sub(1, Ordering::AcqRel);
        }
        if w.queue.is_empty() {
            waiters.remove(&self.key);
        } else if was_head && !self.holds_lock {
            // The next in line may look now.
            w.wake_heads();
        }
    }
}

/// Where a session stands with the store. One value instead of a set of flags, so that no illegal
/// combination (a lock on a session that was never stored, a degraded session holding a lock, a
/// read-only session with a lock, an ended session still releasing...) can be written down
/// (docs/style.md H7). The access mode is part of it: a stored session's state implies it; a new or
/// degraded one carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not in the store when the request began (no id, a malformed one, or one without a live
    /// session). Nothing is stored unless it is written, and then by `create`.
    New(Access),
    /// In the store and locked by this request (`Access::Exclusive`), with the token the manager
    /// generated for this acquisition: the manager trusts its own token, never one echoed back.
    Locked(LockToken),
    /// In the store, opened without a lock (`Access::Concurrent`).
    Unlocked,
    /// In the store, opened read-only (`Access::ReadOnly`): never written.
    ReadOnly,
    /// The store failed with `throwOnError = false`: the session is empty and is never saved.
    Degraded(Access),
    /// A `Locked` session whose end has the store's answer (committed, released, removed, or the
    /// lock found lost): the lock is no longer this request's to release.
    Released,
}

impl State {
    fn access(self) -> Access {
        match self {
            Self::New(access) | Self::Degraded(access) => access,
            Self::Locked(_) | Self::Released => Access::Exclusive,
            Self::Unlocked => Access::Concurrent,
            Self::ReadOnly => Access::ReadOnly,
        }
    }

    /// Whether the session was not in the store when the request began.
    fn is_new(self) -> bool {
        match self {
            Self::New(_) | Self::Degraded(_) => true,
            Self::Locked(_) | Self::Unlocked | Self::ReadOnly | Self::Released => false,
        }
    }
}

/// How [`Session::renew_id`]'s fallback (copy, then remove the original) settles.
enum Settle {
    /// The original is gone: the session lives on under the copy.
    Adopt,
    /// The original may still exist (the store could not tell us): live on under the copy, the
    /// one known to exist, and report the error.
    AdoptAndReport(Error),
    /// The original stays: delete the copy and report the error.
    Undo(Error),
}

/// One request's session. End it with [`Session::end`]; a session dropped without being ended (the
/// handler failed or panicked) releases its lock and writes nothing.
pub struct Session {
    inner: Arc<Inner>,
    key: SessionKey,
    state: State,
    data: SessionData,
    /// The timeout the session has in the store (or, for a new session, will be created with).
    timeout: Duration,
    /// A different timeout set during this request, to be stored at its end.
    new_timeout: Option<Duration>,
    /// Reported by the store: the first access of a session created uninitialized.
    initial_access: bool,
    /// The application asked for the session to be deleted at the end of the request.
    abandoned: bool,
    /// The store failure that degraded the session (`Some` exactly when the state is
    /// `Degraded`): this request's own, never another's.
    last_error: Option<Arc<Error>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("key", &self.key)
            .field("state", &self.state)
            .field("items", &self.data.len())
            .field("abandoned", &self.abandoned)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The session id; `id().expose()` is the cookie value.
    pub fn id(&self) -> &SessionId {
        self.key.id()
    }

    /// The session's store key.
    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    /// How the session was opened.
    pub fn access(&self) -> Access {
        self.state.access()
    }

    /// Whether the session is new (not in the store when the request began).
    pub fn is_new(&self) -> bool {
        self.state.is_new()
    }

    /// Whether the store failed with `throwOnError = false`: the session is empty and will not be
    /// saved; [`Session::last_error`] holds the cause.
    pub fn is_degraded(&self) -> bool {
        matches!(self.state, State::Degraded(_))
    }

    /// The store failure this request absorbed with `throwOnError = false` when it opened the
    /// session: `Some` exactly when the session [is degraded](Self::is_degraded). It is this
    /// request's own (ASP.NET's per-request `LastException`): concurrent requests never see each
    /// other's. A failure while ending is reported by [`Session::end_report`].
    pub fn last_error(&self) -> Option<&Arc<Error>> {
        self.last_error.as_ref()
    }

    /// Whether this is the first access of a session created uninitialized (ASP.NET
    /// `InitializeItem`); reported to exactly one request.
    pub fn is_initial_access(&self) -> bool {
        self.initial_access
    }

    /// The value of item `name` decoded as `T`, or `None`.
    ///
    /// # Errors
    /// [`Error::Decode`] if the stored value is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.data.get(name)
    }

    /// The items' names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.data.names()
    }

    /// The items (for inspection).
    pub fn data(&self) -> &SessionData {
        &self.data
    }

    fn writable(&self) -> Result<()> {
        if self.access() == Access::ReadOnly {
            return Err(Error::NotWritable("read-only"));
        }
        Ok(())
    }

    /// Sets item `name`, encoding it now.
    ///
    /// # Errors
    /// [`Error::NotWritable`] for a read-only session; [`Error::InvalidName`], [`Error::Encode`],
    /// [`Error::SessionTooLarge`]. On error nothing changes.
    pub fn insert<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        self.writable()?;
        self.data.insert(name, value)
    }

    /// Removes item `name`; returns whether it was there.
    ///
    /// # Errors
    /// [`Error::NotWritable`] for a read-only session.
    pub fn remove(&mut self, name: &str) -> Result<bool> {
        self.writable()?;
        Ok(self.data.remove(name))
    }

    /// Removes every item.
    ///
    /// # Errors
    /// [`Error::NotWritable`] for a read-only session.
    pub fn clear(&mut self) -> Result<()> {
        self.writable()?;
        self.data.clear();
        Ok(())
    }

    /// The session's idle timeout.
    pub fn timeout(&self) -> Duration {
        self.new_timeout.unwrap_or(self.timeout)
    }

    /// Changes this session's idle timeout (stored with the session at the end of the request).
    ///
    /// # Errors
    /// [`Error::NotWritable`]; [`Error::InvalidConfig`] for zero or more than a year.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.writable()?;
        if timeout < Duration::from_millis(1) || timeout > MAX_SESSION_TIMEOUT {
            return Err(Error::config(
                "session timeout",
                "must be between 1 ms and one year",
            ));
        }
        if timeout != self.timeout() {
            self.new_timeout = Some(timeout);
        }
        Ok(())
    }

    /// Marks the session for deletion at the end of the request (ASP.NET `Abandon`).
    ///
    /// # Errors
    /// [`Error::NotWritable`] for a read-only session.
    pub fn abandon(&mut self) -> Result<()> {
        self.writable()?;
        self.abandoned = true;
        Ok(())
    }

    /// Whether [`Session::abandon`] was called.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned
    }

    /// Gives the session a fresh id, keeping its data and lock (session-fixation defence after
    /// login). Uses the store's atomic `change_id` where declared; otherwise creates the session
    /// under the new id, locks it, and removes the old one. Returns the new id. The session is
    /// never lost on the way, whatever the store answers or fails to answer.
    ///
    /// # Errors
    /// [`Error::NotWritable`] for a read-only or lock-free stored session; [`Error::LockLost`] if
    /// this request no longer holds the lock, or the session was deleted meanwhile;
    /// [`Error::IdCollision`]; store failures. A `change_id` whose reply was lost is settled by
    /// looking at the new id: under this request's lock there, the move happened and `renew_id`
    /// succeeds. On error the session keeps its old id, with two exceptions: if that look fails
    /// too, the session may have moved to the new id, whose lock is then released in the
    /// background (docs/contract.md §3); and on a store without `change_id`, if the store fails both
    /// to confirm the removal of the old id and to say whether the old id still exists, the session
    /// continues under the new id (the one copy known to exist, locked by this request) and the
    /// error is still returned: the old id may then survive until it expires.
    pub async fn renew_id(&mut self) -> Result<SessionId> {
        self.writable()?;
        let new_id = SessionId::generate()?;
        match self.state {
            // Not in the store: only the id it will be stored under changes.
            State::New(_) | State::Degraded(_) => {
                self.key = self.key.with_id(new_id);
                Ok(new_id)
            }
            State::Locked(token) => self.renew_stored(new_id, token).await.map(|()| new_id),
            State::Unlocked => Err(Error::NotWritable("opened without a lock")),
            State::ReadOnly => Err(Error::NotWritable("read-only")),
            // Not reachable: `end` consumes the session.
            State::Released => Err(Error::NotWritable("already ended")),
        }
    }

    async fn renew_stored(&mut self, new_id: SessionId, token: LockToken) -> Result<()> {
        let store = Arc::clone(&self.inner.store);
        let new_key = self.key.with_id(new_id);
        if !store.capabilities().change_id {
            return self.renew_by_copy(&*store, new_key, token).await;
        }
        let changed = match store.change_id(&self.key, new_id, token).await {
            Err(err) if err.is_store_failure() => {
                // The move may have been applied and its reply lost: the new id tells. Under this
                // request's lock there, it moved; missing there, it did not.
                match store.read(&new_key).await {
                    Ok(ReadOutcome::Locked(info)) if info.token == token => {
                        ChangeIdOutcome::Changed
                    }
                    Ok(_) => return Err(err),
                    Err(_) => {
                        // Unknown: if it moved, the lock under the new id must not outlive this.
                        release_orphan(&self.inner, new_key, token, Operation::ChangeId);
                        return Err(err);
                    }
                }
            }
            other => other?,
        };
        match changed {
            ChangeIdOutcome::Changed => {
                // The old id is gone: this manager's requests waiting on it look now.
                let old = std::mem::replace(&mut self.key, new_key);
                self.inner.wake_local(&old);
                Ok(())
            }
            ChangeIdOutcome::AlreadyExists => Err(Error::IdCollision),
            ChangeIdOutcome::LockLost => Err(Error::LockLost {
                operation: Operation::ChangeId,
            }),
        }
    }

    /// `renew_id` on a store without an atomic `change_id`: create a copy under the new id, lock
    /// it with a fresh token, then remove the original with this request's token.
    ///
    /// The rule, in this order: the session is never lost (some id always holds it); it is kept
    /// under one id only, whenever the store's answers allow telling which; a session deleted by
    /// someone else (log out everywhere) is not brought back by renewing it. The new id is fresh,
    /// random and sent to no one, so the copy is this request's alone: deleting it never touches
    /// another session, and nobody else creates, locks or removes it. Every answer, and what
    /// follows:
    ///
    /// 1. `create` the copy:
    ///    - `Created`: go on.
    ///    - `AlreadyExists`: the fresh id is another session's. `IdCollision`, nothing to undo.
    ///    - error: the copy may or may not exist. Delete it; the error.
    /// 2. `acquire` the copy with a fresh token:
    ///    - `Acquired`: go on.
    ///    - `Missing` or `Locked`: the copy already expired, or (impossibly) another request
    ///      locked it. Delete it; `LockLost`.
    ///    - error: the copy exists, maybe locked. Delete it; the error.
    /// 3. `remove` the original with this request's token:
    ///    - `Removed`: moved. Keep the copy.
    ///    - `LockLost`: the original exists, but this request's lock was taken over (stale) or
    ///      force-released. Delete the copy; `LockLost`.
    ///    - `Missing`: someone else deleted the original (log out everywhere), or it expired,
    ///      before the remove. Delete the copy, which must not bring it back; `LockLost`.
    ///    - error: ambiguous, the remove may have been applied and its reply lost (retries off, the
    ///      default, or exhausted). Undoing now could delete the last copy. Read the original:
    /// 4. `read` the original (after an ambiguous remove only):
    ///    - `Found` or `Locked`: the remove was not applied; the original is intact. Delete the
    ///      copy; the remove's error.
    ///    - `Missing`: the remove was applied (or a delete or expiry happened meanwhile: that
    ///      cannot be told apart, and losing the session is the worse mistake). Keep the copy.
    ///    - error: either may exist; only the copy surely does. Keep the copy, and return the
    ///      remove's error: the original may survive until it expires.
    ///
    /// Deleting the copy is best effort: if that delete fails, the copy lingers under an id nobody
    /// knows until it expires; the session itself is intact under the original id.
    async fn renew_by_copy(
        &mut self, store: &dyn SessionStore, new_key: SessionKey, token: LockToken,
    ) -> Result<()> {
        let timeout = self.timeout();
        let new_token = LockToken::generate()?;
        let items = self.data.to_items();
        let settle = match store.create(&new_key, &items, timeout, true).await {
            Ok(CreateOutcome::Created) => self.settle_copy(store, &new_key, new_token, token).await,
            Ok(CreateOutcome::AlreadyExists) => return Err(Error::IdCollision),
            Err(err) => Settle::Undo(err),
        };
        match settle {
            Settle::Adopt => {
                self.adopt(new_key, new_token, timeout);
                Ok(())
            }
            Settle::AdoptAndReport(err) => {
                tracing::warn!(
                    error = %err,
                    "renew_id could not tell whether the old id was removed; \
                     continuing under the new id"
                );
                // If the old id survived, it is still locked by this request: remove it once the
                // store answers, as the lost remove meant to, so it neither stays locked nor
                // lingers as a second copy.
                remove_orphan(&self.inner, self.key.clone(), token);
                self.adopt(new_key, new_token, timeout);
                Err(err)
            }
            Settle::Undo(err) => {
                if let Err(undo) = store.delete(&new_key).await {
                    tracing::warn!(error = %undo, "could not undo the copy made by renew_id");
                }
                Err(err)
            }
        }
    }

    /// The rest of `renew_by_copy` once the copy exists: lock it, remove the original, and decide
    /// (the table on `renew_by_copy`).
    async fn settle_copy(
        &self, store: &dyn SessionStore, new_key: &SessionKey, new_token: LockToken,
        token: LockToken,
    ) -> Settle {
        let lock_lost = || Error::LockLost {
            operation: Operation::ChangeId,
        };
        match store.acquire(new_key, new_token, self.inner.lock_ttl).await {
            Ok(AcquireOutcome::Acquired(_)) => {}
            Ok(AcquireOutcome::Missing | AcquireOutcome::Locked(_)) => {
                return Settle::Undo(lock_lost());
            }
            Err(err) => return Settle::Undo(err),
        }
        let err = match store.remove(&self.key, token).await {
            Ok(RemoveOutcome::Removed) => return Settle::Adopt,
            Ok(RemoveOutcome::LockLost | RemoveOutcome::Missing) => {
                return Settle::Undo(lock_lost());
            }
            Err(err) => err,
        };
        // Ambiguous: whether the remove was applied is told by whether the original still exists.
        match store.read(&self.key).await {
            Ok(ReadOutcome::Found(_) | ReadOutcome::Locked(_)) => Settle::Undo(err),
            Ok(ReadOutcome::Missing) => {
                tracing::info!(
                    error = %err,
                    "renew_id: the reply of the old id's removal was lost, and the old id is gone"
                );
                Settle::Adopt
            }
            Err(_) => Settle::AdoptAndReport(err),
        }
    }

    /// Continues under the copy made by `renew_by_copy`: its id, its lock, and its contents (the
    /// items and `timeout` it was created with) as the stored state.
    fn adopt(&mut self, new_key: SessionKey, new_token: LockToken, timeout: Duration) {
        let old = std::mem::replace(&mut self.key, new_key);
        // This request no longer holds the old id: this manager's requests waiting on it look now.
        self.inner.wake_local(&old);
        self.state = State::Locked(new_token);
        self.data.rebase();
        self.timeout = timeout;
        self.new_timeout = None;
    }

    /// Ends the request with exactly one store operation (docs/contract.md §3):
    ///
    /// | situation | operation |
    /// |---|---|
    /// | degraded | nothing |
    /// | read-only | nothing |
    /// | new, and never written or abandoned | nothing |
    /// | new and written | `create` |
    /// | abandoned | `remove` (exclusive) or `delete` (lock-free) |
    /// | items or timeout changed | `commit` (exclusive) or `write_concurrent` (lock-free) |
    /// | otherwise, exclusive | `release` |
    /// | otherwise, lock-free | nothing (the read already slid the expiry) |
    ///
    /// # Errors
    /// [`Error::LockLost`] if the commit or remove was rejected because this request's lock was lost:
    /// the write did not happen. [`Error::SessionGone`] if a lock-free write found the session gone.
    /// [`Error::IdCollision`]. Store failures, unless `throwOnError = false`, in which case the
    /// outcome is [`EndOutcome::NotSaved`] (and [`Session::end_report`] tells the cause).
    pub async fn end(self) -> Result<EndOutcome> {
        self.end_report().await.map(|report| report.outcome)
    }

    /// [`Session::end`], also answering this request's absorbed store failure: with
    /// `throwOnError = false`, an [`EndOutcome::NotSaved`] comes with its cause (the failure that
    /// degraded the session at open, or the one that failed the end), in
    /// [`EndReport::last_error`].
    ///
    /// # Errors
    /// As [`Session::end`].
    pub async fn end_report(mut self) -> Result<EndReport> {
        // The lock is given up (`Released`) only once the store has answered: if the store fails,
        // or this future is dropped half way, `Drop` still releases it (a release after a commit
        // that did happen is a harmless `LockLost`).
        match self.end_inner().await {
            Err(err) if err.is_store_failure() => {
                if self.inner.throw_on_error {
                    Err(err)
                } else {
                    tracing::warn!(error = %err, "session store failed; the session was not saved");
                    let err = self.inner.record(err);
                    Ok(EndReport {
                        outcome: EndOutcome::NotSaved,
                        last_error: Some(err),
                    })
                }
            }
            other => {
                if let State::Locked(_) = self.state {
                    self.state = State::Released;
                    self.inner.wake_local(&self.key);
                }
                other.map(|outcome| EndReport {
                    outcome,
                    // A degraded session's: its end is `NotSaved` because of it.
                    last_error: self.last_error.take(),
                })
            }
        }
    }

    /// The delta to write at the end of the request, letting go of the items the session was
    /// loaded with: a store that shares them with its own copy (the memory store) can then change
    /// that copy in place instead of copying it. Only for `end`, which consumes the session.
    fn take_delta(&mut self) -> Delta {
        let delta = self.data.delta();
        self.data = SessionData::new(Arc::default(), self.inner.max_size);
        delta
    }

    /// The decision table of [`Session::end`], as one match: every state, abandoned or not,
    /// changed or not, has its row; a new state will not compile until it has its own.
    async fn end_inner(&mut self) -> Result<EndOutcome> {
        let store = Arc::clone(&self.inner.store);
        let changed = self.data.is_changed() || self.new_timeout.is_some();
        let timeout = self.timeout();
        match (self.state, self.abandoned, changed) {
            (State::Degraded(_), _, _) => Ok(EndOutcome::NotSaved),
            (State::ReadOnly, _, _) => Ok(EndOutcome::Nothing),
            (State::New(_), true, _) | (State::New(_), false, false) => Ok(EndOutcome::Nothing),
            (State::New(_), false, true) => {
                let items = self.data.to_items();
                match store.create(&self.key, &items, timeout, true).await? {
                    CreateOutcome::Created => Ok(EndOutcome::Created),
                    CreateOutcome::AlreadyExists => Err(Error::IdCollision),
                }
            }
            (State::Locked(token), true, _) => match store.remove(&self.key, token).await? {
                RemoveOutcome::Removed | RemoveOutcome::Missing => Ok(EndOutcome::Removed),
                RemoveOutcome::LockLost => Err(Error::LockLost {
                    operation: Operation::Remove,
                }),
            },
            (State::Locked(token), false, true) => {
                let delta = self.take_delta();
                match store.commit(&self.key, token, &delta, timeout).await? {
                    CommitOutcome::Committed => Ok(EndOutcome::Committed),
                    CommitOutcome::LockLost | CommitOutcome::Missing => Err(Error::LockLost {
                        operation: Operation::Commit,
                    }),
                }
            }
            (State::Locked(token), false, false) => {
                Ok(match store.release(&self.key, token).await? {
                    ReleaseOutcome::Released => EndOutcome::Released,
                    ReleaseOutcome::LockLost => EndOutcome::LockWasLost,
                })
            }
            (State::Unlocked, true, _) => {
                store.delete(&self.key).await?;
                self.inner.wake_local(&self.key);
                Ok(EndOutcome::Removed)
            }
            (State::Unlocked, false, true) => {
                let delta = self.take_delta();
                match store.write_concurrent(&self.key, &delta, timeout).await? {
                    CommitOutcome::Committed => Ok(EndOutcome::Committed),
                    CommitOutcome::Missing | CommitOutcome::LockLost => Err(Error::SessionGone {
                        operation: Operation::WriteConcurrent,
                    }),
                }
            }
            (State::Unlocked, false, false) => Ok(EndOutcome::Nothing),
            // Not reachable: `end` consumes the session, and only `end` releases.
            (State::Released, _, _) => Ok(EndOutcome::Nothing),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Only a session still holding its lock has anything to do: not ended (the handler failed
        // or panicked), or its end failed in the store. Release the lock, write nothing.
        let State::Locked(token) = self.state else {
            return;
        };
        release_orphan(&self.inner, self.key.clone(), token, Operation::Release);
    }
}

/// An acquire in flight, as a future of its own: dropped before the store answered (the
/// request's future was dropped, or its wait cut at the deadline), it releases the lock the store
/// may have taken for `token` at once ([`release_orphan`]), and runs the acquire on to its answer
/// in the background ([`finish_orphan_acquire`]), so that a request still on its way (queued
/// behind a lock on the server, slowed on the network) is released once it has taken the lock,
/// within the lock TTL (docs/contract.md §3).
struct AcquireGuard<'a> {
    inner: &'a Arc<Inner>,
    key: &'a SessionKey,
    token: LockToken,
    /// The acquire; owns what it uses, so that it can outlive the request.
    call: InFlightAcquire,
    answered: bool,
}

/// An acquire that borrows nothing ([`AcquireGuard`]).
type InFlightAcquire = Pin<Box<dyn Future<Output = Result<AcquireOutcome>> + Send>>;

impl<'a> AcquireGuard<'a> {
    fn new(inner: &'a Arc<Inner>, key: &'a SessionKey, token: LockToken) -> Self {
        let (store, owned_key, lock_ttl) = (Arc::clone(&inner.store), key.clone(), inner.lock_ttl);
        Self {
            inner,
            key,
            token,
            call: Box::pin(async move { store.acquire(&owned_key, token, lock_ttl).await }),
            answered: false,
        }
    }

    /// The store's answer.
    async fn answer(mut self) -> Result<AcquireOutcome> {
        let answer = self.call.as_mut().await;
        self.answered = true;
        answer
    }
}

impl Drop for AcquireGuard<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        release_orphan(self.inner, self.key.clone(), self.token, Operation::Acquire);
        // A boxed `Pending` is zero-sized: the swap allocates nothing.
        let call = std::mem::replace(&mut self.call, Box::pin(std::future::pending()));
        finish_orphan_acquire(self.inner, self.key.clone(), self.token, call);
    }
}

/// Runs an acquire whose request is gone on to its answer in the background, for at most the lock
/// TTL (a lock is stale after it anyway), and releases the lock if the store took it then; if it
/// ends in a store failure, the lock it may have taken is released as after any ambiguous acquire
/// ([`release_orphan`]).
fn finish_orphan_acquire(
    inner: &Arc<Inner>, key: SessionKey, token: LockToken, call: InFlightAcquire,
) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let inner = Arc::clone(inner);
    handle.spawn(async move {
        match tokio::time::timeout(inner.lock_ttl, call).await {
            Ok(Ok(AcquireOutcome::Acquired(_))) => {
                tracing::info!(
                    session = %key.id(),
                    "an acquire took a lock after its request was gone; releasing it"
                );
                release_orphan(&inner, key, token, Operation::Release);
            }
            Ok(Err(err)) if err.is_store_failure() => {
                release_orphan(&inner, key, token, Operation::Acquire);
            }
            _ => {}
        }
    });
}

/// Makes sure the lock `token` may hold on `key` ends, in the background: after an operation on it
/// ended ambiguously (an acquire whose reply was lost, a failed end) or a session was dropped
/// holding it. The caller chose the token, so releasing it is always safe: it frees the lock only
/// if that token holds it. One attempt at a time on the retry policy's schedule (after 20 ms, then
/// every second), without the retry layer, until the store answers or the lock TTL has passed (the
/// lock is stale by then and taken over anyway); a lock this frees is said in a log line.
fn release_orphan(inner: &Arc<Inner>, key: SessionKey, token: LockToken, after: Operation) {
    settle_orphan(inner, key, token, after, Orphan::Release);
}

/// Like [`release_orphan`], but removes the session if `token` still holds its lock: the old id
/// of a `renew_id` by copy whose removal could not be confirmed, which must neither stay locked
/// nor linger as a second copy of the session.
fn remove_orphan(inner: &Arc<Inner>, key: SessionKey, token: LockToken) {
    settle_orphan(inner, key, token, Operation::Remove, Orphan::Remove);
}

/// What [`settle_orphan`] does with a lock that may be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orphan {
    Release,
    Remove,
}

fn settle_orphan(
    inner: &Arc<Inner>, key: SessionKey, token: LockToken, after: Operation, what: Orphan,
) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            "outside a tokio runtime: a lock that may be held is left to be taken over once stale"
        );
        return;
    };
    let inner = Arc::clone(inner);
    handle.spawn(async move {
        let give_up = tokio::time::Instant::now() + inner.lock_ttl;
        // A dropped session's release is a first attempt; after an ambiguous operation it is a
        // retry, on the retry policy's schedule.
        let mut wait = if after == Operation::Release {
            Duration::ZERO
        } else {
            RetryPolicy::FIRST_DELAY
        };
        // An acquire that ended without an answer (lost, or its request cancelled) may still be
        // on its way to the store, or waiting there, when the first release finds nothing held
        // by the token: a second release one retry interval later catches the lock it then
        // takes.
        let mut second_look = after == Operation::Acquire;
        loop {
            tokio::time::sleep(wait).await;
            let store = &inner.keep_alive_store;
            let freed = match what {
                Orphan::Release => store
                    .release(&key, token)
                    .await
                    .map(|outcome| outcome == ReleaseOutcome::Released),
                Orphan::Remove => store
                    .remove(&key, token)
                    .await
                    .map(|outcome| outcome == RemoveOutcome::Removed),
            };
            match freed {
                Ok(false) if second_look => {
                    second_look = false;
                    wait = RetryPolicy::INTERVAL;
                }
                Ok(freed) => {
                    if freed && after != Operation::Release {
                        tracing::info!(
                            session = %key.id(),
                            after = ?after,
                            action = ?what,
                            "ended a lock left by an operation that ended without an answer"
                        );
                    }
                    // Freed here or already gone: the next in line looks either way (a
                    // waiter that left holding this lock woke nobody).
                    inner.wake_local(&key);
                    return;
                }
                Err(err) if err.is_store_failure() && tokio::time::Instant::now() < give_up => {
                    wait = RetryPolicy::INTERVAL;
                }
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        "a lock that may be held could not be released; it is taken over once stale"
                    );
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_store::ScriptedStore;

    fn manager(store: ScriptedStore, throw_on_error: bool) -> (SessionManager, Arc<ScriptedStore>) {
        let store = Arc::new(store);
        let config = Config::builder()
            .throw_on_error(throw_on_error)
            .build()
            .unwrap();
        let dyn_store: Arc<dyn SessionStore> = Arc::clone(&store) as Arc<dyn SessionStore>;
        (SessionManager::new(dyn_store, &config), store)
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_without_a_signal_back_off_from_milliseconds_to_the_poll_interval() {
        let store = ScriptedStore::default();
        *store.locked_acquires.lock().unwrap() = 10;
        let (m, store) = manager(store, true);
        let id = SessionId::generate().unwrap();
        m.open(Some(id.expose()), Access::Exclusive).await.unwrap();
        let gaps: Vec<u128> = store
            .attempt_times()
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        // A second look right after registering as a waiter, then 2, 4, ... ms between looks,
        // capped at the default 500 ms poll interval.
        assert_eq!(gaps, [0, 2, 4, 8, 16, 32, 64, 128, 256, 500], "{gaps:?}");
    }

    #[tokio::test]
    async fn throw_on_error_propagates_store_failures() {
        let (m, _) = manager(ScriptedStore::always_failing(), true);
        let id = SessionId::generate().unwrap();
        let err = m
            .open(Some(id.expose()), Access::Exclusive)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(
            m.last_error().is_none(),
            "returned errors are not also recorded"
        );
        // A new session touches no store until it is written; then the failure surfaces.
        let mut s = m.open(None, Access::Exclusive).await.unwrap();
        s.insert("a", &1u8).unwrap();
        assert!(matches!(s.end().await, Err(Error::Unavailable { .. })));
    }

    #[tokio::test]
    async fn without_throw_on_error_sessions_degrade() {
        let (m, _) = manager(ScriptedStore::always_failing(), false);
        let id = SessionId::generate().unwrap();
        let mut s = m.open(Some(id.expose()), Access::Exclusive).await.unwrap();
        assert!(s.is_degraded());
        assert_eq!(*s.id(), id, "a degraded session keeps the client's id");
        s.insert("a", &1u8).unwrap();
        assert!(
            s.last_error().is_some(),
            "a degraded session carries its cause"
        );
        assert_eq!(s.end().await.unwrap(), EndOutcome::NotSaved);
        assert!(m.last_error().is_some());
        // A store failure while ending a normal session is recorded, not thrown.
        let mut s = m.open(None, Access::Exclusive).await.unwrap();
        assert!(!s.is_degraded());
        s.insert("a", &1u8).unwrap();
        assert_eq!(s.end().await.unwrap(), EndOutcome::NotSaved);
    }

    #[tokio::test]
    async fn each_request_sees_only_its_own_error() {
        use crate::test_store::unavailable;
        let store = ScriptedStore::default();
        // Popped from the end: the first acquire fails, the second succeeds, the create fails.
        *store.script.lock().unwrap() = vec![
            Some(unavailable(Operation::Create)),
            None,
            Some(unavailable(Operation::Acquire)),
        ];
        let (m, _) = manager(store, false);
        let (a, b) = (
            SessionId::generate().unwrap(),
            SessionId::generate().unwrap(),
        );
        // Request 1's open fails; request 2, opened after it, is not degraded and has no error.
        let first = m.open(Some(a.expose()), Access::Exclusive).await.unwrap();
        let second = m.open(Some(b.expose()), Access::Exclusive).await.unwrap();
        let cause = first.last_error().map(|e| e.operation());
        assert_eq!(cause, Some(Some(Operation::Acquire)));
        assert!(!second.is_degraded() && second.last_error().is_none());
        // Request 3's end fails: its report has its own error; request 2's end, none.
        let mut third = m.open(None, Access::Exclusive).await.unwrap();
        third.insert("a", &1u8).unwrap();
        let report = third.end_report().await.unwrap();
        assert_eq!(report.outcome(), EndOutcome::NotSaved);
        let cause = report.last_error().map(|e| e.operation());
        assert_eq!(cause, Some(Some(Operation::Create)));
        let report = second.end_report().await.unwrap();
        assert!(report.outcome() == EndOutcome::Nothing && report.last_error().is_none());
        // Request 1's report names its own cause, the one of its open.
        let report = first.end_report().await.unwrap();
        assert_eq!(report.outcome(), EndOutcome::NotSaved);
        let cause = report.last_error().map(|e| e.operation());
        assert_eq!(cause, Some(Some(Operation::Acquire)));
        // The manager keeps the latest of any request.
        let latest = m.last_error().map(|e| e.operation());
        assert_eq!(latest, Some(Some(Operation::Create)));
    }

    fn touches(store: &ScriptedStore) -> usize {
        let attempts = store.attempts.lock().unwrap();
        attempts.iter().filter(|a| a.0 == Operation::Touch).count()
    }

    #[tokio::test]
    async fn keep_alive_touches_a_well_formed_id_once() {
        let (m, store) = manager(ScriptedStore::default(), true);
        let id = SessionId::generate().unwrap();
        assert!(m.keep_alive(id.expose()).await.unwrap());
        assert_eq!(touches(&store), 1);
        assert!(!m.keep_alive("not-an-id").await.unwrap());
        assert!(!m.keep_alive("").await.unwrap());
        assert_eq!(store.attempts.lock().unwrap().len(), 1, "no store call");
    }

    /// A malformed cookie costs no store call: the open parses the id first and answers a new
    /// session (docs/security.md §2.6).
    #[tokio::test]
    async fn a_malformed_id_opens_a_new_session_without_a_store_call() {
        let (m, store) = manager(ScriptedStore::default(), true);
        for hostile in [
            "not-an-id",
            "",
            "../../etc/passwd",
            &"a".repeat(8192),
            "ABCDEF0123456789ABCDEF0123456789",
        ] {
            for access in [Access::Exclusive, Access::ReadOnly, Access::Concurrent] {
                let s = m.open(Some(hostile), access).await.unwrap();
                assert!(s.is_new());
                assert_ne!(s.id().expose(), hostile);
            }
        }
        assert_eq!(store.attempts.lock().unwrap().len(), 0, "no store call");
    }

    /// What `Debug` prints of a session, its key, a lock token, an item value and a manager holds
    /// neither a whole id nor a whole token nor an item's bytes (docs/security.md §2.4).
    #[tokio::test]
    async fn debug_prints_no_whole_id_token_or_value() {
        let (m, _) = manager(ScriptedStore::default(), true);
        let mut s = m.open(None, Access::Exclusive).await.unwrap();
        s.insert("password", "hunter2").unwrap();
        let id = s.id().expose().to_owned();
        let printed = format!("{s:?} {:?} {m:?}", s.key());
        assert!(!printed.contains(&id), "{printed}");
        assert!(printed.contains(&id[..6]), "the prefix names it: {printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        let token = LockToken::generate().unwrap();
        let printed = format!("{token:?}");
        assert!(!printed.contains(&token.to_hex()), "{printed}");
        assert!(printed.contains(&token.to_hex()[..8]), "{printed}");
        let value = crate::ItemValue::from_bytes(b"hunter2".to_vec());
        let printed = format!("{value:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("104, 117"),
            "{printed}"
        );
    }

    #[tokio::test]
    async fn keep_alive_is_off_with_skip_keep_alive_when_unused() {
        let store = Arc::new(ScriptedStore::default());
        let config = Config::builder()
            .skip_keep_alive_when_unused(true)
            .build()
            .unwrap();
        let m = SessionManager::new(Arc::clone(&store) as Arc<dyn SessionStore>, &config);
        let id = SessionId::generate().unwrap();
        assert!(!m.keep_alive(id.expose()).await.unwrap());
        assert!(store.attempts.lock().unwrap().is_empty(), "no store call");
    }

    /// A keep-alive is one attempt even with a retry budget: during an outage it never holds the
    /// response for `retryTimeoutInMilliseconds`.
    #[tokio::test(start_paused = true)]
    async fn keep_alive_is_never_retried() {
        let store = Arc::new(ScriptedStore::always_failing());
        let config = Config::builder()
            .throw_on_error(false)
            .retry_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let m = SessionManager::new(Arc::clone(&store) as Arc<dyn SessionStore>, &config);
        let id = SessionId::generate().unwrap();
        let started = tokio::time::Instant::now();
        assert!(!m.keep_alive(id.expose()).await.unwrap());
        assert_eq!(touches(&store), 1, "one attempt");
        assert!(
            started.elapsed() < Duration::from_millis(20),
            "no retry delay"
        );
    }

    #[tokio::test]
    async fn keep_alive_failures_follow_throw_on_error() {
        let id = SessionId::generate().unwrap();
        let (m, store) = manager(ScriptedStore::always_failing(), true);
        let err = m.keep_alive(id.expose()).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(m.last_error().is_none(), "returned, not recorded");
        assert_eq!(touches(&store), 1);
        let (m, _) = manager(ScriptedStore::always_failing(), false);
        assert!(!m.keep_alive(id.expose()).await.unwrap());
        assert!(m.last_error().is_some(), "absorbed and recorded");
    }

    #[tokio::test]
    async fn manager_decisions_are_not_degraded() {
        // Waiter errors and bad input are the application's business, never swallowed.
        let (m, _) = manager(ScriptedStore::default(), false);
        let s = m.open(Some("not-an-id"), Access::Exclusive).await.unwrap();
        assert!(s.is_new() && !s.is_degraded());
        assert!(m.delete("not-an-id").await.is_err());
        assert!(m.last_error().is_none());
    }

    #[tokio::test]
    async fn read_only_sessions_refuse_changes() {
        let (m, _) = manager(ScriptedStore::default(), true);
        let mut s = m.open(None, Access::ReadOnly).await.unwrap();
        assert!(matches!(s.insert("a", &1u8), Err(Error::NotWritable(_))));
        assert!(matches!(s.remove("a"), Err(Error::NotWritable(_))));
        assert!(matches!(s.clear(), Err(Error::NotWritable(_))));
        assert!(matches!(s.abandon(), Err(Error::NotWritable(_))));
        assert!(matches!(
            s.set_timeout(Duration::from_secs(1)),
            Err(Error::NotWritable(_))
        ));
    }

    #[tokio::test]
    async fn bad_timeouts_are_rejected() {
        let (m, _) = manager(ScriptedStore::default(), true);
        let mut s = m.open(None, Access::Exclusive).await.unwrap();
        assert!(s.set_timeout(Duration::ZERO).is_err());
        assert!(
            s.set_timeout(MAX_SESSION_TIMEOUT + Duration::from_secs(1))
                .is_err()
        );
        s.set_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(s.timeout(), Duration::from_secs(5));
    }

    /// A lock that remembers the token `acquire` was given and holds commits and releases to it
    /// (the snapshot carries no token: the manager must use its own).
    #[derive(Debug, Default)]
    struct HoldsTheGivenToken(std::sync::Mutex<Option<LockToken>>);

    impl crate::layer::StoreLayer for HoldsTheGivenToken {
        async fn around(
            &self, call: crate::layer::Call<'_>, inner: &dyn SessionStore,
        ) -> Result<crate::layer::Reply> {
            use crate::layer::{Call, Reply};
            if !matches!(
                call,
                Call::Acquire { .. } | Call::Commit { .. } | Call::Release { .. }
            ) {
                return call.run(inner).await;
            }
            let mut held = self.0.lock().unwrap();
            Ok(match call {
                Call::Acquire { token, .. } => {
                    *held = Some(token);
                    let snapshot = Snapshot::new(Arc::new(Items::new()), Duration::from_secs(60));
                    Reply::Acquire(AcquireOutcome::Acquired(snapshot))
                }
                Call::Commit { token, .. } if *held == Some(token) => {
                    Reply::Commit(CommitOutcome::Committed)
                }
                Call::Release { token, .. } if *held == Some(token) => {
                    Reply::Release(ReleaseOutcome::Released)
                }
                Call::Commit { .. } => Reply::Commit(CommitOutcome::LockLost),
                _ => Reply::Release(ReleaseOutcome::LockLost),
            })
        }
    }

    #[tokio::test]
    async fn the_lock_token_is_the_managers_own() {
        let store =
            crate::layer::Layered::new(ScriptedStore::default(), HoldsTheGivenToken::default());
        let config = Config::builder().build().unwrap();
        let m = SessionManager::new(Arc::new(store), &config);
        let id = SessionId::generate().unwrap();
        let mut s = m.open(Some(id.expose()), Access::Exclusive).await.unwrap();
        s.insert("a", &1u8).unwrap();
        assert_eq!(s.end().await.unwrap(), EndOutcome::Committed);
        let s = m.open(Some(id.expose()), Access::Exclusive).await.unwrap();
        assert_eq!(s.end().await.unwrap(), EndOutcome::Released);
    }
}
