//! The two signals of the memory store: lock releases (so waiters wake at once instead of polling)
//! and session ends (expiry events, ASP.NET `Session_End`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use session_core::{EndReason, ExpiryEvent, ReleaseWatch, SessionKey};
use tokio::sync::broadcast;

use crate::shard::Ends;

/// The release channel's buffer: how many releases (of any session) a pending release watch may
/// fall behind before it lags. A watch that lags simply wakes, and its waiter looks at its session
/// again (a spurious wake is allowed), so a small buffer costs at most an extra look. The expiry
/// events have their own buffer, `MemoryOptions::with_event_capacity`.
pub(crate) const CHANNEL_CAPACITY: usize = 1024;

/// How many due entries the expiry sweep looks at per batch (per shard lock).
const SWEEP_BATCH: usize = 64;

/// Both channels. Owned by the store's shared state: when the store goes, subscriptions end.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Keys whose lock was just released. One channel for all keys, filtered by each watch: a
    /// release is a single send, and a watch costs no map entry that would need cleaning up.
    releases: broadcast::Sender<SessionKey>,
    /// How many release watches are pending: a release with none sends nothing, without
    /// touching the channel's lock.
    watches: Arc<AtomicUsize>,
    events: broadcast::Sender<ExpiryEvent>,
    /// The events channel's buffer, per subscriber.
    event_capacity: usize,
    /// Whether anybody ever subscribed to the events: until then an end builds no event and
    /// takes no lock.
    events_wanted: AtomicBool,
}

