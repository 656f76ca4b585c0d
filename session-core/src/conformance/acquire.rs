//! `acquire`: lock and read, with stale-lock takeover (SPEC §2).

use std::collections::HashSet;
use std::time::Duration;

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{AcquireOutcome, CreateOutcome, ReadOutcome};

pub(super) async fn missing_is_missing_and_creates_nothing(h: Harness) -> Outcome {
    let key = h.key()?;
    let out = h
        .store()
        .acquire(&key, crate::LockToken::generate()?, LONG_TTL)
        .await?;
    check!(
        matches!(out, AcquireOutcome::Missing),
        "SPEC §2 acquire: unknown id must be Missing, got {out:?}"
    );
    check!(
        is_missing(&h, &key).await?,
        "acquire of a missing session must create nothing"
    );
    Ok(())
}

pub(super) async fn returns_items_and_fresh_token(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 7u32)]), LONG).await?;
    let (snap, _) = lock(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(7),
        "acquire must return the items"
    );
    check!(
        snap.timeout == LONG,
        "acquire must report the stored timeout"
    );
    let out = h.store().read(&key).await?;
    check!(
        matches!(out, ReadOutcome::Locked(_)),
        "acquire must leave the session locked; read gave {out:?}"
    );
    Ok(())
}

pub(super) async fn locked_reports_holder_without_data(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    match h
        .store()
        .acquire(&key, crate::LockToken::generate()?, LONG_TTL)
        .await?
    {
        AcquireOutcome::Locked(info) => {
            check!(info.token == token, "Locked must carry the holder's token");
        }
        other => check!(
            false,
            "SPEC §2 acquire of a locked session must be Locked, got {other:?}"
        ),
    }
    Ok(())
}

pub(super) async fn is_not_reentrant(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    lock(&h, &key).await?;
    let again = h
        .store()
        .acquire(&key, crate::LockToken::generate()?, LONG_TTL)
        .await?;
    check!(
        matches!(again, AcquireOutcome::Locked(_)),
        "locks are not re-entrant: a second acquire is Locked, got {again:?}"
    );
    Ok(())
}

pub(super) async fn lock_age_grows_with_same_token(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    sleep(Duration::from_millis(300)).await;
    let AcquireOutcome::Locked(first) = h
        .store()
        .acquire(&key, crate::LockToken::generate()?, LONG_TTL)
        .await?
    else {
        return Err(super::Failed::new("expected Locked"));
    };
    sleep(Duration::from_millis(300)).await;
    let AcquireOutcome::Locked(second) = h
        .store()
        .acquire(&key, crate::LockToken::generate()?, LONG_TTL)
        .await?
    else {
        return Err(super::Failed::new("expected Locked"));
    };
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
        "SPEC §1: lock age must grow ({:?} then {:?})",
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
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, old) = lock(&h, &key).await?;
    sleep(Duration::from_millis(400)).await;
    match h
        .store()
        .acquire(
            &key,
            crate::LockToken::generate()?,
            Duration::from_millis(200),
        )
        .await?
    {
        AcquireOutcome::Acquired(s) => {
            check!(
                s.lock.is_some() && s.lock != Some(old),
                "a takeover must issue a new token"
            );
            check!(
                get::<u32>(&s.items, "a")? == Some(1),
                "a takeover returns the data"
            );
        }
        other => check!(
            false,
            "SPEC §2: a lock older than lock_ttl is taken over in the same step, got {other:?}"
        ),
    }
    Ok(())
}

pub(super) async fn young_lock_is_not_taken_over(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    lock(&h, &key).await?;
    let out = h
        .store()
        .acquire(&key, crate::LockToken::generate()?, Duration::from_secs(60))
        .await?;
    check!(
        matches!(out, AcquireOutcome::Locked(_)),
        "a lock younger than lock_ttl must not be taken over, got {out:?}"
    );
    Ok(())
}

pub(super) async fn tokens_are_unique_per_acquisition(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let (_, token) = lock(&h, &key).await?;
        check!(
            seen.insert(token),
            "SPEC §1: a lock token is never reused for the same session"
        );
        let out = h.store().release(&key, token).await?;
        check!(
            out == crate::ReleaseOutcome::Released,
            "release with the token must be Released, got {out:?}"
        );
    }
    Ok(())
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    sleep(EXPIRE_WAIT).await;
    let out = h
        .store()
        .acquire(&key, crate::LockToken::generate()?, LONG_TTL)
        .await?;
    check!(
        matches!(out, AcquireOutcome::Missing),
        "SPEC §1: an expired session is Missing, got {out:?}"
    );
    Ok(())
}

pub(super) async fn slides_expiry(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SLIDE_TIMEOUT).await?;
    sleep(SLIDE_STEP).await;
    let (_, token) = lock(&h, &key).await?;
    sleep(SLIDE_STEP).await;
    let out = h.store().release(&key, token).await?;
    check!(
        out == crate::ReleaseOutcome::Released,
        "SPEC §1: acquire must slide the expiry; release found {out:?}"
    );
    Ok(())
}

pub(super) async fn slides_expiry_while_locked(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SLIDE_TIMEOUT).await?;
    lock(&h, &key).await?;
    sleep(SLIDE_STEP).await;
    let out = h
        .store()
        .acquire(&key, crate::LockToken::generate()?, LONG_TTL)
        .await?;
    check!(
        matches!(out, AcquireOutcome::Locked(_)),
        "expected Locked, got {out:?}"
    );
    sleep(SLIDE_STEP).await;
    let out = h
        .store()
        .acquire(&key, crate::LockToken::generate()?, LONG_TTL)
        .await?;
    check!(
        matches!(out, AcquireOutcome::Locked(_)),
        "SPEC §2: acquire slides the expiry even when locked; got {out:?}"
    );
    Ok(())
}

pub(super) async fn reports_uninitialized_once(h: Harness) -> Outcome {
    let key = h.key()?;
    let out = h
        .store()
        .create(&key, &crate::Items::new(), LONG, false)
        .await?;
    check!(
        out == CreateOutcome::Created,
        "expected Created, got {out:?}"
    );
    let (first, token) = lock(&h, &key).await?;
    check!(
        first.initialize,
        "SPEC §2 rule 3: the first acquire of an uninitialized session reports it"
    );
    h.store().release(&key, token).await?;
    let (second, _) = lock(&h, &key).await?;
    check!(!second.initialize, "SPEC §2 rule 3: reported exactly once");
    Ok(())
}

pub(super) async fn repeat_with_same_token_is_idempotent(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let token = crate::LockToken::generate()?;
    let first = h.store().acquire(&key, token, LONG_TTL).await?;
    check!(
        matches!(first, AcquireOutcome::Acquired(_)),
        "expected Acquired, got {first:?}"
    );
    // The reply was lost; the retry carries the same token and must get the lock and data again.
    match h.store().acquire(&key, token, LONG_TTL).await? {
        AcquireOutcome::Acquired(s) => {
            check!(
                s.lock == Some(token),
                "the retried acquire holds the same token"
            );
            check!(
                get::<u32>(&s.items, "a")? == Some(1),
                "the retried acquire returns the data"
            );
        }
        other => check!(
            false,
            "SPEC §4: a retried acquire must find its own lock, got {other:?}"
        ),
    }
    let out = h
        .store()
        .commit(&key, token, &crate::Delta::new(), LONG)
        .await?;
    check!(
        out == crate::CommitOutcome::Committed,
        "the lock is usable, got {out:?}"
    );
    Ok(())
}
