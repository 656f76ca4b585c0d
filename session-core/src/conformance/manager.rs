//! The session manager on this store: the decision table and waiting rules of SPEC §3.

use std::time::Duration;

use super::support::*;
use super::{Failed, Harness, Outcome, check};
use crate::{Access, EndOutcome, Error, Items, ReadOutcome, SessionKey};

async fn stored_session(h: &Harness) -> Result<(crate::SessionManager, String), Failed> {
    let m = h.manager(|c| c)?;
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    let out = s.end().await?;
    check!(
        out == EndOutcome::Created,
        "a new written session is created, got {out:?}"
    );
    Ok((m, id))
}

fn key_of(h: &Harness, id: &str) -> Result<SessionKey, Failed> {
    Ok(SessionKey::new(
        h.app().clone(),
        crate::SessionId::parse(id)?,
    ))
}

pub(super) async fn no_id_gives_new_session(h: Harness) -> Outcome {
    let m = h.manager(|c| c)?;
    let s = m.open(None, Access::Exclusive).await?;
    check!(
        s.is_new() && s.names().is_empty(),
        "no id gives a new, empty session"
    );
    Ok(())
}

pub(super) async fn malformed_id_gives_new_session(h: Harness) -> Outcome {
    let m = h.manager(|c| c)?;
    for bad in [
        "",
        "x",
        "'; DROP TABLE s; --",
        "{a}",
        "%00",
        "\0",
        "ABCDEF0123456789ABCDEF0123456789",
        "../..",
    ] {
        let s = m.open(Some(bad), Access::Exclusive).await?;
        check!(
            s.is_new(),
            "SPEC §3: malformed id {bad:?} gives a new session"
        );
        check!(s.id().expose() != bad, "a malformed id is never adopted");
    }
    Ok(())
}

pub(super) async fn unknown_id_is_not_adopted(h: Harness) -> Outcome {
    let m = h.manager(|c| c)?;
    let chosen = crate::SessionId::generate()?;
    let mut s = m.open(Some(chosen.expose()), Access::Exclusive).await?;
    check!(s.is_new(), "an unknown id gives a new session");
    check!(
        *s.id() != chosen,
        "SPEC §3: a client-chosen id is never adopted (session fixation)"
    );
    s.insert("x", &1u8)?;
    s.end().await?;
    check!(
        is_missing(&h, &key_of(&h, chosen.expose())?).await?,
        "nothing is stored under the client's id"
    );
    Ok(())
}

pub(super) async fn new_unwritten_session_stores_nothing(h: Harness) -> Outcome {
    let m = h.manager(|c| c)?;
    let s = m.open(None, Access::Exclusive).await?;
    let key = s.key().clone();
    let out = s.end().await?;
    check!(
        out == EndOutcome::Nothing,
        "a new, unwritten session stores nothing, got {out:?}"
    );
    check!(is_missing(&h, &key).await?, "nothing may be stored");
    Ok(())
}

pub(super) async fn new_written_session_is_created(h: Harness) -> Outcome {
    let (_, id) = stored_session(&h).await?;
    let snap = found(&h, &key_of(&h, &id)?).await?;
    check!(
        get::<u32>(&snap.items, "n")? == Some(1),
        "the new session's items are stored"
    );
    check!(
        !snap.initialize,
        "a session created by the manager is initialized"
    );
    Ok(())
}

pub(super) async fn changed_session_commits_delta(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Exclusive).await?;
    check!(
        !s.is_new() && *s.id().expose() == *id,
        "a stored session keeps its id"
    );
    s.insert("n", &2u32)?;
    let out = s.end().await?;
    check!(
        out == EndOutcome::Committed,
        "a changed session commits, got {out:?}"
    );
    check!(
        get::<u32>(&found(&h, &key_of(&h, &id)?).await?.items, "n")? == Some(2),
        "the change is stored"
    );
    Ok(())
}

