//! A mass expiry under load: N sessions (10 items × 150 B each) whose ends are spread evenly over
//! a window (default 20 s), while 32 tasks read other sessions; one subscriber counts the expiry
//! events. Prints the delivery rate, completeness (with their items / items lost / empty
//! `Expired` / missing), the time from the last expiry to the last event, and this process's RSS.
//!
//! ```text
//! cargo run --release -p backend-redis --example expiry_storm -- redis://127.0.0.1:6379 200000 [window_s]
//! ```
//!
//! The server needs `notify-keyspace-events` with `E` and `x` (`scripts/redis/start.sh` sets
//! `Egx`). A URL with a database (`redis://127.0.0.1:6379/12`) keeps the storm apart from other
//! keys. It is a measurement, not a test: run it on a server nobody else is loading.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backend_redis::RedisStore;
use session_core::{
    AppName, Config, EndReason, ItemValue, Items, RefreshWindow, SessionId, SessionKey,
    SessionStore,
};

const TASKS: usize = 32;
/// Sessions the readers read (long-lived, never expiring during the run).
const READ_POOL: usize = 2_000;
/// How long to wait for the last events after the last expiry.
const WAIT_AFTER: Duration = Duration::from_secs(150);

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let window = Duration::from_secs(args.next().and_then(|n| n.parse().ok()).unwrap_or(20));
    let app = AppName::new(&format!("/storm/{}", SessionId::generate()?.expose()))?;
    let config = Config::builder()
        .url(&url)
        .application_name(app.clone())
        .refresh_window(RefreshWindow::EXACT)
        .build()?;
    let store = Arc::new(RedisStore::connect(&config).await?);
    if !store.capabilities().expiry_events {
        return Err("the server has no keyspace notifications for expired keys".into());
    }
    let mut items = Items::new();
    for i in 0..10 {
        items.insert(format!("item{i}"), ItemValue::from_bytes(vec![7u8; 150]));
    }
    let pool: Arc<Vec<SessionKey>> = Arc::new(
        (0..READ_POOL)
            .map(|_| SessionId::generate().map(|id| SessionKey::new(app.clone(), id)))
            .collect::<Result<_, _>>()?,
    );
    for key in pool.iter() {
        store
            .create(key, &items, Duration::from_secs(3600), true)
            .await?;
    }
    let keys: Arc<Vec<SessionKey>> = Arc::new(
        (0..n)
            .map(|_| SessionId::generate().map(|id| SessionKey::new(app.clone(), id)))
            .collect::<Result<_, _>>()?,
    );
    let mut expected: HashMap<String, ()> = keys
        .iter()
        .map(|k| (k.id().expose().to_owned(), ()))
        .collect();

    // Readers: 32 tasks reading the pool until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for t in 0..TASKS {
        let (store, pool, stop, reads) = (
            Arc::clone(&store),
            Arc::clone(&pool),
            Arc::clone(&stop),
            Arc::clone(&reads),
        );
        readers.push(tokio::spawn(async move {
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let _ = store.read(&pool[i % pool.len()]).await;
                reads.fetch_add(1, Ordering::Relaxed);
                i += 31;
            }
        }));
    }

    let mut events = store.expiry_events().await?;
    // Creation: the ends are spread over [first_end, first_end + window]; the first end is far
    // enough ahead that every session exists before any expires.
    let create_budget = Duration::from_secs_f64((n as f64 / 4_000.0).max(5.0));
    let start = Instant::now();
    let first_end = start + create_budget;
    let last_end = first_end + window;
    let created = Arc::new(AtomicU64::new(0));
    let mut creators = Vec::new();
    for t in 0..TASKS {
        let (store, keys, items, created) = (
            Arc::clone(&store),
            Arc::clone(&keys),
            items.clone(),
            Arc::clone(&created),
        );
        creators.push(tokio::spawn(async move {
            let mut i = t;
            while i < keys.len() {
                let end = first_end + window.mul_f64(i as f64 / keys.len() as f64);
                let timeout = end.saturating_duration_since(Instant::now());
                if timeout < Duration::from_millis(500) {
                    return Err(format!(
                        "creation too slow: session {i} would expire at once"
                    ));
                }
                store
                    .create(&keys[i], &items, timeout, true)
                    .await
                    .map_err(|e| e.to_string())?;
                created.fetch_add(1, Ordering::Relaxed);
                i += TASKS;
            }
            Ok(())
        }));
    }
    for c in creators {
        c.await??;
    }
    println!(
        "created {n} sessions in {:.1} s; ends from +{:.1} s to +{:.1} s",
        start.elapsed().as_secs_f64(),
        create_budget.as_secs_f64(),
        (create_budget + window).as_secs_f64()
    );
    let rss_before = status_kb("VmRSS");

    // Reads from the first expiry on.
    tokio::time::sleep_until(tokio::time::Instant::from_std(first_end)).await;
    let reads_before = reads.load(Ordering::Relaxed);
    let mut reads_at_last = reads_before;
    let (mut with_items, mut items_lost, mut empty_expired, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut first_event: Option<Instant> = None;
    let mut last_event = Instant::now();
    let mut rss_max = rss_before;
    let deadline = tokio::time::Instant::from_std(last_end + WAIT_AFTER);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while !expected.is_empty() {
        let event = tokio::select! {
            e = tokio::time::timeout_at(deadline, events.next()) => e,
            _ = ticker.tick() => {
                rss_max = rss_max.max(status_kb("VmRSS"));
                continue;
            }
        };
        let Ok(Some(event)) = event else { break };
        if event.key.app() != &app || expected.remove(event.key.id().expose()).is_none() {
            other += 1;
            continue;
        }
        let now = Instant::now();
        first_event.get_or_insert(now);
        last_event = now;
        reads_at_last = reads.load(Ordering::Relaxed);
        let reason = format!("{:?}", event.reason);
        if event.reason == EndReason::Expired && event.items.len() == 10 {
            with_items += 1;
        } else if event.reason == EndReason::Expired && event.items.is_empty() {
            empty_expired += 1;
        } else if reason.contains("Lost") {
            items_lost += 1;
        } else {
            other += 1;
        }
    }
    let reads_during = reads_at_last - reads_before;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    rss_max = rss_max.max(status_kb("VmRSS"));
    let first = first_event.unwrap_or(last_event);
    let span = last_event.duration_since(first).as_secs_f64().max(0.001);
    let delivered = with_items + items_lost + empty_expired;
    let after_last = last_event.saturating_duration_since(last_end).as_secs_f64();
    println!(
        "events: {delivered} of {n} in {span:.1} s ({:.0}/s); with items {with_items}, items \
         lost (ExpiredItemsLost) {items_lost}, EMPTY Expired {empty_expired}, missing {}, other {other}",
        delivered as f64 / span,
        expected.len()
    );
    println!(
        "last event {after_last:.1} s after the last expiry (first event {:.1} s after the first \
         expiry); reads during the storm: {:.0}/s",
        first.saturating_duration_since(first_end).as_secs_f64(),
        reads_during as f64
            / last_event
                .saturating_duration_since(start + create_budget)
                .as_secs_f64()
                .max(0.001)
    );
    println!(
        "RSS: {} MB before the storm, {} MB max during it (+{} MB), high-water mark {} MB",
        rss_before / 1024,
        rss_max / 1024,
        rss_max.saturating_sub(rss_before) / 1024,
        status_kb("VmHWM") / 1024
    );
    println!(
        "subscriber missed (lagged) {}; listener {:?}",
        events.missed(),
        store.expiry_listener_stats()
    );
    for key in pool.iter() {
        let _ = store.delete(key).await;
    }
    Ok(())
}
