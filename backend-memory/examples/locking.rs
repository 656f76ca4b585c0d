//! Exclusive sessions take turns: eight concurrent requests increment one counter and none of the
//! updates is lost, because each request holds the session's lock from `open` to `end` and the
//! memory store wakes the next waiter as soon as the lock is released. Then a read-only request
//! waits while a writer holds the lock.
//!
//! Run with `cargo run -p backend-memory --example locking`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_memory::MemoryStore;
use session_core::{Access, AppName, Config, SessionManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::builder()
        .application_name(AppName::new("/demo")?)
        // Give up on a lock after 5 s; poll only as a safety net (the store wakes waiters itself).
        .lock_wait_timeout(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(500))
        .build()?;
    let manager = SessionManager::new(Arc::new(MemoryStore::new()), &config);
    let start = Instant::now();
    let ms = move || start.elapsed().as_millis();

    // 1. A new session: store a counter.
    let mut session = manager.open(None, Access::Exclusive).await?;
    session.insert("counter", &0u32)?;
    let id = session.id().expose().to_owned();
    println!("{:>4} ms  new session {}: counter = 0", ms(), session.id());
    let outcome = session.end().await?;
    println!("{:>4} ms  ended: {outcome:?}", ms());

    // 2. Eight exclusive requests on the same session at once.
    let workers: Vec<_> = (1..=8)
        .map(|worker| {
            let (manager, id) = (manager.clone(), id.clone());
            tokio::spawn(async move {
                let mut session = manager.open(Some(&id), Access::Exclusive).await?;
                let locked_at = ms();
                let counter: u32 = session.get("counter")?.unwrap_or(0);
                session.insert("counter", &(counter + 1))?;
                tokio::time::sleep(Duration::from_millis(10)).await;
                let released_at = ms();
                session.end().await?;
                Ok::<_, session_core::Error>((locked_at, released_at, worker, counter))
            })
        })
        .collect();
    let mut turns = Vec::new();
    for worker in workers {
        turns.push(worker.await??);
    }
    turns.sort_unstable();
    for (locked_at, released_at, worker, counter) in &turns {
        println!(
            "{locked_at:>4} ms  worker {worker} holds the lock: counter {counter} -> {} (until {released_at} ms)",
            counter + 1
        );
    }
    let took_turns = turns.windows(2).all(|w| w[1].0 >= w[0].1);
    println!("          turns never overlapped: {took_turns}");

    let reader = manager.open(Some(&id), Access::ReadOnly).await?;
    let counter: u32 = reader.get("counter")?.unwrap_or(0);
    println!("{:>4} ms  read-only: counter = {counter}", ms());
    if counter != 8 {
        return Err(format!("an update was lost: counter = {counter}").into());
    }
    reader.end().await?;

    // 3. A read-only request waits while a writer holds the lock.
    let mut writer = manager.open(Some(&id), Access::Exclusive).await?;
    println!("{:>4} ms  writer holds the lock", ms());
    let reading = {
        let (manager, id) = (manager.clone(), id.clone());
        tokio::spawn(async move {
            let asked_at = ms();
            let reader = manager.open(Some(&id), Access::ReadOnly).await?;
            let counter: Option<u32> = reader.get("counter")?;
            println!(
                "{:>4} ms  reader (asked at {asked_at} ms) sees counter = {counter:?}",
                ms()
            );
            reader.end().await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    writer.insert("counter", &9u32)?;
    println!("{:>4} ms  writer sets counter = 9 and ends", ms());
    writer.end().await?;
    reading.await??;
    Ok(())
}
