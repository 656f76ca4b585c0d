//! `remove`: delete by the lock holder (ASP.NET `Abandon`, SPEC §2).

use std::time::Duration;

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{AcquireOutcome, LockToken, RemoveOutcome};

pub(super) async fn matching_token_deletes(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let out = h.store().remove(&key, token).await?;
    check!(
        out == RemoveOutcome::Removed,
        "remove by the holder must be Removed, got {out:?}"
    );
    let after = h
        .store()
        .acquire(&key, crate::LockToken::generate()?, LONG_TTL)
        .await?;
    check!(
        matches!(after, AcquireOutcome::Missing),
        "a removed session is Missing, got {after:?}"
    );
    Ok(())
}

pub(super) async fn wrong_token_is_lock_lost_and_keeps_session(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let out = h.store().remove(&key, LockToken::generate()?).await?;
    check!(
        out == RemoveOutcome::LockLost,
        "remove with a foreign token must be LockLost, got {out:?}"
    );
    let out = h.store().release(&key, token).await?;
    check!(
        out == crate::ReleaseOutcome::Released,
        "the session and its lock must survive, got {out:?}"
    );
    found(&h, &key).await?;
    Ok(())
}

pub(super) async fn missing_is_missing(h: Harness) -> Outcome {
    let out = h.store().remove(&h.key()?, LockToken::generate()?).await?;
    check!(
        out == RemoveOutcome::Missing,
        "remove of a missing session must be Missing, got {out:?}"
    );
    Ok(())
}

pub(super) async fn after_takeover_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, old) = lock(&h, &key).await?;
    sleep(Duration::from_millis(300)).await;
    let taken = h
        .store()
        .acquire(
            &key,
            crate::LockToken::generate()?,
            Duration::from_millis(100),
        )
        .await?;
    check!(
        matches!(taken, AcquireOutcome::Acquired(_)),
        "stale lock must be taken over, got {taken:?}"
    );
    let out = h.store().remove(&key, old).await?;
    check!(
        out == RemoveOutcome::LockLost,
        "SPEC §2 rule 1: remove by a former holder is LockLost, got {out:?}"
    );
    check!(!is_missing(&h, &key).await?, "the session must survive");
    Ok(())
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    let (_, token) = lock(&h, &key).await?;
    sleep(EXPIRE_WAIT).await;
    let out = h.store().remove(&key, token).await?;
    check!(
        out == RemoveOutcome::Missing,
        "remove of an expired session must be Missing, got {out:?}"
    );
    Ok(())
}
