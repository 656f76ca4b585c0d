//! Concurrency: no lost update among exclusive writers, one winner among simultaneous acquires and
//! creates, merges among lock-free writers (SPEC §2, §5).

use std::sync::Arc;

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{Access, AcquireOutcome, CreateOutcome, Delta, Items};

pub(super) async fn exclusive_writers_lose_no_update(h: Harness) -> Outcome {
    let manager = h.manager(|c| c)?;
    let mut s = manager.open(None, Access::Exclusive).await?;
    s.insert("counter", &0u32)?;
    let id = s.id().expose().to_owned();
    s.end().await?;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let manager = manager.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = manager.open(Some(&id), Access::Exclusive).await?;
            let n: u32 = s.get("counter")?.unwrap_or(0);
            tokio::task::yield_now().await;
            s.insert("counter", &(n + 1))?;
            s.end().await
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| super::Failed::new(format!("writer panicked: {e}")))??;
    }
    let s = manager.open(Some(&id), Access::ReadOnly).await?;
    let n: Option<u32> = s.get("counter")?;
    check!(
        n == Some(32),
        "32 exclusive writers incrementing one counter must reach 32, got {n:?}"
    );
    Ok(())
}

pub(super) async fn simultaneous_acquires_have_one_winner(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let store = Arc::clone(h.store());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let store = Arc::clone(&store);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            store
                .acquire(&key, crate::LockToken::generate()?, LONG_TTL)
                .await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if let AcquireOutcome::Acquired(_) =
            t.await.map_err(|e| super::Failed::new(e.to_string()))??
        {
            winners += 1;
        }
    }
    check!(
        winners == 1,
        "exactly one of 32 simultaneous acquires may win, got {winners}"
    );
    Ok(())
}

pub(super) async fn simultaneous_creates_have_one_winner(h: Harness) -> Outcome {
    let key = h.key()?;
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let store = Arc::clone(h.store());
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create(&key, &items(&[("writer", i)]), LONG, true)
                .await
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.map_err(|e| super::Failed::new(e.to_string()))?? == CreateOutcome::Created {
            created += 1;
        }
    }
    check!(
        created == 1,
        "SPEC §2 rule 2: exactly one of 16 simultaneous creates may win, got {created}"
    );
    Ok(())
}

pub(super) async fn concurrent_writers_of_distinct_items_merge(h: Harness) -> Outcome {
    let key = seed(&h, &Items::new(), LONG).await?;
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let store = Arc::clone(h.store());
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let delta = Delta::new().with_set(format!("w{i}"), val(i));
            store.write_concurrent(&key, &delta, LONG).await
        }));
    }
    for t in tasks {
        t.await.map_err(|e| super::Failed::new(e.to_string()))??;
    }
    let snap = found(&h, &key).await?;
    check!(
        snap.items.len() == 16,
        "16 lock-free writers of distinct items must all survive, got {}",
        snap.items.len()
    );
    Ok(())
}
