//! [`ReferenceStore`]: every operation of the store contract (docs/contract.md §2) over one
//! `Mutex<HashMap>`, in the order the contract lists them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use session_core::{
    AcquireOutcome, Capabilities, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, Error,
    ExpiryEvents, Items, LockInfo, LockToken, MAX_SESSION_TIMEOUT, Operation, ReadOutcome,
    RefreshWindow, ReleaseOutcome, ReleaseWatch, RemoveOutcome, Result, SessionId, SessionKey,
    SessionStore, Snapshot, TouchOutcome,
};
// The store's clock (docs/contract.md §2 rule 5). tokio's `Instant` is the monotonic clock of the
// process, which a test may pause and advance (`tokio::time::pause`); never `SystemTime`.
use tokio::time::Instant;

/// The name this store gives itself in errors and tracing spans.
const BACKEND: &str = "reference";

/// The reference store: a complete [`SessionStore`] in one process, with no optional capability
/// but `purge_expired`.
///
/// Every operation takes the one mutex, decides, changes the map and lets go: that is what makes it
/// atomic (docs/contract.md §2). A networked store gets the same atomicity from one script, one
/// statement or one transaction per operation instead.
///
/// ```
/// use std::sync::Arc;
/// use reference_store::ReferenceStore;
/// use session_core::{Config, SessionManager};
///
/// let manager = SessionManager::new(Arc::new(ReferenceStore::new()), &Config::builder().build()?);
/// # Ok::<(), session_core::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct ReferenceStore {
    /// Every session, by key (application and id). A std mutex rather than tokio's: no operation
    /// holds it across an `.await`, and each holds it for a few map lookups only.
    sessions: Mutex<HashMap<SessionKey, Entry>>,
}

/// One stored session.
#[derive(Debug)]
struct Entry {
    /// The items, shared with the snapshots handed out (a read clones an `Arc`, not the items); a
    /// write copies them only if a snapshot still holds them.
    items: Arc<Items>,
    /// The session's own idle timeout: every access slides `expires_at` by it.
    timeout: Duration,
    /// Past this instant the session does not exist for any operation, even while it is still in
    /// the map (docs/contract.md §1, timeout). [`live`] removes it when an operation finds it so.
    expires_at: Instant,
    /// Who holds the lock, if anyone, and since when.
    lock: Option<Lock>,
    /// Created uninitialized and not yet handed to a `read` or `acquire` (docs/contract.md §2
    /// rule 3): the first snapshot reports it and clears it.
    initialize: bool,
    /// The last successful `commit`, so that the same commit repeated after a lost reply reports
    /// `Committed` again without applying its delta twice (docs/contract.md §2, settled rules).
    last_commit: Option<LastCommit>,
}

/// A held lock. Its age is measured on this store's clock (docs/contract.md §2 rule 5).
#[derive(Debug, Clone, Copy)]
struct Lock {
    token: LockToken,
    since: Instant,
}

impl Lock {
    fn info(self, now: Instant) -> LockInfo {
        LockInfo::new(self.token, now.saturating_duration_since(self.since))
    }
}

/// The arguments of a successful commit. The delta is kept whole: its values are shared `Arc`s, so
/// this costs a map of names, not a copy of the data. A store that cannot keep it compares
/// [`Delta::fingerprint`] instead.
#[derive(Debug)]
struct LastCommit {
    token: LockToken,
    delta: Delta,
    timeout: Duration,
}

impl Entry {
    fn new(items: &Items, timeout: Duration, now: Instant, initialized: bool) -> Self {
        Self {
            items: Arc::new(items.clone()),
            timeout,
            expires_at: expiry(now, timeout),
            lock: None,
            initialize: !initialized,
            last_commit: None,
        }
    }

    /// Slides the expiry by the session's stored timeout (exact sliding: a refresh window of 0).
    fn slide(&mut self, now: Instant) {
        self.expires_at = expiry(now, self.timeout);
    }

    /// Whether `token` holds the lock. Any age counts: a stale lock is still its holder's until
    /// another request takes it over.
    fn holds(&self, token: LockToken) -> bool {
        self.lock.is_some_and(|lock| lock.token == token)
    }

