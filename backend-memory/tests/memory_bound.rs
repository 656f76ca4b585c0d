//! The store's memory follows its live sessions, not the sessions it ever held: after many cycles
//! of every kind of churn (create+delete, create+remove, `change_id`, create+expire, locks with
//! release watches, an expiry subscriber that never reads, a capacity bound), what it keeps
//! (`MemoryStore::stats`) is bounded by the live sessions plus a constant. Counts, not timings
//! (docs/style.md H16).

use std::time::Duration;

use backend_memory::{MemoryOptions, MemoryStats, MemoryStore};
use session_core::{
    AcquireOutcome, AppName, ChangeIdOutcome, Items, LockToken, SessionId, SessionKey, SessionStore,
};

/// Cycles per test: enough that anything kept per created session would dwarf the bounds below.
const CYCLES: usize = 50_000;

/// A timeout no test outlives.
const LONG: Duration = Duration::from_secs(600);

/// What every shard may hold beyond its live sessions (the store has 64 shards; see
/// `MemoryStats`): generous, and still far below `CYCLES`.
const SLACK: usize = 64 * 80;

fn key() -> SessionKey {
    SessionKey::new(
        AppName::new("/bound").unwrap(),
        SessionId::generate().unwrap(),
    )
}

async fn lock(store: &MemoryStore, key: &SessionKey) -> LockToken {
    let token = LockToken::generate().unwrap();
    let outcome = store.acquire(key, token, LONG).await.unwrap();
    assert!(
        matches!(outcome, AcquireOutcome::Acquired(_)),
        "{outcome:?}"
    );
    token
}

/// Asserts that `stats` holds `live` sessions, each indexed once, in maps of bounded size.
fn holds_only(stats: MemoryStats, live: usize) {
    assert_eq!(stats.sessions, live, "{stats:?}");
    assert_eq!(stats.deadline_entries, live, "{stats:?}");
    assert!(stats.recency_entries <= live, "{stats:?}");
    assert!(stats.slots <= 4 * live + SLACK, "{stats:?}");
    assert_eq!(stats.release_watches, 0, "{stats:?}");
}

#[tokio::test]
async fn create_and_delete_keep_nothing_behind() {
    let store = MemoryStore::new();
    let kept = key();
    store
        .create(&kept, &Items::new(), LONG, true)
        .await
        .unwrap();
    for _ in 0..CYCLES {
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        store.delete(&k).await.unwrap();
    }
    holds_only(store.stats(), 1);
}

#[tokio::test]
async fn create_lock_and_remove_keep_nothing_behind() {
    let store = MemoryStore::new();
    for _ in 0..CYCLES / 2 {
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        let token = lock(&store, &k).await;
        store.remove(&k, token).await.unwrap();
    }
    holds_only(store.stats(), 0);
}

#[tokio::test]
async fn change_id_moves_the_entries_with_the_session() {
    let store = MemoryStore::new();
    // Sessions that stay, each moved many times: still one entry each.
    let mut live = Vec::new();
    for _ in 0..100 {
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        let token = lock(&store, &k).await;
        live.push((k, token));
    }
    for round in 0..CYCLES / 100 / 4 {
        for (k, token) in &mut live {
            let new_id = SessionId::generate().unwrap();
            let moved = store.change_id(k, new_id, *token).await.unwrap();
            assert_eq!(moved, ChangeIdOutcome::Changed, "round {round}");
            *k = k.with_id(new_id);
        }
    }
    // Sessions that go after a move.
    for _ in 0..CYCLES / 4 {
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        let token = lock(&store, &k).await;
        let new_id = SessionId::generate().unwrap();
        store.change_id(&k, new_id, token).await.unwrap();
        store.remove(&k.with_id(new_id), token).await.unwrap();
    }
    holds_only(store.stats(), live.len());
}

#[tokio::test]
async fn dropped_release_watches_cost_nothing() {
    let store = MemoryStore::new();
    for i in 0..CYCLES / 4 {
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        let token = lock(&store, &k).await;
        let mut watch = store.watch_release(&k).await.unwrap();
        if i % 2 == 0 {
            // Polled once (pending), then dropped: a waiter that gave up.
            let pending = tokio::time::timeout(Duration::ZERO, &mut watch).await;
            assert!(pending.is_err());
        }
        drop(watch);
        store.release(&k, token).await.unwrap();
        store.delete(&k).await.unwrap();
    }
    holds_only(store.stats(), 0);
}

#[tokio::test]
async fn an_expiry_subscriber_that_never_reads_pins_at_most_its_buffer() {
    let capacity = 256;
    let store = MemoryStore::with_options(MemoryOptions::new().with_event_capacity(capacity));
    let _unread = store.expiry_events().await.unwrap();
    for _ in 0..CYCLES / 2 {
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
        store.delete(&k).await.unwrap();
    }
    let stats = store.stats();
    holds_only(stats, 0);
    assert!(stats.buffered_events <= capacity, "{stats:?}");
}

#[tokio::test]
async fn a_capacity_bound_keeps_one_recency_entry_per_unlocked_session() {
    let store = MemoryStore::with_options(MemoryOptions::new().with_max_sessions(1000));
    for _ in 0..CYCLES / 20 {
        let k = key();
        store.create(&k, &Items::new(), LONG, true).await.unwrap();
    }
    let stats = store.stats();
    holds_only(stats, 1000);
    assert_eq!(stats.recency_entries, 1000, "{stats:?}");
}

/// Sessions that expire as fast as they are created while the maintenance task does not sweep
/// (here: its interval is an hour; under load: a busy runtime gives it too little time). Before
/// creates helped the sweep, every one of them stayed until the task came round.
#[tokio::test]
async fn expired_sessions_do_not_pile_up_when_the_sweep_falls_behind() {
    let store = MemoryStore::with_options(
        MemoryOptions::new().with_maintenance_interval(Duration::from_secs(3600)),
    );
    // Expired by the next create: the timeout is far shorter than one create.
    let instant = Duration::from_nanos(1);
    for _ in 0..CYCLES {
        let k = key();
        store
            .create(&k, &Items::new(), instant, true)
            .await
            .unwrap();
    }
    let stats = store.stats();
    assert!(stats.sessions <= SLACK, "{stats:?}");
    assert_eq!(stats.deadline_entries, stats.sessions, "{stats:?}");
    assert!(stats.slots <= 4 * SLACK, "{stats:?}");
}
