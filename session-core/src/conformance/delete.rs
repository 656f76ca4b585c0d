//! `delete`: administrative delete regardless of locks (SPEC §2).

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{CommitOutcome, Delta, RemoveOutcome};

pub(super) async fn ignores_lock(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    lock(&h, &key).await?;
    let out = h.store().delete(&key).await?;
    check!(
        out == RemoveOutcome::Removed,
        "delete must remove a locked session, got {out:?}"
    );
    check!(is_missing(&h, &key).await?, "a deleted session is Missing");
    Ok(())
}

pub(super) async fn missing_is_missing(h: Harness) -> Outcome {
    let out = h.store().delete(&h.key()?).await?;
    check!(
        out == RemoveOutcome::Missing,
        "delete of a missing session must be Missing, got {out:?}"
    );
    Ok(())
}

pub(super) async fn holder_commit_after_delete_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    h.store().delete(&key).await?;
    let out = h
        .store()
        .commit(&key, token, &Delta::new().with_set("a", val(2u32)), LONG)
        .await?;
    check!(
        out == CommitOutcome::LockLost,
        "a commit after delete must be LockLost, got {out:?}"
    );
    check!(
        is_missing(&h, &key).await?,
        "a commit must not resurrect a deleted session"
    );
    Ok(())
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    sleep(EXPIRE_WAIT).await;
    let out = h.store().delete(&key).await?;
    check!(
        out == RemoveOutcome::Missing,
        "delete of an expired session must be Missing, got {out:?}"
    );
    Ok(())
}

pub(super) async fn applications_are_isolated(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let other = crate::SessionKey::new(
        crate::AppName::new(&format!("{}-other", h.app()))?,
        *key.id(),
    );
    let out = h.store().delete(&other).await?;
    check!(
        out == RemoveOutcome::Missing,
        "delete in another application must not see this session, got {out:?}"
    );
    check!(
        !is_missing(&h, &key).await?,
        "the session survives a delete of the same id in another application"
    );
    Ok(())
}
