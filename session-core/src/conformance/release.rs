//! `release`: unlock without writing (SPEC §2).

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{LockToken, ReadOutcome, ReleaseOutcome};

pub(super) async fn matching_token_unlocks(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let out = h.store().release(&key, token).await?;
    check!(
        out == ReleaseOutcome::Released,
        "release by the holder must be Released, got {out:?}"
    );
    let (_, next) = lock(&h, &key).await?;
    check!(next != token, "the next acquisition gets a different token");
    Ok(())
}

pub(super) async fn wrong_token_is_lock_lost_and_keeps_lock(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let out = h.store().release(&key, LockToken::generate()?).await?;
    check!(
        out == ReleaseOutcome::LockLost,
        "release with a foreign token must be LockLost, got {out:?}"
    );
    let held = h.store().read(&key).await?;
    check!(
        matches!(held, ReadOutcome::Locked(i) if i.token == token),
        "the lock must stay with its holder, got {held:?}"
    );
    Ok(())
}

pub(super) async fn missing_is_lock_lost(h: Harness) -> Outcome {
    let key = h.key()?;
    let out = h.store().release(&key, LockToken::generate()?).await?;
    check!(
        out == ReleaseOutcome::LockLost,
        "release on a missing session must be LockLost, got {out:?}"
    );
    check!(
        is_missing(&h, &key).await?,
        "release must never create a session"
    );
    Ok(())
}

pub(super) async fn slides_expiry(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SLIDE_TIMEOUT).await?;
    let (_, token) = lock(&h, &key).await?;
    sleep(SLIDE_STEP).await;
    h.store().release(&key, token).await?;
    sleep(SLIDE_STEP).await;
    found(&h, &key)
        .await
        .map_err(|_| super::Failed::new("SPEC §2: release must slide the expiry"))?;
    Ok(())
}

pub(super) async fn keeps_items(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32), ("b", 2)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    h.store().release(&key, token).await?;
    let snap = found(&h, &key).await?;
    check!(
        snap.items.len() == 2 && get::<u32>(&snap.items, "b")? == Some(2),
        "release must not change items"
    );
    Ok(())
}

pub(super) async fn expired_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    let (_, token) = lock(&h, &key).await?;
    sleep(EXPIRE_WAIT).await;
    let out = h.store().release(&key, token).await?;
    check!(
        out == ReleaseOutcome::LockLost,
        "release of an expired session must be LockLost, got {out:?}"
    );
    check!(
        is_missing(&h, &key).await?,
        "release must not resurrect an expired session"
    );
    Ok(())
}

pub(super) async fn after_takeover_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, old) = lock(&h, &key).await?;
    sleep(std::time::Duration::from_millis(300)).await;
    let taken = h
        .store()
        .acquire(
            &key,
            LockToken::generate()?,
            std::time::Duration::from_millis(100),
        )
        .await?;
    let crate::AcquireOutcome::Acquired(s) = taken else {
        return Err(super::Failed::new(format!(
            "stale lock must be taken over, got {taken:?}"
        )));
    };
    let out = h.store().release(&key, old).await?;
    check!(
        out == ReleaseOutcome::LockLost,
        "SPEC §2 rule 1: release by a former holder is LockLost, got {out:?}"
    );
    let held = h.store().read(&key).await?;
    check!(
        matches!(held, ReadOutcome::Locked(i) if Some(i.token) == s.lock),
        "the new holder keeps its lock, got {held:?}"
    );
    Ok(())
}
