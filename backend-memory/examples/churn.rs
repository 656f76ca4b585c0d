//! Churn: creates and deletes sessions at full speed on several tasks and prints the process's
//! resident memory (RSS, from `/proc/self/statm`) and the rate every 10 s, to show that the
//! store's memory follows the live sessions (here a few per task), not the sessions created.
//!
//! Run with `cargo run --release -p backend-memory --example churn -- <seconds> [tasks] [mode]`
//! (defaults: 60 s, 4 tasks, `delete`). Each session holds 10 items of 150 B and a 20-minute
//! timeout, so a store that kept anything per created session until its deadline would grow by
//! that much per create. Linux only for the RSS column (elsewhere it prints 0).
//!
//! Modes, one cycle each (every one leaves at most one live session per task):
//! - `delete`: `create`, `delete`;
//! - `remove`: `create`, `acquire`, `remove`;
//! - `change-id`: `create`, `acquire`, `change_id`, `remove` under the new id;
//! - `watch`: `create`, `acquire`, `watch_release` (dropped without being polled), `release`,
//!   `delete`;
//! - `events`: `create`, `delete`, with an expiry-event subscriber that never reads;
//! - `expire`: `create` with a 20 ms timeout, nothing else (the sweep removes them);
//! - `bounded`: `create` only, on a store bounded to 1,000 sessions (each create evicts one).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backend_memory::MemoryOptions;
use backend_memory::MemoryStore;
use session_core::{
    AcquireOutcome, AppName, ItemValue, Items, LockToken, SessionId, SessionKey, SessionStore,
};

/// The resident set size in bytes (0 where `/proc/self/statm` is not available).
fn rss() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The rest of one cycle of `mode` on the session just created under `key`.
async fn cycle(store: &MemoryStore, key: &SessionKey, mode: &str) {
    let lock = || async {
        let token = LockToken::generate().expect("a token");
        let outcome = store.acquire(key, token, Duration::from_secs(60)).await;
        assert!(matches!(outcome, Ok(AcquireOutcome::Acquired(_))));
        token
    };
    match mode {
        "remove" => {
            let token = lock().await;
            store.remove(key, token).await.expect("remove");
        }
        "change-id" => {
            let token = lock().await;
            let new_id = SessionId::generate().expect("an id");
            store
                .change_id(key, new_id, token)
                .await
                .expect("change_id");
            store
                .remove(&key.with_id(new_id), token)
                .await
                .expect("remove");
        }
        "watch" => {
            let token = lock().await;
            drop(store.watch_release(key).await.expect("watch"));
            store.release(key, token).await.expect("release");
            store.delete(key).await.expect("delete");
        }
        "expire" | "bounded" => {}
        _ => {
            store.delete(key).await.expect("delete");
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(60), |s| s.parse())?;
    let tasks: usize = args.next().map_or(Ok(4), |s| s.parse())?;
    let mode = args.next().unwrap_or_else(|| "delete".to_owned());
    let mode: &'static str = match mode.as_str() {
        "delete" => "delete",
        "remove" => "remove",
        "change-id" => "change-id",
        "watch" => "watch",
        "events" => "events",
        "expire" => "expire",
        "bounded" => "bounded",
        other => return Err(format!("unknown mode {other}").into()),
    };
    let store = if mode == "bounded" {
        MemoryStore::with_options(MemoryOptions::new().with_max_sessions(1000))
    } else {
        MemoryStore::new()
    };
    // Never read: the store must not keep more for it than its event buffer.
    let _unread = if mode == "events" {
        Some(store.expiry_events().await?)
    } else {
        None
    };
    let items: Items = (0..10)
        .map(|i| (format!("item{i}"), ItemValue::from_bytes(vec![b'x'; 150])))
        .collect();
    let items = Arc::new(items);
    let app = AppName::new("/churn")?;
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let timeout = if mode == "expire" {
        Duration::from_millis(20)
    } else {
        Duration::from_secs(20 * 60)
    };

    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (store, items, app) = (store.clone(), Arc::clone(&items), app.clone());
            let (ops, stop) = (Arc::clone(&ops), Arc::clone(&stop));
            tokio::spawn(async move {
                // Session ids are random (OS CSPRNG); a counter mixed into a fixed random prefix
                // keeps the id generation out of the measurement while spreading over shards.
                let base = SessionId::generate().expect("an id").expose().to_owned();
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        n += 1;
                        let tail = format!("{:08x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32);
                        let id = format!("{}{tail}", &base[..base.len() - 8]);
                        let Ok(id) = SessionId::parse(&id) else {
                            continue;
                        };
                        let key = SessionKey::new(app.clone(), id);
                        store
                            .create(&key, &items, timeout, true)
                            .await
                            .expect("create");
                        cycle(&store, &key, mode).await;
                    }
                    ops.fetch_add(256, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    let start = Instant::now();
    let first = rss();
    println!(
        "mode {mode}, tasks {tasks}, {seconds} s; RSS at start {:.1} MiB",
        mib(first)
    );
    println!(
        "{:>6} {:>12} {:>12} {:>14}",
        "t (s)", "RSS (MiB)", "creates/s", "created"
    );
    let mut last_ops = 0;
    let mut last_at = start;
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        let left = Duration::from_secs(seconds).saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(10))).await;
        let now = Instant::now();
        let done = ops.load(Ordering::Relaxed);
        let rate = (done - last_ops) as f64 / now.duration_since(last_at).as_secs_f64();
        let resident = rss();
        samples.push(resident);
        println!(
            "{:>6.0} {:>12.1} {:>12.0} {:>14}",
            start.elapsed().as_secs_f64(),
            mib(resident),
            rate,
            done
        );
        (last_ops, last_at) = (done, now);
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await?;
    }
    let total = ops.load(Ordering::Relaxed);
    let (first_sample, last_sample) = (samples.first().copied(), samples.last().copied());
    if let (Some(a), Some(b)) = (first_sample, last_sample) {
        println!(
            "created {total} sessions; RSS first sample {:.1} MiB, last {:.1} MiB ({:+.1}%), \
             {:.1} B per create since the first sample",
            mib(a),
            mib(b),
            (b as f64 / a as f64 - 1.0) * 100.0,
            (b as f64 - a as f64) / total.max(1) as f64
        );
    }
    Ok(())
}
