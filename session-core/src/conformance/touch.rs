//! `touch`: slide the expiry, nothing else (docs/contract.md §2).

use super::support::*;
use super::{Harness, Outcome};
use crate::TouchOutcome;

pub(super) async fn slides_expiry(h: Harness) -> Outcome {
    let key = seed_a1(&h, SLIDE_TIMEOUT).await?;
    sleep(SLIDE_STEP).await;
    let out = h.store().touch(&key).await?;
    let what = "touch of a live session must be Touched";
    expect(out, TouchOutcome::Touched, what)?;
    expect_slid(&h, &key, "docs/contract.md §2: touch must slide the expiry").await
}

pub(super) async fn missing_creates_nothing(h: Harness) -> Outcome {
    let key = h.key()?;
    let out = h.store().touch(&key).await?;
    let what = "touch of a missing session must be Missing";
    expect(out, TouchOutcome::Missing, what)?;
    expect_missing(&h, &key, "touch must create nothing").await
}

pub(super) async fn keeps_lock_and_items(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    h.store().touch(&key).await?;
    held_by(&h, &key, token, "touch must keep the lock").await?;
    h.store().release(&key, token).await?;
    expect_found_item(&h, &key, "a", 1, "touch must keep the items").await?;
    Ok(())
}

pub(super) async fn uses_stored_timeout(h: Harness) -> Outcome {
    // The session's own timeout is short; touch must slide by it, not by any default.
    let key = seed_a1(&h, SHORT).await?;
    h.store().touch(&key).await?;
    sleep(EXPIRE_WAIT).await;
    let what = "touch must slide by the session's stored timeout";
    expect_missing(&h, &key, what).await?;
    // And by a longer stored timeout (1.5 s) across two steps of 1 s.
    let key = seed_a1(&h, SLIDE_TIMEOUT).await?;
    sleep(SLIDE_STEP).await;
    h.store().touch(&key).await?;
    expect_slid(&h, &key, "touch must slide by the stored 1.5 s timeout").await
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed_expired(&h).await?;
    let out = h.store().touch(&key).await?;
    let what = "touch of an expired session must be Missing";
    expect(out, TouchOutcome::Missing, what)?;
    let what = "touch must not resurrect an expired session";
    expect_missing(&h, &key, what).await
}
