//! Two instances sharing one server (docs/contract.md §5): what one store instance writes, the
//! next read through another sees at once. Only [`super::shared_trials`] runs these.
//!
//! Each behaviour opens a second instance `b` of the store under test next to the harness's one
//! (`h`), in the same application, as a second process would. It reads the session through `b`
//! first, so that a store with a near cache holds a copy there, then changes the session through
//! `h` and reads through `b` again at once: a copy that outlived the change fails the behaviour.

use std::time::Duration;

use super::support::*;
use super::{Failed, Harness, Outcome, check};
use crate::{
    Access, CommitOutcome, CreateOutcome, EndOutcome, ReadOutcome, ReleaseOutcome, RemoveOutcome,
    SessionKey, SessionManager, Snapshot,
};

/// A timeout other than [`LONG`], so that a read that returns it saw the change.
const OTHER_TIMEOUT: Duration = Duration::from_secs(900);

/// How many exclusive increments each instance's manager makes in
/// [`exclusive_writers_on_both_lose_no_update`].
const INCREMENTS: u32 = 20;

/// A harness over a second instance of the store under test (opened anew from the same factory),
/// in this behaviour's application.
async fn other(h: &Harness) -> Result<Harness, Failed> {
    Ok(h.beside(h.open_another().await?))
}

/// Reads `key` through `x`; fails with `what, got <outcome>` unless `Found`.
async fn seen(x: &Harness, key: &SessionKey, what: &str) -> Result<Snapshot, Failed> {
    match x.store().read(key).await? {
        ReadOutcome::Found(s) => Ok(s),
        other => Err(Failed::new(format!("{what}, got {other:?}"))),
    }
}

/// Reads `key` through `x`; fails with `what, got <outcome>` unless `Missing`.
async fn gone(x: &Harness, key: &SessionKey, what: &str) -> Outcome {
    expect_gone(x.store().read(key).await?, what)
}

/// Fails with `what, got <value>` unless `snap` holds `a = a` and the timeout `timeout`.
fn expect_a(snap: &Snapshot, a: u32, timeout: Duration, what: &str) -> Outcome {
    expect(
        (get::<u32>(&snap.items, "a")?, snap.timeout),
        (Some(a), timeout),
        &format!("{what} (item a, timeout)"),
    )
}

/// Locks `key` through `x` and commits `a = a` with `timeout`; fails unless `Committed`.
async fn commit_a(x: &Harness, key: &SessionKey, a: u32, timeout: Duration) -> Outcome {
    let (_, token) = lock(x, key).await?;
    let out = x.store().commit(key, token, &set_a(a), timeout).await?;
    expect(out, CommitOutcome::Committed, "the holder's commit")
}

pub(super) async fn create_is_seen_by_the_other(h: Harness) -> Outcome {
    let b = other(&h).await?;
    let key = h.key()?;
    gone(&b, &key, "a fresh id reads as Missing").await?;
    let a1 = items(&[("a", 1u32)]);
    let out = h.store().create(&key, &a1, LONG, true).await?;
    let what = "create of a fresh id: expected Created";
    expect(out, CreateOutcome::Created, what)?;
    let what = "docs/contract.md §5: a session created through one instance is Found by the next \
                read through another sharing its server";
    let snap = seen(&b, &key, what).await?;
    expect_a(&snap, 1, LONG, what)
}

pub(super) async fn commit_is_seen_by_the_other(h: Harness) -> Outcome {
    let b = other(&h).await?;
    let key = seed_a1(&h, LONG).await?;
    expect_a(
        &seen(&b, &key, "read").await?,
        1,
        LONG,
        "the created session",
    )?;
    commit_a(&h, &key, 2, OTHER_TIMEOUT).await?;
    let what = "docs/contract.md §5: a commit through one instance is seen by the next read \
                through another sharing its server";
    expect_a(&seen(&b, &key, what).await?, 2, OTHER_TIMEOUT, what)?;
    // And the other way round.
    seen(&h, &key, "read").await?;
    commit_a(&b, &key, 3, LONG).await?;
    expect_a(&seen(&h, &key, what).await?, 3, LONG, what)
}

pub(super) async fn lock_is_seen_by_the_other(h: Harness) -> Outcome {
    let b = other(&h).await?;
    let key = seed_a1(&h, LONG).await?;
    seen(&b, &key, "read").await?;
    let (_, token) = lock(&h, &key).await?;
    let what = "docs/contract.md §5: a lock taken through one instance is reported Locked, with \
                its holder's token, by the next read through another sharing its server";
    held_by(&b, &key, token, what).await?;
    let out = h.store().release(&key, token).await?;
    expect(out, ReleaseOutcome::Released, "the holder's release")?;
    let what = "docs/contract.md §5: a lock released through one instance is gone for the next \
                read through another sharing its server (Found, with the items)";
    expect_a(&seen(&b, &key, what).await?, 1, LONG, what)
}

pub(super) async fn delete_is_seen_by_the_other(h: Harness) -> Outcome {
    let b = other(&h).await?;
    let key = seed_a1(&h, LONG).await?;
    seen(&b, &key, "read").await?;
    let out = h.store().delete(&key).await?;
    expect(out, RemoveOutcome::Removed, "delete of a live session")?;
    let what = "docs/contract.md §5: a session deleted through one instance is Missing for the \
                next read through another sharing its server";
    gone(&b, &key, what).await
}

