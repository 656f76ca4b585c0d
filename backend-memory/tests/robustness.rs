//! The memory store under conditions the contract suite does not set up: expiry bursts larger
//! than the event buffer, a capacity bound meeting locked and expired sessions, and a maintenance
//! task whose runtime stopped being driven.

use std::time::{Duration, Instant};

use backend_memory::{MemoryOptions, MemoryStore};
use session_core::{
    AcquireOutcome, AppName, CommitOutcome, Delta, EndReason, ExpiryEvents, ItemValue, Items,
    LockToken, ReadOutcome, SessionId, SessionKey, SessionStore,
};

const LONG: Duration = Duration::from_secs(60);

fn key() -> SessionKey {
    SessionKey::new(
        AppName::new("/robust").unwrap(),
        SessionId::generate().unwrap(),
    )
}

/// Counts events until none arrives for `quiet`.
async fn count_events(events: &mut ExpiryEvents, quiet: Duration) -> usize {
    let mut got = 0;
    while let Ok(Some(_)) = tokio::time::timeout(quiet, events.next()).await {
        got += 1;
    }
    got
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

/// Default options: 1000 sessions expiring within one maintenance interval reach a subscriber
/// that does nothing but count, every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counting_subscriber_receives_every_event_of_an_expiry_burst() {
    let store = MemoryStore::new();
    let mut events = store.expiry_events().await.unwrap();
    for _ in 0..1000 {
        let short = Duration::from_millis(30);
        store
            .create(&key(), &Items::new(), short, true)
            .await
            .unwrap();
    }
    let got = count_events(&mut events, Duration::from_millis(500)).await;
    assert_eq!(got, 1000, "events lost");
}

/// A burst many times the event buffer: the sweep waits for the subscriber instead of overrunning
/// it, on a current-thread runtime too (where the two take turns).
#[tokio::test]
async fn a_burst_many_times_the_event_buffer_is_delivered_whole() {
    let store = MemoryStore::with_options(
        MemoryOptions::new()
            .with_event_capacity(16)
            .with_maintenance_interval(Duration::from_millis(20)),
    );
    let mut events = store.expiry_events().await.unwrap();
    let short = Duration::from_millis(30);
    for _ in 0..2000 {
        store
            .create(&key(), &Items::new(), short, true)
            .await
            .unwrap();
    }
    let got = count_events(&mut events, Duration::from_millis(500)).await;
    assert_eq!(got, 2000, "events lost");
}

/// A subscriber that never reads does not stop the sweep: it is waited for about one interval
/// per sweep, then skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_does_not_stop_the_sweep() {
    let store = MemoryStore::with_options(
        MemoryOptions::new().with_maintenance_interval(Duration::from_millis(20)),
    );
    let _stuck = store.expiry_events().await.unwrap();
    for _ in 0..3000 {
        let short = Duration::from_millis(10);
        store
            .create(&key(), &Items::new(), short, true)
            .await
            .unwrap();
    }
    let started = Instant::now();
    while sessions(&store) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{} sessions left",
            sessions(&store)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Past the bound, eviction looks past a locked session: the request holding it commits.
