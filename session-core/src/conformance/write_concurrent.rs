//! `write_concurrent`: lock-free per-item merge (docs/contract.md §2, rule 4).

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{CommitOutcome, Delta};

pub(super) async fn merges_per_item(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 0u32), ("b", 0)]), LONG).await?;
    h.store().write_concurrent(&key, &set_a(1), LONG).await?;
    h.store()
        .write_concurrent(&key, &Delta::new().with_set("b", val(2u32)), LONG)
        .await?;
    let snap = found(&h, &key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(1) && get::<u32>(&snap.items, "b")? == Some(2),
        "docs/contract.md §2 rule 4: lock-free writes of different items both survive"
    );
    Ok(())
}

pub(super) async fn last_writer_wins_per_item(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 0u32)]), LONG).await?;
    h.store().write_concurrent(&key, &set_a(1), LONG).await?;
    let delta = set_a(2).with_removed("zz");
    h.store().write_concurrent(&key, &delta, LONG).await?;
    expect_found_item(&h, &key, "a", 2, "last writer wins per item").await?;
    Ok(())
}

pub(super) async fn ignores_and_keeps_lock(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let delta = Delta::new().with_set("b", val(1u32));
    let out = h.store().write_concurrent(&key, &delta, LONG).await?;
    expect(
        out,
        CommitOutcome::Committed,
        "write_concurrent ignores locks",
    )?;
    held_by(&h, &key, token, "write_concurrent must keep the lock").await?;
    let out = h.store().commit(&key, token, &Delta::new(), LONG).await?;
    expect(out, CommitOutcome::Committed, "the holder can still commit")?;
    expect_found_item(&h, &key, "b", 1, "the lock-free write is stored").await?;
    Ok(())
}

pub(super) async fn missing_creates_nothing(h: Harness) -> Outcome {
    let key = h.key()?;
    let out = h.store().write_concurrent(&key, &set_a(1), LONG).await?;
    let what = "write_concurrent on a missing session must be Missing";
    expect(out, CommitOutcome::Missing, what)?;
    expect_missing(&h, &key, "write_concurrent must create nothing").await
}

pub(super) async fn stores_timeout(h: Harness) -> Outcome {
    let key = seed_a1(&h, LONG).await?;
    h.store()
        .write_concurrent(&key, &Delta::new(), SHORT)
        .await?;
    check!(
        found(&h, &key).await?.timeout == SHORT,
        "write_concurrent must store the timeout"
    );
    sleep(EXPIRE_WAIT).await;
    expect_missing(&h, &key, "the stored timeout governs expiry").await
}

pub(super) async fn expired_is_missing(h: Harness) -> Outcome {
    let key = seed_expired(&h).await?;
    let out = h.store().write_concurrent(&key, &set_a(2), LONG).await?;
    let what = "write_concurrent on an expired session must be Missing";
    expect(out, CommitOutcome::Missing, what)?;
    let what = "write_concurrent must not resurrect an expired session";
    expect_missing(&h, &key, what).await
}
