//! `remove`: delete by the lock holder (ASP.NET `Abandon`, docs/contract.md §2).

use super::support::*;
use super::{Harness, Outcome};
use crate::{LockToken, ReleaseOutcome, RemoveOutcome};

pub(super) async fn matching_token_deletes(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let out = h.store().remove(&key, token).await?;
    let what = "remove by the holder must be Removed";
    expect(out, RemoveOutcome::Removed, what)?;
    let after = acquire_fresh(&h, &key).await?;
    expect_gone(after, "a removed session is Missing")
}

pub(super) async fn wrong_token_is_lock_lost_and_keeps_session(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let out = h.store().remove(&key, LockToken::generate()?).await?;
    let what = "remove with a foreign token must be LockLost";
    expect(out, RemoveOutcome::LockLost, what)?;
    let out = h.store().release(&key, token).await?;
    let what = "the session and its lock must survive";
    expect(out, ReleaseOutcome::Released, what)?;
    found(&h, &key).await?;
    Ok(())
}

pub(super) async fn missing_is_missing(h: Harness) -> Outcome {
    let out = h.store().remove(&h.key()?, LockToken::generate()?).await?;
    let what = "remove of a missing session must be Missing";
    expect(out, RemoveOutcome::Missing, what)
}

pub(super) async fn after_takeover_is_lock_lost(h: Harness) -> Outcome {
    let (key, old) = seed_a1_locked(&h, LONG).await?;
    take_over(&h, &key, "stale lock must be taken over").await?;
    let out = h.store().remove(&key, old).await?;
    let what = "docs/contract.md §2 rule 1: remove by a former holder is LockLost";
    expect(out, RemoveOutcome::LockLost, what)?;
    expect_exists(&h, &key, "the session must survive").await
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let (key, token) = seed_expired_locked(&h).await?;
    let out = h.store().remove(&key, token).await?;
    let what = "remove of an expired session must be Missing";
    expect(out, RemoveOutcome::Missing, what)
}
