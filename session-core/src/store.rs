//! The store trait every backend implements (docs/contract.md §2), its capability declaration, and the types
//! of the two optional signals (lock release and expiry events).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::{LockToken, SessionId};
use crate::model::{
    AcquireOutcome, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, Items, ReadOutcome,
    ReleaseOutcome, RemoveOutcome, TouchOutcome,
};
use crate::names::SessionKey;
use crate::refresh::RefreshWindow;

/// The optional capabilities a store declares (docs/contract.md §2). All false by default; the conformance
/// suite runs a capability's behaviours only where it is declared, and otherwise checks that the
/// operation returns [`Error::Unsupported`](crate::Error::Unsupported) without side effects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Atomic `change_id(old, new, token)`.
    pub change_id: bool,
    /// Batched `purge_expired(batch)`.
    pub purge_expired: bool,
    /// `expiry_events()`: the final items of sessions that expired or were removed.
    pub expiry_events: bool,
    /// `watch_release(key)`: waiters wake when a lock is released instead of polling.
    pub release_signal: bool,
}

impl Capabilities {
    /// No optional capability.
    pub const fn none() -> Self {
        Self {
            change_id: false,
            purge_expired: false,
            expiry_events: false,
            release_signal: false,
        }
    }

    /// Declares `change_id`.
    pub const fn with_change_id(mut self) -> Self {
        self.change_id = true;
        self
    }

    /// Declares `purge_expired`.
    pub const fn with_purge_expired(mut self) -> Self {
        self.purge_expired = true;
        self
    }

    /// Declares expiry events.
    pub const fn with_expiry_events(mut self) -> Self {
        self.expiry_events = true;
        self
    }

    /// Declares the release signal.
    pub const fn with_release_signal(mut self) -> Self {
        self.release_signal = true;
        self
    }
}

/// A one-shot wake-up: completes when the lock of the watched session is released (by `commit`,
/// `release`, `remove`, `delete`, `change_id` or expiry) after the watch was created.
///
/// It may also complete spuriously; waiters always re-check with the store.
pub struct ReleaseWatch(Pin<Box<dyn Future<Output = ()> + Send + 'static>>);

impl ReleaseWatch {
    /// Wraps a future that completes on release.
    pub fn new(fut: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Box::pin(fut))
    }
}

impl Future for ReleaseWatch {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.get_mut().0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ReleaseWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReleaseWatch")
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// It was idle past its timeout.
    Expired,
    /// It was removed (`remove` or `delete`).
    Removed,
    /// It was idle past its timeout, but its final items could not be kept until its event was
    /// taken: the event has no items, and this says that they are unknown, not that there were
    /// none. A store reports it where it cannot guarantee the items (Redis: the value was gone
    /// when the end was claimed: evicted, flushed, or claimed after the grace period); never
    /// `Expired` with empty items for a session whose items were lost.
    ExpiredItemsLost,
}

/// A session that ended (ASP.NET `Session_End`), with its final items.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExpiryEvent {
    /// The session that ended.
    pub key: SessionKey,
    /// Its items at the end.
    pub items: Arc<Items>,
    /// Why it ended.
    pub reason: EndReason,
}

impl ExpiryEvent {
    /// An event for `key` with its final `items`.
    pub fn new(key: SessionKey, items: Arc<Items>, reason: EndReason) -> Self {
        Self { key, items, reason }
    }
}

/// A stream of [`ExpiryEvent`]s, each delivered once to every subscriber that exists when it occurs.
///
/// Each subscriber has a bounded buffer (the store's; for example 1024 events): one that falls
/// further behind misses the oldest events rather than holding the store's memory.
/// [`ExpiryEvents::missed`] counts them, so a lagging subscriber is visible.
pub struct ExpiryEvents {
    receiver: tokio::sync::broadcast::Receiver<ExpiryEvent>,
    /// An event taken from the buffer by [`ExpiryEvents::missed`], returned by the next `next()`.
    held: Option<ExpiryEvent>,
    /// Events skipped so far.
    missed: u64,
    /// The buffer's size, learnt when a lag is found (the fewest events left unread right after
    /// one); `None` until then.
    buffer: Option<usize>,
}

impl ExpiryEvents {
    /// Wraps a broadcast receiver.
    pub fn new(receiver: tokio::sync::broadcast::Receiver<ExpiryEvent>) -> Self {
        Self {
            receiver,
            held: None,
            missed: 0,
            buffer: None,
        }
    }