pub(super) async fn unchanged_session_releases(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let s = m.open(Some(&id), Access::Exclusive).await?;
    let _: Option<u32> = s.get("n")?;
    let out = s.end().await?;
    check!(
        out == EndOutcome::Released,
        "an unchanged session is released, not rewritten; got {out:?}"
    );
    check!(
        matches!(
            h.store().read(&key_of(&h, &id)?).await?,
            ReadOutcome::Found(_)
        ),
        "the lock is released"
    );
    Ok(())
}

pub(super) async fn timeout_change_commits(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Exclusive).await?;
    s.set_timeout(Duration::from_secs(77))?;
    let out = s.end().await?;
    check!(
        out == EndOutcome::Committed,
        "a timeout change alone commits, got {out:?}"
    );
    let snap = found(&h, &key_of(&h, &id)?).await?;
    check!(
        snap.timeout == Duration::from_secs(77),
        "the new timeout is stored, got {:?}",
        snap.timeout
    );
    Ok(())
}

pub(super) async fn abandon_removes(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Exclusive).await?;
    s.abandon()?;
    let out = s.end().await?;
    check!(
        out == EndOutcome::Removed,
        "an abandoned session is removed, got {out:?}"
    );
    check!(
        is_missing(&h, &key_of(&h, &id)?).await?,
        "the abandoned session is gone"
    );
    let s = m.open(Some(&id), Access::Exclusive).await?;
    check!(
        s.is_new() && s.id().expose() != id,
        "the abandoned id is not reused"
    );
    Ok(())
}

pub(super) async fn read_only_never_writes(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::ReadOnly).await?;
    check!(s.get::<u32>("n")? == Some(1), "read-only sees the data");
    check!(
        matches!(s.insert("n", &5u32), Err(Error::NotWritable(_))),
        "a read-only session refuses changes"
    );
    check!(
        matches!(s.abandon(), Err(Error::NotWritable(_))),
        "a read-only session cannot be abandoned"
    );
    check!(
        matches!(
            h.store().read(&key_of(&h, &id)?).await?,
            ReadOutcome::Found(_)
        ),
        "read-only takes no lock"
    );
    let out = s.end().await?;
    check!(
        out == EndOutcome::Nothing,
        "read-only stores nothing, got {out:?}"
    );
    check!(
        get::<u32>(&found(&h, &key_of(&h, &id)?).await?.items, "n")? == Some(1),
        "nothing changed"
    );
    Ok(())
}

pub(super) async fn read_only_waits_for_writer(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut writer = m.open(Some(&id), Access::Exclusive).await?;
    let m2 = m.clone();
    let id2 = id.clone();
    let reader = tokio::spawn(async move {
        let s = m2.open(Some(&id2), Access::ReadOnly).await?;
        s.get::<u32>("n")
    });
    sleep(Duration::from_millis(200)).await;
    check!(
        !reader.is_finished(),
        "a read-only request waits while a writer holds the lock"
    );
    writer.insert("n", &2u32)?;
    writer.end().await?;
    let seen = reader.await.map_err(|e| Failed::new(e.to_string()))??;
    check!(
        seen == Some(2),
        "the reader sees the writer's complete change, got {seen:?}"
    );
    Ok(())
}

pub(super) async fn exclusive_waits_for_lock(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut first = m.open(Some(&id), Access::Exclusive).await?;
    let m2 = m.clone();
    let id2 = id.clone();
    let second = tokio::spawn(async move {
        let mut s = m2.open(Some(&id2), Access::Exclusive).await?;
        let n: u32 = s.get("n")?.unwrap_or(0);
        s.insert("n", &(n * 10))?;
        s.end().await
    });
    sleep(Duration::from_millis(200)).await;
    check!(!second.is_finished(), "a second exclusive request waits");
    first.insert("n", &3u32)?;
    first.end().await?;
    second.await.map_err(|e| Failed::new(e.to_string()))??;
    check!(
        get::<u32>(&found(&h, &key_of(&h, &id)?).await?.items, "n")? == Some(30),
        "the waiter saw the first request's write"
    );
    Ok(())
}

