//! The expiry sweep: finds sessions past their deadline within one maintenance interval, removes
//! them and so reports their end, without a store-wide structure on the hot path.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use moka::ops::compute::Op;
use session_core::SessionKey;

use crate::record::Fate;
use crate::store::{Claimed, Shared};

/// Sessions by the deadline they had when last scheduled: a lazy index. A session is scheduled
/// when it is stored under a key (`create`, `change_id`), not on every access: sliding would
/// otherwise take this store-wide lock on every operation. When its scheduled deadline comes, the
/// sweep looks at the session: past its current deadline, it is removed; slid meanwhile, it is
/// scheduled again at its current deadline. So a session costs one look per timeout, and is found
/// at most one maintenance interval after it expired.
///
/// Each session has one live entry, whose time its [`Slot`](crate::record::Slot) holds; older
/// entries (a removed or moved session, a recreated key, a timeout shortened by a commit) are
/// dropped when they come due. So the index holds at most one entry per session plus those of
/// sessions that ended within their timeout, and nothing while no maintenance task runs.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    /// A std mutex: held only to push or pop, never across an `.await`.
    heap: Mutex<BinaryHeap<Reverse<(Instant, SessionKey)>>>,
}

impl Deadlines {
    pub(crate) fn schedule(&self, at: Instant, key: SessionKey) {
        self.lock().push(Reverse((at, key)));
    }

    /// Takes every entry due at `now`.
    fn take_due(&self, now: Instant) -> Vec<(Instant, SessionKey)> {
        let mut heap = self.lock();
        let mut due = Vec::new();
        while heap.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            if let Some(Reverse(entry)) = heap.pop() {
                due.push(entry);
            }
        }
        due
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Reverse<(Instant, SessionKey)>>> {
        self.heap.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Shared {
    /// One sweep: removes every due session that is past its deadline (its version marked
    /// [`Fate::Expired`], so the eviction listener reports `EndReason::Expired` with its final
    /// items) and reschedules the ones that slid. Each look is one per-key compute, so the sweep
    /// never removes a session that an operation is sliding at the same moment.
    pub(crate) async fn sweep_expired(&self) {
        for (at, key) in self.deadlines.take_due(Instant::now()) {
            let mut slid_to = None;
            self.cache
                .entry_by_ref(&key)
                .and_compute_with(|entry| {
                    // Claimed before reading the clock, like every compute (`Shared::compute`).
                    let mut present = Claimed::take(entry.map(|e| e.into_value()));
                    let now = Instant::now();
                    present.judge(now);
                    let op = match (present.live(), present.record()) {
                        // Gone already (removed, moved, or evicted by moka).
                        (_, None) => Op::Nop,
                        // Slid meanwhile: look again at its new deadline, unless this entry is stale
                        // (a newer entry exists, or the session under this key is a new one).
                        (Some(record), _) => {
                            let expires_at = record.expires_at();
                            if record.slot.get() == Some(at) {
                                record.slot.set(expires_at);
                                slid_to = Some(expires_at);
                            }
                            present.restore();
                            Op::Nop
                        }
                        (None, Some(record)) => {
                            record.set_fate(Fate::Expired);
                            Op::Remove
                        }
                    };
                    std::future::ready(op)
                })
                .await;
            if let Some(at) = slid_to {
                self.deadlines.schedule(at, key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use session_core::{AppName, EndReason, Items, SessionId, SessionStore};

    use super::*;
    use crate::{MemoryOptions, MemoryStore};

    #[tokio::test]
    async fn the_sweep_removes_expired_sessions_and_reschedules_slid_ones() {
        // No background maintenance: the test runs the sweep itself.
        let store = MemoryStore::with_options(
            MemoryOptions::new().with_maintenance_interval(Duration::from_secs(3600)),
        );
        let mut events = store.expiry_events().await.unwrap();
        let app = AppName::new("/sweep").unwrap();
        let [expiring, slid, long] =
            [(); 3].map(|()| SessionKey::new(app.clone(), SessionId::generate().unwrap()));
        let short = Duration::from_millis(100);
        store
            .create(&expiring, &Items::new(), short, true)
            .await
            .unwrap();
        store
            .create(&slid, &Items::new(), short, true)
            .await
            .unwrap();
        store
            .create(&long, &Items::new(), Duration::from_secs(60), true)
            .await
            .unwrap();
        assert_eq!(store.shared.deadlines.len(), 3);

        tokio::time::sleep(Duration::from_millis(60)).await;
        store.touch(&slid).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        store.shared.sweep_expired().await;

        let event = events.next().await.unwrap();
        assert_eq!(
            (event.key, event.reason),
            (expiring.clone(), EndReason::Expired)
        );
        // `slid` is scheduled again at its new deadline, `long` was not due yet.
        assert_eq!(store.shared.deadlines.len(), 2);
        assert!(store.shared.cache.get(&expiring).await.is_none(), "removed");
        assert!(store.shared.cache.get(&slid).await.is_some(), "kept");
    }

    fn quiet_store() -> MemoryStore {
        // The task runs (so sweeps are scheduled) but, with an hour-long interval, never sweeps by
        // itself: the test calls the sweep.
        MemoryStore::with_options(
            MemoryOptions::new().with_maintenance_interval(Duration::from_secs(3600)),
        )
    }

    #[tokio::test]
    async fn stale_entries_are_dropped_not_rescheduled() {
        let store = quiet_store();
        let _events = store.expiry_events().await.unwrap();
        let key = crate::test_util::key_in("/stale");
        let short = Duration::from_millis(50);
        // The same key three times: created, expired, created again, slid.
        store
            .create(&key, &Items::new(), short, true)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        store
            .create(&key, &Items::new(), short, true)
            .await
            .unwrap();
        store.touch(&key).await.unwrap();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            store.touch(&key).await.unwrap();
            store.shared.sweep_expired().await;
        }
        assert!(
            store.shared.deadlines.len() <= 1,
            "one entry per live session, got {}",
            store.shared.deadlines.len()
        );
    }

    #[tokio::test]
    async fn a_shortened_timeout_is_swept_at_its_new_deadline() {
        let store = quiet_store();
        let mut events = store.expiry_events().await.unwrap();
        let key = crate::test_util::key_in("/shorter");
        store
            .create(&key, &Items::new(), Duration::from_secs(60), true)
            .await
            .unwrap();
        let token = crate::test_util::locked(&store, &key).await;
        store
            .commit(
                &key,
                token,
                &session_core::Delta::new(),
                Duration::from_millis(50),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        store.shared.sweep_expired().await;
        let event = tokio::time::timeout(Duration::from_millis(500), events.next())
            .await
            .expect("the sweep found the session at its shortened deadline")
            .unwrap();
        assert_eq!((event.key, event.reason), (key, EndReason::Expired));
    }
}