    /// The data for a `read` or `acquire`. The uninitialized flag is reported here once, then
    /// cleared (docs/contract.md §2 rule 3).
    fn snapshot(&mut self) -> Snapshot {
        let initialize = std::mem::take(&mut self.initialize);
        Snapshot::new(Arc::clone(&self.items), self.timeout).with_initialize(initialize)
    }

    /// Applies `delta` (clear, then remove, then set), stores `timeout` and slides by it.
    fn write(&mut self, delta: &Delta, timeout: Duration, now: Instant) {
        if !delta.is_empty() {
            delta.apply_to(Arc::make_mut(&mut self.items));
        }
        self.timeout = timeout;
        self.slide(now);
    }
}

/// `now + timeout`. The manager never stores a timeout over a year; a longer one given to the store
/// directly is capped there, so that the addition cannot overflow.
fn expiry(now: Instant, timeout: Duration) -> Instant {
    now + timeout.min(MAX_SESSION_TIMEOUT)
}

/// The live session under `key`. A session past its expiry is removed on the way and reported as
/// absent, so no operation ever sees it (nor revives it).
fn live<'a>(
    sessions: &'a mut HashMap<SessionKey, Entry>, key: &SessionKey, now: Instant,
) -> Option<&'a mut Entry> {
    if sessions
        .get(key)
        .is_some_and(|entry| entry.expires_at <= now)
    {
        sessions.remove(key);
    }
    sessions.get_mut(key)
}

