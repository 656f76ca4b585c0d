//! `commit`: write the delta and release, only for the current holder (docs/contract.md §2,
//! rule 1).

use std::time::Duration;

use super::support::*;
use super::{Failed, Harness, Outcome, check};
use crate::{CommitOutcome, Delta, LockToken, ReadOutcome, ReleaseOutcome, SessionKey};

pub(super) async fn applies_delta_and_releases(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let out = h.store().commit(&key, token, &set_a(2), LONG).await?;
    let what = "commit by the holder must be Committed";
    expect(out, CommitOutcome::Committed, what)?;
    expect_found_item(&h, &key, "a", 2, "commit must store the delta").await?;
    lock(&h, &key).await?;
    Ok(())
}

/// Fails unless `key` still holds `a` (taking a leftover lock over to look).
async fn assert_untouched(h: &Harness, key: &SessionKey, a: u32) -> Outcome {
    let snap = match h.store().read(key).await? {
        ReadOutcome::Found(s) => s,
        ReadOutcome::Locked(_) => {
            // Still locked by someone: take the lock over (lock TTL zero) to look at the data.
            let token = LockToken::generate()?;
            let out = h.store().acquire(key, token, Duration::ZERO).await?;
            expect_acquired(out, "expected data")?
        }
        other => return Err(Failed::new(format!("expected the session, got {other:?}"))),
    };
    check!(
        get::<u32>(&snap.items, "a")? == Some(a),
        "a rejected commit must write nothing (a should be {a})"
    );
    Ok(())
}

pub(super) async fn wrong_token_is_lock_lost(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let stranger = LockToken::generate()?;
    let out = h.store().commit(&key, stranger, &set_a(9), LONG).await?;
    let what = "commit with a foreign token must be LockLost";
    expect(out, CommitOutcome::LockLost, what)?;
    held_by(&h, &key, token, "the holder's lock must stay").await?;
    h.store().release(&key, token).await?;
    assert_untouched(&h, &key, 1).await
}

pub(super) async fn after_takeover_is_lock_lost(h: Harness) -> Outcome {
    let (key, old) = seed_a1_locked(&h, LONG).await?;
    let (_, new) = take_over(&h, &key, "stale lock must be taken over").await?;
    let out = h.store().commit(&key, old, &set_a(9), LONG).await?;
    let what =
        "docs/contract.md §2 rule 1: a write by a holder whose lock was taken over is LockLost";
    expect(out, CommitOutcome::LockLost, what)?;
    let out = h.store().commit(&key, new, &Delta::new(), LONG).await?;
    expect(
        out,
        CommitOutcome::Committed,
        "the new holder's lock must be intact",
    )?;
    assert_untouched(&h, &key, 1).await
}

pub(super) async fn after_own_release_is_lock_lost(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    h.store().release(&key, token).await?;
    // Another request locks and releases in between: the session is unlocked, but `token` holds
    // nothing, and a store remembers no release (docs/contract.md §2, "Repeated calls").
    let (_, other) = lock(&h, &key).await?;
    h.store().release(&key, other).await?;
    let out = h.store().commit(&key, token, &set_a(9), LONG).await?;
    let what = "docs/contract.md §2 rule 1: a commit after the lock was released is LockLost";
    expect(out, CommitOutcome::LockLost, what)?;
    assert_untouched(&h, &key, 1).await
}

pub(super) async fn after_forced_release_is_lock_lost(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    // A poller force-releases with the holder's token, and nobody re-locks.
    let out = h.store().release(&key, token).await?;
    expect(
        out,
        ReleaseOutcome::Released,
        "forced release must be Released",
    )?;
    let out = h.store().commit(&key, token, &set_a(9), LONG).await?;
    let what = "docs/contract.md §2 rule 1 (the SQL provider accepted this): expected LockLost";
    expect(out, CommitOutcome::LockLost, what)?;
    assert_untouched(&h, &key, 1).await
}

pub(super) async fn missing_session_is_lock_lost(h: Harness) -> Outcome {
    let key = h.key()?;
    let token = LockToken::generate()?;
    let out = h.store().commit(&key, token, &set_a(1), LONG).await?;
    let what = "commit on a missing session must be LockLost";
    expect(out, CommitOutcome::LockLost, what)?;
    expect_missing(&h, &key, "commit must never create a session").await
}

pub(super) async fn expired_session_is_lock_lost(h: Harness) -> Outcome {
    let (key, token) = seed_expired_locked(&h).await?;
    let out = h.store().commit(&key, token, &set_a(2), LONG).await?;
    let what = "commit on an expired session must be LockLost";
    expect(out, CommitOutcome::LockLost, what)?;
    expect_missing(&h, &key, "an expired session must not come back").await
}