pub(super) async fn drop_without_end_releases_and_writes_nothing(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Exclusive).await?;
    s.insert("n", &99u32)?;
    // A panicking handler drops its session.
    let handler = tokio::spawn(async move {
        let _s = s;
        // resume_unwind unwinds like a panic without running the panic hook, so the deliberate
        // failure prints no message or backtrace into the test output.
        std::panic::resume_unwind(Box::new("a failing handler drops its session"));
    });
    check!(handler.await.is_err(), "the handler panicked");
    let again = tokio::time::timeout(Duration::from_secs(5), m.open(Some(&id), Access::Exclusive))
        .await
        .map_err(|_| Failed::new("SPEC §3: a dropped session must release its lock"))??;
    check!(
        again.get::<u32>("n")? == Some(1),
        "SPEC §3: a dropped session writes nothing"
    );
    Ok(())
}

pub(super) async fn lock_lost_is_an_error(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Exclusive).await?;
    h.store().delete(&key_of(&h, &id)?).await?;
    s.insert("n", &5u32)?;
    let out = s.end().await;
    check!(
        matches!(out, Err(Error::LockLost { .. })),
        "SPEC §3: LockLost on commit reaches the application as an error, got {out:?}"
    );
    Ok(())
}

pub(super) async fn stale_lock_is_taken_over(h: Harness) -> Outcome {
    let m = h.manager(|c| c.lock_ttl(Duration::from_millis(300)))?;
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    s.end().await?;
    let mut stuck = m.open(Some(&id), Access::Exclusive).await?;
    let mut next =
        tokio::time::timeout(Duration::from_secs(5), m.open(Some(&id), Access::Exclusive))
            .await
            .map_err(|_| Failed::new("a stale lock must be taken over"))??;
    next.insert("n", &2u32)?;
    next.end().await?;
    stuck.insert("n", &3u32)?;
    let out = stuck.end().await;
    check!(
        matches!(out, Err(Error::LockLost { .. })),
        "the stale holder's write is rejected, got {out:?}"
    );
    check!(
        get::<u32>(&found(&h, &key_of(&h, &id)?).await?.items, "n")? == Some(2),
        "the new holder's write stands"
    );
    Ok(())
}

pub(super) async fn waiter_limit_fails_fast(h: Harness) -> Outcome {
    let (_, id) = stored_session(&h).await?;
    let m = h.manager(|c| c.max_waiters_per_session(2))?;
    let _holder = m.open(Some(&id), Access::Exclusive).await?;
    let mut waiters = Vec::new();
    for n in 1..=2 {
        let m2 = m.clone();
        let id2 = id.clone();
        waiters.push(tokio::spawn(async move {
            m2.open(Some(&id2), Access::Exclusive).await.map(|_| ())
        }));
        // Wait (bounded) until this waiter has registered, so the count is exact.
        for _ in 0..250 {
            if m.waiting_on(&id) >= n {
                break;
            }
            sleep(Duration::from_millis(20)).await;
        }
        check!(
            m.waiting_on(&id) == n,
            "expected {n} waiting requests, saw {}",
            m.waiting_on(&id)
        );
    }
    let third = tokio::time::timeout(Duration::from_secs(2), m.open(Some(&id), Access::Exclusive))
        .await
        .map_err(|_| Failed::new("the waiter over the limit must fail fast, not wait"))?;
    for w in waiters {
        w.abort();
    }
    check!(
        matches!(third, Err(Error::TooManyWaiters { limit: 2 })),
        "expected TooManyWaiters, got {third:?}"
    );
    Ok(())
}

pub(super) async fn waiter_deadline(h: Harness) -> Outcome {
    let (_, id) = stored_session(&h).await?;
    let m = h.manager(|c| c.lock_wait_timeout(Duration::from_millis(300)))?;
    let _holder = m.open(Some(&id), Access::Exclusive).await?;
    let out = tokio::time::timeout(Duration::from_secs(5), m.open(Some(&id), Access::Exclusive))
        .await
        .map_err(|_| Failed::new("the waiter must give up at its deadline"))?;
    check!(
        matches!(out, Err(Error::WaitTimeout { .. })),
        "expected WaitTimeout, got {out:?}"
    );
    Ok(())
}

