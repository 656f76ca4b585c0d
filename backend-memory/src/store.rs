//! [`MemoryStore`]: its state, its construction, and the two compute helpers through which every
//! operation (in `ops`) reads and writes the cache atomically.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use session_core::{Error, Operation, Result, SessionKey};

use crate::deadlines::Deadlines;
use crate::maintenance::Maintenance;
use crate::options::MemoryOptions;
use crate::record::{Fate, Record, SessionExpiry};
use crate::signals::Signals;

/// The backend's name in errors and tracing.
pub(crate) const BACKEND: &str = "memory";

/// An in-process session store on a [`moka`] cache: every operation is atomic, each session
/// expires at its own sliding deadline, and waiters and `Session_End` handlers are signalled.
///
/// Cloning is cheap and shares the sessions. The background maintenance task stops when the last
/// clone is dropped. See the [crate docs](crate) for the capabilities.
#[derive(Clone)]
pub struct MemoryStore {
    pub(crate) shared: Arc<Shared>,
}

/// Everything a store and its clones share. The maintenance task holds only a `Weak` to it.
pub(crate) struct Shared {
    /// Sessions by key. Each value is an immutable version; operations replace versions only
    /// through `entry(..).and_compute_with`, moka's per-key lock, so that the decision and the
    /// write happen in one step with no other operation on that key in between.
    pub(crate) cache: Cache<SessionKey, Arc<Record>>,
    pub(crate) signals: Signals,
    /// When to look for expired sessions (the sweep run by the maintenance task).
    pub(crate) deadlines: Deadlines,
    pub(crate) options: MemoryOptions,
    pub(crate) maintenance: Maintenance,
}

/// What an operation does to the entry it looked at. Each step that removes or replaces the
/// version in the cache first records what that means for the session (its [`Fate`]), which the
/// eviction listener turns into an expiry event or none.
pub(crate) enum Step {
    /// Change nothing.
    Keep,
    /// Store the next version of the live session; the current one is retired (no event).
    Update(Record),
    /// Store a new session where none is live, and schedule its expiry sweep. An expired version
    /// still in the cache ends as expired.
    Insert(Record),
    /// Delete the session: it ends as removed.
    End,
    /// Delete the session because it moved to another key: retired, no event.
    MoveOut,
}

/// The version a compute found under its key, claimed (see `record::Deadline`) before the compute
/// read the clock, and whether it is live at that time.
pub(crate) struct Claimed {
    record: Option<Arc<Record>>,
    /// The claimed version's deadline, in-place slides included.
    deadline: Option<Instant>,
    live: bool,
}

impl Claimed {
    /// Claims `record`, if any. Call [`Claimed::judge`] next, with a `now` read after this.
    pub(crate) fn take(record: Option<Arc<Record>>) -> Self {
        let deadline = record.as_deref().map(Record::claim);
        Self {
            record,
            deadline,
            live: false,
        }
    }

    /// Decides whether the version is live at `now`.
    pub(crate) fn judge(&mut self, now: Instant) {
        self.live = self.deadline.is_some_and(|at| at > now);
    }

    /// The version, if live.
    pub(crate) fn live(&self) -> Option<&Record> {
        self.record.as_deref().filter(|_| self.live)
    }

    /// The version as found, live or not.
    pub(crate) fn record(&self) -> Option<&Arc<Record>> {
        self.record.as_ref()
    }

    /// Ends the claim of a live version that stays in the cache; a dead one stays claimed.
    pub(crate) fn restore(&self) {
        if let (true, Some(record), Some(at)) = (self.live, &self.record, self.deadline) {
            record.restore(at);
        }
    }
}

/// The cache never skips a compute closure; this error exists so that no code path panics.
fn closure_not_run(operation: Operation) -> Error {
    Error::Backend {
        backend: BACKEND,
        operation,
        source: "the cache did not run the compute closure".into(),
    }
}

/// Grace added to moka's expiry, past the store's own deadline (see `SessionExpiry`): long enough
/// for the sweep, which runs every `interval`, to find an expired session first.
fn expiry_grace(interval: Duration) -> Duration {
    interval.saturating_add(Duration::from_secs(1))
}

impl Shared {
    /// Turns an operation's step on `key` into moka's op. `present` is the version in the cache as
    /// the compute saw it, live or not (the step was decided on it only if live).
    ///
    /// A kept live version gets its claimed deadline back; every other step leaves the version it
    /// replaces or removes claimed, so that no in-place slide reaches it any more.
    fn apply(&self, key: &SessionKey, step: Step, present: &Claimed) -> Op<Arc<Record>> {
        let decide = |fate| {
            if let Some(record) = &present.record {
                record.set_fate(fate);
            }
        };
        match step {
            Step::Keep => {
                present.restore();
                Op::Nop
            }
            Step::Update(next) => {
                decide(Fate::Retired);
                // A shorter timeout moves the deadline before the sweep's next look: look earlier.
                if next.slot.get().is_some_and(|at| next.expires_at() < at) {
                    self.schedule(key, &next);
                }
                Op::Put(Arc::new(next))
            }
            Step::Insert(record) => {
                decide(Fate::Expired);
                self.schedule(key, &record);
                Op::Put(Arc::new(record))
            }
            Step::End => {
                decide(Fate::Removed);
                Op::Remove
            }
            Step::MoveOut => {
                decide(Fate::Retired);
                Op::Remove
            }
        }
    }

