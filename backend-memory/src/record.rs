//! What the store keeps per session, and the refresh-window rule that slides its deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{Delta, Items, LockInfo, LockToken, RefreshWindow, Snapshot};

/// A held lock. Its age is measured on the store's clock, [`std::time::Instant`]
/// (docs/contract.md §2 rule 5), the clock every deadline of this store is on too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lock {
    pub(crate) token: LockToken,
    pub(crate) since: Instant,
}

impl Lock {
    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }

    pub(crate) fn info(&self, now: Instant) -> LockInfo {
        LockInfo::new(self.token, self.age(now))
    }
}

/// The session's last successful `commit` (the settled record of docs/contract.md §2, "Repeated
/// calls"). A `commit` repeated with exactly these arguments is a retry of that commit whose reply
/// was lost: it reports `Committed` again and applies nothing. Anything else from that token is a
/// stale holder and gets `LockLost` (docs/contract.md §2 rule 1).
///
/// The rule, the same in every backend of this workspace: only the next successful `commit`
/// replaces the record; `acquire` and `release` leave it, so the retry is still recognised after
/// another request acquired and released the lock in between. Releases record nothing: a retried
/// release is settled by the retry layer.
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    pub(crate) token: LockToken,
    /// Compared on a retry, so that a second, different commit by a released holder is rejected
    /// instead of being reported as done.
    pub(crate) delta: Arc<Delta>,
    pub(crate) timeout: Duration,
}

impl Settled {
    pub(crate) fn repeats_commit(
        &self, token: LockToken, delta: &Delta, timeout: Duration,
    ) -> bool {
        self.token == token && *self.delta == *delta && self.timeout == timeout
    }
}

/// Where a session sits in its shard's deadline index (`shard::Shard`): the time the expiry sweep
/// looks at it next, and a sequence number that makes the index key unique.
pub(crate) type Due = (Instant, u64);

/// One session, changed in place under its shard's lock.
#[derive(Debug)]
pub(crate) struct Record {
    /// Shared with every snapshot handed out; a write copies the map only while a snapshot still
    /// holds it (`Arc::make_mut`), and never copies encoded values.
    pub(crate) items: Arc<Items>,
    /// The session's own idle timeout.
    pub(crate) timeout: Duration,
    /// Past this instant the session does not exist for any operation, whether or not the sweep
    /// has removed it yet.
    pub(crate) expires_at: Instant,
    pub(crate) lock: Option<Lock>,
    /// The last successful commit ([`Settled`]), so that its retry is recognised; replaced only by
    /// the next commit.
    pub(crate) settled: Option<Settled>,
    /// Created uninitialized and not yet returned by a `read`/`acquire` (docs/contract.md §2
    /// rule 3). Cleared by the first one, under the shard lock, so it is reported exactly once.
    pub(crate) initialize: bool,
    /// This session's entry in the deadline index. Never later than `expires_at`: reads slide
    /// `expires_at` without touching the index, and the sweep moves the entry on when it comes
    /// due early; a write that moves `expires_at` before it moves the entry back.
    pub(crate) due: Due,
    /// When the session was last used, on the store's recency clock; its key in the shard's
    /// recency index. Kept only when the store has a capacity bound (0 otherwise).
    pub(crate) used: u64,
}

/// `now + timeout`, saturating instead of panicking for absurd timeouts.
pub(crate) fn deadline(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .or_else(|| now.checked_add(session_core::MAX_SESSION_TIMEOUT))
        .unwrap_or(now)
}

impl Record {
    /// A new session, as `create` stores it: it expires at `now + timeout + w`.
    pub(crate) fn new(
        items: Arc<Items>, timeout: Duration, now: Instant, initialize: bool, window: RefreshWindow,
    ) -> Self {
        let expires_at = deadline(now, window.slide_to(timeout));
        Self {
            items,
            timeout,
            expires_at,
            lock: None,
            settled: None,
            initialize,
            due: (expires_at, 0),
            used: 0,
        }
    }

