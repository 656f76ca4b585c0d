//! What the cache stores per session, and how moka learns each entry's own expiry.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moka::Expiry;
use session_core::{Delta, Items, LockInfo, LockToken, SessionKey, Snapshot};

/// A held lock. Its age is measured on the store's clock, [`std::time::Instant`] (docs/contract.md §2 rule 5);
/// it is the clock moka uses too, so expiry and lock age never disagree about "now".
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
    /// instead of being reported as done. Shared: successors copy the `Arc` only.
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

/// One version of a session. Versions are immutable once in the cache, except for their deadline
/// ([`Deadline`]): every change stores a new `Arc<Record>` through moka's per-key compute, which is
/// what makes each operation atomic, while a `read` or `touch` that changes nothing but the deadline
/// slides it in place, without a cache write (see [`Deadline`] for how the two stay atomic).
#[derive(Debug)]
pub(crate) struct Record {
    /// Shared with every snapshot handed out; replaced (copy on write) only by a non-empty delta.
    pub(crate) items: Arc<Items>,
    /// The session's own idle timeout; every access slides the deadline by it.
    pub(crate) timeout: Duration,
    /// Past this instant the session does not exist for any operation, whether or not moka has
    /// evicted it yet. Slid in place by `read` and `touch`; claimed by every per-key compute.
    deadline: Deadline,
    pub(crate) lock: Option<Lock>,
    /// The last successful commit ([`Settled`]), so that its retry is recognised; replaced only by
    /// the next commit.
    pub(crate) settled: Option<Settled>,
    /// Created uninitialized and not yet returned by a `read`/`acquire` (docs/contract.md §2 rule 3). Never
    /// changed in place: only a compute clears it, in the next version, so that it is reported
    /// exactly once; the in-place `read` leaves a version that has it set to the compute.
    pub(crate) initialize: bool,
    /// What the removal of this version from the cache means ([`Fate`]). Every step that removes or
    /// replaces a version sets it just before, so the last decision wins. The eviction listener
    /// reads it to tell a session that ended from one that merely got a new version or moved.
    fate: AtomicU8,
    /// When the expiry sweep will look at this session (shared by all its versions; a new session
    /// under the same key gets a new one). A sweep entry whose time is not the slot's is stale.
    pub(crate) slot: Arc<Slot>,
}

/// The deadline of one version, as nanoseconds since [`epoch`], in one atomic word whose top bit
/// ([`Deadline::CLAIMED`]) says that the version may no longer be slid in place.
///
/// The protocol that keeps in-place slides atomic with the per-key computes:
///
/// - Every compute **claims** the version it finds (`fetch_or` of the bit) *before* reading the
///   clock, decides on the deadline it took out, and then either **restores** it (a step that keeps
///   the version) or leaves it claimed (the version is replaced, removed or found expired). Computes
///   on one key are serialized by moka, so the claim only ever meets an unclaimed word, or one left
///   claimed by a version that is dead, or by a compute that was cancelled before moka applied its
///   step; in the last case the low bits are still the version's deadline, so the next compute
///   just takes it over.
/// - An in-place slide ([`Record::slide`]) is a compare-and-swap from an unclaimed, live deadline
///   to `now + timeout`. It fails on a claimed word, and the caller falls back to a compute.
/// - Whoever finds an unclaimed deadline past `now` claims it (the version is dead from then on),
///   so that no slower reader with an older `now` can revive a session that an operation has
///   already reported gone.
///
/// So a slide either happens before a compute's claim, which then sees it (and whose own `now` is
/// later than the slider's, as it reads the clock after claiming), or fails and retries through the
/// compute: no slide is lost under a new version, and no version is slid after it was replaced.
#[derive(Debug)]
struct Deadline(AtomicU64);

/// The origin of [`Deadline`] values: the first time a store (or a deadline) asked for it.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `at` in nanoseconds since [`epoch`], saturating at both ends: an instant before the epoch is 0,
/// one past the 63 bits of a deadline (292 years) is the largest deadline.
fn nanos(at: Instant) -> u64 {
    let since = at.saturating_duration_since(epoch()).as_nanos();
    u64::try_from(since).map_or(Deadline::VALUE, |n| n.min(Deadline::VALUE))
}

impl Deadline {
    const CLAIMED: u64 = 1 << 63;
    const VALUE: u64 = Self::CLAIMED - 1;