/// Counts one pending watch while it lives.
struct Watching(Arc<AtomicUsize>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Signals {
    /// `event_capacity`: how many expiry events (each holding its session's final items) a slow
    /// subscriber may fall behind before it misses some.
    pub(crate) fn new(event_capacity: usize) -> Self {
        Self {
            releases: broadcast::channel(CHANNEL_CAPACITY).0,
            watches: Arc::new(AtomicUsize::new(0)),
            events: broadcast::channel(event_capacity.max(1)).0,
            event_capacity: event_capacity.max(1),
            events_wanted: AtomicBool::new(false),
        }
    }

    /// Wakes the watches of `key`. Called only after the change is made and its shard lock let
    /// go, so that a woken waiter that looks again sees the lock gone.
    ///
    /// A watch made before the waiter's look at the session is counted before that look; the
    /// look and the release both lock the session's shard, so a release the look did not see
    /// sees the count.
    pub(crate) fn released(&self, key: &SessionKey) {
        if self.watches.load(Ordering::SeqCst) > 0 {
            // An error only means that every watch went away meanwhile.
            let _ = self.releases.send(key.clone());
        }
    }

    /// A watch that completes on the next release of `key` after this call. It subscribes (and
    /// is counted) before returning, so a release between the caller's attempt and its wait is
    /// not missed.
    pub(crate) fn watch(&self, key: &SessionKey) -> ReleaseWatch {
        let mut releases = self.releases.subscribe();
        self.watches.fetch_add(1, Ordering::SeqCst);
        let watching = Watching(Arc::clone(&self.watches));
        let key = key.clone();
        ReleaseWatch::new(async move {
            let _watching = watching;
            loop {
                match releases.recv().await {
                    Ok(released) if released == key => return,
                    Ok(_) => {}
                    // Lagged: our key may have been among the skipped ones. Closed: the store is
                    // gone. Either way the waiter must look again.
                    Err(_) => return,
                }
            }
        })
    }

    /// Whether somebody may receive expiry events now.
    fn events_listened(&self) -> bool {
        self.events_wanted.load(Ordering::SeqCst) && self.events.receiver_count() > 0
    }

    /// How many due entries one batch of the expiry sweep may take: with a subscriber, no more
    /// than the half of the event buffer that [`wait_for_room`](Self::wait_for_room) keeps free,
    /// so that a batch never pushes out an event the subscriber has not read.
    pub(crate) fn sweep_batch(&self) -> usize {
        if self.events_wanted.load(Ordering::Relaxed) {
            SWEEP_BATCH.min(self.event_capacity - self.event_capacity / 2)
        } else {
            SWEEP_BATCH
        }
    }

    /// The expiry sweep's backpressure: while a subscriber has more than half the event buffer
    /// unread, yields to it (a few times, then in 1 ms sleeps) until it has caught up. Gives up
    /// at `give_up_at`, set to `patience` from the first wait of this sweep; once past it, returns
    /// at once for the rest of the sweep (the subscriber is stuck: it will miss events, and the
    /// sweep must go on). Off the request path: only the maintenance task sweeps this way.
    pub(crate) async fn wait_for_room(&self, give_up_at: &mut Option<Instant>, patience: Duration) {
        let half = self.event_capacity / 2;
        let mut yields = 0_u32;
        while self.events_listened() && self.events.len() > half {
            let now = Instant::now();
            if now >= *give_up_at.get_or_insert(now + patience) {
                return;
            }
            if yields < 64 {
                yields += 1;
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// How many release watches are pending (`MemoryStore::stats`).
    pub(crate) fn pending_watches(&self) -> usize {
        self.watches.load(Ordering::SeqCst)
    }

    /// How many expiry events the slowest subscriber has not received yet, at most the event
    /// buffer (`MemoryStore::stats`).
    pub(crate) fn buffered_events(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<ExpiryEvent> {
        self.events_wanted.store(true, Ordering::SeqCst);
        self.events.subscribe()
    }

    /// Reports sessions that ended: an expiry event each, with the final items, for
    /// [`EndReason::Expired`] (past the deadline, or evicted for capacity) and
    /// [`EndReason::Removed`] (`remove`, `delete`). An end by expiry also wakes the key's release
    /// watches if it was locked; operations signal their own releases.
    pub(crate) fn ended(&self, ends: Ends) {
        for end in ends {
            if end.reason == EndReason::Expired && end.locked {
                self.released(&end.key);
            }
            if self.events_listened() {
                // An error only means that every subscriber went away meanwhile.
                let _ = self
                    .events
                    .send(ExpiryEvent::new(end.key, end.items, end.reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use session_core::{AppName, Delta, ExpiryEvents, ItemValue, Items, SessionId, SessionStore};

    use crate::{MemoryOptions, MemoryStore};

    use crate::test_util::{LONG, locked};

    fn key() -> SessionKey {
        SessionKey::new(AppName::default(), SessionId::generate().unwrap())
    }

    #[tokio::test]
    async fn watch_filters_by_key_and_wakes_on_lag() {
        let signals = Signals::new(CHANNEL_CAPACITY);
        let (a, b) = (key(), key());
        let watch = signals.watch(&a);
        signals.released(&b);
        let waiting = tokio::spawn(watch);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "woke for another key");
        signals.released(&a);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();

        let lagging = signals.watch(&a);
        for _ in 0..=CHANNEL_CAPACITY {
            signals.released(&b);
        }
        tokio::time::timeout(Duration::from_secs(1), lagging)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn ends_become_events_and_wake_the_waiters_of_a_locked_session_that_expired() {
        let signals = Signals::new(CHANNEL_CAPACITY);
        let k = key();
        let end = |reason, locked| crate::shard::End {
            key: k.clone(),
            items: Arc::new(Items::new()),
            reason,
            locked,
        };
        // Nobody subscribed yet: nothing is built or sent.
        signals.ended(vec![end(EndReason::Removed, false)]);
        let mut events = signals.subscribe_events();
        assert!(events.try_recv().is_err());
        for (reason, locked, wakes) in [
            (EndReason::Removed, false, false),
            (EndReason::Removed, true, false),
            (EndReason::Expired, false, false),
            (EndReason::Expired, true, true),
        ] {
            let mut watch = signals.watch(&k);
            signals.ended(vec![end(reason, locked)]);
            assert_eq!(events.try_recv().unwrap().reason, reason);
            let woke = tokio::time::timeout(Duration::from_millis(20), &mut watch)
                .await
                .is_ok();
            assert_eq!(woke, wakes, "{reason:?}, locked: {locked}");
        }
        assert_eq!(
            signals.watches.load(Ordering::SeqCst),
            0,
            "every watch uncounted"
        );
    }

    /// Asserts that `watch` completes within 200 ms (at once, in practice: no polling).
    async fn wakes(watch: ReleaseWatch) {
        tokio::time::timeout(Duration::from_millis(200), watch)
            .await
            .expect("the watch did not wake");
    }

    /// Asserts that `watch` is still pending after 50 ms.
    async fn sleeps(watch: &mut ReleaseWatch) {
        let pending = tokio::time::timeout(Duration::from_millis(50), watch).await;
        assert!(pending.is_err(), "the watch woke without a release");
    }

    #[tokio::test]
    async fn watch_release_wakes_on_every_kind_of_release() {
        let store = MemoryStore::new();
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();

        let token = locked(&store, &k).await;
        let mut watch = store.watch_release(&k).await.unwrap();
        store.read(&k).await.unwrap();
        store.touch(&k).await.unwrap();
        sleeps(&mut watch).await;
        store.release(&k, token).await.unwrap();
        wakes(watch).await;

        let token = locked(&store, &k).await;
        let watch = store.watch_release(&k).await.unwrap();
        store.commit(&k, token, &Delta::new(), LONG).await.unwrap();
        wakes(watch).await;

        let token = locked(&store, &k).await;
        let watch = store.watch_release(&k).await.unwrap();
        let new_id = SessionId::generate().unwrap();
        store.change_id(&k, new_id, token).await.unwrap();
        wakes(watch).await;

        let moved = k.with_id(new_id);
        let watch = store.watch_release(&moved).await.unwrap();
        store.remove(&moved, token).await.unwrap();
        wakes(watch).await;
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_a_locked_session_expires() {
        let store = MemoryStore::new();
        let k = key();
        store
            .create(&k, &Items::new(), Duration::from_millis(100), true)
            .await
            .unwrap();
        locked(&store, &k).await;
        let watch = store.watch_release(&k).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), watch)
            .await
            .expect("expiry did not wake the waiter");
    }

    async fn next_event(events: &mut ExpiryEvents, within: Duration) -> Option<ExpiryEvent> {
        tokio::time::timeout(within, events.next())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn an_expired_session_is_reported_with_its_final_items() {
        let store = MemoryStore::new();
        let mut events = store.expiry_events().await.unwrap();
        let k = key();
        let timeout = Duration::from_millis(200);
        store
            .create(&k, &Items::new(), timeout, true)
            .await
            .unwrap();
        let token = locked(&store, &k).await;
        let last = Delta::new().with_set("cart", ItemValue::from_bytes(&b"3 items"[..]));
        store.commit(&k, token, &last, timeout).await.unwrap();
        let started = Instant::now();

        let event = next_event(&mut events, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(event.key, k);
        assert_eq!(event.reason, EndReason::Expired);
        assert_eq!(event.items["cart"].as_bytes(), b"3 items");
        // Timeout plus at most about one maintenance interval.
        assert!(
            started.elapsed() < timeout + Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        assert!(
            next_event(&mut events, Duration::from_millis(300))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn changing_a_session_reports_nothing_and_removal_reports_removed() {
        let store = MemoryStore::new();
        let mut events = store.expiry_events().await.unwrap();
        let k = key();
        store.create(&k, &Items::new(), LONG, false).await.unwrap();
        for _ in 0..20 {
            store.read(&k).await.unwrap();
            store.touch(&k).await.unwrap();
            let token = locked(&store, &k).await;
            let d = Delta::new().with_set("n", ItemValue::from_bytes(&b"1"[..]));
            store.write_concurrent(&k, &d, LONG).await.unwrap();
            store.commit(&k, token, &d, LONG).await.unwrap();
        }
        let token = locked(&store, &k).await;
        let moved = k.with_id(SessionId::generate().unwrap());
        store.change_id(&k, *moved.id(), token).await.unwrap();
        assert!(
            next_event(&mut events, Duration::from_millis(300))
                .await
                .is_none()
        );

        store.remove(&moved, token).await.unwrap();
        let event = next_event(&mut events, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!((event.key, event.reason), (moved, EndReason::Removed));
        assert_eq!(event.items.len(), 1);

        let other = key();
        store
            .create(&other, &Items::new(), LONG, true)
            .await
            .unwrap();
        store.delete(&other).await.unwrap();
        let event = next_event(&mut events, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!((event.key, event.reason), (other, EndReason::Removed));
    }

    #[tokio::test]
    async fn an_expired_session_overwritten_by_create_is_reported_once() {
        // No maintenance during the test: the expired session is still in the store when the new
        // session takes its key.
        let store = MemoryStore::with_options(
            MemoryOptions::new().with_maintenance_interval(Duration::from_secs(3600)),
        );
        let mut events = store.expiry_events().await.unwrap();
        let k = key();
        let old = Items::from([("old".to_owned(), ItemValue::from_bytes(&b"1"[..]))]);
        store
            .create(&k, &old, Duration::from_millis(50), true)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        let event = next_event(&mut events, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(event.reason, EndReason::Expired);
        assert!(event.items.contains_key("old"));
        assert!(
            next_event(&mut events, Duration::from_millis(200))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn eviction_for_capacity_ends_the_oldest_session() {
        let store = MemoryStore::with_options(MemoryOptions::new().with_max_sessions(1));
        let mut events = store.expiry_events().await.unwrap();
        let (first, second) = (key(), key());
        store
            .create(&first, &Items::new(), LONG, true)
            .await
            .unwrap();
        store
            .create(&second, &Items::new(), LONG, true)
            .await
            .unwrap();
        let event = next_event(&mut events, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!((event.key, event.reason), (first, EndReason::Expired));
        assert!(matches!(
            store.read(&second).await.unwrap(),
            session_core::ReadOutcome::Found(_)
        ));
    }

    #[tokio::test]
    async fn subscriptions_end_when_the_store_is_dropped() {
        let store = MemoryStore::new();
        let mut events = store.expiry_events().await.unwrap();
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        locked(&store, &k).await;
        let watch = store.watch_release(&k).await.unwrap();
        drop(store);
        let closed = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
        assert!(matches!(closed, Ok(None)), "the event stream did not end");
        // A waiter must look again (and find the store gone) rather than hang.
        wakes(watch).await;
    }

    #[tokio::test]
    async fn a_slow_subscriber_keeps_only_the_configured_number_of_events() {
        let store = MemoryStore::with_options(MemoryOptions::new().with_event_capacity(2));
        let mut events = store.expiry_events().await.unwrap();
        let mut keys = Vec::new();
        for _ in 0..5 {
            let k = crate::test_util::key_in("/slow");
            store.create(&k, &Items::new(), LONG, true).await.unwrap();
            store.delete(&k).await.unwrap();
            keys.push(k);
        }
        let mut got = Vec::new();
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(200), events.next()).await
        {
            got.push(e.key);
        }
        assert_eq!(
            got,
            keys[3..],
            "only the newest two events are kept for a slow subscriber"
        );
    }
}
