//! Concurrency: no lost update among exclusive writers, one winner among simultaneous acquires and
//! creates, merges among lock-free writers (docs/contract.md §2, §5).

use std::future::Future;
use std::sync::Arc;

use super::support::*;
use super::{Failed, Harness, Outcome, check};
use crate::{Access, AcquireOutcome, CreateOutcome, Delta, Items};

/// Runs `n` copies of `task` (given their index) at once and collects what they return; a task
/// that panics or fails fails the behaviour.
async fn all_at_once<T, F>(n: u32, task: impl Fn(u32) -> F) -> Result<Vec<T>, Failed>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Failed>> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(task(i))).collect();
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(
            t.await
                .map_err(|e| Failed::new(format!("task panicked: {e}")))??,
        );
    }
    Ok(results)
}

pub(super) async fn exclusive_writers_lose_no_update(h: Harness) -> Outcome {
    let manager = h.manager(|c| c)?;
    let mut s = manager.open(None, Access::Exclusive).await?;
    s.insert("counter", &0u32)?;
    let id = s.id().expose().to_owned();
    s.end().await?;
    all_at_once(32, |_| {
        let (manager, id) = (manager.clone(), id.clone());
        async move {
            let mut s = manager.open(Some(&id), Access::Exclusive).await?;
            let n: u32 = s.get("counter")?.unwrap_or(0);
            tokio::task::yield_now().await;
            s.insert("counter", &(n + 1))?;
            Ok(s.end().await?)
        }
    })
    .await?;
    let s = manager.open(Some(&id), Access::ReadOnly).await?;
    let n: Option<u32> = s.get("counter")?;
    check!(
        n == Some(32),
        "32 exclusive writers incrementing one counter must reach 32, got {n:?}"
    );
    Ok(())
}

pub(super) async fn simultaneous_acquires_have_one_winner(h: Harness) -> Outcome {
    let key = seed_a1(&h, LONG).await?;
    let outcomes = all_at_once(32, |_| {
        let h = h.clone();
        let key = key.clone();
        async move { acquire_fresh(&h, &key).await }
    })
    .await?;
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, AcquireOutcome::Acquired(_)))
        .count();
    check!(
        winners == 1,
        "exactly one of 32 simultaneous acquires may win, got {winners}"
    );
    Ok(())
}

pub(super) async fn simultaneous_creates_have_one_winner(h: Harness) -> Outcome {
    let key = h.key()?;
    let outcomes = all_at_once(16, |i| {
        let store = Arc::clone(h.store());
        let key = key.clone();
        async move {
            Ok(store
                .create(&key, &items(&[("writer", i)]), LONG, true)
                .await?)
        }
    })
    .await?;
    let created = outcomes
        .iter()
        .filter(|o| **o == CreateOutcome::Created)
        .count();
    check!(
        created == 1,
        "docs/contract.md §2 rule 2: exactly one of 16 simultaneous creates may win, got {created}"
    );
    Ok(())
}

pub(super) async fn concurrent_writers_of_distinct_items_merge(h: Harness) -> Outcome {
    let key = seed(&h, &Items::new(), LONG).await?;
    all_at_once(16, |i| {
        let store = Arc::clone(h.store());
        let key = key.clone();
        async move {
            let delta = Delta::new().with_set(format!("w{i}"), val(i));
            Ok(store.write_concurrent(&key, &delta, LONG).await?)
        }
    })
    .await?;
    let snap = found(&h, &key).await?;
    check!(
        snap.items.len() == 16,
        "16 lock-free writers of distinct items must all survive, got {}",
        snap.items.len()
    );
    Ok(())
}
