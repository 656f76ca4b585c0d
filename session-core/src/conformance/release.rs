//! `release`: unlock without writing (docs/contract.md §2).

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{LockToken, ReleaseOutcome};

pub(super) async fn matching_token_unlocks(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let out = h.store().release(&key, token).await?;
    let what = "release by the holder must be Released";
    expect(out, ReleaseOutcome::Released, what)?;
    let (_, next) = lock(&h, &key).await?;
    check!(next != token, "the next acquisition gets a different token");
    Ok(())
}

pub(super) async fn wrong_token_is_lock_lost_and_keeps_lock(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let out = h.store().release(&key, LockToken::generate()?).await?;
    let what = "release with a foreign token must be LockLost";
    expect(out, ReleaseOutcome::LockLost, what)?;
    held_by(&h, &key, token, "the lock must stay with its holder").await
}

pub(super) async fn missing_is_lock_lost(h: Harness) -> Outcome {
    let key = h.key()?;
    let out = h.store().release(&key, LockToken::generate()?).await?;
    let what = "release on a missing session must be LockLost";
    expect(out, ReleaseOutcome::LockLost, what)?;
    expect_missing(&h, &key, "release must never create a session").await
}

pub(super) async fn slides_expiry(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, SLIDE_TIMEOUT).await?;
    sleep(SLIDE_STEP).await;
    h.store().release(&key, token).await?;
    expect_slid(
        &h,
        &key,
        "docs/contract.md §2: release must slide the expiry",
    )
    .await
}

pub(super) async fn keeps_items(h: Harness) -> Outcome {
    let (key, token) = seed_locked(&h, &items(&[("a", 1u32), ("b", 2)]), LONG).await?;
    h.store().release(&key, token).await?;
    let snap = found(&h, &key).await?;
    check!(
        snap.items.len() == 2 && get::<u32>(&snap.items, "b")? == Some(2),
        "release must not change items"
    );
    Ok(())
}

pub(super) async fn expired_is_lock_lost(h: Harness) -> Outcome {
    let (key, token) = seed_expired_locked(&h).await?;
    let out = h.store().release(&key, token).await?;
    let what = "release of an expired session must be LockLost";
    expect(out, ReleaseOutcome::LockLost, what)?;
    let what = "release must not resurrect an expired session";
    expect_missing(&h, &key, what).await
}

pub(super) async fn after_takeover_is_lock_lost(h: Harness) -> Outcome {
    let (key, old) = seed_a1_locked(&h, LONG).await?;
    let (_, new) = take_over(&h, &key, "stale lock must be taken over").await?;
    let out = h.store().release(&key, old).await?;
    let what = "docs/contract.md §2 rule 1: release by a former holder is LockLost";
    expect(out, ReleaseOutcome::LockLost, what)?;
    held_by(&h, &key, new, "the new holder keeps its lock").await
}
