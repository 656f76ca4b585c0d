//! `acquire`: lock and read, with stale-lock takeover (docs/contract.md §2).

use std::collections::HashSet;
use std::time::Duration;

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{CommitOutcome, Delta, LockToken, ReleaseOutcome};

pub(super) async fn missing_is_missing_and_creates_nothing(h: Harness) -> Outcome {
    let key = h.key()?;
    let out = acquire_fresh(&h, &key).await?;
    expect_gone(
        out,
        "docs/contract.md §2 acquire: unknown id must be Missing",
    )?;
    expect_missing(&h, &key, "acquire of a missing session must create nothing").await
}

pub(super) async fn returns_items_and_fresh_token(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 7u32)]), LONG).await?;
    let (snap, _) = lock(&h, &key).await?;
    expect_item(&snap, "a", 7, "acquire must return the items")?;
    check!(
        snap.timeout == LONG,
        "acquire must report the stored timeout"
    );
    let out = h.store().read(&key).await?;
    expect_locked(out, "acquire must leave the session locked (read)")?;
    Ok(())
}

pub(super) async fn locked_reports_holder_without_data(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let out = acquire_fresh(&h, &key).await?;
    let what = "docs/contract.md §2 acquire of a locked session must be Locked";
    let info = expect_locked(out, what)?;
    check!(info.token == token, "Locked must carry the holder's token");
    Ok(())
}

pub(super) async fn is_not_reentrant(h: Harness) -> Outcome {
    let (key, _) = seed_a1_locked(&h, LONG).await?;
    let again = acquire_fresh(&h, &key).await?;
    expect_locked(
        again,
        "locks are not re-entrant: a second acquire is Locked",
    )?;
    Ok(())
}

pub(super) async fn lock_age_grows_with_same_token(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    sleep(Duration::from_millis(300)).await;
    let first = expect_locked(acquire_fresh(&h, &key).await?, "expected Locked")?;
    sleep(Duration::from_millis(300)).await;
    let second = expect_locked(acquire_fresh(&h, &key).await?, "expected Locked")?;
    check!(
        first.token == token && second.token == token,
        "successive polls must report the holder's token"
    );
    check!(
        first.age >= Duration::from_millis(200),
        "lock age after 300 ms must be about 300 ms, got {:?}",
        first.age
    );
    check!(
        second.age > first.age,
        "docs/contract.md §1: lock age must grow ({:?} then {:?})",
        first.age,
        second.age
    );
    check!(
        second.age < Duration::from_secs(60),
        "lock age must be measured on one clock, got {:?}",
        second.age
    );
    Ok(())
}

pub(super) async fn stale_lock_is_taken_over(h: Harness) -> Outcome {
    let (key, old) = seed_a1_locked(&h, LONG).await?;
    let what = "docs/contract.md §2: a lock older than lock_ttl is taken over in the same step";
    let (snap, new) = take_over(&h, &key, what).await?;
    check!(new != old, "a takeover must issue a new token");
    expect_item(&snap, "a", 1, "a takeover returns the data")?;
    Ok(())
}

pub(super) async fn young_lock_is_not_taken_over(h: Harness) -> Outcome {
    let (key, _) = seed_a1_locked(&h, LONG).await?;
    let ttl = Duration::from_secs(60);
    let out = h.store().acquire(&key, LockToken::generate()?, ttl).await?;
    expect_locked(out, "a lock younger than lock_ttl must not be taken over")?;
    Ok(())
}

pub(super) async fn tokens_are_unique_per_acquisition(h: Harness) -> Outcome {
    let key = seed_a1(&h, LONG).await?;
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let (_, token) = lock(&h, &key).await?;
        check!(
            seen.insert(token),
            "docs/contract.md §1: a lock token is never reused for the same session"
        );
        let out = h.store().release(&key, token).await?;
        expect(
            out,
            ReleaseOutcome::Released,
            "release with the token must be Released",
        )?;
    }
    Ok(())
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed_expired(&h).await?;
    let out = acquire_fresh(&h, &key).await?;
    expect_gone(out, "docs/contract.md §1: an expired session is Missing")
}

pub(super) async fn slides_expiry(h: Harness) -> Outcome {
    let key = seed_a1(&h, SLIDE_TIMEOUT).await?;
    sleep(SLIDE_STEP).await;
    let (_, token) = lock(&h, &key).await?;
    sleep(SLIDE_STEP).await;
    let out = h.store().release(&key, token).await?;
    let what = "docs/contract.md §1: acquire must slide the expiry (release after it)";
    expect(out, ReleaseOutcome::Released, what)
}

pub(super) async fn slides_expiry_while_locked(h: Harness) -> Outcome {
    let what = "docs/contract.md §2: acquire slides the expiry even when locked";
    slides_while_locked(&h, Look::Acquire, what).await
}

pub(super) async fn reports_uninitialized_once(h: Harness) -> Outcome {
    let key = seed_uninitialized(&h).await?;
    let (first, token) = lock(&h, &key).await?;
    check!(
        first.initialize,
        "docs/contract.md §2 rule 3: the first acquire of an uninitialized session reports it"
    );
    h.store().release(&key, token).await?;
    let (second, _) = lock(&h, &key).await?;
    check!(
        !second.initialize,
        "docs/contract.md §2 rule 3: reported exactly once"
    );
    Ok(())
}

pub(super) async fn repeat_with_same_token_is_idempotent(h: Harness) -> Outcome {
    let key = seed_a1(&h, LONG).await?;
    let token = LockToken::generate()?;
    let first = h.store().acquire(&key, token, LONG_TTL).await?;
    expect_acquired(first, "expected Acquired")?;
    // The reply was lost; the retry carries the same token and must get the lock and data again.
    let again = h.store().acquire(&key, token, LONG_TTL).await?;
    let what = "docs/contract.md §4: a retried acquire must find its own lock";
    let snap = expect_acquired(again, what)?;
    expect_item(&snap, "a", 1, "the retried acquire returns the data")?;
    let out = h.store().commit(&key, token, &Delta::new(), LONG).await?;
    expect(out, CommitOutcome::Committed, "the lock is usable")
}
