//! The [`SessionStore`] operations of [`MemoryStore`]. Each one is a single decision taken inside
//! one moka per-key compute (`Shared::compute`): it sees the live version of the session, returns
//! the step to apply and the outcome to report, and nothing else can touch that key in between.
//! Release signals are sent after the compute returns, so that a woken waiter sees the change.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{
    AcquireOutcome, Capabilities, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, Error,
    ExpiryEvents, Items, LockToken, Operation, ReadOutcome, ReleaseOutcome, ReleaseWatch,
    RemoveOutcome, Result, SessionId, SessionKey, SessionStore, TouchOutcome,
};

use crate::change_id;
use crate::record::{Lock, Record, Settled};
use crate::store::{BACKEND, MemoryStore, Step};

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// `change_id`, expiry events and the release signal. Not `purge_expired`: the cache evicts
    /// expired sessions by itself.
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_change_id()
            .with_expiry_events()
            .with_release_signal()
    }

    async fn read(&self, key: &SessionKey) -> Result<ReadOutcome> {
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
        &self,
        key: &SessionKey,
        token: LockToken,
        lock_ttl: Duration,
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
                        let snapshot = record.snapshot().with_lock(token);
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
                // holder's retried commit or release is still recognised (SessionStore contract).
                let snapshot = record.snapshot().with_lock(token);
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
        &self,
        key: &SessionKey,
        token: LockToken,
        delta: &Delta,
        timeout: Duration,
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
                        next.settled = Some(Settled::Committed {
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
                match (&record.lock, &record.settled) {
                    (Some(lock), _) if lock.token == token => {
                        let mut next = record.successor(now);
                        next.lock = None;
                        next.settled = Some(Settled::Released { token });
                        (Step::Update(next), (ReleaseOutcome::Released, true))
                    }
                    (_, Some(settled)) if settled.repeats_release(token) => {
                        (Step::Keep, (ReleaseOutcome::Released, false))
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
        &self,
        key: &SessionKey,
        items: &Items,
        timeout: Duration,
        initialized: bool,
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
        self.inner()
            .compute(key, Operation::Touch, |current, now| match current {
                None => (Step::Keep, TouchOutcome::Missing),
                Some(record) => (Step::Update(record.successor(now)), TouchOutcome::Touched),
            })
            .await
    }

    async fn write_concurrent(
        &self,
        key: &SessionKey,
        delta: &Delta,
        timeout: Duration,
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
        &self,
        key: &SessionKey,
        new_id: SessionId,
        token: LockToken,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    async fn retried_commit_and_release_report_success_without_applying() {
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
        // A different write by the released holder is stale (SPEC §2 rule 1).
        assert_eq!(commit(other).await, CommitOutcome::LockLost);
        assert_eq!(
            store.release(&k, token).await.unwrap(),
            ReleaseOutcome::LockLost
        );

        let token = locked(&store, &k).await;
        assert_eq!(
            store.release(&k, token).await.unwrap(),
            ReleaseOutcome::Released
        );
        assert_eq!(
            store.release(&k, token).await.unwrap(),
            ReleaseOutcome::Released
        );
        // A new acquisition does not end the retry window, and the retry leaves its lock alone;
        // the new holder's own release does end it.
        let newer = locked(&store, &k).await;
        assert_eq!(
            store.release(&k, token).await.unwrap(),
            ReleaseOutcome::Released
        );
        assert_eq!(
            store.release(&k, newer).await.unwrap(),
            ReleaseOutcome::Released
        );
        assert_eq!(
            store.release(&k, token).await.unwrap(),
            ReleaseOutcome::LockLost
        );
    }

    #[tokio::test]
    async fn stale_lock_is_taken_over_and_the_old_holder_loses() {
        let store = MemoryStore::new();
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        let ttl = Duration::from_millis(100);
        let AcquireOutcome::Acquired(first) = store
            .acquire(&k, LockToken::generate().unwrap(), ttl)
            .await
            .unwrap()
        else {
            panic!("not acquired");
        };
        let old = first.lock.unwrap();
        assert!(matches!(
            store.acquire(&k, LockToken::generate().unwrap(), ttl).await.unwrap(),
            AcquireOutcome::Locked(info) if info.token == old && info.age < ttl
        ));
        tokio::time::sleep(ttl).await;
        let AcquireOutcome::Acquired(second) = store
            .acquire(&k, LockToken::generate().unwrap(), ttl)
            .await
            .unwrap()
        else {
            panic!("stale lock not taken over");
        };
        assert_ne!(second.lock, Some(old));
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
}
