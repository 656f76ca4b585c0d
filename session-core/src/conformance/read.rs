//! `read`: data without locking (SPEC §2).

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{CreateOutcome, ReadOutcome};

pub(super) async fn missing_is_missing(h: Harness) -> Outcome {
    let out = h.store().read(&h.key()?).await?;
    check!(
        matches!(out, ReadOutcome::Missing),
        "SPEC §2 read: unknown id must be Missing, got {out:?}"
    );
    Ok(())
}

pub(super) async fn returns_items_without_locking(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32), ("b", 2)]), LONG).await?;
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(1),
        "read must return item a = 1"
    );
    check!(
        get::<u32>(&snap.items, "b")? == Some(2),
        "read must return item b = 2"
    );
    check!(snap.lock.is_none(), "read must not return a lock token");
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
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    match h.store().read(&key).await? {
        ReadOutcome::Locked(info) => {
            check!(
                info.token == token,
                "SPEC §2 read: Locked must carry the holder's token"
            );
        }
        other => check!(
            false,
            "SPEC §2 read of a locked session must be Locked, got {other:?}"
        ),
    }
    Ok(())
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    sleep(EXPIRE_WAIT).await;
    let out = h.store().read(&key).await?;
    check!(
        matches!(out, ReadOutcome::Missing),
        "SPEC §1: a session past its expiry does not exist; got {out:?}"
    );
    Ok(())
}

pub(super) async fn slides_expiry(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SLIDE_TIMEOUT).await?;
    sleep(SLIDE_STEP).await;
    found(&h, &key).await?;
    sleep(SLIDE_STEP).await;
    // Without the slide the session would have expired by now.
    found(&h, &key)
        .await
        .map_err(|_| super::Failed::new("SPEC §1: read must slide the expiry"))?;
    sleep(EXPIRE_WAIT + SLIDE_TIMEOUT).await;
    check!(
        is_missing(&h, &key).await?,
        "the session must still expire once idle"
    );
    Ok(())
}

pub(super) async fn slides_expiry_while_locked(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SLIDE_TIMEOUT).await?;
    lock(&h, &key).await?;
    sleep(SLIDE_STEP).await;
    let out = h.store().read(&key).await?;
    check!(
        matches!(out, ReadOutcome::Locked(_)),
        "expected Locked, got {out:?}"
    );
    sleep(SLIDE_STEP).await;
    let out = h.store().read(&key).await?;
    check!(
        matches!(out, ReadOutcome::Locked(_)),
        "SPEC §2: read slides the expiry even when locked; got {out:?}"
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
    let first = found(&h, &key).await?;
    check!(
        first.initialize,
        "SPEC §2 rule 3: the first read of an uninitialized session reports it"
    );
    let second = found(&h, &key).await?;
    check!(
        !second.initialize,
        "SPEC §2 rule 3: the uninitialized flag is reported exactly once"
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
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    sleep(std::time::Duration::from_millis(300)).await;
    let out = h.store().read(&key).await?;
    check!(
        matches!(out, ReadOutcome::Locked(i) if i.token == token && i.age >= std::time::Duration::from_millis(200)),
        "read never takes a lock over: a stale lock is still Locked with its age, got {out:?}"
    );
    Ok(())
}