pub(super) async fn remove_is_seen_by_the_other(h: Harness) -> Outcome {
    let b = other(&h).await?;
    let key = seed_a1(&h, LONG).await?;
    seen(&b, &key, "read").await?;
    let (_, token) = lock(&h, &key).await?;
    let out = h.store().remove(&key, token).await?;
    expect(out, RemoveOutcome::Removed, "remove by the holder")?;
    let what = "docs/contract.md §5: a session removed through one instance is Missing for the \
                next read through another sharing its server";
    gone(&b, &key, what).await
}

pub(super) async fn expiry_is_seen_by_the_other(h: Harness) -> Outcome {
    let b = other(&h).await?;
    let key = seed_a1(&h, SHORT).await?;
    expect_a(
        &seen(&b, &key, "read").await?,
        1,
        SHORT,
        "the created session",
    )?;
    sleep(EXPIRE_WAIT).await;
    let what = "docs/contract.md §5: a session that expired is Missing through an instance that \
                read it before";
    gone(&b, &key, what).await?;
    gone(&h, &key, "an expired session is Missing").await
}

pub(super) async fn uninitialized_reported_once_across_instances(h: Harness) -> Outcome {
    let b = other(&h).await?;
    let key = seed_uninitialized(&h).await?;
    let first = seen(&b, &key, "read").await?;
    check!(
        first.initialize,
        "docs/contract.md §2 rule 3: the first read that returns the data of a session created \
         uninitialized reports initialize, here through another instance than the creator's"
    );
    let mut again = 0;
    for x in [&h, &b, &h, &b] {
        again += u32::from(seen(x, &key, "read").await?.initialize);
    }
    let (snap, token) = lock(&h, &key).await?;
    again += u32::from(snap.initialize);
    let out = h.store().release(&key, token).await?;
    expect(out, ReleaseOutcome::Released, "the holder's release")?;
    again += u32::from(seen(&b, &key, "read").await?.initialize);
    check!(
        again == 0,
        "docs/contract.md §2 rule 3: the initialize flag is reported exactly once across \
         instances sharing a server, got {again} more reports"
    );
    Ok(())
}

pub(super) async fn write_concurrent_is_seen_by_the_other(h: Harness) -> Outcome {
    let b = other(&h).await?;
    let key = seed_a1(&h, LONG).await?;
    seen(&b, &key, "read").await?;
    let delta = set_a(2);
    let out = h
        .store()
        .write_concurrent(&key, &delta, OTHER_TIMEOUT)
        .await?;
    expect(out, CommitOutcome::Committed, "write_concurrent")?;
    let what = "docs/contract.md §5: a lock-free write through one instance is seen by the next \
                read through another sharing its server";
    expect_a(&seen(&b, &key, what).await?, 2, OTHER_TIMEOUT, what)
}

/// Opens the session `id` read-only on `m` and returns its item `n`; fails unless it ends with
/// nothing to store.
async fn read_n(m: &SessionManager, id: &str) -> Result<Option<u32>, Failed> {
    let s = m.open(Some(id), Access::ReadOnly).await?;
    let n = s.get("n")?;
    expect(
        s.end().await?,
        EndOutcome::Nothing,
        "read-only stores nothing",
    )?;
    Ok(n)
}

/// Opens the session `id` exclusively on `m`, adds one to its item `n` and ends it.
async fn increment(m: SessionManager, id: String) -> Result<EndOutcome, Failed> {
    let mut s = reopen(&m, &id).await?;
    let n: u32 = s.get("n")?.unwrap_or(0);
    tokio::task::yield_now().await;
    s.insert("n", &(n + 1))?;
    Ok(s.end().await?)
}

pub(super) async fn read_only_waits_for_the_other_writer(h: Harness) -> Outcome {
    let b = other(&h).await?;
    let (m_a, m_b) = (h.manager(|c| c)?, b.manager(|c| c)?);
    let (id, out) = store_n1(&m_a).await?;
    expect(out, EndOutcome::Created, "a new written session is created")?;
    expect(
        read_n(&m_b, &id).await?,
        Some(1),
        "the other instance reads n",
    )?;
    let mut writer = reopen(&m_a, &id).await?;
    let reader = tokio::spawn(open_later(&m_b, &id, Access::ReadOnly));
    sleep(Duration::from_millis(200)).await;
    check!(
        !reader.is_finished(),
        "docs/contract.md §5: a read-only request through one instance waits while a request \
         through another sharing its server holds the session exclusively"
    );
    writer.insert("n", &2u32)?;
    expect(
        writer.end().await?,
        EndOutcome::Committed,
        "the writer's end",
    )?;
    let seen = joined(reader).await??.get::<u32>("n")?;
    let what = "docs/contract.md §5: the waiting reader sees the other instance's commit";
    expect(seen, Some(2), what)
}

pub(super) async fn exclusive_writers_on_both_lose_no_update(h: Harness) -> Outcome {
    let b = other(&h).await?;
    let (m_a, m_b) = (h.manager(|c| c)?, b.manager(|c| c)?);
    let (id, _) = store_n1(&m_a).await?;
    for m in [&m_a, &m_b] {
        expect(read_n(m, &id).await?, Some(1), "both instances read n")?;
    }
    let tasks: Vec<_> = (0..INCREMENTS)
        .flat_map(|_| [&m_a, &m_b])
        .map(|m| tokio::spawn(increment(m.clone(), id.clone())))
        .collect();
    for task in tasks {
        joined(task).await??;
    }
    let want = Some(1 + 2 * INCREMENTS);
    for (name, m) in [("the first", &m_a), ("the second", &m_b)] {
        let n = read_n(m, &id).await?;
        check!(
            n == want,
            "docs/contract.md §5: {INCREMENTS} exclusive increments through each of two \
             instances sharing a server lose nothing: {name} instance must read n = {want:?}, got {n:?}"
        );
    }
    Ok(())
}
