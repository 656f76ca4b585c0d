//! The maintenance task: every `maintenance_interval` it runs the expiry sweep
//! (`Shared::sweep_expired`), which removes the sessions past their deadline and reports their
//! end. Operations never sweep (but for `create` when no task runs, or the task has not swept
//! for a few intervals, or it panicked, or it falls behind so far that its shard has doubled;
//! see `Shared::create` and `Shard`, "Memory bound"): whatever expires, a request's latency does
//! not pay for it while the task keeps up. An operation that meets an expired session ends it at
//! once.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::Shared;

/// Starts the task, restarts it if it ended (its runtime shut down) or stopped being driven
/// (its runtime is alive but idle), gives up for good if it panicked (a runtime without a
/// timer), and stops it with the store (mini-redis' `DbDropGuard` pattern).
#[derive(Debug)]
pub(crate) struct Maintenance {
    /// What the task and the operations share; the task's guard holds it too.
    state: Arc<State>,
    /// How long without a heartbeat before the task counts as not driven: four intervals, at
    /// least 50 ms.
    stale_after: Duration,
    /// The task, once spawned. A std mutex: held only to spawn, never across an `.await`.
    task: Mutex<Task>,
    /// Never sent on: dropping it with the store tells the task to stop at once. The task also
    /// holds only a `Weak` to the store, so it never keeps the sessions alive.
    stop: watch::Sender<()>,
}

#[derive(Debug)]
struct State {
    /// Fast path for the check every operation makes: the generation of the running task, 0 while
    /// none runs. The task clears it when it ends for any reason (store dropped, runtime shut
    /// down, panic) unless a newer task replaced it, so the next operation inside a runtime
    /// starts a new one.
    running: AtomicU64,
    /// When the task last woke to sweep (or was spawned): nanoseconds since `epoch`.
    heartbeat: AtomicU64,
    epoch: Instant,
    /// Set for good when a task panicked (a runtime without a time driver): no task is spawned
    /// again, and `create` sweeps a little instead.
    unavailable: AtomicBool,
}

impl State {
    fn since_epoch(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Default)]
struct Task {
    handle: Option<JoinHandle<()>>,
    /// The last generation handed out (the first task is 1).
    generation: u64,
}

