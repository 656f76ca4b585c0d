//! [`MemoryStore`]: its state, its construction, and the locked sections through which every
//! operation (in `ops`) reads and writes a session atomically.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use session_core::{RefreshWindow, SessionKey};

use crate::maintenance::Maintenance;
use crate::options::MemoryOptions;
use crate::record::Record;
use crate::shard::{Ends, Shard, Step};
use crate::signals::Signals;

/// The backend's name in errors and tracing.
pub(crate) const BACKEND: &str = "memory";

/// How many shards the sessions are spread over (by id). Every operation locks one shard (two
/// for `change_id`) for a short, bounded step: a hash lookup, a decision and an in-place change,
/// well under a microsecond on current hardware when the session is small and no `Arc`-shared
/// item map must be copied (a write copies the map, never the values, while a snapshot still
/// holds it). Contention stays low at any core count a web server has; the sweep visits each
/// shard once per maintenance interval, a batch at a time.
const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// An in-process session store: every operation is atomic, each session expires at its own
/// sliding deadline, and waiters and `Session_End` handlers are signalled.
///
/// Cloning is cheap and shares the sessions. The background maintenance task stops when the last
/// clone is dropped. See the [crate docs](crate) for the capabilities.
#[derive(Clone)]
pub struct MemoryStore {
    pub(crate) shared: Arc<Shared>,
}

/// A shard's lock on a cache line of its own, so that two cores working on two shards do not
/// slow each other down.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// Everything a store and its clones share. The maintenance task holds only a `Weak` to it.
pub(crate) struct Shared {
    /// Sessions by key, spread over [`SHARDS`] shards by id. Each operation decides and writes
    /// under its shard's lock, without an `.await` in between: nothing else happens to that
    /// session meanwhile, and a caller that drops the future cannot stop an operation halfway.
    shards: Box<[Padded]>,
    pub(crate) signals: Signals,
    pub(crate) options: MemoryOptions,
    pub(crate) maintenance: Maintenance,
    /// With a capacity bound only: the number of sessions (kept by [`ShardGuard`]), the recency
    /// clock, and the lock one create at a time takes to evict past the bound.
    capacity: Option<Capacity>,
}

struct Capacity {
    max: u64,
    sessions: AtomicU64,
    clock: AtomicU64,
    evicting: Mutex<()>,
}

/// A locked shard. With a capacity bound it adds the change in the shard's session count to the
/// store's count when it is let go, so that every way in and out of a shard is counted.
pub(crate) struct ShardGuard<'a> {
    shard: MutexGuard<'a, Shard>,
    count: Option<(&'a AtomicU64, usize)>,
}

impl Deref for ShardGuard<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        if let Some((sessions, before)) = self.count {
            let after = self.shard.len();
            if after > before {
                sessions.fetch_add((after - before) as u64, Ordering::AcqRel);
            } else if before > after {
                sessions.fetch_sub((before - after) as u64, Ordering::AcqRel);
            }
        }
    }
}

/// The shards of the two keys of a pair operation, both locked (`Shared::with_pair`).
pub(crate) struct Pair<'a> {
    first: ShardGuard<'a>,
    /// The second lock, if the keys are in different shards.
    second: Option<ShardGuard<'a>>,
    a_in_second: bool,
    b_in_second: bool,
}

impl Pair<'_> {
    /// The shard of the first key (`of_b == false`) or of the second.
    pub(crate) fn shard(&mut self, of_b: bool) -> &mut Shard {
        let in_second = if of_b {
            self.b_in_second
        } else {
            self.a_in_second
        };
        match &mut self.second {
            Some(second) if in_second => second,
            _ => &mut self.first,
        }
    }
}

/// The shard of a session id: its last eight characters (random, from the OS CSPRNG), mixed by a
/// multiplicative hash. An id a client made up only ever finds nothing; it cannot place sessions.
fn shard_of(key: &SessionKey) -> usize {
    let id = key.id().expose().as_bytes();
    let tail = id
        .len()
        .checked_sub(8)
        .and_then(|from| id.get(from..))
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(0, u64::from_le_bytes);
    let mixed = tail.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (u64::BITS - SHARD_BITS);
    usize::try_from(mixed).unwrap_or(0) % SHARDS
}

impl Shared {
    /// The refresh window every slide follows.
    pub(crate) fn window(&self) -> RefreshWindow {
        self.options.refresh_window()
    }

