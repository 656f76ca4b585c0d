//! `touch`: slide the expiry, nothing else (SPEC §2).

use std::time::Duration;

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{ReadOutcome, TouchOutcome};

pub(super) async fn slides_expiry(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SLIDE_TIMEOUT).await?;
    sleep(SLIDE_STEP).await;
    let out = h.store().touch(&key).await?;
    check!(
        out == TouchOutcome::Touched,
        "touch of a live session must be Touched, got {out:?}"
    );
    sleep(SLIDE_STEP).await;
    found(&h, &key)
        .await
        .map_err(|_| super::Failed::new("SPEC §2: touch must slide the expiry"))?;
    Ok(())
}

pub(super) async fn missing_creates_nothing(h: Harness) -> Outcome {
    let key = h.key()?;
    let out = h.store().touch(&key).await?;
    check!(
        out == TouchOutcome::Missing,
        "touch of a missing session must be Missing, got {out:?}"
    );
    check!(is_missing(&h, &key).await?, "touch must create nothing");
    Ok(())
}

pub(super) async fn keeps_lock_and_items(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    h.store().touch(&key).await?;
    let held = h.store().read(&key).await?;
    check!(
        matches!(held, ReadOutcome::Locked(i) if i.token == token),
        "touch must keep the lock, got {held:?}"
    );
    h.store().release(&key, token).await?;
    check!(
        get::<u32>(&found(&h, &key).await?.items, "a")? == Some(1),
        "touch must keep the items"
    );
    Ok(())
}

pub(super) async fn uses_stored_timeout(h: Harness) -> Outcome {
    // The session's own timeout is short; touch must slide by it, not by any default.
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    h.store().touch(&key).await?;
    sleep(EXPIRE_WAIT).await;
    check!(
        is_missing(&h, &key).await?,
        "touch must slide by the session's stored timeout"
    );
    let key = seed(&h, &items(&[("a", 1u32)]), Duration::from_millis(1500)).await?;
    sleep(Duration::from_millis(1000)).await;
    h.store().touch(&key).await?;
    sleep(Duration::from_millis(1000)).await;
    found(&h, &key)
        .await
        .map_err(|_| super::Failed::new("touch must slide by the stored 1.5 s timeout"))?;
    Ok(())
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    sleep(EXPIRE_WAIT).await;
    let out = h.store().touch(&key).await?;
    check!(
        out == TouchOutcome::Missing,
        "touch of an expired session must be Missing, got {out:?}"
    );
    check!(
        is_missing(&h, &key).await?,
        "touch must not resurrect an expired session"
    );
    Ok(())
}
