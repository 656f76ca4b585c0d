//! `commit`: write the delta and release, only for the current holder (SPEC §2, rule 1).

use std::time::Duration;

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{AcquireOutcome, CommitOutcome, Delta, LockToken, ReadOutcome, ReleaseOutcome};

fn set_a(v: u32) -> Delta {
    Delta::new().with_set("a", val(v))
}

pub(super) async fn applies_delta_and_releases(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let out = h.store().commit(&key, token, &set_a(2), LONG).await?;
    check!(
        out == CommitOutcome::Committed,
        "commit by the holder must be Committed, got {out:?}"
    );
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(2),
        "commit must store the delta"
    );
    lock(&h, &key).await?;
    Ok(())
}

async fn assert_untouched(h: &Harness, key: &crate::SessionKey, a: u32) -> Outcome {
    let snap = match h.store().read(key).await? {
        ReadOutcome::Found(s) => s,
        ReadOutcome::Locked(_) => {
            // Still locked by someone: take the lock over (lock TTL zero) to look at the data.
            match h
                .store()
                .acquire(key, crate::LockToken::generate()?, Duration::ZERO)
                .await?
            {
                AcquireOutcome::Acquired(s) => s,
                other => return Err(super::Failed::new(format!("expected data, got {other:?}"))),
            }
        }
        other => {
            return Err(super::Failed::new(format!(
                "expected the session, got {other:?}"
            )));
        }
    };
    check!(
        get::<u32>(&snap.items, "a")? == Some(a),
        "a rejected commit must write nothing (a should be {a})"
    );
    Ok(())
}

pub(super) async fn wrong_token_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let stranger = LockToken::generate()?;
    let out = h.store().commit(&key, stranger, &set_a(9), LONG).await?;
    check!(
        out == CommitOutcome::LockLost,
        "commit with a foreign token must be LockLost, got {out:?}"
    );
    let held = h.store().read(&key).await?;
    check!(
        matches!(held, ReadOutcome::Locked(i) if i.token == token),
        "the holder's lock must stay, got {held:?}"
    );
    h.store().release(&key, token).await?;
    assert_untouched(&h, &key, 1).await
}

pub(super) async fn after_takeover_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, old) = lock(&h, &key).await?;
    sleep(Duration::from_millis(300)).await;
    let AcquireOutcome::Acquired(s) = h
        .store()
        .acquire(
            &key,
            crate::LockToken::generate()?,
            Duration::from_millis(100),
        )
        .await?
    else {
        return Err(super::Failed::new("stale lock was not taken over"));
    };
    let out = h.store().commit(&key, old, &set_a(9), LONG).await?;
    check!(
        out == CommitOutcome::LockLost,
        "SPEC §2 rule 1: a write by a holder whose lock was taken over is LockLost, got {out:?}"
    );
    let new = s.lock.ok_or_else(|| super::Failed::new("no token"))?;
    let out = h.store().commit(&key, new, &Delta::new(), LONG).await?;
    check!(
        out == CommitOutcome::Committed,
        "the new holder's lock must be intact, got {out:?}"
    );
    assert_untouched(&h, &key, 1).await
}

pub(super) async fn after_own_release_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    h.store().release(&key, token).await?;
    // Another request locks and releases in between, so this is not a retry of the release.
    let (_, other) = lock(&h, &key).await?;
    h.store().release(&key, other).await?;
    let out = h.store().commit(&key, token, &set_a(9), LONG).await?;
    check!(
        out == CommitOutcome::LockLost,
        "SPEC §2 rule 1: a commit after the lock was released is LockLost, got {out:?}"
    );
    assert_untouched(&h, &key, 1).await
}

pub(super) async fn after_forced_release_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    // A poller force-releases with the holder's token, and nobody re-locks.
    let out = h.store().release(&key, token).await?;
    check!(
        out == ReleaseOutcome::Released,
        "forced release must be Released, got {out:?}"
    );
    let out = h.store().commit(&key, token, &set_a(9), LONG).await?;
    check!(
        out == CommitOutcome::LockLost,
        "SPEC §2 rule 1 (the SQL provider accepted this): expected LockLost, got {out:?}"
    );
    assert_untouched(&h, &key, 1).await
}

pub(super) async fn missing_session_is_lock_lost(h: Harness) -> Outcome {
    let key = h.key()?;
    let out = h
        .store()
        .commit(&key, LockToken::generate()?, &set_a(1), LONG)
        .await?;
    check!(
        out == CommitOutcome::LockLost,
        "commit on a missing session must be LockLost, got {out:?}"
    );
    check!(
        is_missing(&h, &key).await?,
        "commit must never create a session"
    );
    Ok(())
}

pub(super) async fn expired_session_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    let (_, token) = lock(&h, &key).await?;
    sleep(EXPIRE_WAIT).await;
    let out = h.store().commit(&key, token, &set_a(2), LONG).await?;
    check!(
        out == CommitOutcome::LockLost,
        "commit on an expired session must be LockLost, got {out:?}"
    );
    check!(
        is_missing(&h, &key).await?,
        "an expired session must not come back"
    );
    Ok(())
}