impl Maintenance {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            state: Arc::new(State {
                running: AtomicU64::new(0),
                heartbeat: AtomicU64::new(0),
                epoch: Instant::now(),
                unavailable: AtomicBool::new(false),
            }),
            stale_after: interval.saturating_mul(4).max(Duration::from_millis(50)),
            task: Mutex::new(Task::default()),
            stop: watch::channel(()).0,
        }
    }

    /// Spawns the task on the current tokio runtime if it is not running yet. Outside a runtime it
    /// does nothing (constructing a store must not panic there); the next operation or
    /// `expiry_events()` inside one starts it. Does nothing either once a task panicked.
    pub(crate) fn ensure_started(shared: &Arc<Shared>, interval: Duration) {
        let this = &shared.maintenance;
        if this.state.running.load(Ordering::Acquire) != 0 {
            return;
        }
        Self::spawn(shared, interval, |_| false);
    }

    /// Called by a `create` that found no live task (`is_alive`): starts one if none runs, or,
    /// if the running one has not swept for too long (its runtime is alive but no longer
    /// driven), aborts it and spawns a new one on the current runtime. Outside a runtime it does
    /// nothing, and `create` goes on sweeping a little itself.
    pub(crate) fn revive(shared: &Arc<Shared>, interval: Duration) {
        Self::spawn(shared, interval, |this| !this.is_alive(Instant::now()));
    }

    /// Spawns a task unless maintenance is unavailable, no runtime is at hand, or a task runs and
    /// `replace` (asked under the task lock) says to keep it.
    fn spawn(shared: &Arc<Shared>, interval: Duration, replace: impl Fn(&Self) -> bool) {
        let this = &shared.maintenance;
        if this.state.unavailable.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut task = this.task.lock().unwrap_or_else(PoisonError::into_inner);
        if this.state.unavailable.load(Ordering::Acquire) {
            return;
        }
        if this.state.running.load(Ordering::Acquire) != 0 {
            if !replace(this) {
                return;
            }
            if let Some(old) = task.handle.take() {
                old.abort();
            }
            tracing::warn!(
                stale_after = ?this.stale_after,
                "memory store maintenance task stopped sweeping (its runtime is no longer \
                 driven); starting a new one on the current runtime"
            );
        }
        task.generation += 1;
        let generation = task.generation;
        let stop = this.stop.subscribe();
        // Set before spawning: the task's guard clears them when the task ends, whenever that is.
        this.beat(Instant::now());
        this.state.running.store(generation, Ordering::Release);
        let running = Running {
            state: Arc::clone(&this.state),
            generation,
        };
        let run = CatchPanic(
            Box::pin(run(Arc::downgrade(shared), stop, interval)),
            running,
        );
        task.handle = Some(runtime.spawn(run));
        tracing::debug!(
            ?interval,
            generation,
            "memory store maintenance task started"
        );
    }

    /// Whether a task runs and swept recently enough (otherwise `create` sweeps a little itself
    /// and calls [`revive`](Self::revive)). `now` is the caller's clock reading.
    pub(crate) fn is_alive(&self, now: Instant) -> bool {
        if self.state.running.load(Ordering::Acquire) == 0 {
            return false;
        }
        let beat = self.state.heartbeat.load(Ordering::Acquire);
        let age = self.state.since_epoch(now).saturating_sub(beat);
        u128::from(age) <= self.stale_after.as_nanos()
    }

    /// Records that the task is sweeping at `now`.
    pub(crate) fn beat(&self, now: Instant) {
        let at = self.state.since_epoch(now);
        self.state.heartbeat.fetch_max(at, Ordering::AcqRel);
    }

    /// The task's abort handle, to watch it end in tests.
    #[cfg(test)]
    pub(crate) fn task(&self) -> Option<tokio::task::AbortHandle> {
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .handle
            .as_ref()
            .map(JoinHandle::abort_handle)
    }

    /// Whether a task runs, swept lately or not (tests).
    #[cfg(test)]
    pub(crate) fn is_running(&self) -> bool {
        self.state.running.load(Ordering::Acquire) != 0
    }

    /// How many tasks were spawned so far (tests).
    #[cfg(test)]
    pub(crate) fn spawned(&self) -> u64 {
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .generation
    }

    /// Whether maintenance gave up for good (tests).
    #[cfg(test)]
    pub(crate) fn unavailable(&self) -> bool {
        self.state.unavailable.load(Ordering::Acquire)
    }
}

/// Held by the task: clears the running flag when the task ends (also when its runtime drops
/// it), unless a newer task replaced it.
#[derive(Debug)]
struct Running {
    state: Arc<State>,
    generation: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.state.running.compare_exchange(
            self.generation,
            0,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

/// The task's future, polled under `catch_unwind`: a panic (the one case known is
/// `tokio::time::sleep` on a runtime built without `enable_time`) marks maintenance unavailable
/// for good and ends the task, instead of leaving every later operation to spawn a task that
/// panics again. The panic message itself still goes to the panic hook, once.
struct CatchPanic(Pin<Box<dyn Future<Output = ()> + Send>>, Running);

impl Future for CatchPanic {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.0.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                if !this.1.state.unavailable.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        "memory store maintenance task panicked (is the tokio runtime built \
                         without its time driver, `enable_time`?); no task will be started \
                         again: each create sweeps a little of its shard instead"
                    );
                }
                Poll::Ready(())
            }
        }
    }
}