pub(super) async fn stores_per_session_timeout(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let timeout = Duration::from_millis(123_456);
    h.store()
        .commit(&key, token, &Delta::new(), timeout)
        .await?;
    let stored = found(&h, &key).await?.timeout;
    check!(
        stored == timeout,
        "commit must store the timeout with ms precision: {stored:?} != {timeout:?}"
    );
    Ok(())
}

pub(super) async fn new_timeout_governs_expiry(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    h.store().commit(&key, token, &Delta::new(), SHORT).await?;
    sleep(EXPIRE_WAIT).await;
    let what = "a per-session timeout stored by commit must govern expiry";
    expect_missing(&h, &key, what).await
}

pub(super) async fn writes_only_the_delta(h: Harness) -> Outcome {
    let (key, token) = seed_locked(&h, &items(&[("a", 1u32), ("b", 1)]), LONG).await?;
    // A lock-free writer changes b while we hold the lock.
    let b2 = Delta::new().with_set("b", val(2u32));
    h.store().write_concurrent(&key, &b2, LONG).await?;
    h.store().commit(&key, token, &set_a(2), LONG).await?;
    let snap = found(&h, &key).await?;
    expect_item(&snap, "a", 2, "commit must write a")?;
    let what = "docs/contract.md §2: commit writes only the delta; b must keep the value written meanwhile";
    expect_item(&snap, "b", 2, what)
}

pub(super) async fn removes_items(h: Harness) -> Outcome {
    let (key, token) = seed_locked(&h, &items(&[("a", 1u32), ("b", 2)]), LONG).await?;
    let delta = Delta::new().with_removed("a");
    h.store().commit(&key, token, &delta, LONG).await?;
    let snap = found(&h, &key).await?;
    check!(!snap.items.contains_key("a"), "removed item must be gone");
    expect_item(&snap, "b", 2, "other items must stay")?;
    Ok(())
}

pub(super) async fn clear_then_set(h: Harness) -> Outcome {
    let (key, token) = seed_locked(&h, &items(&[("a", 1u32), ("b", 2)]), LONG).await?;
    let delta = Delta::new().with_cleared().with_set("c", val(3u32));
    h.store().commit(&key, token, &delta, LONG).await?;
    let snap = found(&h, &key).await?;
    check!(
        snap.items.len() == 1,
        "cleared delta must remove every old item, got {:?}",
        snap.items.keys().collect::<Vec<_>>()
    );
    expect_item(&snap, "c", 3, "items set after clearing must be stored")?;
    Ok(())
}

pub(super) async fn repeat_with_same_token_is_idempotent(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let delta = set_a(2).with_removed("zzz");
    h.store().commit(&key, token, &delta, LONG).await?;
    // A lock-free writer stores a newer value before the retry arrives.
    h.store().write_concurrent(&key, &set_a(3), LONG).await?;
    // A retry of the same commit (its reply was lost) must not fail nor apply anything twice.
    let again = h.store().commit(&key, token, &delta, LONG).await?;
    let what = "docs/contract.md §4: a retried commit must not turn into an error";
    expect(again, CommitOutcome::Committed, what)?;
    let what = "docs/contract.md §4: a retried commit must not apply its delta twice (it overwrote a newer value)";
    expect_found_item(&h, &key, "a", 3, what).await?;
    lock(&h, &key).await?;
    Ok(())
}

pub(super) async fn retry_after_next_acquire_is_idempotent(h: Harness) -> Outcome {
    let (key, first) = seed_a1_locked(&h, LONG).await?;
    h.store().commit(&key, first, &set_a(2), LONG).await?;
    // A waiter, woken by the release, takes the lock before the first request's retry arrives.
    let (_, second) = lock(&h, &key).await?;
    let again = h.store().commit(&key, first, &set_a(2), LONG).await?;
    let what = "docs/contract.md §4: a retried commit is Committed even after the next acquire";
    expect(again, CommitOutcome::Committed, what)?;
    let what = "the retry must leave the new holder's lock alone";
    held_by(&h, &key, second, what).await?;
    let out = h.store().commit(&key, second, &set_a(5), LONG).await?;
    expect(out, CommitOutcome::Committed, "the new holder commits")?;
    expect_found_item(&h, &key, "a", 5, "the new holder's value stands").await?;
    Ok(())
}

pub(super) async fn different_commit_with_spent_token_is_lock_lost(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    h.store().commit(&key, token, &set_a(2), LONG).await?;
    // Not a retry: another write by the holder whose lock its own commit released.
    let out = h.store().commit(&key, token, &set_a(3), LONG).await?;
    let what =
        "docs/contract.md §2 rule 1: a second, different commit with a spent token is LockLost";
    expect(out, CommitOutcome::LockLost, what)?;
    expect_found_item(&h, &key, "a", 2, "the second commit must write nothing").await?;
    Ok(())
}
