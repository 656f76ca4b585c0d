//! `create`: insert if absent, never overwrite (docs/contract.md §2, rules 2 and 3).

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{CreateOutcome, Items};

pub(super) async fn creates_unlocked_session(h: Harness) -> Outcome {
    let key = seed_a1(&h, LONG).await?;
    expect_found_item(&h, &key, "a", 1, "create must store the items").await?;
    lock(&h, &key).await?;
    Ok(())
}

pub(super) async fn never_overwrites(h: Harness) -> Outcome {
    let key = seed_a1(&h, LONG).await?;
    let other = items(&[("a", 2u32), ("b", 2)]);
    let out = h.store().create(&key, &other, LONG, true).await?;
    let what = "docs/contract.md §2 rule 2: create of an existing id is AlreadyExists";
    expect(out, CreateOutcome::AlreadyExists, what)?;
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(1) && snap.items.len() == 1,
        "docs/contract.md §2 rule 2: create never overwrites"
    );
    Ok(())
}

pub(super) async fn does_not_touch_a_lock(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let out = h.store().create(&key, &Items::new(), LONG, false).await?;
    let what = "docs/contract.md §2 rule 2: create over a locked session is AlreadyExists";
    expect(out, CreateOutcome::AlreadyExists, what)?;
    held_by(&h, &key, token, "create must not touch the lock").await
}

pub(super) async fn uninitialized_reported_once(h: Harness) -> Outcome {
    let key = seed_uninitialized(&h).await?;
    let mut reports = 0;
    for _ in 0..3 {
        if found(&h, &key).await?.initialize {
            reports += 1;
        }
        let (s, t) = lock(&h, &key).await?;
        if s.initialize {
            reports += 1;
        }
        h.store().release(&key, t).await?;
    }
    check!(
        reports == 1,
        "docs/contract.md §2 rule 3: the uninitialized flag is reported exactly once across reads and acquires, got {reports}"
    );
    Ok(())
}

pub(super) async fn initialized_never_reports_initialize(h: Harness) -> Outcome {
    let key = seed_a1(&h, LONG).await?;
    check!(
        !found(&h, &key).await?.initialize,
        "an initialized session never reports initialize"
    );
    Ok(())
}

pub(super) async fn uses_given_timeout(h: Harness) -> Outcome {
    let key = seed_a1(&h, SHORT).await?;
    check!(
        found(&h, &key).await?.timeout == SHORT,
        "create must store the given timeout"
    );
    sleep(EXPIRE_WAIT).await;
    let what = "a session must expire after the timeout given to create";
    expect_missing(&h, &key, what).await
}

pub(super) async fn over_expired_session_succeeds(h: Harness) -> Outcome {
    let key = seed_expired(&h).await?;
    let a2 = items(&[("a", 2u32)]);
    let out = h.store().create(&key, &a2, LONG, true).await?;
    let what = "an expired session does not exist, so create succeeds";
    expect(out, CreateOutcome::Created, what)?;
    let snap = found(&h, &key).await?;
    expect_item(&snap, "a", 2, "the new session's items")?;
    check!(snap.timeout == LONG, "the new session's timeout");
    Ok(())
}