    fn lock_at(&self, index: usize) -> ShardGuard<'_> {
        let slot = &self.shards[index % SHARDS];
        let shard = slot.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = self.capacity.as_ref().map(|c| (&c.sessions, shard.len()));
        ShardGuard { shard, count }
    }

    /// The next use on the recency clock (with a capacity bound; 0 without).
    fn tick(&self) -> u64 {
        self.capacity
            .as_ref()
            .map_or(0, |c| c.clock.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Reports what ended in a locked section, after the lock is let go.
    fn report(&self, ends: Ends) {
        if !ends.is_empty() {
            self.signals.ended(ends);
        }
    }

    /// Runs `decide` on the live session of `key` (`None` if there is none) under its shard's
    /// lock, with `now` read under the lock (so on one session time only moves forward from one
    /// operation to the next), applies the step it returns, and returns its outcome.
    pub(crate) fn visit<T>(
        &self, key: &SessionKey, decide: impl FnOnce(Option<&mut Record>, Instant) -> (Step, T),
    ) -> T {
        let mut ends = Ends::new();
        let value = {
            let mut shard = self.lock_at(shard_of(key));
            // Under the lock, like `now`: uses of one session are recorded in the order they happen.
            let tick = self.tick();
            let now = Instant::now();
            shard.visit(key, now, tick, &mut ends, |record| decide(record, now))
        };
        self.report(ends);
        value
    }

    /// Stores a new session made by `make` under `key` unless a live one is there (`false`).
    /// With a capacity bound, evicts the least recently used sessions past it. `make` runs under
    /// the shard lock: it only assembles a record from parts the caller prepared.
    pub(crate) fn create(
        self: &Arc<Self>, key: &SessionKey, make: impl FnOnce(Instant) -> Record,
    ) -> bool {
        let mut ends = Ends::new();
        let (created, swept_by_task) = {
            let mut shard = self.lock_at(shard_of(key));
            // Under the lock: a create never records an older use than an operation before it.
            let tick = self.tick();
            let now = Instant::now();
            let swept_by_task = self.maintenance.is_alive(now);
            // No sweep runs (no tokio runtime, no timer, or a task that stopped being driven),
            // or it runs but falls behind (a busy runtime gives it too little time while sessions
            // expire as fast as they are created): each create clears a little of its shard, so
            // that memory follows the live sessions (`Shard`, "Memory bound"). Their ends are
            // reported at once, like those an operation meets, without waiting for subscribers.
            if !swept_by_task || shard.behind() {
                shard.sweep(now, 2, &mut ends);
            }
            let created = shard.create(key, now, tick, &mut ends, || make(now));
            (created, swept_by_task)
        };
        self.report(ends);
        if !swept_by_task {
            Maintenance::revive(self, self.options.maintenance_interval());
        }
        if created {
            self.enforce_capacity(key);
        }
        created
    }

    /// Takes the session of `key` out, live or not: `Some(was_locked)` if it was live (and ends
    /// as removed), `None` if there was none (an expired one ends as expired).
    pub(crate) fn delete(&self, key: &SessionKey) -> Option<bool> {
        let (key, record, live) = {
            let mut shard = self.lock_at(shard_of(key));
            let now = Instant::now();
            let (key, record) = shard.take(key)?;
            let live = record.is_live(now);
            (key, record, live)
        };
        let locked = record.lock.is_some();
        let reason = if live {
            session_core::EndReason::Removed
        } else {
            session_core::EndReason::Expired
        };
        self.report(vec![crate::shard::End {
            key,
            items: record.items,
            reason,
            locked,
        }]);
        live.then_some(locked)
    }

    /// Runs `decide` with both shards of `a` and `b` locked (one lock if they share a shard),
    /// always in shard order, so that two pair operations never wait for each other in a cycle;
    /// single-key operations never hold one lock while waiting for another. `decide` gets the
    /// locked shards ([`Pair`]), the time (read under the locks), the recency tick and the list
    /// of ends to report once the locks are let go.
    pub(crate) fn with_pair<T>(
        &self, a: &SessionKey, b: &SessionKey,
        decide: impl FnOnce(&mut Pair<'_>, Instant, u64, &mut Ends) -> T,
    ) -> T {
        let (ia, ib) = (shard_of(a), shard_of(b));
        let mut ends = Ends::new();
        let value = {
            let first = self.lock_at(ia.min(ib));
            let second = (ia != ib).then(|| self.lock_at(ia.max(ib)));
            let mut pair = Pair {
                first,
                second,
                b_in_second: ib > ia,
                a_in_second: ia > ib,
            };
            let tick = self.tick();
            let now = Instant::now();
            decide(&mut pair, now, tick, &mut ends)
        };
        self.report(ends);
        value
    }

    /// Past the capacity bound, evicts the least recently used unlocked sessions other than
    /// `created`, the one just stored (each ends as expired), until the store is back at the
    /// bound. One create at a time evicts, so concurrent
    /// creates do not evict more than the bound asks.
    ///
    /// Each search for the oldest session first sweeps a few due entries of every shard it looks
    /// at, so expired sessions nobody has swept yet give up their places before a live one is
    /// evicted. Locked sessions are never evicted (their holder's commit would be lost), nor is
    /// the session just created: if every other session is locked, the store stays past the
    /// bound until a lock is let go or a session expires (the next create past the bound evicts
    /// then).
    fn enforce_capacity(&self, created: &SessionKey) {
        /// Due entries a search sweeps per shard.
        const SWEEP: usize = 4;
        let Some(capacity) = &self.capacity else {
            return;
        };
        if capacity.sessions.load(Ordering::Acquire) <= capacity.max {
            return;
        }
        let _evicting = capacity
            .evicting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Bounded: a session used between the search and the eviction is looked for again, but
        // not forever.
        for _ in 0..SHARDS * 4 {
            if capacity.sessions.load(Ordering::Acquire) <= capacity.max {
                break;
            }
            let mut oldest: Option<(u64, usize)> = None;
            for index in 0..SHARDS {
                let mut ends = Ends::new();
                let tick = {
                    let mut shard = self.lock_at(index);
                    shard.sweep(Instant::now(), SWEEP, &mut ends);
                    shard.oldest(created)
                };
                self.report(ends);
                if let Some(tick) = tick {
                    oldest = Some(oldest.map_or((tick, index), |o| o.min((tick, index))));
                }
            }
            // Expired sessions swept on the way may have made the room.
            if capacity.sessions.load(Ordering::Acquire) <= capacity.max {
                break;
            }
            let Some((tick, index)) = oldest else { break };
            let mut ends = Ends::new();
            self.lock_at(index).evict(tick, &mut ends);
            self.report(ends);
        }
    }

    /// One sweep of every shard (see `Shard::sweep`), a batch at a time so that no lock is held
    /// for long; yields between shards and between batches of a shard with many due sessions.
    ///
    /// While somebody subscribes to the expiry events, the sweep also waits for them
    /// (`Signals::wait_for_room`): it sends a batch only while the subscribers' backlog is at
    /// most half the event buffer, so a subscriber that keeps up misses nothing however many
    /// sessions expire at once. A subscriber that stops reading is waited for at most about one
    /// maintenance interval per sweep (at least 10 ms, at most 1 s); after that the sweep goes on
    /// without waiting and that subscriber misses the oldest events.
    pub(crate) async fn sweep_expired(&self) {
        let patience = self
            .options
            .maintenance_interval()
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut give_up_at = None;
        for index in 0..SHARDS {
            loop {
                self.signals.wait_for_room(&mut give_up_at, patience).await;
                // Alive, however long the sweep takes (`Maintenance::is_alive`).
                self.maintenance.beat(Instant::now());
                let mut ends = Ends::new();
                let batch = self.signals.sweep_batch();
                let more = {
                    let mut shard = self.lock_at(index);
                    let more = shard.sweep(Instant::now(), batch, &mut ends);
                    if !more {
                        shard.compact();
                    }
                    more
                };
                self.report(ends);
                if !more {
                    break;
                }
                tokio::task::yield_now().await;
            }
            tokio::task::yield_now().await;
        }
    }

    /// How many sessions the store holds, expired ones not yet swept included.
    pub(crate) fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock_at(i).len()).sum()
    }

    /// The sizes of what the store keeps (`MemoryStore::stats`).
    fn stats(&self) -> MemoryStats {
        let mut stats = MemoryStats {
            sessions: 0,
            deadline_entries: 0,
            recency_entries: 0,
            slots: 0,
            release_watches: self.signals.pending_watches(),
            buffered_events: self.signals.buffered_events(),
        };
        for index in 0..SHARDS {
            let shard = self.lock_at(index);
            let (deadlines, recency) = shard.indexed();
            stats.sessions += shard.len();
            stats.deadline_entries += deadlines;
            stats.recency_entries += recency;
            stats.slots += shard.slots();
        }
        stats
    }

    /// Runs `look` on the shard of `key` (tests).
    #[cfg(test)]
    pub(crate) fn with_shard<T>(&self, key: &SessionKey, look: impl FnOnce(&Shard) -> T) -> T {
        look(&self.lock_at(shard_of(key)))
    }
}