    /// The next event, or `None` once the store is gone. Events a slow subscriber missed are
    /// skipped (counted by [`ExpiryEvents::missed`], and logged), never replayed out of order.
    pub async fn next(&mut self) -> Option<ExpiryEvent> {
        use tokio::sync::broadcast::error::RecvError;
        if let Some(event) = self.held.take() {
            return Some(event);
        }
        loop {
            match self.receiver.recv().await {
                Ok(event) => return Some(event),
                Err(RecvError::Lagged(n)) => {
                    self.lagged(n);
                    tracing::warn!(missed = n, "expiry event subscriber lagged");
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// How many events this subscriber has missed so far because it fell more than its buffer
    /// behind (their sessions ended, but this subscriber will not see them).
    ///
    /// It counts without losing anything: a subscriber that does not read (or reads too slowly)
    /// can call it to find how much it skipped; the next event is kept for
    /// [`ExpiryEvents::next`]. Events overwritten while it looks are counted by the next call.
    pub fn missed(&mut self) -> u64 {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            if self.held.is_some() {
                // Looking further would take another event: only a lag that is certain (more
                // unread than the buffer holds) is collected.
                let behind = self.buffer.is_some_and(|b| self.receiver.len() > b);
                if !behind {
                    break;
                }
            }
            match self.receiver.try_recv() {
                Ok(event) => {
                    // The buffer held no lag: the event is kept, in order, for `next()`.
                    if let Some(earlier) = self.held.replace(event) {
                        // Unreachable (a certain lag answers `Lagged`); never drop silently.
                        self.held = Some(earlier);
                        self.lagged(1);
                    }
                    break;
                }
                Err(TryRecvError::Lagged(n)) => self.lagged(n),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        self.missed
    }

    fn lagged(&mut self, n: u64) {
        self.missed = self.missed.saturating_add(n);
        // Right after a lag the receiver is exactly a buffer behind, plus what was sent since.
        let left = self.receiver.len();
        self.buffer = Some(self.buffer.map_or(left, |b| b.min(left)));
    }
}

impl fmt::Debug for ExpiryEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExpiryEvents")
    }
}

/// A session store: the provider contract (docs/contract.md §2).
///
/// # Contract
/// Every operation is atomic: no other operation on the same session observes it half done. A
/// networked store performs each in **one round trip**. Every outcome is reported as a distinct
/// value. A session past its expiry does not exist for any operation. Every access slides the
/// expiry to `now + timeout` where the table below says so, using the session's own stored timeout.
/// Lock age is measured on the store's clock.
///
/// Operations are **idempotent under retry**, so the retry policy (docs/contract.md §4) never applies anything
/// twice nor turns a success into an error:
/// - an `acquire` repeated with the token that holds the lock returns `Acquired` again;
/// - a `commit` repeated with the token, delta and timeout of the session's last successful
///   `commit` reports `Committed` again without applying anything, even if another request has
///   acquired the lock since (its lock is untouched). The window lasts at least until another
///   holder commits or releases (this workspace's stores keep it until the next commit). Only
///   the same call repeats this way: a `commit` with the token of a `release`, or a different
///   commit with a spent token, is `LockLost` (docs/contract.md §2 rule 1). Stores that cannot keep the
///   delta may compare [`Delta::fingerprint`] instead.
/// - `release`, `create`, `remove` and `delete` need nothing: the retry layer
///   ([`RetryLayer`](crate::RetryLayer)) reads `LockLost`/`AlreadyExists`/`Missing` after a lost
///   reply as the success it was. `write_concurrent` is never retried.
///
/// Implement every method; there are no defaults. Optional operations that the store does not declare
/// in [`SessionStore::capabilities`] return [`Error::Unsupported`](crate::Error::Unsupported) and
/// change nothing. Run [`conformance`](crate#conformance-suite) against the implementation.
///
/// # Cancel safety
/// Dropping an operation's future must not leave a half-applied change; it may leave the operation
/// applied or not applied.
#[async_trait]
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// The backend's name, used in errors and tracing (`"memory"`, `"redis"`, `"postgres"`...).
    fn backend(&self) -> &'static str;

    /// The optional capabilities this store supports.
    fn capabilities(&self) -> Capabilities;

    /// The refresh window this store slides with (docs/contract.md §1): every access leaves
    /// `expires_at >= now + timeout`, and a slide the store writes sets `now + timeout + w`.
    /// A store that writes the exact expiry on every access returns [`RefreshWindow::EXACT`].
    /// The conformance suite checks both bounds against this value.
    fn refresh_window(&self) -> RefreshWindow;

    /// Reads a session without locking it.
    ///
    /// # Contract
    /// `Missing` if absent or expired; `Locked` (holder token and age, no data) if another request
    /// holds the lock; else `Found`. Slides the expiry in every case except `Missing`, even when
    /// locked. The first `Found` of an uninitialized session has `initialize` set, and clears it.
    ///
    /// # Errors
    /// Store failures; [`Error::Corrupt`](crate::Error::Corrupt) for undecodable stored data.
    async fn read(&self, key: &SessionKey) -> Result<ReadOutcome>;

    /// Locks a session with `token` and returns its data.
    ///
    /// The caller passes a fresh token ([`LockToken::generate`]) for every acquisition, and the
    /// same token again only to retry an acquire whose reply it did not get.
    ///
    /// # Contract
    /// `Missing` if absent or expired (nothing is created); `Acquired` with the data if `token`
    /// already holds the lock (the retry of an acquire whose reply was lost; the lock's age is
    /// kept); `Locked` if another token holds a lock younger than `lock_ttl` (locks are not
    /// re-entrant: a second acquisition uses a new token); else `Acquired`, the lock now held by
    /// `token`, taking over a stale lock (age ≥ `lock_ttl`) in the same step. Slides the expiry in
    /// every case except `Missing`. Reports `initialize` like [`SessionStore::read`] (a flag
    /// handed to an attempt whose reply was lost is not reported again to its retry: the "exactly
    /// once" of docs/contract.md §2 rule 3 becomes "at most once" when a reply is lost).
    ///
    /// # Errors
    /// Store failures; [`Error::Corrupt`](crate::Error::Corrupt) for undecodable stored data.
    async fn acquire(
        &self, key: &SessionKey, token: LockToken, lock_ttl: Duration,
    ) -> Result<AcquireOutcome>;

    /// Applies `delta`, stores `timeout` as the session's timeout, slides the expiry by it and
    /// releases the lock, all in one step.
    ///
    /// # Contract
    /// `Committed` only if `token` is the current holder's; otherwise (taken over, released,
    /// expired, session gone) `LockLost` and nothing is written. Only the delta is written: items
    /// it does not name are untouched.
    ///
    /// # Errors
    /// Store failures.
    async fn commit(
        &self, key: &SessionKey, token: LockToken, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome>;

    /// Releases the lock without writing, and slides the expiry.
    ///
    /// # Contract
    /// `Released` if `token` is the current holder's, else `LockLost` and nothing changes. A forced
    /// release (by a request that is not the holder but knows its token) is allowed.
    ///
    /// # Errors
    /// Store failures.
    async fn release(&self, key: &SessionKey, token: LockToken) -> Result<ReleaseOutcome>;

    /// Inserts a new unlocked session if no live session has this key.
    ///
    /// # Contract
    /// `Created`, or `AlreadyExists` without touching the existing session or its lock (docs/contract.md §2
    /// rule 2). With `initialized = false` the first read or acquire reports `initialize`.
    ///
    /// # Errors
    /// Store failures.
    async fn create(
        &self, key: &SessionKey, items: &Items, timeout: Duration, initialized: bool,
    ) -> Result<CreateOutcome>;

    /// Deletes a session on behalf of its lock holder (ASP.NET `Abandon`).
    ///
    /// # Contract
    /// `Removed` if `token` holds the lock; `LockLost` if the session exists but `token` does not
    /// hold it (nothing changes); `Missing` if there is no such session.
    ///
    /// # Errors
    /// Store failures.
    async fn remove(&self, key: &SessionKey, token: LockToken) -> Result<RemoveOutcome>;

    /// Slides the expiry by the session's stored timeout, touching nothing else.
    ///
    /// # Contract
    /// `Touched`, or `Missing` (nothing is created).
    ///
    /// # Errors
    /// Store failures.
    async fn touch(&self, key: &SessionKey) -> Result<TouchOutcome>;

    /// Lock-free write: merges `delta` per item (last writer wins per item), stores `timeout` and
    /// slides the expiry, ignoring and keeping any lock.
    ///
    /// # Contract
    /// `Committed`, or `Missing` (nothing is created).
    ///
    /// # Errors
    /// Store failures.
    async fn write_concurrent(
        &self, key: &SessionKey, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome>;

    /// Administrative delete regardless of locks (log out everywhere).
    ///
    /// # Contract
    /// `Removed` or `Missing`. A holder's later `commit` is `LockLost`.
    ///
    /// # Errors
    /// Store failures.
    async fn delete(&self, key: &SessionKey) -> Result<RemoveOutcome>;

    /// Optional (`Capabilities::change_id`): moves a locked session to `new_id` in one step,
    /// keeping its data, timeout and lock (the same token stays valid under the new id).
    ///
    /// # Contract
    /// `Changed`; `LockLost` if `token` does not hold the lock or the session is gone;
    /// `AlreadyExists` if `new_id` is taken. Nothing changes unless `Changed`.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) where undeclared; store failures.
    async fn change_id(
        &self, key: &SessionKey, new_id: SessionId, token: LockToken,
    ) -> Result<ChangeIdOutcome>;

    /// Optional (`Capabilities::purge_expired`): deletes up to `batch` expired sessions, returning
    /// how many it deleted.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) where undeclared; store failures.
    async fn purge_expired(&self, batch: usize) -> Result<u64>;

    /// Optional (`Capabilities::release_signal`): a watch that completes when the lock of `key` is
    /// released after this call returns. Create it *before* trying to acquire, so that a release
    /// between the attempt and the wait is not missed.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) where undeclared; store failures.
    async fn watch_release(&self, key: &SessionKey) -> Result<ReleaseWatch>;

    /// Optional (`Capabilities::expiry_events`): subscribes to sessions that end (expired or removed),
    /// with their final items.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) where undeclared; store failures.
    async fn expiry_events(&self) -> Result<ExpiryEvents>;
}

/// A shared, type-erased store. `Arc<S>` is a store too (forwarded by the layer mechanism,
/// [`crate::Layered`]).
pub type DynSessionStore = dyn SessionStore;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppName, SessionId};

    fn event(n: u32) -> ExpiryEvent {
        let app = AppName::new("/events").unwrap();
        let key = SessionKey::new(app, SessionId::generate().unwrap());
        let mut items = Items::new();
        items.insert("n".into(), crate::encode_value("n", &n).unwrap());
        ExpiryEvent::new(key, Arc::new(items), EndReason::Expired)
    }

    fn n(event: &ExpiryEvent) -> u32 {
        crate::decode_value("n", event.items.get("n").unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_sees_what_it_missed() {
        let (sender, receiver) = tokio::sync::broadcast::channel(4);
        let mut events = ExpiryEvents::new(receiver);
        assert_eq!(events.missed(), 0, "nothing sent");
        for i in 0..10 {
            sender.send(event(i)).unwrap();
        }
        assert_eq!(events.missed(), 6, "10 sent, 4 kept");
        assert_eq!(events.missed(), 6, "looking again loses nothing");
        for i in 10..15 {
            sender.send(event(i)).unwrap();
        }
        // Held aside: event 6; the buffer now holds 11..14, so 7..10 were missed.
        assert_eq!(events.missed(), 10, "the count grows without reading");
        let first = events.next().await.unwrap();
        assert_eq!(
            n(&first),
            6,
            "the event held by missed() comes first, in order"
        );
        let mut rest = Vec::new();
        for _ in 0..4 {
            rest.push(n(&events.next().await.unwrap()));
        }
        assert_eq!(rest, vec![11, 12, 13, 14]);
        assert_eq!(events.missed(), 10);
    }

    #[tokio::test]
    async fn next_counts_the_lag_it_skips() {
        let (sender, receiver) = tokio::sync::broadcast::channel(2);
        let mut events = ExpiryEvents::new(receiver);
        for i in 0..5 {
            sender.send(event(i)).unwrap();
        }
        assert_eq!(n(&events.next().await.unwrap()), 3);
        assert_eq!(events.missed(), 3);
        assert_eq!(n(&events.next().await.unwrap()), 4);
        drop(sender);
        assert!(events.next().await.is_none());
        assert_eq!(events.missed(), 3);
    }
}