    fn new(at: Instant) -> Self {
        Self(AtomicU64::new(nanos(at)))
    }

    fn at(value: u64) -> Instant {
        epoch() + Duration::from_nanos(value & Self::VALUE)
    }
}

/// What an in-place slide ([`Record::slide`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slide {
    /// The version is current and live; its deadline is now at least `now + timeout`.
    Slid,
    /// The version is past its deadline, and now claimed as dead.
    Expired,
    /// A compute holds or replaced this version: decide through a compute.
    Claimed,
}

/// The time of a session's one live entry in the sweep's index (`deadlines`), if it has one.
#[derive(Debug, Default)]
pub(crate) struct Slot(std::sync::Mutex<Option<Instant>>);

impl Slot {
    pub(crate) fn get(&self) -> Option<Instant> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set(&self, at: Instant) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(at);
    }
}

/// What the removal of a version from the cache means, where moka's removal cause cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// No operation decided anything: if it is replaced, it was past its deadline and hidden by
    /// moka when a `create` or `change_id` reused its key.
    Live = 0,
    /// Replaced by its next version, or moved to another key by `change_id`: not an end.
    Retired = 1,
    /// Deleted by `remove` or `delete`.
    Removed = 2,
    /// Past its deadline: removed by the expiry sweep, or replaced by a new session.
    Expired = 3,
}

/// `now + timeout`, saturating instead of panicking for absurd timeouts.
pub(crate) fn deadline(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .or_else(|| now.checked_add(session_core::MAX_SESSION_TIMEOUT))
        .unwrap_or(now)
}

impl Record {
    pub(crate) fn new(
        items: Arc<Items>, timeout: Duration, now: Instant, initialize: bool,
    ) -> Self {
        Self {
            items,
            timeout,
            deadline: Deadline::new(deadline(now, timeout)),
            lock: None,
            settled: None,
            initialize,
            fate: AtomicU8::new(Fate::Live as u8),
            slot: Arc::new(Slot::default()),
        }
    }

    /// The version's deadline (claimed or not). Exact only while nothing slides it: inside a
    /// compute, or for a version not yet in the cache.
    pub(crate) fn expires_at(&self) -> Instant {
        Deadline::at(self.deadline.0.load(Ordering::Acquire))
    }

    /// Whether the version is unclaimed and live at `now`, without claiming it (moka's expiry
    /// policy asks this).
    fn is_open(&self, now: Instant) -> bool {
        let value = self.deadline.0.load(Ordering::Acquire);
        value & Deadline::CLAIMED == 0 && value > nanos(now)
    }

    /// Claims the version for a compute (see [`Deadline`]): no in-place slide succeeds until
    /// [`Record::restore`]. Returns the deadline it had, slides included. Called before the compute
    /// reads the clock.
    pub(crate) fn claim(&self) -> Instant {
        Deadline::at(
            self.deadline
                .0
                .fetch_or(Deadline::CLAIMED, Ordering::AcqRel),
        )
    }

    /// Ends a claim whose compute kept this live version: `deadline` is what [`Record::claim`]
    /// returned. Nothing else writes a claimed word, so this is a plain store.
    pub(crate) fn restore(&self, deadline: Instant) {
        self.deadline.0.store(nanos(deadline), Ordering::Release);
    }