impl MemoryStore {
    /// A store with the default [`MemoryOptions`]: no capacity bound, maintenance every 100 ms,
    /// the default refresh window.
    ///
    /// Does not need a tokio runtime: outside one, the maintenance task starts with the first
    /// operation (or [`expiry_events`](session_core::SessionStore::expiry_events) call) inside one.
    pub fn new() -> Self {
        Self::with_options(MemoryOptions::new())
    }

    /// A store with `options`.
    pub fn with_options(options: MemoryOptions) -> Self {
        let capacity = options.max_sessions().map(|max| Capacity {
            max,
            sessions: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            evicting: Mutex::new(()),
        });
        let bounded = capacity.is_some();
        let store = Self {
            shared: Arc::new(Shared {
                shards: (0..SHARDS)
                    .map(|_| Padded(Mutex::new(Shard::new(bounded))))
                    .collect(),
                signals: Signals::new(options.event_capacity()),
                options,
                maintenance: Maintenance::new(options.maintenance_interval()),
                capacity,
            }),
        };
        store.ensure_maintenance();
        store
    }

    /// The settings this store was built with.
    pub fn options(&self) -> &MemoryOptions {
        &self.shared.options
    }

    /// The sizes of what the store keeps, to watch its memory: everything in it is bounded by
    /// the live sessions plus a constant, whatever the churn (see [`MemoryStats`]). Locks each
    /// shard in turn, briefly: a diagnostic, not for every request.
    pub fn stats(&self) -> MemoryStats {
        self.shared.stats()
    }

