//! `change_id`, the only operation on two keys: the session moves from its id to a new one in one
//! step with both keys' shards locked (`Shared::with_pair`), keeping its data and its lock.

use session_core::{ChangeIdOutcome, LockToken, SessionId, SessionKey};

use crate::record::Record;
use crate::shard::Step;
use crate::store::Shared;

/// Moves the session locked by `token` from `key` to `new_id`: one decision over both keys. The
/// moved session keeps items, timeout, lock (same token and age), its settled commit and a pending
/// initialize flag, and slides its expiry. Synchronous: a caller that drops the future cannot stop
/// it between the two keys.
pub(crate) fn change_id(
    shared: &Shared, key: &SessionKey, new_id: SessionId, token: LockToken,
) -> ChangeIdOutcome {
    let holds = |record: &Record| record.held_by(token);
    if new_id == *key.id() {
        // The new id is the session's own: taken, unless the caller lost the session.
        return shared.visit(key, |current, _| match current {
            Some(record) if holds(record) => (Step::Keep, ChangeIdOutcome::AlreadyExists),
            _ => (Step::Keep, ChangeIdOutcome::LockLost),
        });
    }
    let new_key = key.with_id(new_id);
    let window = shared.window();
    let outcome = shared.with_pair(key, &new_key, |pair, now, tick, ends| {
        let old = pair.shard(false).peek(key, now, ends).map(holds);
        let new = pair.shard(true).peek(&new_key, now, ends).map(holds);
        match (old, new) {
            (Some(true), None) => {
                let Some((_, mut record)) = pair.shard(false).take(key) else {
                    return ChangeIdOutcome::LockLost;
                };
                record.slide(now, window);
                pair.shard(true).insert(new_key.clone(), record, tick);
                ChangeIdOutcome::Changed
            }
            (Some(true), Some(_)) => ChangeIdOutcome::AlreadyExists,
            // A retry of a move whose reply was lost: the session already sits under the new id
            // with our lock (tokens are unique per acquisition, so nobody else holds it).
            (None, Some(true)) => ChangeIdOutcome::Changed,
            _ => ChangeIdOutcome::LockLost,
        }
    });
    if outcome == ChangeIdOutcome::Changed {
        // Waiters on the old id look again and find it gone.
        shared.signals.released(key);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use session_core::{CommitOutcome, Delta, Items, ReadOutcome, SessionStore};

    use super::*;
    use crate::MemoryStore;

    use crate::test_util::{LONG, found, key_in, locked, seeded, value};

    fn key() -> SessionKey {
        key_in("/change-id")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn change_id_races_have_one_winner_and_never_lose_the_session() {
        let k = key();
        let store = seeded(&k).await;
        let token = locked(&store, &k).await;
        let new_ids: Vec<_> = (0..16).map(|_| SessionId::generate().unwrap()).collect();
        let tasks: Vec<_> = new_ids
            .iter()
            .map(|&id| {
                let (store, k) = (store.clone(), k.clone());
                tokio::spawn(async move { store.change_id(&k, id, token).await.unwrap() })
            })
            .collect();
        let mut winners = Vec::new();
        for (task, id) in tasks.into_iter().zip(&new_ids) {
            match task.await.unwrap() {
                ChangeIdOutcome::Changed => winners.push(*id),
                other => assert_eq!(other, ChangeIdOutcome::LockLost),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one move wins");
        assert!(matches!(
            store.read(&k).await.unwrap(),
            ReadOutcome::Missing
        ));
        for id in &new_ids {
            let there = store.read(&k.with_id(*id)).await.unwrap();
            assert_eq!(matches!(there, ReadOutcome::Locked(_)), *id == winners[0]);
        }
        // The lock moved with the data: the same token commits under the new id.
        let moved = k.with_id(winners[0]);
        let delta = Delta::new().with_set("b", value(b"2"));
        assert_eq!(
            store.commit(&moved, token, &delta, LONG).await.unwrap(),
            CommitOutcome::Committed
        );
        assert_eq!(found(&store, &moved).await.items.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crossed_and_colliding_change_ids_do_not_deadlock() {
        let store = MemoryStore::new();
        let (a, b) = (key(), key());
        for k in [&a, &b] {
            store.create(k, &Items::new(), LONG, true).await.unwrap();
        }
        let (ta, tb) = (locked(&store, &a).await, locked(&store, &b).await);
        // A -> B and B -> A at once, many times: both keys exist, so every call is AlreadyExists;
        // a lock-order bug would hang here.
        let crossed = async {
            for _ in 0..200 {
                let (s1, s2) = (store.clone(), store.clone());
                let (a1, b1, a2, b2) = (a.clone(), b.clone(), a.clone(), b.clone());
                let x = tokio::spawn(async move { s1.change_id(&a1, *b1.id(), ta).await });
                let y = tokio::spawn(async move { s2.change_id(&b2, *a2.id(), tb).await });
                assert_eq!(x.await.unwrap().unwrap(), ChangeIdOutcome::AlreadyExists);
                assert_eq!(y.await.unwrap().unwrap(), ChangeIdOutcome::AlreadyExists);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), crossed)
            .await
            .unwrap();
        // Its own id is taken, unless the caller does not hold the lock.
        let own = store.change_id(&a, *a.id(), ta).await.unwrap();
        assert_eq!(own, ChangeIdOutcome::AlreadyExists);
        let wrong = store.change_id(&a, *a.id(), tb).await.unwrap();
        assert_eq!(wrong, ChangeIdOutcome::LockLost);
        // A and B race to the same new id: one moves, the other finds it taken.
        let target = SessionId::generate().unwrap();
        let (s1, s2, a1, b1) = (store.clone(), store.clone(), a.clone(), b.clone());
        let x = tokio::spawn(async move { s1.change_id(&a1, target, ta).await.unwrap() });
        let y = tokio::spawn(async move { s2.change_id(&b1, target, tb).await.unwrap() });
        let mut outcomes = [x.await.unwrap(), y.await.unwrap()];
        outcomes.sort_by_key(|o| *o == ChangeIdOutcome::Changed);
        assert_eq!(
            outcomes,
            [ChangeIdOutcome::AlreadyExists, ChangeIdOutcome::Changed]
        );
    }

    #[tokio::test]
    async fn a_retried_change_id_reports_changed() {
        let k = key();
        let store = seeded(&k).await;
        let token = locked(&store, &k).await;
        let new_id = SessionId::generate().unwrap();
        assert_eq!(
            store.change_id(&k, new_id, token).await.unwrap(),
            ChangeIdOutcome::Changed
        );
        // The reply was lost; the retry finds the session already moved, with our lock.
        assert_eq!(
            store.change_id(&k, new_id, token).await.unwrap(),
            ChangeIdOutcome::Changed
        );
        // A stranger's token is still refused.
        assert_eq!(
            store
                .change_id(&k, new_id, LockToken::generate().unwrap())
                .await
                .unwrap(),
            ChangeIdOutcome::LockLost
        );
    }
}
