//! `delete`: administrative delete regardless of locks (docs/contract.md §2).

use super::support::*;
use super::{Harness, Outcome};
use crate::{CommitOutcome, RemoveOutcome};

pub(super) async fn ignores_lock(h: Harness) -> Outcome {
    let (key, _) = seed_a1_locked(&h, LONG).await?;
    let out = h.store().delete(&key).await?;
    let what = "delete must remove a locked session";
    expect(out, RemoveOutcome::Removed, what)?;
    expect_missing(&h, &key, "a deleted session is Missing").await
}

pub(super) async fn missing_is_missing(h: Harness) -> Outcome {
    let out = h.store().delete(&h.key()?).await?;
    let what = "delete of a missing session must be Missing";
    expect(out, RemoveOutcome::Missing, what)
}

pub(super) async fn holder_commit_after_delete_is_lock_lost(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    h.store().delete(&key).await?;
    let out = h.store().commit(&key, token, &set_a(2), LONG).await?;
    let what = "a commit after delete must be LockLost";
    expect(out, CommitOutcome::LockLost, what)?;
    let what = "a commit must not resurrect a deleted session";
    expect_missing(&h, &key, what).await
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed_expired(&h).await?;
    let out = h.store().delete(&key).await?;
    let what = "delete of an expired session must be Missing";
    expect(out, RemoveOutcome::Missing, what)
}

pub(super) async fn applications_are_isolated(h: Harness) -> Outcome {
    let key = seed_a1(&h, LONG).await?;
    let out = h.store().delete(&in_other_app(&h, &key)?).await?;
    let what = "delete in another application must not see this session";
    expect(out, RemoveOutcome::Missing, what)?;
    let what = "the session survives a delete of the same id in another application";
    expect_exists(&h, &key, what).await
}