impl ReferenceStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The map, locked. A panic while the mutex was held (none of the code below can panic) would
    /// poison it; the map is still whole then, since every operation decides before it changes
    /// anything, so the store carries on rather than failing every later call.
    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionKey, Entry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl SessionStore for ReferenceStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn refresh_window(&self) -> RefreshWindow {
        // Writes the exact expiry on every access (docs/contract.md §1, w = 0).
        RefreshWindow::EXACT
    }

    fn capabilities(&self) -> Capabilities {
        // A HashMap does not evict on its own: `purge_expired` is how expired sessions that no
        // operation looks at again leave memory.
        Capabilities::none().with_purge_expired()
    }

    async fn read(&self, key: &SessionKey) -> Result<ReadOutcome> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let Some(entry) = live(&mut sessions, key, now) else {
            return Ok(ReadOutcome::Missing);
        };
        // Every access slides the expiry, a locked session's too.
        entry.slide(now);
        Ok(match entry.lock {
            // No data while another request may be changing it.
            Some(lock) => ReadOutcome::Locked(lock.info(now)),
            None => ReadOutcome::Found(entry.snapshot()),
        })
    }

    async fn acquire(
        &self, key: &SessionKey, token: LockToken, lock_ttl: Duration,
    ) -> Result<AcquireOutcome> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let Some(entry) = live(&mut sessions, key, now) else {
            return Ok(AcquireOutcome::Missing);
        };
        entry.slide(now);
        match entry.lock {
            // Our own lock: the retry of an acquire whose reply was lost. It keeps its age.
            Some(lock) if lock.token == token => {}
            // Another request's lock, younger than the lock TTL.
            Some(lock) if now.saturating_duration_since(lock.since) < lock_ttl => {
                return Ok(AcquireOutcome::Locked(lock.info(now)));
            }
            // Free, or stale: taken in the same step.
            _ => entry.lock = Some(Lock { token, since: now }),
        }
        Ok(AcquireOutcome::Acquired(entry.snapshot()))
    }

    async fn commit(
        &self, key: &SessionKey, token: LockToken, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let Some(entry) = live(&mut sessions, key, now) else {
            return Ok(CommitOutcome::LockLost);
        };
        if entry.holds(token) {
            entry.write(delta, timeout, now);
            entry.lock = None;
            entry.last_commit = Some(LastCommit {
                token,
                delta: delta.clone(),
                timeout,
            });
            return Ok(CommitOutcome::Committed);
        }
        // Not the holder. The same commit as the last successful one is its retry (the reply was
        // lost): report it done and apply nothing, even if another request holds the lock now.
        // Anything else from a spent token is a stale holder's write (rule 1).
        let repeat = entry.last_commit.as_ref().is_some_and(|last| {
            last.token == token && last.timeout == timeout && last.delta == *delta
        });
        Ok(if repeat {
            CommitOutcome::Committed
        } else {
            CommitOutcome::LockLost
        })
    }

    async fn release(&self, key: &SessionKey, token: LockToken) -> Result<ReleaseOutcome> {
        // No record of past releases: a release retried after a lost reply finds the lock gone
        // and answers `LockLost`, which the retry layer reads as the success it was.
        let now = Instant::now();
        let mut sessions = self.sessions();
        match live(&mut sessions, key, now) {
            Some(entry) if entry.holds(token) => {
                entry.lock = None;
                entry.slide(now);
                Ok(ReleaseOutcome::Released)
            }
            _ => Ok(ReleaseOutcome::LockLost),
        }
    }

    async fn create(
        &self, key: &SessionKey, items: &Items, timeout: Duration, initialized: bool,
    ) -> Result<CreateOutcome> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        // Check and insert under one lock: never overwrites a live session (rule 2). An expired
        // one was removed by `live` and is replaced.
        if live(&mut sessions, key, now).is_some() {
            return Ok(CreateOutcome::AlreadyExists);
        }
        let entry = Entry::new(items, timeout, now, initialized);
        sessions.insert(key.clone(), entry);
        Ok(CreateOutcome::Created)
    }

    async fn remove(&self, key: &SessionKey, token: LockToken) -> Result<RemoveOutcome> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let Some(entry) = live(&mut sessions, key, now) else {
            return Ok(RemoveOutcome::Missing);
        };
        if !entry.holds(token) {
            return Ok(RemoveOutcome::LockLost);
        }
        sessions.remove(key);
        Ok(RemoveOutcome::Removed)
    }

    async fn touch(&self, key: &SessionKey) -> Result<TouchOutcome> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        Ok(match live(&mut sessions, key, now) {
            Some(entry) => {
                entry.slide(now);
                TouchOutcome::Touched
            }
            None => TouchOutcome::Missing,
        })
    }

    async fn write_concurrent(
        &self, key: &SessionKey, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        // Per item, last writer wins: the delta names only the items this writer changed. Any lock
        // is ignored and kept.
        Ok(match live(&mut sessions, key, now) {
            Some(entry) => {
                entry.write(delta, timeout, now);
                CommitOutcome::Committed
            }
            None => CommitOutcome::Missing,
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<RemoveOutcome> {
        let now = Instant::now();
        // Regardless of any lock: the holder's later commit finds nothing and is `LockLost`.
        Ok(match self.sessions().remove(key) {
            Some(entry) if entry.expires_at > now => RemoveOutcome::Removed,
            _ => RemoveOutcome::Missing,
        })
    }

    async fn change_id(
        &self, _key: &SessionKey, _new_id: SessionId, _token: LockToken,
    ) -> Result<ChangeIdOutcome> {
        // Undeclared: the manager renews ids by copying the session instead.
        unsupported(Operation::ChangeId)
    }

    async fn purge_expired(&self, batch: usize) -> Result<u64> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let expired: Vec<SessionKey> = sessions
            .iter()
            .filter(|(_, entry)| entry.expires_at <= now)
            .map(|(key, _)| key.clone())
            .take(batch)
            .collect();
        for key in &expired {
            sessions.remove(key);
        }
        Ok(u64::try_from(expired.len()).unwrap_or(u64::MAX))
    }

    async fn watch_release(&self, _key: &SessionKey) -> Result<ReleaseWatch> {
        // Undeclared: waiting requests poll instead.
        unsupported(Operation::WatchRelease)
    }

    async fn expiry_events(&self) -> Result<ExpiryEvents> {
        unsupported(Operation::ExpiryEvents)
    }
}

/// The answer to an optional operation this store does not declare: an error, and no change
/// (docs/contract.md §2, capabilities).
fn unsupported<T>(operation: Operation) -> Result<T> {
    Err(Error::Unsupported {
        backend: BACKEND,
        operation,
    })
}