pub(super) async fn concurrent_access_merges(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut a = m.open(Some(&id), Access::Concurrent).await?;
    let mut b = m.open(Some(&id), Access::Concurrent).await?;
    a.insert("a", &1u32)?;
    b.insert("b", &2u32)?;
    check!(
        a.end().await? == EndOutcome::Committed,
        "lock-free save commits"
    );
    check!(
        b.end().await? == EndOutcome::Committed,
        "lock-free save commits"
    );
    let snap = found(&h, &key_of(&h, &id)?).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(1)
            && get::<u32>(&snap.items, "b")? == Some(2)
            && get::<u32>(&snap.items, "n")? == Some(1),
        "two lock-free requests writing different items both survive"
    );
    Ok(())
}

pub(super) async fn renew_id_keeps_data(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Exclusive).await?;
    s.insert("user", &"alice")?;
    let new_id = s.renew_id().await?;
    check!(new_id.expose() != id, "renew_id gives a new id");
    s.insert("after", &true)?;
    let out = s.end().await?;
    check!(
        out == EndOutcome::Committed,
        "the renewed session commits, got {out:?}"
    );
    check!(
        is_missing(&h, &key_of(&h, &id)?).await?,
        "the old id is gone (session fixation)"
    );
    let snap = found(&h, &key_of(&h, new_id.expose())?).await?;
    check!(get::<u32>(&snap.items, "n")? == Some(1), "old data moves");
    check!(
        get::<String>(&snap.items, "user")?.as_deref() == Some("alice"),
        "changes before renew_id are kept"
    );
    check!(
        get::<bool>(&snap.items, "after")? == Some(true),
        "changes after renew_id are kept"
    );
    Ok(())
}

pub(super) async fn initial_access_reported_once(h: Harness) -> Outcome {
    let m = h.manager(|c| c)?;
    let key = h.key()?;
    h.store().create(&key, &Items::new(), LONG, false).await?;
    let s = m.open(Some(key.id().expose()), Access::Exclusive).await?;
    check!(
        s.is_initial_access(),
        "the first request sees the uninitialized session's initial access"
    );
    s.end().await?;
    let s = m.open(Some(key.id().expose()), Access::Exclusive).await?;
    check!(!s.is_initial_access(), "only once");
    Ok(())
}

pub(super) async fn oversized_session_rejected_at_insert(h: Harness) -> Outcome {
    let m = h.manager(|c| c.max_session_size(64 * 1024))?;
    let (_, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Exclusive).await?;
    let out = s.insert("big", &vec![0u8; 70 * 1024]);
    check!(
        matches!(out, Err(Error::SessionTooLarge { .. })),
        "an oversized session fails at insert, got {out:?}"
    );
    s.insert("small", &1u8)?;
    s.end().await?;
    let snap = found(&h, &key_of(&h, &id)?).await?;
    check!(
        !snap.items.contains_key("big") && snap.items.contains_key("small"),
        "nothing of the rejected insert is stored; the rest is"
    );
    Ok(())
}

pub(super) async fn concurrent_unchanged_stores_nothing(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let s = m.open(Some(&id), Access::Concurrent).await?;
    let out = s.end().await?;
    check!(
        out == EndOutcome::Nothing,
        "an unchanged lock-free session stores nothing, got {out:?}"
    );
    Ok(())
}

pub(super) async fn concurrent_abandon_deletes(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Concurrent).await?;
    s.abandon()?;
    check!(
        s.end().await? == EndOutcome::Removed,
        "an abandoned lock-free session is deleted"
    );
    check!(
        is_missing(&h, &key_of(&h, &id)?).await?,
        "the session is gone"
    );
    Ok(())
}