    /// Slides the deadline in place to `now + timeout` if the version is unclaimed and live at
    /// `now` (the lock-free path of `read` and `touch`; see [`Deadline`]). `now` must be read
    /// before the version was fetched from the cache, so that moka's expiry (extended by that
    /// fetch, see [`SessionExpiry`]) covers the new deadline.
    pub(crate) fn slide(&self, now: Instant) -> Slide {
        let now_nanos = nanos(now);
        let slid = nanos(deadline(now, self.timeout));
        let cell = &self.deadline.0;
        let mut current = cell.load(Ordering::Acquire);
        loop {
            let next = if current & Deadline::CLAIMED != 0 {
                return Slide::Claimed;
            } else if current <= now_nanos {
                current | Deadline::CLAIMED
            } else if slid <= current {
                // Slid as far already (by a concurrent read with a later `now`).
                return Slide::Slid;
            } else {
                slid
            };
            match cell.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if next & Deadline::CLAIMED != 0 => return Slide::Expired,
                Ok(_) => return Slide::Slid,
                Err(actual) => current = actual,
            }
        }
    }

    /// The next version: the same session with its expiry slid by its stored timeout.
    pub(crate) fn successor(&self, now: Instant) -> Self {
        Self {
            items: Arc::clone(&self.items),
            timeout: self.timeout,
            deadline: Deadline::new(deadline(now, self.timeout)),
            lock: self.lock,
            settled: self.settled.clone(),
            initialize: self.initialize,
            fate: AtomicU8::new(Fate::Live as u8),
            slot: Arc::clone(&self.slot),
        }
    }

    /// The next version after a write: `delta` applied, `timeout` stored and slid by.
    pub(crate) fn written(&self, now: Instant, delta: &Delta, timeout: Duration) -> Self {
        let mut next = self.successor(now);
        next.items = self.apply(delta);
        next.timeout = timeout;
        next.deadline = Deadline::new(deadline(now, timeout));
        next
    }

    /// The items after `delta`. An empty delta shares the current map; otherwise the map is copied
    /// once (names and `Arc`s of values, never the encoded bytes) and changed.
    ///
    /// The same result as [`Delta::apply_to`] on the copy (`cleared`, then `removed`, then `set`),
    /// but an item that is set over an existing one keeps the copy's name instead of allocating a
    /// new one (`BTreeMap::insert` would clone the name only to drop it).
    fn apply(&self, delta: &Delta) -> Arc<Items> {
        if delta.is_empty() {
            return Arc::clone(&self.items);
        }
        let mut items = if delta.cleared {
            Items::new()
        } else {
            Items::clone(&self.items)
        };
        for name in &delta.removed {
            items.remove(name);
        }
        for (name, value) in &delta.set {
            if let Some(slot) = items.get_mut(name) {
                slot.clone_from(value);
            } else {
                items.insert(name.clone(), value.clone());
            }
        }
        Arc::new(items)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot::new(Arc::clone(&self.items), self.timeout).with_initialize(self.initialize)
    }

    pub(crate) fn set_fate(&self, fate: Fate) {
        self.fate.store(fate as u8, Ordering::Release);
    }

    pub(crate) fn fate(&self) -> Fate {
        match self.fate.load(Ordering::Acquire) {
            1 => Fate::Retired,
            2 => Fate::Removed,
            3 => Fate::Expired,
            _ => Fate::Live,
        }
    }
}

/// Tells moka each entry's remaining lifetime from the entry's own deadline (plus `grace`), on
/// create and update, so that moka evicts every session at its own sliding deadline. On a read of a
/// live, unclaimed version it makes room for the in-place slide that may follow (`read`, `touch`):
/// at least `timeout + grace` from the read, which covers `now + timeout` for a `now` read before
/// the fetch. A read of a claimed or expired version changes nothing.
///
/// Why the grace: moka's timer wheel evicts up to about a second late, and an entry that moka
/// considers expired is invisible to a compute, items and all. So the store's own sweep (see
/// `deadlines`) removes an expired session within a maintenance interval and reports it, while
/// moka still shows it; moka's eviction is the fallback when no sweep ran (no tokio runtime). Every
/// operation treats a session past its deadline as absent whether or not either has removed it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionExpiry {
    pub(crate) grace: Duration,
}

impl SessionExpiry {
    fn remaining(&self, value: &Record, at: Instant) -> Option<Duration> {
        let remaining = value.expires_at().saturating_duration_since(at);
        Some(remaining.saturating_add(self.grace))
    }

    /// On a read: leaves moka's timer alone while it already covers a slide from `read_at` with
    /// half the grace to spare (most reads of a busy session), so that moka does not reschedule
    /// its timer on every read; else moves it to `timeout + grace` from `read_at`.
    fn after_read(
        &self, value: &Record, read_at: Instant, current: Option<Duration>,
    ) -> Option<Duration> {
        if !value.is_open(read_at) {
            return current;
        }
        let wanted = value.timeout.saturating_add(self.grace);
        let enough = value.timeout.saturating_add(self.grace / 2);
        match current {
            Some(left) if left >= enough => current,
            _ => Some(wanted),
        }
    }
}

impl Expiry<SessionKey, Arc<Record>> for SessionExpiry {
    fn expire_after_create(
        &self, _key: &SessionKey, value: &Arc<Record>, created_at: Instant,
    ) -> Option<Duration> {
        self.remaining(value, created_at)
    }

