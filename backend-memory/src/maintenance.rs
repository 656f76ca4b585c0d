//! The maintenance task: every `maintenance_interval` it runs the expiry sweep
//! (`Shared::sweep_expired`), which removes the sessions past their deadline and reports their
//! end. Operations never sweep (but for `create` when no task can run, see `Shared::create`):
//! whatever expires, a request's latency does not pay for it. An operation that meets an expired
//! session ends it at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::Shared;

/// Starts the task, restarts it if it ended (its runtime shut down), and stops it with the store
/// (mini-redis' `DbDropGuard` pattern).
#[derive(Debug)]
pub(crate) struct Maintenance {
    /// Fast path for the check every operation makes: true while the task runs. The task clears it
    /// when it ends for any reason (store dropped, runtime shut down, panic), so the next operation
    /// inside a runtime starts a new one.
    started: Arc<AtomicBool>,
    /// The task, once spawned. A std mutex: held only to spawn, never across an `.await`.
    task: Mutex<Option<JoinHandle<()>>>,
    /// Never sent on: dropping it with the store tells the task to stop at once. The task also
    /// holds only a `Weak` to the store, so it never keeps the sessions alive.
    stop: watch::Sender<()>,
}

impl Maintenance {
    pub(crate) fn new() -> Self {
        Self {
            started: Arc::new(AtomicBool::new(false)),
            task: Mutex::new(None),
            stop: watch::channel(()).0,
        }
    }

    /// Spawns the task on the current tokio runtime if it is not running yet. Outside a runtime it
    /// does nothing (constructing a store must not panic there); the next operation or
    /// `expiry_events()` inside one starts it.
    pub(crate) fn ensure_started(shared: &Arc<Shared>, interval: Duration) {
        let this = &shared.maintenance;
        if this.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut task = this.task.lock().unwrap_or_else(PoisonError::into_inner);
        if this.started.load(Ordering::Acquire) {
            return;
        }
        let stop = this.stop.subscribe();
        // Set before spawning: the task's guard clears it when the task ends, whenever that is.
        this.started.store(true, Ordering::Release);
        let running = Running(Arc::clone(&this.started));
        *task = Some(runtime.spawn(run(Arc::downgrade(shared), stop, interval, running)));
        tracing::debug!(?interval, "memory store maintenance task started");
    }

    /// Whether the task runs (otherwise `create` sweeps a little itself).
    pub(crate) fn is_running(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// The task's abort handle, to watch it end in tests.
    #[cfg(test)]
    pub(crate) fn task(&self) -> Option<tokio::task::AbortHandle> {
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(JoinHandle::abort_handle)
    }
}

/// Held by the task: clears the running flag when the task ends, also when its runtime drops it.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn run(
    store: Weak<Shared>, mut stop: watch::Receiver<()>, interval: Duration, _running: Running,
) {
    loop {
        tokio::select! {
            // Only an error can arrive: the sender was dropped with the store.
            _ = stop.changed() => break,
            () = tokio::time::sleep(interval) => {}
        }
        let Some(store) = store.upgrade() else { break };
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