pub(super) async fn concurrent_write_to_vanished_session_is_session_gone(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Concurrent).await?;
    m.delete(&id).await?;
    s.insert("n", &2u32)?;
    let out = s.end().await;
    check!(
        matches!(out, Err(Error::SessionGone { .. })),
        "a lock-free write to a deleted session is SessionGone, got {out:?}"
    );
    check!(
        is_missing(&h, &key_of(&h, &id)?).await?,
        "nothing is resurrected"
    );
    Ok(())
}

pub(super) async fn read_only_force_releases_stale_lock(h: Harness) -> Outcome {
    let m = h.manager(|c| c.lock_ttl(Duration::from_millis(300)))?;
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    s.end().await?;
    let mut stuck = m.open(Some(&id), Access::Exclusive).await?;
    let reader = tokio::time::timeout(Duration::from_secs(5), m.open(Some(&id), Access::ReadOnly))
        .await
        .map_err(|_| Failed::new("a read-only request must not wait forever for a stale lock"))??;
    check!(
        reader.get::<u32>("n")? == Some(1),
        "the reader sees the last stored data"
    );
    stuck.insert("n", &9u32)?;
    let out = stuck.end().await;
    check!(
        matches!(out, Err(Error::LockLost { .. })),
        "the stale holder's lock was released, so its write is rejected, got {out:?}"
    );
    Ok(())
}

pub(super) async fn lost_lock_on_release_is_reported(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let s = m.open(Some(&id), Access::Exclusive).await?;
    h.store().delete(&key_of(&h, &id)?).await?;
    let out = s.end().await?;
    check!(
        out == EndOutcome::LockWasLost,
        "an unchanged session whose lock was lost reports it, got {out:?}"
    );
    Ok(())
}

pub(super) async fn renew_id_of_new_session(h: Harness) -> Outcome {
    let m = h.manager(|c| c)?;
    let mut s = m.open(None, Access::Exclusive).await?;
    let first = *s.id();
    let renewed = s.renew_id().await?;
    check!(
        renewed != first && *s.id() == renewed,
        "renew_id gives a new session a new id"
    );
    s.insert("n", &1u32)?;
    check!(
        s.end().await? == EndOutcome::Created,
        "the renewed new session is created"
    );
    check!(
        is_missing(&h, &key_of(&h, first.expose())?).await?,
        "nothing under the first id"
    );
    check!(
        !is_missing(&h, &key_of(&h, renewed.expose())?).await?,
        "stored under the renewed id"
    );
    Ok(())
}

pub(super) async fn manager_delete_logs_out_everywhere(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let _holder = m.open(Some(&id), Access::Exclusive).await?;
    check!(
        m.delete(&id).await?,
        "delete reports that the session existed"
    );
    check!(!m.delete(&id).await?, "a second delete finds nothing");
    check!(
        matches!(m.delete("not an id").await, Err(Error::InvalidId { .. })),
        "a malformed id is InvalidId"
    );
    let s = m.open(Some(&id), Access::Exclusive).await?;
    check!(
        s.is_new(),
        "the deleted session is gone, even though it was locked"
    );
    Ok(())
}

pub(super) async fn waiter_wakes_on_release_signal(h: Harness) -> Outcome {
    // With a 10 s poll interval, only the release signal can wake the waiter in time.
    let m = h.manager(|c| c.poll_interval(Duration::from_secs(10)))?;
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    s.end().await?;
    let holder = m.open(Some(&id), Access::Exclusive).await?;
    let m2 = m.clone();
    let id2 = id.clone();
    let waiter = tokio::spawn(async move {
        m2.open(Some(&id2), Access::Exclusive)
            .await
            .map(|s| s.is_new())
    });
    sleep(Duration::from_millis(200)).await;
    holder.end().await?;
    let woke = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .map_err(|_| {
            Failed::new("SPEC §3: a waiter must wake on the store's release signal, not poll")
        })?;
    let is_new = woke.map_err(|e| Failed::new(e.to_string()))??;
    check!(!is_new, "the waiter gets the stored session");
    Ok(())
}