    /// Whether the session exists at `now`.
    pub(crate) fn is_live(&self, now: Instant) -> bool {
        self.expires_at > now
    }

    /// An access (docs/contract.md §1): leaves `expires_at >= now + timeout`. A deadline that is
    /// already that far changes nothing; otherwise it moves to `now + timeout + w`. With
    /// [`RefreshWindow::EXACT`] every access moves it to `now + timeout`. A slide never moves the
    /// deadline back (the deadline index relies on it; with one window per store and `now` read
    /// under the shard lock it never would anyway).
    pub(crate) fn slide(&mut self, now: Instant, window: RefreshWindow) {
        let remaining = self.expires_at.saturating_duration_since(now);
        if window.slide_due(remaining, self.timeout) {
            self.expires_at = self
                .expires_at
                .max(deadline(now, window.slide_to(self.timeout)));
        }
    }

    /// A write (`commit`, `write_concurrent`): applies `delta`, stores `timeout`, and sets the
    /// deadline to `now + timeout + w`, as every write does.
    pub(crate) fn write(
        &mut self, now: Instant, delta: &Delta, timeout: Duration, window: RefreshWindow,
    ) {
        apply(&mut self.items, delta);
        self.timeout = timeout;
        self.expires_at = deadline(now, window.slide_to(timeout));
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot::new(Arc::clone(&self.items), self.timeout).with_initialize(self.initialize)
    }

    /// Whether `token` holds the lock.
    pub(crate) fn held_by(&self, token: LockToken) -> bool {
        self.lock.is_some_and(|l| l.token == token)
    }
}