async fn run(store: Weak<Shared>, mut stop: watch::Receiver<()>, interval: Duration) {
    loop {
        tokio::select! {
            // Only an error can arrive: the sender was dropped with the store.
            _ = stop.changed() => break,
            () = tokio::time::sleep(interval) => {}
        }
        let Some(store) = store.upgrade() else { break };
        store.maintenance.beat(Instant::now());
        store.sweep_expired().await;
        // Dropped before sleeping, so that the task never keeps a dropped store alive.
        drop(store);
    }
    tracing::debug!("memory store maintenance task stopped");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{MemoryOptions, MemoryStore};
    use session_core::{EndReason, SessionStore};

    #[tokio::test]
    async fn task_ends_when_the_store_is_dropped() {
        let store = MemoryStore::with_options(
            MemoryOptions::new().with_maintenance_interval(Duration::from_secs(3600)),
        );
        let task = store.maintenance_task().unwrap();
        let clone = store.clone();
        drop(store);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished(), "a clone still uses the store");
        drop(clone);
        // With an hour-long interval, only the stop signal can end it this quickly.
        tokio::time::timeout(Duration::from_secs(1), async {
            while !task.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
    }

    #[test]
    fn constructing_outside_a_runtime_starts_the_task_lazily() {
        let store = MemoryStore::new();
        assert!(store.maintenance_task().is_none());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let _events = store.expiry_events().await.unwrap();
            assert!(store.maintenance_task().is_some());
        });
    }

    #[test]
    fn task_restarts_on_a_new_runtime_after_the_first_one_ends() {
        let store = MemoryStore::with_options(
            MemoryOptions::new().with_maintenance_interval(Duration::from_millis(20)),
        );
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        first.block_on(async {
            let _events = store.expiry_events().await.unwrap();
            assert!(store.shared.maintenance.is_running());
        });
        drop(first);
        assert!(
            !store.shared.maintenance.is_running(),
            "the task ended with its runtime"
        );
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        second.block_on(async {
            let mut events = store.expiry_events().await.unwrap();
            assert!(store.shared.maintenance.is_running(), "restarted");
            let key = crate::test_util::key_in("/restart");
            store
                .create(
                    &key,
                    &session_core::Items::new(),
                    Duration::from_millis(50),
                    true,
                )
                .await
                .unwrap();
            let event = tokio::time::timeout(Duration::from_secs(1), events.next())
                .await
                .expect("the restarted task reports the expiry promptly")
                .unwrap();
            assert_eq!(event.key, key);
        });
    }

    #[test]
    fn a_runtime_without_a_timer_gets_one_task_and_no_more() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = MemoryStore::new();
        runtime.block_on(async {
            for _ in 0..5 {
                let key = crate::test_util::key_in("/no-timer");
                let none = session_core::Items::new();
                let long = crate::test_util::LONG;
                store.create(&key, &none, long, true).await.unwrap();
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
            }
        });
        let maintenance = &store.shared.maintenance;
        assert_eq!(maintenance.spawned(), 1, "spawned once");
        assert!(maintenance.unavailable(), "given up for good");
        assert!(!maintenance.is_alive(std::time::Instant::now()));
    }

    #[test]
    fn a_task_that_stops_sweeping_is_replaced_by_the_next_create() {
        let store = MemoryStore::with_options(
            MemoryOptions::new().with_maintenance_interval(Duration::from_millis(5)),
        );
        let idle = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        idle.block_on(async { store.expiry_events().await.unwrap() });
        let maintenance = &store.shared.maintenance;
        // Never driven again: no heartbeat for four intervals (at least 50 ms).
        let until = std::time::Instant::now() + Duration::from_millis(60);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        assert!(!maintenance.is_alive(std::time::Instant::now()));
        let first = store.maintenance_task().unwrap();
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        current.block_on(async {
            let key = crate::test_util::key_in("/revive");
            let none = session_core::Items::new();
            let long = crate::test_util::LONG;
            store.create(&key, &none, long, true).await.unwrap();
            assert_eq!(maintenance.spawned(), 2, "replaced");
            // The new task beats (within a few intervals, more under a loaded machine).
            tokio::time::sleep(Duration::from_millis(30)).await;
            let until = std::time::Instant::now() + Duration::from_secs(2);
            while !maintenance.is_alive(std::time::Instant::now()) {
                assert!(
                    std::time::Instant::now() < until,
                    "the new task never swept"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        drop(idle);
        assert!(first.is_finished(), "the old task was aborted");
        assert_eq!(maintenance.spawned(), 2);
    }

    #[tokio::test]
    async fn the_sweep_removes_expired_sessions_and_moves_slid_ones_on() {
        // The task runs but, with an hour-long interval, never sweeps by itself: the test does.
        let store = MemoryStore::with_options(
            MemoryOptions::new().with_maintenance_interval(Duration::from_secs(3600)),
        );
        let mut events = store.expiry_events().await.unwrap();
        let [expiring, slid, long] = [(); 3].map(|()| crate::test_util::key_in("/sweep"));
        let short = Duration::from_millis(100);
        let none = session_core::Items::new();
        store.create(&expiring, &none, short, true).await.unwrap();
        store.create(&slid, &none, short, true).await.unwrap();
        store
            .create(&long, &none, Duration::from_secs(60), true)
            .await
            .unwrap();

        // Past the window (10 ms of 100), so the touch slides.
        tokio::time::sleep(Duration::from_millis(60)).await;
        store.touch(&slid).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        store.shared.sweep_expired().await;

        let event = events.next().await.unwrap();
        assert_eq!(
            (event.key, event.reason),
            (expiring.clone(), EndReason::Expired)
        );
        let held = |k| store.shared.with_shard(k, |s| s.get(k).map(|r| r.due));
        assert!(held(&expiring).is_none(), "removed");
        let due = held(&slid).expect("kept").0;
        let expires = store
            .shared
            .with_shard(&slid, |s| s.get(&slid).unwrap().expires_at);
        assert_eq!(due, expires, "its entry moved on to its current deadline");
        assert_eq!(store.shared.len(), 2);
        let indexed: usize = [&slid, &long]
            .iter()
            .map(|k| store.shared.with_shard(k, |s| s.indexed().0))
            .sum();
        assert!(indexed >= 2, "one index entry per session");
    }

    #[tokio::test]
    async fn a_shortened_timeout_is_swept_at_its_new_deadline() {
        let store = MemoryStore::with_options(
            MemoryOptions::new().with_maintenance_interval(Duration::from_secs(3600)),
        );
        let mut events = store.expiry_events().await.unwrap();
        let key = crate::test_util::key_in("/shorter");
        store
            .create(
                &key,
                &session_core::Items::new(),
                Duration::from_secs(60),
                true,
            )
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

    #[tokio::test]
    async fn a_mass_expiry_is_swept_in_batches_with_every_event() {
        let store = MemoryStore::with_options(
            MemoryOptions::new()
                .with_maintenance_interval(Duration::from_secs(3600))
                .with_event_capacity(4096),
        );
        let mut events = store.expiry_events().await.unwrap();
        let short = Duration::from_millis(30);
        for _ in 0..2000 {
            let key = crate::test_util::key_in("/mass");
            store
                .create(&key, &session_core::Items::new(), short, true)
                .await
                .unwrap();
        }
        tokio::time::sleep(short * 2).await;
        store.shared.sweep_expired().await;
        assert_eq!(store.shared.len(), 0);
        for _ in 0..2000 {
            let event = events.next().await.unwrap();
            assert_eq!(event.reason, EndReason::Expired);
        }
    }

    /// Runs a store operation to completion outside any tokio runtime (the memory store's
    /// operations never wait, so one poll does).
    fn outside_tokio<F: std::future::Future>(operation: F) -> F::Output {
        let mut operation = std::pin::pin!(operation);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match operation.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("a memory store operation waited"),
        }
    }

    #[test]
    fn without_a_runtime_creates_clear_expired_sessions() {
        let store = MemoryStore::new();
        let short = Duration::from_millis(5);
        let none = session_core::Items::new();
        for _ in 0..200 {
            let key = crate::test_util::key_in("/no-runtime");
            outside_tokio(store.create(&key, &none, short, true)).unwrap();
        }
        assert!(
            store.maintenance_task().is_none(),
            "no task outside a runtime"
        );
        // Outside any runtime, so no timer: wait on the clock the deadlines use.
        let until = std::time::Instant::now() + short * 2;
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        for _ in 0..200 {
            let key = crate::test_util::key_in("/no-runtime");
            outside_tokio(store.create(&key, &none, Duration::from_secs(60), true)).unwrap();
        }
        // Each create clears up to two expired sessions of its shard.
        let left = store.shared.len() - 200;
        assert!(left < 100, "{left} expired sessions left");
    }
}
