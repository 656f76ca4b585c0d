//! The [`SessionStore`] operations of [`MemoryStore`]. Each one is a single decision taken under
//! its session's shard lock (`Shared::visit`): it sees the live session, changes it in place or
//! ends it, and returns the outcome; nothing else can touch that session in between, and there is
//! no `.await` inside, so a dropped caller never leaves an operation half done. Release signals
//! and expiry events are sent after the lock is let go, so that a woken waiter sees the change.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{
    AcquireOutcome, Capabilities, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, EndReason,
    Error, ExpiryEvents, Items, LockToken, Operation, ReadOutcome, RefreshWindow, ReleaseOutcome,
    ReleaseWatch, RemoveOutcome, Result, SessionId, SessionKey, SessionStore, TouchOutcome,
};

use crate::change_id;
use crate::record::{Lock, Record, Settled};
use crate::shard::Step;
use crate::store::{BACKEND, MemoryStore};

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// The window of [`MemoryOptions::refresh_window`](crate::MemoryOptions::refresh_window)
    /// (docs/contract.md §1).
    fn refresh_window(&self) -> RefreshWindow {
        self.shared.window()
    }

    /// `change_id`, expiry events and the release signal. Not `purge_expired`: the store removes
    /// expired sessions by itself.
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_change_id()
            .with_expiry_events()
            .with_release_signal()
    }

    async fn read(&self, key: &SessionKey) -> Result<ReadOutcome> {
        let shared = self.inner();
        let window = shared.window();
        Ok(shared.visit(key, |current, now| {
            let Some(record) = current else {
                return (Step::Keep, ReadOutcome::Missing);
            };
            // Slides even when locked.
            record.slide(now, window);
            let outcome = match record.lock {
                Some(lock) => ReadOutcome::Locked(lock.info(now)),
                None => {
                    let snapshot = record.snapshot();
                    record.initialize = false;
                    ReadOutcome::Found(snapshot)
                }
            };
            (Step::Keep, outcome)
        }))
    }

    async fn acquire(
        &self, key: &SessionKey, token: LockToken, lock_ttl: Duration,
    ) -> Result<AcquireOutcome> {
        let shared = self.inner();
        let window = shared.window();
        let (outcome, took_over) = shared.visit(key, |current, now| {
            let Some(record) = current else {
                return (Step::Keep, (AcquireOutcome::Missing, false));
            };
            record.slide(now, window);
            match record.lock {
                // A retry of our own acquire whose reply was lost: the lock is already ours.
                Some(lock) if lock.token == token => {}
                Some(lock) if lock.age(now) < lock_ttl => {
                    return (Step::Keep, (AcquireOutcome::Locked(lock.info(now)), false));
                }
                // Free or stale: taken in the same step. `settled` stays, so that the previous
                // holder's retried commit is still recognised (the rule at `Settled`).
                _ => {}
            }
            let took_over = record.lock.is_some_and(|lock| lock.token != token);
            if !record.held_by(token) {
                record.lock = Some(Lock { token, since: now });
            }
            let snapshot = record.snapshot();
            record.initialize = false;
            (Step::Keep, (AcquireOutcome::Acquired(snapshot), took_over))
        });
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
        let window = shared.window();
        let (outcome, released) = shared.visit(key, |current, now| {
            let Some(record) = current else {
                return (Step::Keep, (CommitOutcome::LockLost, false));
            };
            if record.held_by(token) {
                record.write(now, delta, timeout, window);
                record.lock = None;
                record.settled = Some(Settled {
                    token,
                    delta: Arc::new(delta.clone()),
                    timeout,
                });
                return (Step::Keep, (CommitOutcome::Committed, true));
            }
            // A retry of the commit that released this lock (possibly after another request
            // acquired it): report it, apply nothing, leave the new holder's lock alone.
            let outcome = match &record.settled {
                Some(settled) if settled.repeats_commit(token, delta, timeout) => {
                    CommitOutcome::Committed
                }
                _ => CommitOutcome::LockLost,
            };
            (Step::Keep, (outcome, false))
        });
        if released {
            shared.signals.released(key);
        }
        Ok(outcome)
    }

    async fn release(&self, key: &SessionKey, token: LockToken) -> Result<ReleaseOutcome> {
        let shared = self.inner();
        let window = shared.window();
        // `settled` stays (the rule at `Settled`); a repeat of this release finds the lock gone
        // and is `LockLost`, which the retry layer reads as `Released`.
        let outcome = shared.visit(key, |current, now| match current {
            Some(record) if record.held_by(token) => {
                record.slide(now, window);
                record.lock = None;
                (Step::Keep, ReleaseOutcome::Released)
            }
            _ => (Step::Keep, ReleaseOutcome::LockLost),
        });
        if outcome == ReleaseOutcome::Released {
            shared.signals.released(key);
        }
        Ok(outcome)
    }

    async fn create(
        &self, key: &SessionKey, items: &Items, timeout: Duration, initialized: bool,
    ) -> Result<CreateOutcome> {
        let shared = self.inner();
        let window = shared.window();
        // Copied before the shard lock is taken: under it, `create` only moves the copy in.
        let items = Arc::new(items.clone());
        let created = shared.create(key, |now| {
            Record::new(items, timeout, now, !initialized, window)
        });
        Ok(if created {
            CreateOutcome::Created
        } else {
            CreateOutcome::AlreadyExists
        })
    }

    async fn remove(&self, key: &SessionKey, token: LockToken) -> Result<RemoveOutcome> {
        let shared = self.inner();
        let outcome = shared.visit(key, |current, _| match current {
            None => (Step::Keep, RemoveOutcome::Missing),
            Some(record) if record.held_by(token) => {
                (Step::End(EndReason::Removed), RemoveOutcome::Removed)
            }
            Some(_) => (Step::Keep, RemoveOutcome::LockLost),
        });
        if outcome == RemoveOutcome::Removed {
            shared.signals.released(key);
        }
        Ok(outcome)
    }

    async fn touch(&self, key: &SessionKey) -> Result<TouchOutcome> {
        let shared = self.inner();
        let window = shared.window();
        Ok(shared.visit(key, |current, now| match current {
            None => (Step::Keep, TouchOutcome::Missing),
            Some(record) => {
                record.slide(now, window);
                (Step::Keep, TouchOutcome::Touched)
            }
        }))
    }

    async fn write_concurrent(
        &self, key: &SessionKey, delta: &Delta, timeout: Duration,
    ) -> Result<CommitOutcome> {
        let shared = self.inner();
        let window = shared.window();
        Ok(shared.visit(key, |current, now| match current {
            None => (Step::Keep, CommitOutcome::Missing),
            // Per-item merge onto the current items; the lock (and a pending initialize flag)
            // stay as they are.
            Some(record) => {
                record.write(now, delta, timeout, window);
                (Step::Keep, CommitOutcome::Committed)
            }
        }))
    }

    async fn delete(&self, key: &SessionKey) -> Result<RemoveOutcome> {
        let shared = self.inner();
        Ok(match shared.delete(key) {
            None => RemoveOutcome::Missing,
            Some(was_locked) => {
                if was_locked {
                    shared.signals.released(key);
                }
                RemoveOutcome::Removed
            }
        })
    }

    async fn change_id(
        &self, key: &SessionKey, new_id: SessionId, token: LockToken,
    ) -> Result<ChangeIdOutcome> {
        Ok(change_id::change_id(self.inner(), key, new_id, token))
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    use crate::test_util::{LONG, found, items, key_in, locked, value};

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

    /// The session's deadline as stored (no slide: a bare look under its shard lock).
    fn expires_at(store: &MemoryStore, k: &SessionKey) -> Instant {
        store
            .shared
            .with_shard(k, |shard| shard.get(k).map(|r| r.expires_at))
            .expect("in the store")
    }

    #[tokio::test]
    async fn reads_inside_the_window_leave_the_deadline_and_exact_slides_every_time() {
        let lazy = MemoryStore::new();
        let exact = MemoryStore::with_options(
            crate::MemoryOptions::new().with_refresh_window(RefreshWindow::EXACT),
        );
        assert_eq!(lazy.refresh_window(), RefreshWindow::DEFAULT);
        assert_eq!(exact.refresh_window(), RefreshWindow::EXACT);
        let timeout = Duration::from_secs(100);
        for store in [&lazy, &exact] {
            let k = key();
            let start = Instant::now();
            store
                .create(&k, &Items::new(), timeout, true)
                .await
                .unwrap();
            let created = expires_at(store, &k);
            let w = store.refresh_window().for_timeout(timeout);
            assert!(
                created >= start + timeout + w,
                "created at now + timeout + w"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            let before = Instant::now();
            found(store, &k).await;
            let read = expires_at(store, &k);
            assert!(
                read >= before + timeout,
                "every access leaves now + timeout"
            );
            if store.refresh_window().is_exact() {
                assert!(read > created, "w = 0 slides on every access");
            } else {
                assert_eq!(read, created, "inside the window a read writes nothing");
            }
        }
    }

    #[tokio::test]
    async fn an_operation_that_meets_an_expired_session_ends_it_at_once() {
        // No sweep during the test: only the read can find the session expired.
        let store = MemoryStore::with_options(
            crate::MemoryOptions::new().with_maintenance_interval(Duration::from_secs(3600)),
        );
        let mut events = store.expiry_events().await.unwrap();
        let k = key();
        let short = Duration::from_millis(50);
        store
            .create(&k, &items(&[("a", b"1")]), short, false)
            .await
            .unwrap();
        tokio::time::sleep(short * 2).await;
        assert!(matches!(
            store.read(&k).await.unwrap(),
            ReadOutcome::Missing
        ));
        let event = events.next().await.unwrap();
        assert_eq!(event.reason, session_core::EndReason::Expired);
        assert_eq!(event.items["a"], value(b"1"));
        assert!(store.shared.with_shard(&k, |shard| shard.get(&k).is_none()));
        assert_eq!(store.shared.with_shard(&k, |shard| shard.indexed()), (0, 0));
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
    async fn no_read_slide_is_lost_to_a_concurrent_write() {
        // Every read that returns has slid the session to at least its start + timeout, and the
        // writes racing it (write_concurrent, acquire, release; all with the same timeout) can
        // only move the deadline on from there: a write based on a deadline taken before the
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
                // The latest deadline a returned read has promised; the session may not fall short of it.
                let mut promised = Instant::now();
                for _ in 0..4000 {
                    let start = Instant::now();
                    if matches!(store.read(&k).await.unwrap(), ReadOutcome::Missing) {
                        panic!("the session vanished");
                    }
                    promised = promised.max(start + LONG);
                    let now = expires_at(&store, &k);
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
        assert!(expires_at(&store, &k) >= promised);
    }
}