    /// Gives the sweep one look at `record` at its deadline. Only while the maintenance task runs:
    /// without it nothing would ever take the entry out again, and moka's own expiry stands in.
    fn schedule(&self, key: &SessionKey, record: &Record) {
        if self.maintenance.is_running() {
            let at = record.expires_at();
            record.slot.set(at);
            self.deadlines.schedule(at, key.clone());
        }
    }

    /// Runs `decide` on the live version of `key` (expired versions are `None`: they do not exist
    /// for any operation) under moka's per-key lock, applies the step it returns in the same
    /// locked section, and returns its outcome. The version is claimed before `now` is read (see
    /// `record::Deadline`), both inside the lock, so on one key time only moves forward from one
    /// operation to the next, in-place slides included.
    pub(crate) async fn compute<T>(
        &self, key: &SessionKey, operation: Operation,
        decide: impl FnOnce(Option<&Record>, Instant) -> (Step, T),
    ) -> Result<T> {
        let mut outcome = None;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let mut present = Claimed::take(entry.map(|e| e.into_value()));
                let now = Instant::now();
                present.judge(now);
                let (step, value) = decide(present.live(), now);
                outcome = Some(value);
                std::future::ready(self.apply(key, step, &present))
            })
            .await;
        outcome.ok_or_else(|| closure_not_run(operation))
    }

    /// Like [`Shared::compute`] on two keys at once: `decide` sees the live versions of `a` and `b`
    /// and returns a step for each. The keys must differ: the same key twice would wait for itself.
    ///
    /// The second key's compute runs inside the first one's, so both keys stay locked until both
    /// steps are applied: an observer that sees the second key changed and then looks at the first
    /// waits for it, and never sees a half-done pair. Keys are always locked in `SessionKey` order
    /// (whatever the caller's roles), so two pair operations never wait for each other in a cycle;
    /// single-key operations never hold one lock while waiting for another.
    pub(crate) async fn compute_pair<T>(
        &self, a: &SessionKey, b: &SessionKey, operation: Operation,
        decide: impl FnOnce(Option<&Record>, Option<&Record>, Instant) -> (Step, Step, T),
    ) -> Result<T> {
        let swapped = b < a;
        let (first, second) = if swapped { (b, a) } else { (a, b) };
        let mut outcome = None;
        let outcome_slot = &mut outcome;
        self.cache
            .entry_by_ref(first)
            .and_compute_with(|first_entry| async move {
                let mut first_op = Op::Nop;
                let first_op_slot = &mut first_op;
                self.cache
                    .entry_by_ref(second)
                    .and_compute_with(|second_entry| {
                        let mut first_rec = Claimed::take(first_entry.map(|e| e.into_value()));
                        let mut second_rec = Claimed::take(second_entry.map(|e| e.into_value()));
                        let now = Instant::now();
                        first_rec.judge(now);
                        second_rec.judge(now);
                        let (first_live, second_live) = (first_rec.live(), second_rec.live());
                        // `decide` speaks of (a, b); the locks are taken as (first, second).
                        let (first_step, second_step, value) = if swapped {
                            let (a_step, b_step, value) = decide(second_live, first_live, now);
                            (b_step, a_step, value)
                        } else {
                            decide(first_live, second_live, now)
                        };
                        *first_op_slot = self.apply(first, first_step, &first_rec);
                        *outcome_slot = Some(value);
                        std::future::ready(self.apply(second, second_step, &second_rec))
                    })
                    .await;
                first_op
            })
            .await;
        outcome.ok_or_else(|| closure_not_run(operation))
    }
}

impl MemoryStore {
    /// A store with the default [`MemoryOptions`]: no capacity bound, maintenance every 100 ms.
    ///
    /// Does not need a tokio runtime: outside one, the maintenance task starts with the first
    /// operation (or [`expiry_events`](session_core::SessionStore::expiry_events) call) inside one.
    pub fn new() -> Self {
        Self::with_options(MemoryOptions::new())
    }

    /// A store with `options`.
    pub fn with_options(options: MemoryOptions) -> Self {
        // Fixes the origin of in-place deadlines before any session has one.
        crate::record::epoch();
        let signals = Signals::new(options.event_capacity());
        let listener = signals.clone();
        let mut builder = Cache::builder()
            .expire_after(SessionExpiry {
                grace: expiry_grace(options.maintenance_interval()),
            })
            // Least recently used goes first; TinyLFU could refuse to admit a brand-new session.
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |key: Arc<SessionKey>, record: Arc<Record>, cause| {
                listener.on_removal(&key, &record, cause);
            });
        if let Some(max) = options.max_sessions() {
            builder = builder.max_capacity(max);
        }
        let store = Self {
            shared: Arc::new(Shared {
                cache: builder.build(),
                signals,
                deadlines: Deadlines::default(),
                options,
                maintenance: Maintenance::new(),
            }),
        };
        store.ensure_maintenance();
        store
    }

    /// The settings this store was built with.
    pub fn options(&self) -> &MemoryOptions {
        &self.shared.options
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

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    /// Shows the settings and the approximate number of sessions, never a session.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.shared.cache.entry_count())
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}