    fn expire_after_read(
        &self, _key: &SessionKey, value: &Arc<Record>, read_at: Instant,
        duration_until_expiry: Option<Duration>, _last_modified_at: Instant,
    ) -> Option<Duration> {
        self.after_read(value, read_at, duration_until_expiry)
    }

    fn expire_after_update(
        &self, _key: &SessionKey, value: &Arc<Record>, updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(value, updated_at)
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
    fn empty_delta_shares_items_and_writes_copy() {
        let now = Instant::now();
        let r = Record::new(items(&[("a", b"1")]), Duration::from_secs(1), now, false);
        let same = r.written(now, &Delta::new(), Duration::from_secs(5));
        assert!(Arc::ptr_eq(&r.items, &same.items));
        assert_eq!(same.timeout, Duration::from_secs(5));
        assert_eq!(same.expires_at(), now + Duration::from_secs(5));

        let delta = Delta::new().with_set("b", ItemValue::from_bytes(&b"2"[..]));
        let changed = r.written(now, &delta, Duration::from_secs(1));
        assert!(!Arc::ptr_eq(&r.items, &changed.items));
        assert_eq!(r.items.len(), 1, "the old version is untouched");
        assert_eq!(changed.items.len(), 2);
        // Values are shared, not copied.
        assert!(std::ptr::eq(
            r.items["a"].as_bytes(),
            changed.items["a"].as_bytes()
        ));
    }

    #[test]
    fn a_write_applies_the_delta_as_delta_apply_to_does() {
        let now = Instant::now();
        let r = Record::new(
            items(&[("a", b"1"), ("b", b"2"), ("c", b"3")]),
            Duration::from_secs(1),
            now,
            false,
        );
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
            let mut expected = Items::clone(&r.items);
            delta.apply_to(&mut expected);
            let next = r.written(now, &delta, Duration::from_secs(1));
            assert_eq!(*next.items, expected, "{delta:?}");
        }
        assert_eq!(r.items.len(), 3, "the old version is untouched");
        assert_eq!(r.items["a"], v(b"1"));
    }

    #[test]
    fn expiry_reports_remaining_time_and_huge_timeouts_do_not_panic() {
        let now = Instant::now();
        let r = Arc::new(Record::new(
            items(&[]),
            Duration::from_millis(300),
            now,
            false,
        ));
        let key = SessionKey::new(
            session_core::AppName::default(),
            session_core::SessionId::generate().unwrap(),
        );
        let expiry = SessionExpiry {
            grace: Duration::from_millis(10),
        };
        let later = now + Duration::from_millis(100);
        assert_eq!(
            expiry.expire_after_update(&key, &r, later, None),
            Some(Duration::from_millis(210))
        );
        assert_eq!(
            expiry.expire_after_create(&key, &r, now + Duration::from_secs(1)),
            Some(Duration::from_millis(10))
        );
        let huge = Record::new(items(&[]), Duration::MAX, now, false);
        assert!(huge.is_open(now + Duration::from_secs(3600)));
    }

    #[test]
    fn a_read_extends_moka_expiry_only_for_a_version_it_may_slide() {
        let now = Instant::now();
        let timeout = Duration::from_secs(10);
        let grace = Duration::from_secs(2);
        let expiry = SessionExpiry { grace };
        let key = SessionKey::new(
            session_core::AppName::default(),
            session_core::SessionId::generate().unwrap(),
        );
        let read =
            |r: &Arc<Record>, at, current| expiry.expire_after_read(&key, r, at, current, now);
        let r = Arc::new(Record::new(items(&[]), timeout, now, false));
        let later = now + Duration::from_secs(5);
        // Too little left for a slide from `later`: room for one, with the whole grace.
        let short = Some(Duration::from_secs(6));
        assert_eq!(read(&r, later, short), Some(timeout + grace));
        // Enough left (half the grace to spare): moka's timer stays as it is.
        let enough = Some(timeout + grace / 2);
        assert_eq!(read(&r, later, enough), enough);
        // Past its deadline, or claimed by a compute: no slide follows, nothing changes.
        assert_eq!(read(&r, now + timeout, short), short);
        r.claim();
        assert_eq!(read(&r, later, short), short);
        assert_eq!(r.slide(later), Slide::Claimed);
        r.restore(now + timeout);
        assert_eq!(r.slide(later), Slide::Slid);
        assert_eq!(r.expires_at(), later + timeout);
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
