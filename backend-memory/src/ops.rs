//! The [`SessionStore`] operations of [`MemoryStore`]. Each one is a single decision taken inside
//! one moka per-key compute (`Shared::compute`): it sees the live version of the session, returns
//! the step to apply and the outcome to report, and nothing else can touch that key in between.
//! Release signals are sent after the compute returns, so that a woken waiter sees the change.
//! `read` and `touch` first try without a compute: when all they change is the deadline, they
//! slide it in place (`Record::slide`), which every compute's claim keeps atomic with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use session_core::{
    AcquireOutcome, Capabilities, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, Error,
    ExpiryEvents, Items, LockToken, Operation, ReadOutcome, RefreshWindow, ReleaseOutcome,
    ReleaseWatch, RemoveOutcome, Result, SessionId, SessionKey, SessionStore, TouchOutcome,
};

use crate::change_id;
use crate::record::{Lock, Record, Settled, Slide};
use crate::store::{BACKEND, MemoryStore, Step};

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// `change_id`, expiry events and the release signal. Not `purge_expired`: the cache evicts
    /// expired sessions by itself.
    fn refresh_window(&self) -> RefreshWindow {
        // Writes the exact expiry on every access (docs/contract.md §1, w = 0).
        RefreshWindow::EXACT
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_change_id()
            .with_expiry_events()
            .with_release_signal()
    }

    /// Lock-free when the read changes nothing but the deadline: one cache fetch and an in-place
    /// slide. A version that a compute holds, and the first read of an uninitialized session (whose
    /// flag only a compute clears, so that exactly one read reports it), go through one compute.
    async fn read(&self, key: &SessionKey) -> Result<ReadOutcome> {
        if let Some(outcome) = self.read_in_place(key).await {
            return Ok(outcome);
        }
        self.inner()
            .compute(key, Operation::Read, |current, now| {
                let Some(record) = current else {
                    return (Step::Keep, ReadOutcome::Missing);
                };
                // Slides even when locked.
                let mut next = record.successor(now);
                let outcome = match record.lock {
                    Some(lock) => ReadOutcome::Locked(lock.info(now)),
                    None => {
                        next.initialize = false;
                        ReadOutcome::Found(record.snapshot())
                    }
                };
                (Step::Update(next), outcome)
            })
            .await
    }

    async fn acquire(
        &self, key: &SessionKey, token: LockToken, lock_ttl: Duration,
    ) -> Result<AcquireOutcome> {
        let shared = self.inner();
        let (outcome, took_over) = shared
            .compute(key, Operation::Acquire, |current, now| {
                let Some(record) = current else {
                    return (Step::Keep, (AcquireOutcome::Missing, false));
                };
                let mut next = record.successor(now);
                match record.lock {
                    // A retry of our own acquire whose reply was lost: the lock is already ours.
                    Some(lock) if lock.token == token => {
                        next.initialize = false;
                        let snapshot = record.snapshot();
                        return (
                            Step::Update(next),
                            (AcquireOutcome::Acquired(snapshot), false),
                        );
                    }
                    Some(lock) if lock.age(now) < lock_ttl => {
                        return (
                            Step::Update(next),
                            (AcquireOutcome::Locked(lock.info(now)), false),
                        );
                    }
                    _ => {}
                }
                // Free or stale: taken in the same step. `settled` stays, so that the previous
                // holder's retried commit is still recognised (the rule at `Settled`).
                let snapshot = record.snapshot();
                next.lock = Some(Lock { token, since: now });
                next.initialize = false;
                let took_over = record.lock.is_some();
                (
                    Step::Update(next),
                    (AcquireOutcome::Acquired(snapshot), took_over),
                )
            })
            .await?;
        if took_over {
            // The stale holder lost its lock; its watchers look again (and find it locked anew).
            shared.signals.released(key);
        }
        Ok(outcome)
    }

    async fn commit(
        &self, key: &SessionKey, token: LockToken, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome> {
        let shared = self.inner();
        let (outcome, released) = shared
            .compute(key, Operation::Commit, |current, now| {
                let Some(record) = current else {
                    return (Step::Keep, (CommitOutcome::LockLost, false));
                };
                match (&record.lock, &record.settled) {
                    (Some(lock), _) if lock.token == token => {
                        let mut next = record.written(now, delta, timeout);
                        next.lock = None;
                        next.settled = Some(Settled {
                            token,
                            delta: Arc::new(delta.clone()),
                            timeout,
                        });
                        (Step::Update(next), (CommitOutcome::Committed, true))
                    }
                    // A retry of the commit that released this lock (possibly after another request
                    // acquired it): report it, apply nothing, leave the new holder's lock alone.
                    (_, Some(settled)) if settled.repeats_commit(token, delta, timeout) => {
                        (Step::Keep, (CommitOutcome::Committed, false))
                    }
                    _ => (Step::Keep, (CommitOutcome::LockLost, false)),
                }
            })
            .await?;
        if released {
            shared.signals.released(key);
        }
        Ok(outcome)
    }

    async fn release(&self, key: &SessionKey, token: LockToken) -> Result<ReleaseOutcome> {
        let shared = self.inner();
        let (outcome, released) = shared
            .compute(key, Operation::Release, |current, now| {
                let Some(record) = current else {
                    return (Step::Keep, (ReleaseOutcome::LockLost, false));
                };
                // `settled` stays (the rule at `Settled`); a repeat of this release finds the lock
                // gone and is `LockLost`, which the retry layer reads as `Released`.
                match record.lock {
                    Some(lock) if lock.token == token => {
                        let mut next = record.successor(now);
                        next.lock = None;
                        (Step::Update(next), (ReleaseOutcome::Released, true))
                    }
                    _ => (Step::Keep, (ReleaseOutcome::LockLost, false)),
                }
            })
            .await?;
        if released {
            shared.signals.released(key);
        }
        Ok(outcome)
    }

    async fn create(
        &self, key: &SessionKey, items: &Items, timeout: Duration, initialized: bool,
    ) -> Result<CreateOutcome> {
        self.inner()
            .compute(key, Operation::Create, |current, now| {
                if current.is_some() {
                    return (Step::Keep, CreateOutcome::AlreadyExists);
                }
                let record = Record::new(Arc::new(items.clone()), timeout, now, !initialized);
                (Step::Insert(record), CreateOutcome::Created)
            })
            .await
    }

    async fn remove(&self, key: &SessionKey, token: LockToken) -> Result<RemoveOutcome> {
        let shared = self.inner();
        let outcome = shared
            .compute(key, Operation::Remove, |current, _| match current {
                None => (Step::Keep, RemoveOutcome::Missing),
                Some(record) if record.lock.is_some_and(|l| l.token == token) => {
                    (Step::End, RemoveOutcome::Removed)
                }
                Some(_) => (Step::Keep, RemoveOutcome::LockLost),
            })
            .await?;
        if outcome == RemoveOutcome::Removed {
            shared.signals.released(key);
        }
        Ok(outcome)
    }

    async fn touch(&self, key: &SessionKey) -> Result<TouchOutcome> {
        if let Some(outcome) = self.touch_in_place(key).await {
            return Ok(outcome);
        }
        self.inner()
            .compute(key, Operation::Touch, |current, now| match current {
                None => (Step::Keep, TouchOutcome::Missing),
                Some(record) => (Step::Update(record.successor(now)), TouchOutcome::Touched),
            })
            .await
    }

    async fn write_concurrent(
        &self, key: &SessionKey, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome> {
        self.inner()
            .compute(
                key,
                Operation::WriteConcurrent,
                |current, now| match current {
                    None => (Step::Keep, CommitOutcome::Missing),
                    // Per-item merge onto the current items; the lock (and a pending initialize flag)
                    // stay as they are.
                    Some(record) => (
                        Step::Update(record.written(now, delta, timeout)),
                        CommitOutcome::Committed,
                    ),
                },
            )
            .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<RemoveOutcome> {
        let shared = self.inner();
        let (outcome, was_locked) = shared
            .compute(key, Operation::Delete, |current, _| match current {
                None => (Step::Keep, (RemoveOutcome::Missing, false)),
                Some(record) => (Step::End, (RemoveOutcome::Removed, record.lock.is_some())),
            })
            .await?;
        if was_locked {
            shared.signals.released(key);
        }
        Ok(outcome)
    }

    async fn change_id(
        &self, key: &SessionKey, new_id: SessionId, token: LockToken,
    ) -> Result<ChangeIdOutcome> {
        let shared = Arc::clone(self.inner());
        change_id::run(shared, key.clone(), new_id, token).await
    }

    async fn purge_expired(&self, _batch: usize) -> Result<u64> {
        Err(Error::Unsupported {
            backend: BACKEND,
            operation: Operation::PurgeExpired,
        })
    }

    async fn watch_release(&self, key: &SessionKey) -> Result<ReleaseWatch> {
        Ok(self.inner().signals.watch(key))
    }

    async fn expiry_events(&self) -> Result<ExpiryEvents> {
        Ok(ExpiryEvents::new(self.inner().signals.subscribe_events()))
    }
}

impl MemoryStore {
    /// `read` without a cache write: fetches the version and slides its deadline in place
    /// ([`Record::slide`]). `None` when a compute must decide instead: the version is claimed by
    /// one (being replaced, or replaced already), or it is unlocked with the initialize flag set,
    /// which only a compute clears (in the next version), so that exactly one read reports it.
    async fn read_in_place(&self, key: &SessionKey) -> Option<ReadOutcome> {
        let shared = self.inner();
        // Before the fetch: moka's expiry, extended by the fetch, then covers the slid deadline.
        let now = Instant::now();
        let Some(record) = shared.cache.get(key).await else {
            // Absent, or past moka's expiry (which is past the session's deadline).
            return Some(ReadOutcome::Missing);
        };
        if record.lock.is_none() && record.initialize {
            return None;
        }
        match record.slide(now) {
            Slide::Claimed => None,
            Slide::Expired => Some(ReadOutcome::Missing),
            Slide::Slid => Some(match record.lock {
                Some(lock) => ReadOutcome::Locked(lock.info(now)),
                None => ReadOutcome::Found(record.snapshot()),
            }),
        }
    }

    /// `touch` without a cache write, as [`MemoryStore::read_in_place`]; `None` when the version
    /// is claimed by a compute.
    async fn touch_in_place(&self, key: &SessionKey) -> Option<TouchOutcome> {
        let shared = self.inner();
        let now = Instant::now();
        let Some(record) = shared.cache.get(key).await else {
            return Some(TouchOutcome::Missing);
        };
        match record.slide(now) {
            Slide::Claimed => None,
            Slide::Expired => Some(TouchOutcome::Missing),
            Slide::Slid => Some(TouchOutcome::Touched),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use crate::test_util::{LONG, found, items, key_in, locked, seeded, value};

    fn key() -> SessionKey {
        key_in("/ops")
    }

    #[tokio::test]
    async fn initialize_is_reported_once_and_snapshots_share_items() {
        let store = MemoryStore::new();
        let k = key();
        let created = store.create(&k, &items(&[("a", b"1")]), LONG, false).await;
        assert_eq!(created.unwrap(), CreateOutcome::Created);
        let again = store.create(&k, &Items::new(), LONG, true).await.unwrap();
        assert_eq!(again, CreateOutcome::AlreadyExists);
        let first = found(&store, &k).await;
        assert!(first.initialize);
        let second = found(&store, &k).await;
        assert!(!second.initialize);
        assert!(Arc::ptr_eq(&first.items, &second.items), "no copy per read");
        assert_eq!(first.items["a"], value(b"1"));
    }

    #[tokio::test]
    async fn retried_commit_reports_success_without_applying() {
        let store = MemoryStore::new();
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        let token = locked(&store, &k).await;
        let delta = Delta::new().with_set("n", value(b"1"));
        let commit = |d: Delta| {
            let (store, k) = (store.clone(), k.clone());
            async move { store.commit(&k, token, &d, LONG).await.unwrap() }
        };
        assert_eq!(commit(delta.clone()).await, CommitOutcome::Committed);
        // Someone else writes in between without a lock; the retry must not undo it.
        let other = Delta::new().with_set("n", value(b"2"));
        store.write_concurrent(&k, &other, LONG).await.unwrap();
        assert_eq!(commit(delta.clone()).await, CommitOutcome::Committed);
        assert_eq!(found(&store, &k).await.items["n"], value(b"2"));
        // A different write by the released holder is stale (docs/contract.md §2 rule 1).
        assert_eq!(commit(other).await, CommitOutcome::LockLost);

        // Another request acquires and releases in between: the retry is still recognised (the
        // rule at `Settled`) and leaves the new holder's lock alone.
        let newer = locked(&store, &k).await;
        assert_eq!(commit(delta.clone()).await, CommitOutcome::Committed);
        let held = store.read(&k).await.unwrap();
        assert!(matches!(held, ReadOutcome::Locked(i) if i.token == newer));
        let released = store.release(&k, newer).await.unwrap();
        assert_eq!(released, ReleaseOutcome::Released);
        assert_eq!(commit(delta.clone()).await, CommitOutcome::Committed);
        assert_eq!(found(&store, &k).await.items["n"], value(b"2"));
        // Only the next commit replaces the record.
        let next = locked(&store, &k).await;
        let committed = store.commit(&k, next, &Delta::new(), LONG).await.unwrap();
        assert_eq!(committed, CommitOutcome::Committed);
        assert_eq!(commit(delta).await, CommitOutcome::LockLost);
    }

    #[tokio::test]
    async fn release_records_nothing() {
        let store = MemoryStore::new();
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        let token = locked(&store, &k).await;
        let release = |t: LockToken| {
            let (store, k) = (store.clone(), k.clone());
            async move { store.release(&k, t).await.unwrap() }
        };
        assert_eq!(release(token).await, ReleaseOutcome::Released);
        // A repeat finds the lock gone: `LockLost` here, read as `Released` by the retry layer
        // when it follows a lost reply (docs/contract.md §2, "Repeated calls").
        assert_eq!(release(token).await, ReleaseOutcome::LockLost);
        let newer = locked(&store, &k).await;
        assert_eq!(release(token).await, ReleaseOutcome::LockLost);
        let held = store.read(&k).await.unwrap();
        assert!(matches!(held, ReadOutcome::Locked(i) if i.token == newer));
    }

    #[tokio::test]
    async fn stale_lock_is_taken_over_and_the_old_holder_loses() {
        let store = MemoryStore::new();
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        let ttl = Duration::from_millis(100);
        let old = LockToken::generate().unwrap();
        let AcquireOutcome::Acquired(_) = store.acquire(&k, old, ttl).await.unwrap() else {
            panic!("not acquired");
        };
        assert!(matches!(
            store.acquire(&k, LockToken::generate().unwrap(), ttl).await.unwrap(),
            AcquireOutcome::Locked(info) if info.token == old && info.age < ttl
        ));
        tokio::time::sleep(ttl).await;
        let second = LockToken::generate().unwrap();
        let AcquireOutcome::Acquired(_) = store.acquire(&k, second, ttl).await.unwrap() else {
            panic!("stale lock not taken over");
        };
        let delta = Delta::new().with_set("x", value(b"1"));
        assert_eq!(
            store.commit(&k, old, &delta, LONG).await.unwrap(),
            CommitOutcome::LockLost
        );
        assert_eq!(
            store.remove(&k, old).await.unwrap(),
            RemoveOutcome::LockLost
        );
    }

    #[tokio::test]
    async fn an_expired_session_does_not_exist_for_any_operation() {
        let store = MemoryStore::new();
        let k = key();
        let short = Duration::from_millis(150);
        store
            .create(&k, &items(&[("a", b"1")]), short, true)
            .await
            .unwrap();
        let token = locked(&store, &k).await;
        tokio::time::sleep(short + Duration::from_millis(20)).await;
        let d = Delta::new();
        assert!(matches!(
            store.read(&k).await.unwrap(),
            ReadOutcome::Missing
        ));
        assert!(matches!(
            store
                .acquire(&k, LockToken::generate().unwrap(), LONG)
                .await
                .unwrap(),
            AcquireOutcome::Missing
        ));
        assert_eq!(
            store.commit(&k, token, &d, LONG).await.unwrap(),
            CommitOutcome::LockLost
        );
        assert_eq!(
            store.release(&k, token).await.unwrap(),
            ReleaseOutcome::LockLost
        );
        assert_eq!(
            store.remove(&k, token).await.unwrap(),
            RemoveOutcome::Missing
        );
        assert_eq!(store.touch(&k).await.unwrap(), TouchOutcome::Missing);
        assert_eq!(
            store.write_concurrent(&k, &d, LONG).await.unwrap(),
            CommitOutcome::Missing
        );
        assert_eq!(store.delete(&k).await.unwrap(), RemoveOutcome::Missing);
        let moved = store
            .change_id(&k, SessionId::generate().unwrap(), token)
            .await;
        assert_eq!(moved.unwrap(), ChangeIdOutcome::LockLost);
        let fresh = store.create(&k, &Items::new(), LONG, true).await.unwrap();
        assert_eq!(fresh, CreateOutcome::Created);
        assert!(found(&store, &k).await.items.is_empty());
    }

    #[tokio::test]
    async fn every_access_slides_the_expiry() {
        let store = MemoryStore::new();
        let k = key();
        let timeout = Duration::from_millis(300);
        store
            .create(&k, &Items::new(), timeout, true)
            .await
            .unwrap();
        // Four accesses 150 ms apart: 600 ms in all, twice the timeout.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(store.touch(&k).await.unwrap(), TouchOutcome::Touched);
        }
        found(&store, &k).await;
    }

    #[tokio::test]
    async fn purge_expired_is_unsupported_and_changes_nothing() {
        let store = MemoryStore::new();
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        assert!(matches!(
            store.purge_expired(10).await,
            Err(Error::Unsupported {
                backend: "memory",
                operation: Operation::PurgeExpired
            })
        ));
        found(&store, &k).await;
        assert!(!store.capabilities().purge_expired);
    }

    /// The version in the cache for `k` (no slide: a bare fetch).
    async fn version(store: &MemoryStore, k: &SessionKey) -> Arc<Record> {
        store.shared.cache.get(k).await.expect("in the cache")
    }

    #[tokio::test]
    async fn read_and_touch_slide_in_place_without_a_new_version() {
        let store = MemoryStore::new();
        let k = key();
        // Initialized: the first read has no flag to clear either.
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        let before = version(&store, &k).await;
        let deadline = before.expires_at();
        let start = Instant::now();
        found(&store, &k).await;
        assert_eq!(store.touch(&k).await.unwrap(), TouchOutcome::Touched);
        let after = version(&store, &k).await;
        assert!(Arc::ptr_eq(&before, &after), "no cache write");
        assert!(after.expires_at() >= start + LONG, "slid");
        assert!(after.expires_at() >= deadline);

        // Locked: slid in place too, and reported with the holder.
        let token = locked(&store, &k).await;
        let held = version(&store, &k).await;
        let start = Instant::now();
        assert!(matches!(
            store.read(&k).await.unwrap(),
            ReadOutcome::Locked(info) if info.token == token
        ));
        assert!(Arc::ptr_eq(&held, &version(&store, &k).await));
        assert!(held.expires_at() >= start + LONG);
    }

    #[tokio::test]
    async fn a_replaced_version_is_never_slid_in_place() {
        let store = MemoryStore::new();
        let k = key();
        store.create(&k, &Items::new(), LONG, false).await.unwrap();
        let old = version(&store, &k).await;
        // A compute that keeps the version hands it back: it still slides in place.
        let stranger = LockToken::generate().unwrap();
        let lost = store
            .commit(&k, stranger, &Delta::new(), LONG)
            .await
            .unwrap();
        assert_eq!(lost, CommitOutcome::LockLost);
        assert_eq!(old.slide(Instant::now()), Slide::Slid);
        // One that replaces it leaves it claimed: a reader still holding it must ask a compute,
        // and its slide lands on the new version.
        locked(&store, &k).await;
        let new = version(&store, &k).await;
        assert!(!Arc::ptr_eq(&old, &new));
        assert_eq!(old.slide(Instant::now()), Slide::Claimed);
        assert_eq!(new.slide(Instant::now()), Slide::Slid);
        // Removed: claimed as well.
        store.delete(&k).await.unwrap();
        assert_eq!(new.slide(Instant::now()), Slide::Claimed);
    }

    #[tokio::test]
    async fn a_version_left_claimed_by_a_cancelled_compute_is_still_the_session() {
        let k = key();
        let store = seeded(&k).await;
        // A compute that claimed the version and was dropped before moka applied its step.
        let stuck = version(&store, &k).await;
        stuck.claim();
        assert_eq!(stuck.slide(Instant::now()), Slide::Claimed);
        // Reads fall back to a compute, which takes the claim over: the session is all there.
        assert_eq!(found(&store, &k).await.items["a"], value(b"1"));
        assert_eq!(store.touch(&k).await.unwrap(), TouchOutcome::Touched);
        // The compute stored a fresh version, which slides in place again.
        let next = version(&store, &k).await;
        assert!(!Arc::ptr_eq(&stuck, &next));
        found(&store, &k).await;
        assert!(Arc::ptr_eq(&next, &version(&store, &k).await));
    }

    #[tokio::test]
    async fn a_read_that_finds_a_session_expired_ends_it_for_good() {
        // No sweep during the test: the expired version stays in the cache.
        let store = MemoryStore::with_options(
            crate::MemoryOptions::new().with_maintenance_interval(Duration::from_secs(3600)),
        );
        let k = key();
        let short = Duration::from_millis(50);
        store.create(&k, &Items::new(), short, false).await.unwrap();
        let old = version(&store, &k).await;
        tokio::time::sleep(short + Duration::from_millis(30)).await;
        assert!(matches!(
            store.read(&k).await.unwrap(),
            ReadOutcome::Missing
        ));
        // A slower reader with an instant from before the deadline cannot revive it.
        let before_deadline = old.expires_at() - Duration::from_millis(1);
        assert_eq!(old.slide(before_deadline), Slide::Claimed);
        assert_eq!(store.touch(&k).await.unwrap(), TouchOutcome::Missing);
        let fresh = store.create(&k, &Items::new(), LONG, true).await.unwrap();
        assert_eq!(fresh, CreateOutcome::Created);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn initialize_is_reported_exactly_once_under_concurrent_reads_and_acquires() {
        let store = MemoryStore::new();
        for _ in 0..200 {
            let k = key();
            store.create(&k, &Items::new(), LONG, false).await.unwrap();
            let tasks: Vec<_> = (0..6)
                .map(|i| {
                    let (store, k) = (store.clone(), k.clone());
                    tokio::spawn(async move {
                        let mut reported = 0;
                        for _ in 0..4 {
                            let initialize = if i == 0 {
                                let token = LockToken::generate().unwrap();
                                let outcome = store.acquire(&k, token, LONG).await.unwrap();
                                let AcquireOutcome::Acquired(snapshot) = outcome else {
                                    continue;
                                };
                                store.release(&k, token).await.unwrap();
                                snapshot.initialize
                            } else {
                                match store.read(&k).await.unwrap() {
                                    ReadOutcome::Found(snapshot) => snapshot.initialize,
                                    ReadOutcome::Locked(_) => false,
                                    other => panic!("the session vanished: {other:?}"),
                                }
                            };
                            reported += usize::from(initialize);
                        }
                        reported
                    })
                })
                .collect();
            let mut reported = 0;
            for task in tasks {
                reported += task.await.unwrap();
            }
            assert_eq!(reported, 1, "the initialize flag is reported exactly once");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_read_slide_is_lost_to_a_concurrent_compute() {
        // Every read that returns has slid the session to at least its start + timeout, and the
        // computes racing it (write_concurrent, acquire, release; all with the same timeout) can
        // only move the deadline on from there: a version built from a deadline taken before the
        // slide would show up here as an earlier deadline.
        let store = MemoryStore::new();
        let k = key();
        store.create(&k, &Items::new(), LONG, false).await.unwrap();
        let writer = {
            let (store, k) = (store.clone(), k.clone());
            tokio::spawn(async move {
                let delta = Delta::new().with_set("n", value(b"1"));
                for _ in 0..2000 {
                    store.write_concurrent(&k, &delta, LONG).await.unwrap();
                    let token = LockToken::generate().unwrap();
                    store.acquire(&k, token, LONG).await.unwrap();
                    store.release(&k, token).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let reader = {
            let (store, k) = (store.clone(), k.clone());
            tokio::spawn(async move {
                // The latest deadline a returned read has promised; no version may fall short of it.
                let mut promised = Instant::now();
                for _ in 0..4000 {
                    let start = Instant::now();
                    if matches!(store.read(&k).await.unwrap(), ReadOutcome::Missing) {
                        panic!("the session vanished");
                    }
                    promised = promised.max(start + LONG);
                    let now = version(&store, &k).await.expires_at();
                    assert!(
                        now >= promised,
                        "a read's slide was lost: {:?} short",
                        promised - now
                    );
                }
                promised
            })
        };
        writer.await.unwrap();
        let promised = reader.await.unwrap();
        assert!(version(&store, &k).await.expires_at() >= promised);
    }
}
