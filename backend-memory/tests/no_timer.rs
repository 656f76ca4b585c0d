//! The memory store on a tokio runtime built without its time driver (`enable_time`): the
//! maintenance task cannot sleep there. It must fail once, not on every operation, and `create`
//! must clear expired sessions instead. A test binary of its own: it counts panics with a
//! process-wide panic hook.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backend_memory::MemoryStore;
use session_core::{AppName, Items, SessionId, SessionKey, SessionStore};

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn key() -> SessionKey {
    SessionKey::new(
        AppName::new("/no-timer").unwrap(),
        SessionId::generate().unwrap(),
    )
}

/// The number of sessions the store holds, from its `Debug` output.
fn sessions(store: &MemoryStore) -> usize {
    let shown = format!("{store:?}");
    let from = shown.find("sessions: ").unwrap() + "sessions: ".len();
    let digits: String = shown[from..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn without_a_timer_the_task_fails_once_and_creates_sweep_instead() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let none = Items::new();
    runtime.block_on(async {
        for _ in 0..5 {
            let long = Duration::from_secs(60);
            store.create(&key(), &none, long, true).await.unwrap();
            // Lets a spawned task run (and fail).
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
        let short = Duration::from_millis(5);
        for _ in 0..200 {
            store.create(&key(), &none, short, true).await.unwrap();
        }
        // No timer on this runtime: wait on the clock the deadlines use.
        let until = std::time::Instant::now() + short * 2;
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        for _ in 0..200 {
            let long = Duration::from_secs(60);
            store.create(&key(), &none, long, true).await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    let panics = PANICS.load(Ordering::SeqCst);
    assert!(panics <= 1, "the maintenance task panicked {panics} times");
    // Each create cleared up to two expired sessions of its shard.
    let left = sessions(&store) - 205;
    assert!(left < 100, "{left} expired sessions left");
}
