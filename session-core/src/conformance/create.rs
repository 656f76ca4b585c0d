//! `create`: insert if absent, never overwrite (SPEC §2, rules 2 and 3).

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{CreateOutcome, Items, ReadOutcome};

pub(super) async fn creates_unlocked_session(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(1),
        "create must store the items"
    );
    lock(&h, &key).await?;
    Ok(())
}

pub(super) async fn never_overwrites(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let out = h
        .store()
        .create(&key, &items(&[("a", 2u32), ("b", 2)]), LONG, true)
        .await?;
    check!(
        out == CreateOutcome::AlreadyExists,
        "SPEC §2 rule 2: create of an existing id is AlreadyExists, got {out:?}"
    );
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(1) && snap.items.len() == 1,
        "SPEC §2 rule 2: create never overwrites"
    );
    Ok(())
}

pub(super) async fn does_not_touch_a_lock(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let out = h.store().create(&key, &Items::new(), LONG, false).await?;
    check!(
        out == CreateOutcome::AlreadyExists,
        "SPEC §2 rule 2: create over a locked session is AlreadyExists, got {out:?}"
    );
    let held = h.store().read(&key).await?;
    check!(
        matches!(held, ReadOutcome::Locked(i) if i.token == token),
        "create must not touch the lock, got {held:?}"
    );
    Ok(())
}

pub(super) async fn uninitialized_reported_once(h: Harness) -> Outcome {
    let key = h.key()?;
    h.store().create(&key, &Items::new(), LONG, false).await?;
    let mut reports = 0;
    for _ in 0..3 {
        if found(&h, &key).await?.initialize {
            reports += 1;
        }
        let (s, t) = lock(&h, &key).await?;
        if s.initialize {
            reports += 1;
        }
        h.store().release(&key, t).await?;
    }
    check!(
        reports == 1,
        "SPEC §2 rule 3: the uninitialized flag is reported exactly once across reads and acquires, got {reports}"
    );
    Ok(())
}

pub(super) async fn initialized_never_reports_initialize(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    check!(
        !found(&h, &key).await?.initialize,
        "an initialized session never reports initialize"
    );
    Ok(())
}

pub(super) async fn uses_given_timeout(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    check!(
        found(&h, &key).await?.timeout == SHORT,
        "create must store the given timeout"
    );
    sleep(EXPIRE_WAIT).await;
    check!(
        is_missing(&h, &key).await?,
        "a session must expire after the timeout given to create"
    );
    Ok(())
}

pub(super) async fn over_expired_session_succeeds(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    sleep(EXPIRE_WAIT).await;
    let out = h
        .store()
        .create(&key, &items(&[("a", 2u32)]), LONG, true)
        .await?;
    check!(
        out == CreateOutcome::Created,
        "an expired session does not exist, so create succeeds; got {out:?}"
    );
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(2),
        "the new session's items"
    );
    check!(snap.timeout == LONG, "the new session's timeout");
    Ok(())
}