/// Applies `delta` to `items`: the same result as [`Delta::apply_to`] (`cleared`, then
/// `removed`, then `set`). An empty delta changes nothing. The map is copied only if a snapshot
/// still shares it (names and `Arc`s of values, never the encoded bytes); an item set over an
/// existing one keeps its name instead of allocating a new one.
pub(crate) fn apply(items: &mut Arc<Items>, delta: &Delta) {
    if delta.is_empty() {
        return;
    }
    if delta.cleared {
        match Arc::get_mut(items) {
            Some(map) => map.clear(),
            None => *items = Arc::new(Items::new()),
        }
    }
    let map = Arc::make_mut(items);
    for name in &delta.removed {
        map.remove(name);
    }
    for (name, value) in &delta.set {
        if let Some(slot) = map.get_mut(name) {
            slot.clone_from(value);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::ItemValue;

    fn items(pairs: &[(&str, &[u8])]) -> Arc<Items> {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ItemValue::from_bytes(v.to_vec())))
                .collect(),
        )
    }

    #[test]
    fn a_write_copies_items_only_while_a_snapshot_shares_them() {
        let now = Instant::now();
        let w = RefreshWindow::EXACT;
        let mut r = Record::new(items(&[("a", b"1")]), Duration::from_secs(1), now, false, w);
        let held = Arc::clone(&r.items);
        r.write(now, &Delta::new(), Duration::from_secs(5), w);
        assert!(
            Arc::ptr_eq(&held, &r.items),
            "an empty delta shares the map"
        );
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!(r.expires_at, now + Duration::from_secs(5));

        let delta = Delta::new().with_set("b", ItemValue::from_bytes(&b"2"[..]));
        r.write(now, &delta, Duration::from_secs(1), w);
        assert!(!Arc::ptr_eq(&held, &r.items), "copied: a snapshot holds it");
        assert_eq!(held.len(), 1, "the snapshot is untouched");
        assert_eq!(r.items.len(), 2);
        // Values are shared, not copied.
        assert!(std::ptr::eq(held["a"].as_bytes(), r.items["a"].as_bytes()));
        drop(held);
        let before = Arc::as_ptr(&r.items);
        let delta = Delta::new().with_set("c", ItemValue::from_bytes(&b"3"[..]));
        r.write(now, &delta, Duration::from_secs(1), w);
        assert_eq!(
            Arc::as_ptr(&r.items),
            before,
            "nobody shares it: changed in place"
        );
        assert_eq!(r.items.len(), 3);
    }

    #[test]
    fn a_write_applies_the_delta_as_delta_apply_to_does() {
        let base = items(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
        let v = |b: &[u8]| ItemValue::from_bytes(b.to_vec());
        let deltas = [
            Delta::new().with_set("a", v(b"x")),
            Delta::new().with_set("d", v(b"4")).with_set("b", v(b"y")),
            Delta::new().with_removed("c").with_set("a", v(b"z")),
            Delta::new().with_removed("a").with_set("a", v(b"back")),
            Delta::new().with_cleared().with_set("b", v(b"only")),
            // Public fields allow a name in both: removed first, then set.
            {
                let mut d = Delta::new().with_set("b", v(b"both"));
                d.removed.insert("b".to_owned());
                d
            },
        ];
        for delta in deltas {
            let mut expected = Items::clone(&base);
            delta.apply_to(&mut expected);
            // Shared (a snapshot holds it) and unshared.
            let mut shared = Arc::clone(&base);
            apply(&mut shared, &delta);
            assert_eq!(*shared, expected, "{delta:?}");
            let mut owned = Arc::new(Items::clone(&base));
            apply(&mut owned, &delta);
            assert_eq!(*owned, expected, "{delta:?}");
        }
        assert_eq!(base.len(), 3, "the shared map is untouched");
        assert_eq!(base["a"], v(b"1"));
    }

    #[test]
    fn slides_follow_the_refresh_window() {
        let now = Instant::now();
        let timeout = Duration::from_secs(100);
        let lazy = RefreshWindow::DEFAULT;
        let mut r = Record::new(items(&[]), timeout, now, false, lazy);
        // Created at now + timeout + w.
        assert_eq!(r.expires_at, now + Duration::from_secs(110));
        // Inside the window: nothing moves.
        let later = now + Duration::from_secs(5);
        r.slide(later, lazy);
        assert_eq!(r.expires_at, now + Duration::from_secs(110));
        // Past it: slid to later + timeout + w.
        let later = now + Duration::from_secs(20);
        r.slide(later, lazy);
        assert_eq!(r.expires_at, later + Duration::from_secs(110));
        // Exact: every access slides to now + timeout.
        let mut r = Record::new(items(&[]), timeout, now, false, RefreshWindow::EXACT);
        assert_eq!(r.expires_at, now + timeout);
        let later = now + Duration::from_millis(1);
        r.slide(later, RefreshWindow::EXACT);
        assert_eq!(r.expires_at, later + timeout);
    }

    #[test]
    fn huge_timeouts_do_not_panic() {
        let now = Instant::now();
        let mut r = Record::new(
            items(&[]),
            Duration::MAX,
            now,
            false,
            RefreshWindow::DEFAULT,
        );
        assert!(r.is_live(now + Duration::from_secs(3600)));
        r.slide(now, RefreshWindow::EXACT);
        r.write(now, &Delta::new(), Duration::MAX, RefreshWindow::DEFAULT);
        assert!(r.is_live(now + Duration::from_secs(3600)));
    }

    #[test]
    fn settled_matches_only_exact_repeats() {
        let t = LockToken::generate().unwrap();
        let other = LockToken::generate().unwrap();
        let d = Delta::new().with_removed("x");
        let s = Settled {
            token: t,
            delta: Arc::new(d.clone()),
            timeout: Duration::from_secs(1),
        };
        assert!(s.repeats_commit(t, &d, Duration::from_secs(1)));
        assert!(!s.repeats_commit(t, &Delta::new(), Duration::from_secs(1)));
        assert!(!s.repeats_commit(t, &d, Duration::from_secs(2)));
        assert!(!s.repeats_commit(other, &d, Duration::from_secs(1)));
    }
}