#[tokio::test]
async fn eviction_never_takes_a_locked_session() {
    let store = MemoryStore::with_options(MemoryOptions::new().with_max_sessions(2));
    let mut events = store.expiry_events().await.unwrap();
    let held = key();
    store
        .create(&held, &Items::new(), LONG, true)
        .await
        .unwrap();
    let token = LockToken::generate().unwrap();
    let acquired = store.acquire(&held, token, LONG).await.unwrap();
    assert!(matches!(acquired, AcquireOutcome::Acquired(_)));
    let (second, third) = (key(), key());
    store
        .create(&second, &Items::new(), LONG, true)
        .await
        .unwrap();
    store
        .create(&third, &Items::new(), LONG, true)
        .await
        .unwrap();

    let delta = Delta::new().with_set("cart", ItemValue::from_bytes(&b"x"[..]));
    let committed = store.commit(&held, token, &delta, LONG).await.unwrap();
    assert_eq!(
        committed,
        CommitOutcome::Committed,
        "the locked session was evicted"
    );
    let event = events.next().await.unwrap();
    assert_eq!((event.key, event.reason), (second, EndReason::Expired));
    assert!(
        matches!(store.read(&held).await.unwrap(), ReadOutcome::Found(s) if s.items.contains_key("cart"))
    );
    assert_eq!(sessions(&store), 2);

    // Every session locked: the bound is exceeded until a lock is let go.
    let tokens: Vec<_> = [&held, &third]
        .into_iter()
        .map(|k| (k.clone(), LockToken::generate().unwrap()))
        .collect();
    for (k, t) in &tokens {
        let acquired = store.acquire(k, *t, LONG).await.unwrap();
        assert!(matches!(acquired, AcquireOutcome::Acquired(_)));
    }
    let fourth = key();
    store
        .create(&fourth, &Items::new(), LONG, true)
        .await
        .unwrap();
    assert_eq!(sessions(&store), 3, "nothing evictable");
    for (k, t) in &tokens {
        let committed = store.commit(k, *t, &Delta::new(), LONG).await.unwrap();
        assert_eq!(committed, CommitOutcome::Committed);
    }
    // The next create past the bound evicts the least recently used unlocked session: `fourth`
    // (the commits were uses of the other two).
    store
        .create(&key(), &Items::new(), LONG, true)
        .await
        .unwrap();
    let mut evicted = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
        evicted.push(e.key);
    }
    assert_eq!(evicted, [fourth.clone(), held.clone()]);
    assert_eq!(sessions(&store), 2);
}

/// An expired session nobody has swept yet gives up its place before a live one is evicted.
#[tokio::test]
async fn eviction_takes_an_expired_session_before_a_live_one() {
    let store = MemoryStore::with_options(
        MemoryOptions::new()
            .with_max_sessions(2)
            .with_maintenance_interval(Duration::from_secs(3600)),
    );
    let mut events = store.expiry_events().await.unwrap();
    let (live, short) = (key(), key());
    store
        .create(&live, &Items::new(), LONG, true)
        .await
        .unwrap();
    let five_ms = Duration::from_millis(5);
    store
        .create(&short, &Items::new(), five_ms, true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    store
        .create(&key(), &Items::new(), LONG, true)
        .await
        .unwrap();
    let event = events.next().await.unwrap();
    assert_eq!((event.key, event.reason), (short, EndReason::Expired));
    assert!(
        matches!(store.read(&live).await.unwrap(), ReadOutcome::Found(_)),
        "a live session was evicted while an expired one held a place"
    );
    assert_eq!(sessions(&store), 2);
}

/// A store first used on a runtime that stays alive but is never driven again: its task there
/// never sweeps. Creates on the runtime in use notice (no sweep for a few intervals), replace the
/// task there, and the expired sessions go.
#[test]
fn a_task_on_a_runtime_no_longer_driven_is_replaced() {
    let store = MemoryStore::with_options(
        MemoryOptions::new().with_maintenance_interval(Duration::from_millis(5)),
    );
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    setup.block_on(async {
        store.expiry_events().await.unwrap();
    });
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    server.block_on(async {
        let mut events = store.expiry_events().await.unwrap();
        for _ in 0..500 {
            let short = Duration::from_millis(1);
            store
                .create(&key(), &Items::new(), short, true)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..500 {
            store
                .create(&key(), &Items::new(), LONG, true)
                .await
                .unwrap();
        }
        let event = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
        assert!(matches!(event, Ok(Some(_))), "no expiry event");
        let started = Instant::now();
        while sessions(&store) > 500 {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{} expired sessions left",
                sessions(&store) - 500
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    drop(setup);
}
