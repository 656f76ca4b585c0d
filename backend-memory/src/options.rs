//! The memory store's settings: a capacity bound, the maintenance interval, the expiry-event
//! buffer and the refresh window.

use std::time::Duration;

use session_core::RefreshWindow;

/// Settings of a [`MemoryStore`](crate::MemoryStore), built with [`MemoryOptions::new`] and the
/// `with_*` setters.
///
/// ```
/// use std::time::Duration;
/// use backend_memory::{MemoryOptions, MemoryStore};
///
/// let store = MemoryStore::with_options(
///     MemoryOptions::new()
///         .with_max_sessions(100_000)
///         .with_maintenance_interval(Duration::from_millis(250)),
/// );
/// # drop(store);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryOptions {
    max_sessions: Option<u64>,
    maintenance_interval: Duration,
    event_capacity: usize,
    refresh_window: RefreshWindow,
}

impl MemoryOptions {
    /// How often the maintenance task removes expired sessions (and so delivers their expiry
    /// events) when no operation met them first: 100 ms.
    pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_millis(100);

    /// The shortest maintenance interval accepted; shorter values are raised to it, so that the
    /// task never spins.
    pub const MIN_MAINTENANCE_INTERVAL: Duration = Duration::from_millis(1);

    /// How many expiry events a subscriber may fall behind by default: 1024 (see
    /// [`with_event_capacity`](Self::with_event_capacity)).
    pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

    /// The defaults: no capacity bound, maintenance every 100 ms, 1024 buffered expiry events,
    /// the default refresh window ([`RefreshWindow::DEFAULT`]).
    pub const fn new() -> Self {
        Self {
            max_sessions: None,
            maintenance_interval: Self::DEFAULT_MAINTENANCE_INTERVAL,
            event_capacity: Self::DEFAULT_EVENT_CAPACITY,
            refresh_window: RefreshWindow::DEFAULT,
        }
    }

    /// How many expiry events a subscriber may fall behind before it misses the oldest: default
    /// [`DEFAULT_EVENT_CAPACITY`](Self::DEFAULT_EVENT_CAPACITY), at least 1. Each buffered event
    /// holds its session's final items, so this bounds the memory a subscriber that stops
    /// reading can pin.
    ///
    /// The background sweep waits for subscribers: it sends the next batch of expired sessions
    /// only while every subscriber has at most half the buffer unread, so a subscriber that keeps
    /// reading receives every event, however many sessions expire at once. A subscriber that
    /// stops reading is waited for at most about one maintenance interval per sweep (at least
    /// 10 ms, at most 1 s); then the sweep goes on and that subscriber misses the oldest events.
    /// Ends found by operations (`remove`, `delete`, an operation that meets an expired session,
    /// an eviction) are sent at once, without waiting. Missed events are skipped, not replayed:
    /// `ExpiryEvents::next` logs how many (a `tracing` warning) and returns the next one.
    pub const fn with_event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = if events == 0 { 1 } else { events };
        self
    }

    /// The refresh window (docs/contract.md §1): default [`RefreshWindow::DEFAULT`];
    /// [`RefreshWindow::EXACT`] slides on every access, as ASP.NET's InProc provider does.
    ///
    /// Every access leaves a session's expiry at least `timeout` away; one that finds less moves
    /// it to `timeout + w`, and writes (`create`, `commit`, `write_concurrent`) set `timeout + w`.
    /// So a session lives at least `timeout` and at most `timeout + w` after its last access.
    /// In memory a slide costs little either way; the window mostly spares the expiry sweep,
    /// which moves a session's entry in its index once per slide it finds.
    pub const fn with_refresh_window(mut self, window: RefreshWindow) -> Self {
        self.refresh_window = window;
        self
    }

    /// The refresh window the store slides with.
    pub const fn refresh_window(&self) -> RefreshWindow {
        self.refresh_window
    }

    /// The expiry-event buffer per subscriber.
    pub const fn event_capacity(&self) -> usize {
        self.event_capacity
    }

    /// Bounds the number of sessions kept (at least 1; 0 is raised to 1). A `create` that takes
    /// the store past the bound evicts the least recently used sessions until it is back at the
    /// bound; each ends as if it had expired (an [`EndReason::Expired`] event). Without a bound,
    /// as in ASP.NET's InProc provider, sessions live until their timeout and memory is the
    /// limit. A bound costs every operation a little bookkeeping, and each evicting `create` a
    /// look at every shard.
    ///
    /// - A use is every operation that finds the session live (`read`, `acquire`, `commit`,
    ///   `release`, `touch`, `write_concurrent`, `change_id`), whether or not it changed
    ///   anything; the `create` that stores a session is its first use.
    /// - Expired sessions nobody has swept yet are removed first (a few per shard per eviction),
    ///   so they give up their places before a live session is evicted.
    /// - A locked session is never evicted (its holder's commit would fail with `LockLost` and
    ///   its writes be lost): it leaves the eviction order while locked and comes back as just
    ///   used when its lock is let go. Nor is the session the evicting `create` just stored. So
    ///   if every other session is locked, the store stays past the bound for a while: the next
    ///   `create` past the bound evicts again once locks are let go or sessions expire.
    ///
    /// [`EndReason::Expired`]: session_core::EndReason::Expired
    pub const fn with_max_sessions(mut self, max_sessions: u64) -> Self {
        self.max_sessions = Some(if max_sessions == 0 { 1 } else { max_sessions });
        self
    }

    /// How often the background task removes expired sessions; an expiry event arrives at most
    /// about this long after its session expired (at once if an operation meets the session
    /// first). Values under
    /// [`MIN_MAINTENANCE_INTERVAL`](Self::MIN_MAINTENANCE_INTERVAL) are raised to it.
    pub fn with_maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval.max(Self::MIN_MAINTENANCE_INTERVAL);
        self
    }

    /// The capacity bound, if any.
    pub const fn max_sessions(&self) -> Option<u64> {
        self.max_sessions
    }

    /// The maintenance interval.
    pub const fn maintenance_interval(&self) -> Duration {
        self.maintenance_interval
    }
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_setters() {
        let o = MemoryOptions::default();
        assert_eq!(o.max_sessions(), None);
        assert_eq!(o.maintenance_interval(), Duration::from_millis(100));
        assert_eq!(o.refresh_window(), RefreshWindow::DEFAULT);
        assert_eq!(o.with_max_sessions(0).max_sessions(), Some(1));
        let exact = o.with_refresh_window(RefreshWindow::EXACT);
        assert_eq!(exact.refresh_window(), RefreshWindow::EXACT);
        let o = o
            .with_max_sessions(10)
            .with_maintenance_interval(Duration::ZERO);
        assert_eq!(o.max_sessions(), Some(10));
        assert_eq!(
            o.maintenance_interval(),
            MemoryOptions::MIN_MAINTENANCE_INTERVAL
        );
    }
}