pub(super) async fn stores_per_session_timeout(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let timeout = Duration::from_millis(123_456);
    h.store()
        .commit(&key, token, &Delta::new(), timeout)
        .await?;
    let snap = found(&h, &key).await?;
    check!(
        snap.timeout == timeout,
        "commit must store the timeout with ms precision: {:?} != {timeout:?}",
        snap.timeout
    );
    Ok(())
}

pub(super) async fn new_timeout_governs_expiry(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    h.store().commit(&key, token, &Delta::new(), SHORT).await?;
    sleep(EXPIRE_WAIT).await;
    check!(
        is_missing(&h, &key).await?,
        "a per-session timeout stored by commit must govern expiry"
    );
    Ok(())
}

pub(super) async fn writes_only_the_delta(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32), ("b", 1)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    // A lock-free writer changes b while we hold the lock.
    h.store()
        .write_concurrent(&key, &Delta::new().with_set("b", val(2u32)), LONG)
        .await?;
    h.store().commit(&key, token, &set_a(2), LONG).await?;
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(2),
        "commit must write a"
    );
    check!(
        get::<u32>(&snap.items, "b")? == Some(2),
        "SPEC §2: commit writes only the delta; b must keep the value written meanwhile"
    );
    Ok(())
}

pub(super) async fn removes_items(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32), ("b", 2)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    h.store()
        .commit(&key, token, &Delta::new().with_removed("a"), LONG)
        .await?;
    let snap = found(&h, &key).await?;
    check!(!snap.items.contains_key("a"), "removed item must be gone");
    check!(
        get::<u32>(&snap.items, "b")? == Some(2),
        "other items must stay"
    );
    Ok(())
}

pub(super) async fn clear_then_set(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32), ("b", 2)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let delta = Delta::new().with_cleared().with_set("c", val(3u32));
    h.store().commit(&key, token, &delta, LONG).await?;
    let snap = found(&h, &key).await?;
    check!(
        snap.items.len() == 1,
        "cleared delta must remove every old item, got {:?}",
        snap.items.keys().collect::<Vec<_>>()
    );
    check!(
        get::<u32>(&snap.items, "c")? == Some(3),
        "items set after clearing must be stored"
    );
    Ok(())
}

pub(super) async fn repeat_with_same_token_is_idempotent(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let delta = Delta::new().with_set("a", val(2u32)).with_removed("zzz");
    h.store().commit(&key, token, &delta, LONG).await?;
    // A lock-free writer stores a newer value before the retry arrives.
    h.store().write_concurrent(&key, &set_a(3), LONG).await?;
    // A retry of the same commit (its reply was lost) must not fail nor apply anything twice.
    let again = h.store().commit(&key, token, &delta, LONG).await?;
    check!(
        again == CommitOutcome::Committed,
        "SPEC §4: a retried commit must not turn into an error, got {again:?}"
    );
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(3),
        "SPEC §4: a retried commit must not apply its delta twice (it overwrote a newer value)"
    );
    lock(&h, &key).await?;
    Ok(())
}

pub(super) async fn retry_after_next_acquire_is_idempotent(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, first) = lock(&h, &key).await?;
    h.store().commit(&key, first, &set_a(2), LONG).await?;
    // A waiter, woken by the release, takes the lock before the first request's retry arrives.
    let (_, second) = lock(&h, &key).await?;
    let again = h.store().commit(&key, first, &set_a(2), LONG).await?;
    check!(
        again == CommitOutcome::Committed,
        "SPEC §4: a retried commit is Committed even after the next acquire, got {again:?}"
    );
    let held = h.store().read(&key).await?;
    check!(
        matches!(held, ReadOutcome::Locked(i) if i.token == second),
        "the retry must leave the new holder's lock alone, got {held:?}"
    );
    let out = h.store().commit(&key, second, &set_a(5), LONG).await?;
    check!(
        out == CommitOutcome::Committed,
        "the new holder commits, got {out:?}"
    );
    check!(
        get::<u32>(&found(&h, &key).await?.items, "a")? == Some(5),
        "the new holder's value stands"
    );
    Ok(())
}

pub(super) async fn different_commit_with_spent_token_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    h.store().commit(&key, token, &set_a(2), LONG).await?;
    // Not a retry: another write by the holder whose lock its own commit released.
    let out = h.store().commit(&key, token, &set_a(3), LONG).await?;
    check!(
        out == CommitOutcome::LockLost,
        "SPEC §2 rule 1: a second, different commit with a spent token is LockLost, got {out:?}"
    );
    check!(
        get::<u32>(&found(&h, &key).await?.items, "a")? == Some(2),
        "the second commit must write nothing"
    );
    Ok(())
}
