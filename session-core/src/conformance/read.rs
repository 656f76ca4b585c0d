//! `read`: data without locking (docs/contract.md §2).

use std::time::Duration;

use super::support::*;
use super::{Harness, Outcome, check};
use crate::ReadOutcome;

pub(super) async fn missing_is_missing(h: Harness) -> Outcome {
    let out = h.store().read(&h.key()?).await?;
    expect_gone(out, "docs/contract.md §2 read: unknown id must be Missing")
}

pub(super) async fn returns_items_without_locking(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32), ("b", 2)]), LONG).await?;
    let snap = found(&h, &key).await?;
    expect_item(&snap, "a", 1, "read must return item a = 1")?;
    expect_item(&snap, "b", 2, "read must return item b = 2")?;
    check!(
        snap.timeout == LONG,
        "read must report the stored timeout {LONG:?}, got {:?}",
        snap.timeout
    );
    // Not locked: an acquire succeeds.
    lock(&h, &key).await?;
    Ok(())
}

pub(super) async fn locked_reports_holder_without_data(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let what =
        "docs/contract.md §2 read of a locked session must be Locked with the holder's token";
    held_by(&h, &key, token, what).await
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed_expired(&h).await?;
    let out = h.store().read(&key).await?;
    expect_gone(
        out,
        "docs/contract.md §1: a session past its expiry does not exist",
    )
}

pub(super) async fn slides_expiry(h: Harness) -> Outcome {
    let key = seed_a1(&h, SLIDE_TIMEOUT).await?;
    sleep(SLIDE_STEP).await;
    found(&h, &key).await?;
    // Without the slide the session would have expired by now.
    expect_slid(&h, &key, "docs/contract.md §1: read must slide the expiry").await?;
    sleep(EXPIRE_WAIT + SLIDE_TIMEOUT).await;
    expect_missing(&h, &key, "the session must still expire once idle").await
}

pub(super) async fn slides_expiry_while_locked(h: Harness) -> Outcome {
    let what = "docs/contract.md §2: read slides the expiry even when locked";
    slides_while_locked(&h, Look::Read, what).await
}

pub(super) async fn reports_uninitialized_once(h: Harness) -> Outcome {
    let key = seed_uninitialized(&h).await?;
    let first = found(&h, &key).await?;
    check!(
        first.initialize,
        "docs/contract.md §2 rule 3: the first read of an uninitialized session reports it"
    );
    let second = found(&h, &key).await?;
    check!(
        !second.initialize,
        "docs/contract.md §2 rule 3: the uninitialized flag is reported exactly once"
    );
    check!(
        second.items.is_empty(),
        "the flag must not appear as an item (Redis provider quirk)"
    );
    Ok(())
}

pub(super) async fn empty_session_is_found(h: Harness) -> Outcome {
    let key = seed(&h, &crate::Items::new(), LONG).await?;
    let snap = found(&h, &key).await?;
    check!(
        snap.items.is_empty(),
        "a session created with no items exists and has none"
    );
    Ok(())
}

pub(super) async fn stale_lock_is_still_reported_locked(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    sleep(Duration::from_millis(300)).await;
    let out = h.store().read(&key).await?;
    check!(
        matches!(out, ReadOutcome::Locked(i) if i.token == token && i.age >= Duration::from_millis(200)),
        "read never takes a lock over: a stale lock is still Locked with its age, got {out:?}"
    );
    Ok(())
}
