//! `write_concurrent`: lock-free per-item merge (SPEC §2, rule 4).

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{CommitOutcome, Delta, ReadOutcome};

pub(super) async fn merges_per_item(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 0u32), ("b", 0)]), LONG).await?;
    h.store()
        .write_concurrent(&key, &Delta::new().with_set("a", val(1u32)), LONG)
        .await?;
    h.store()
        .write_concurrent(&key, &Delta::new().with_set("b", val(2u32)), LONG)
        .await?;
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(1) && get::<u32>(&snap.items, "b")? == Some(2),
        "SPEC §2 rule 4: lock-free writes of different items both survive"
    );
    Ok(())
}

pub(super) async fn last_writer_wins_per_item(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 0u32)]), LONG).await?;
    h.store()
        .write_concurrent(&key, &Delta::new().with_set("a", val(1u32)), LONG)
        .await?;
    h.store()
        .write_concurrent(
            &key,
            &Delta::new().with_set("a", val(2u32)).with_removed("zz"),
            LONG,
        )
        .await?;
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(2),
        "last writer wins per item"
    );
    Ok(())
}

pub(super) async fn ignores_and_keeps_lock(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 0u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let out = h
        .store()
        .write_concurrent(&key, &Delta::new().with_set("b", val(1u32)), LONG)
        .await?;
    check!(
        out == CommitOutcome::Committed,
        "write_concurrent ignores locks, got {out:?}"
    );
    let held = h.store().read(&key).await?;
    check!(
        matches!(held, ReadOutcome::Locked(i) if i.token == token),
        "write_concurrent must keep the lock, got {held:?}"
    );
    let out = h.store().commit(&key, token, &Delta::new(), LONG).await?;
    check!(
        out == CommitOutcome::Committed,
        "the holder can still commit, got {out:?}"
    );
    check!(
        get::<u32>(&found(&h, &key).await?.items, "b")? == Some(1),
        "the lock-free write is stored"
    );
    Ok(())
}

pub(super) async fn missing_creates_nothing(h: Harness) -> Outcome {
    let key = h.key()?;
    let out = h
        .store()
        .write_concurrent(&key, &Delta::new().with_set("a", val(1u32)), LONG)
        .await?;
    check!(
        out == CommitOutcome::Missing,
        "write_concurrent on a missing session must be Missing, got {out:?}"
    );
    check!(
        is_missing(&h, &key).await?,
        "write_concurrent must create nothing"
    );
    Ok(())
}

pub(super) async fn stores_timeout(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 0u32)]), LONG).await?;
    h.store()
        .write_concurrent(&key, &Delta::new(), SHORT)
        .await?;
    check!(
        found(&h, &key).await?.timeout == SHORT,
        "write_concurrent must store the timeout"
    );
    sleep(EXPIRE_WAIT).await;
    check!(
        is_missing(&h, &key).await?,
        "the stored timeout governs expiry"
    );
    Ok(())
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    sleep(EXPIRE_WAIT).await;
    let out = h
        .store()
        .write_concurrent(&key, &Delta::new().with_set("a", val(2u32)), LONG)
        .await?;
    check!(
        out == CommitOutcome::Missing,
        "write_concurrent on an expired session must be Missing, got {out:?}"
    );
    check!(
        is_missing(&h, &key).await?,
        "write_concurrent must not resurrect an expired session"
    );
    Ok(())
}