    /// Starts the maintenance task if it is not running and a tokio runtime is at hand. Cheap after
    /// the first success (one atomic load), so every operation calls it.
    pub(crate) fn ensure_maintenance(&self) {
        Maintenance::ensure_started(&self.shared, self.shared.options.maintenance_interval());
    }

    /// The shared state, after making sure the maintenance task runs.
    pub(crate) fn inner(&self) -> &Arc<Shared> {
        self.ensure_maintenance();
        &self.shared
    }

    #[cfg(test)]
    pub(crate) fn maintenance_task(&self) -> Option<tokio::task::AbortHandle> {
        self.shared.maintenance.task()
    }
}

/// What a [`MemoryStore`] keeps, from [`MemoryStore::stats`]. Each count is read shard by shard,
/// so under traffic the sum is approximate.
///
/// Every one is bounded by the live sessions plus a constant, under any mix of creates, deletes,
/// id changes, slides, locks, release watches and expiry events:
/// - `sessions` exceeds the live sessions only by expired ones not yet removed: once a shard holds
///   more than twice the sessions it held when last found free of expired ones (plus 64), each
///   `create` into it removes up to two expired sessions first, so they cannot pile up even when
///   the maintenance task gets little time;
/// - `deadline_entries` equals `sessions`, and `recency_entries` is at most `sessions`: a session
///   that ends or moves (`change_id`) leaves its entries in the same step;
/// - `slots` is at most about four times `sessions` (plus a small floor per shard) after a
///   maintenance sweep;
/// - `release_watches` counts watches not yet dropped; a dropped one costs nothing;
/// - `buffered_events` is at most
///   [`MemoryOptions::event_capacity`](crate::MemoryOptions::event_capacity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Sessions held, expired ones not yet removed included.
    pub sessions: usize,
    /// Entries in the deadline index the expiry sweep follows: one per session.
    pub deadline_entries: usize,
    /// With a capacity bound: entries in the eviction order, one per unlocked session (0 without
    /// a bound).
    pub recency_entries: usize,
    /// Sessions the hash maps have room for without growing.
    pub slots: usize,
    /// Release watches ([`SessionStore::watch_release`](session_core::SessionStore::watch_release))
    /// made and not yet dropped.
    pub release_watches: usize,
    /// Expiry events sent and not yet received by the slowest subscriber (0 without
    /// subscribers).
    pub buffered_events: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    /// Shows the settings and the number of sessions, never a session.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.shared.len())
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::key_in;

    #[test]
    fn ids_spread_over_every_shard() {
        let mut seen = [0usize; SHARDS];
        for _ in 0..SHARDS * 64 {
            seen[shard_of(&key_in("/spread"))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
        assert!(seen.iter().all(|&n| n < 64 * 3), "{seen:?}");
    }

    #[tokio::test]
    async fn past_the_bound_the_least_recently_used_session_ends_as_expired() {
        use session_core::{EndReason, Items, ReadOutcome, SessionStore};
        let store = MemoryStore::with_options(MemoryOptions::new().with_max_sessions(3));
        let mut events = store.expiry_events().await.unwrap();
        let keys: Vec<_> = (0..3).map(|_| key_in("/lru")).collect();
        let none = Items::new();
        let long = crate::test_util::LONG;
        for k in &keys {
            store.create(k, &none, long, true).await.unwrap();
        }
        // Use the first: the second is now the least recently used.
        crate::test_util::found(&store, &keys[0]).await;
        let fourth = key_in("/lru");
        store.create(&fourth, &none, long, true).await.unwrap();
        let event = events.next().await.unwrap();
        assert_eq!((&event.key, event.reason), (&keys[1], EndReason::Expired));
        assert_eq!(store.shared.len(), 3);
        for k in [&keys[0], &keys[2], &fourth] {
            crate::test_util::found(&store, k).await;
        }
        assert!(matches!(
            store.read(&keys[1]).await.unwrap(),
            ReadOutcome::Missing
        ));
        // A delete makes room: the next create evicts nothing.
        store.delete(&keys[0]).await.unwrap();
        assert_eq!(events.next().await.unwrap().reason, EndReason::Removed);
        store
            .create(&key_in("/lru"), &none, long, true)
            .await
            .unwrap();
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(50), events.next());
        assert!(quiet.await.is_err(), "nothing evicted");
        assert_eq!(store.shared.len(), 3);
        let counted = store
            .shared
            .capacity
            .as_ref()
            .unwrap()
            .sessions
            .load(Ordering::Acquire);
        assert_eq!(counted, 3);
    }

    #[tokio::test]
    async fn the_sweep_gives_back_the_table_of_sessions_that_left() {
        use session_core::{Items, SessionStore};
        // No sweep but the one this test runs.
        let store = MemoryStore::with_options(
            MemoryOptions::new().with_maintenance_interval(std::time::Duration::from_secs(3600)),
        );
        let keys: Vec<_> = (0..20_000).map(|_| key_in("/compact")).collect();
        for k in &keys {
            let long = crate::test_util::LONG;
            store.create(k, &Items::new(), long, true).await.unwrap();
        }
        for k in &keys[100..] {
            store.delete(k).await.unwrap();
        }
        assert!(store.stats().slots >= 20_000, "{:?}", store.stats());
        store.shared.sweep_expired().await;
        let stats = store.stats();
        assert_eq!(stats.sessions, 100);
        // A few slots per shard at most: hash maps round their tables up.
        assert!(stats.slots <= SHARDS * 8, "{stats:?}");
        // The sessions left are all still there.
        for k in &keys[..100] {
            crate::test_util::found(&store, k).await;
        }
    }

    /// Runs a store operation to completion (the memory store's operations never wait).
    fn done<F: std::future::Future>(operation: F) -> F::Output {
        let mut operation = std::pin::pin!(operation);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match operation.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("a memory store operation waited"),
        }
    }

    #[test]
    fn uses_of_one_session_are_recorded_in_the_order_they_happen() {
        use session_core::{Items, SessionStore};
        // The recency tick is taken under the shard lock: an access that took its tick before
        // another's but locked after it would record an older use over a newer one.
        let store = MemoryStore::with_options(MemoryOptions::new().with_max_sessions(1000));
        let k = key_in("/ticks");
        done(store.create(&k, &Items::new(), crate::test_util::LONG, true)).unwrap();
        let seen = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..20_000 {
                        done(store.touch(&k)).unwrap();
                        // Looked at under the shard lock, in the order of the writes.
                        store.shared.with_shard(&k, |shard| {
                            let used = shard.get(&k).unwrap().used;
                            let before = seen.swap(used, Ordering::Relaxed);
                            assert!(used >= before, "use {used} recorded after {before}");
                        });
                    }
                });
            }
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creates_past_the_bound_leave_exactly_the_bound() {
        use session_core::{Items, SessionStore};
        let store = MemoryStore::with_options(MemoryOptions::new().with_max_sessions(100));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        let k = key_in("/bound");
                        let long = crate::test_util::LONG;
                        store.create(&k, &Items::new(), long, true).await.unwrap();
                        // A use: evicted or not meanwhile, either answer is fine.
                        store.touch(&k).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.shared.len(), 100);
        let counted = store
            .shared
            .capacity
            .as_ref()
            .unwrap()
            .sessions
            .load(Ordering::Acquire);
        assert_eq!(counted, 100);
    }
}
