//! The session manager on this store: the decision table and waiting rules of docs/contract.md §3.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::support::*;
use super::{Failed, Harness, Outcome, check};
use crate::{Access, EndOutcome, Error, Items, Session, SessionId, SessionManager, SessionStore};

/// A manager with the harness's configuration, and the id of a session it created with `n = 1`.
async fn stored_session(h: &Harness) -> Result<(SessionManager, String), Failed> {
    let m = h.manager(|c| c)?;
    let (id, out) = store_n1(&m).await?;
    expect(out, EndOutcome::Created, "a new written session is created")?;
    Ok((m, id))
}

/// A manager whose locks go stale after 300 ms, the id of a session it stored with `n = 1`, and
/// that session opened exclusively and left holding its lock (a request that got stuck).
async fn stuck_session(h: &Harness) -> Result<(SessionManager, String, Session), Failed> {
    let m = h.manager(|c| c.lock_ttl(Duration::from_millis(300)))?;
    let (id, _) = store_n1(&m).await?;
    let stuck = reopen(&m, &id).await?;
    Ok((m, id, stuck))
}

/// Fails with `what` unless item `n` of the stored session `id` is `want`.
async fn expect_stored_n(h: &Harness, id: &str, want: u32, what: &str) -> Outcome {
    expect_found_item(h, &key_of(h, id)?, "n", want, what).await
}

/// Waits 200 ms and fails with `what` if `waiter` has finished: it must wait while `holder` holds
/// the lock. Then `holder` sets `n = n` and ends; returns what `waiter` returned.
async fn write_while_waited<T>(
    mut holder: Session, n: u32, waiter: JoinHandle<crate::Result<T>>, what: &str,
) -> Result<T, Failed> {
    sleep(Duration::from_millis(200)).await;
    check!(!waiter.is_finished(), "{what}");
    holder.insert("n", &n)?;
    holder.end().await?;
    Ok(joined(waiter).await??)
}

/// Sets `n = n` on `s` and ends it; fails with `what, got <outcome>` unless the end is `LockLost`.
async fn expect_write_lock_lost(mut s: Session, n: u32, what: &str) -> Outcome {
    s.insert("n", &n)?;
    expect_matches!(s.end().await, Err(Error::LockLost { .. }), what);
    Ok(())
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
        let s = reopen(&m, bad).await?;
        check!(
            s.is_new(),
            "docs/contract.md §3: malformed id {bad:?} gives a new session"
        );
        check!(s.id().expose() != bad, "a malformed id is never adopted");
    }
    Ok(())
}

pub(super) async fn unknown_id_is_not_adopted(h: Harness) -> Outcome {
    let m = h.manager(|c| c)?;
    let chosen = SessionId::generate()?;
    let mut s = reopen(&m, chosen.expose()).await?;
    check!(s.is_new(), "an unknown id gives a new session");
    check!(
        *s.id() != chosen,
        "docs/contract.md §3: a client-chosen id is never adopted (session fixation)"
    );
    s.insert("x", &1u8)?;
    s.end().await?;
    let key = key_of(&h, chosen.expose())?;
    expect_missing(&h, &key, "nothing is stored under the client's id").await
}

pub(super) async fn new_unwritten_session_stores_nothing(h: Harness) -> Outcome {
    let m = h.manager(|c| c)?;
    let s = m.open(None, Access::Exclusive).await?;
    let key = s.key().clone();
    let out = s.end().await?;
    let what = "a new, unwritten session stores nothing";
    expect(out, EndOutcome::Nothing, what)?;
    expect_missing(&h, &key, "nothing may be stored").await
}

pub(super) async fn new_written_session_is_created(h: Harness) -> Outcome {
    let (_, id) = stored_session(&h).await?;
    let snap = found(&h, &key_of(&h, &id)?).await?;
    expect_item(&snap, "n", 1, "the new session's items are stored")?;
    check!(
        !snap.initialize,
        "a session created by the manager is initialized"
    );
    Ok(())
}

pub(super) async fn changed_session_commits_delta(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = reopen(&m, &id).await?;
    check!(
        !s.is_new() && *s.id().expose() == *id,
        "a stored session keeps its id"
    );
    s.insert("n", &2u32)?;
    let what = "a changed session commits";
    expect(s.end().await?, EndOutcome::Committed, what)?;
    expect_stored_n(&h, &id, 2, "the change is stored").await
}

pub(super) async fn unchanged_session_releases(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let s = reopen(&m, &id).await?;
    let _: Option<u32> = s.get("n")?;
    let what = "an unchanged session is released, not rewritten";
    expect(s.end().await?, EndOutcome::Released, what)?;
    expect_found(&h, &key_of(&h, &id)?, "the lock is released").await
}

pub(super) async fn timeout_change_commits(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = reopen(&m, &id).await?;
    s.set_timeout(Duration::from_secs(77))?;
    let what = "a timeout change alone commits";
    expect(s.end().await?, EndOutcome::Committed, what)?;
    let snap = found(&h, &key_of(&h, &id)?).await?;
    let what = "the new timeout is stored";
    expect(snap.timeout, Duration::from_secs(77), what)
}

pub(super) async fn abandon_removes(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = reopen(&m, &id).await?;
    s.abandon()?;
    let what = "an abandoned session is removed";
    expect(s.end().await?, EndOutcome::Removed, what)?;
    let key = key_of(&h, &id)?;
    expect_missing(&h, &key, "the abandoned session is gone").await?;
    let s = reopen(&m, &id).await?;
    check!(
        s.is_new() && s.id().expose() != id,
        "the abandoned id is not reused"
    );
    Ok(())
}

pub(super) async fn read_only_never_writes(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::ReadOnly).await?;
    expect(s.get::<u32>("n")?, Some(1), "read-only sees the data")?;
    expect_matches!(
        s.insert("n", &5u32),
        Err(Error::NotWritable(_)),
        "a read-only session refuses changes"
    );
    expect_matches!(
        s.abandon(),
        Err(Error::NotWritable(_)),
        "a read-only session cannot be abandoned"
    );
    expect_found(&h, &key_of(&h, &id)?, "read-only takes no lock").await?;
    let what = "read-only stores nothing";
    expect(s.end().await?, EndOutcome::Nothing, what)?;
    expect_stored_n(&h, &id, 1, "nothing changed").await
}

pub(super) async fn read_only_waits_for_writer(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let open = open_later(&m, &id, Access::ReadOnly);
    let writer = reopen(&m, &id).await?;
    let reader = tokio::spawn(async move { open.await?.get::<u32>("n") });
    let what = "a read-only request waits while a writer holds the lock";
    let seen = write_while_waited(writer, 2, reader, what).await?;
    let what = "the reader sees the writer's complete change";
    expect(seen, Some(2), what)
}

pub(super) async fn exclusive_waits_for_lock(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let open = open_later(&m, &id, Access::Exclusive);
    let first = reopen(&m, &id).await?;
    let second = tokio::spawn(async move {
        let mut s = open.await?;
        let n: u32 = s.get("n")?.unwrap_or(0);
        s.insert("n", &(n * 10))?;
        s.end().await
    });
    write_while_waited(first, 3, second, "a second exclusive request waits").await?;
    expect_stored_n(&h, &id, 30, "the waiter saw the first request's write").await
}

pub(super) async fn drop_without_end_releases_and_writes_nothing(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = reopen(&m, &id).await?;
    s.insert("n", &99u32)?;
    // A panicking handler drops its session.
    let handler = tokio::spawn(async move {
        let _s = s;
        // resume_unwind unwinds like a panic without running the panic hook, so the deliberate
        // failure prints no message or backtrace into the test output.
        std::panic::resume_unwind(Box::new("a failing handler drops its session"));
    });
    check!(handler.await.is_err(), "the handler panicked");
    let what = "docs/contract.md §3: a dropped session must release its lock";
    let again = within(Duration::from_secs(5), what, reopen(&m, &id)).await??;
    let what = "docs/contract.md §3: a dropped session writes nothing";
    expect(again.get::<u32>("n")?, Some(1), what)
}

pub(super) async fn lock_lost_is_an_error(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let s = reopen(&m, &id).await?;
    h.store().delete(&key_of(&h, &id)?).await?;
    let what = "docs/contract.md §3: LockLost on commit reaches the application as an error";
    expect_write_lock_lost(s, 5, what).await
}

pub(super) async fn stale_lock_is_taken_over(h: Harness) -> Outcome {
    let (m, id, stuck) = stuck_session(&h).await?;
    let what = "a stale lock must be taken over";
    let mut next = within(Duration::from_secs(5), what, reopen(&m, &id)).await??;
    next.insert("n", &2u32)?;
    next.end().await?;
    expect_write_lock_lost(stuck, 3, "the stale holder's write is rejected").await?;
    expect_stored_n(&h, &id, 2, "the new holder's write stands").await
}

/// Waits (bounded) until `n` requests of `m` wait on session `id`, so that a count or an order is
/// exact.
async fn until_waiting(m: &SessionManager, id: &str, n: usize) -> Outcome {
    for _ in 0..250 {
        if m.waiting_on(id) >= n {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    let what = format!("expected {n} waiting requests");
    expect(m.waiting_on(id), n, &what)
}

pub(super) async fn waiter_limit_fails_fast(h: Harness) -> Outcome {
    let (_, id) = stored_session(&h).await?;
    let m = h.manager(|c| c.max_waiters_per_session(2))?;
    let _holder = reopen(&m, &id).await?;
    let mut waiters = Vec::new();
    for n in 1..=2 {
        let open = open_later(&m, &id, Access::Exclusive);
        waiters.push(tokio::spawn(async move { open.await.map(|_| ()) }));
        until_waiting(&m, &id, n).await?;
    }
    let what = "the waiter over the limit must fail fast, not wait";
    let third = within(Duration::from_secs(2), what, reopen(&m, &id)).await?;
    for w in waiters {
        w.abort();
    }
    expect_matches!(
        third,
        Err(Error::TooManyWaiters { limit: 2 }),
        "expected TooManyWaiters"
    );
    Ok(())
}

pub(super) async fn waiter_deadline(h: Harness) -> Outcome {
    let (_, id) = stored_session(&h).await?;
    let m = h.manager(|c| c.lock_wait_timeout(Duration::from_millis(300)))?;
    let _holder = reopen(&m, &id).await?;
    let what = "the waiter must give up at its deadline";
    let out = within(Duration::from_secs(5), what, reopen(&m, &id)).await?;
    expect_matches!(out, Err(Error::WaitTimeout { .. }), "expected WaitTimeout");
    Ok(())
}

pub(super) async fn concurrent_access_merges(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut a = m.open(Some(&id), Access::Concurrent).await?;
    let mut b = m.open(Some(&id), Access::Concurrent).await?;
    a.insert("a", &1u32)?;
    b.insert("b", &2u32)?;
    let what = "lock-free save commits";
    expect(a.end().await?, EndOutcome::Committed, what)?;
    expect(b.end().await?, EndOutcome::Committed, what)?;
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
    let mut s = reopen(&m, &id).await?;
    s.insert("user", &"alice")?;
    let new_id = s.renew_id().await?;
    check!(new_id.expose() != id, "renew_id gives a new id");
    s.insert("after", &true)?;
    let what = "the renewed session commits";
    expect(s.end().await?, EndOutcome::Committed, what)?;
    let old = key_of(&h, &id)?;
    expect_missing(&h, &old, "the old id is gone (session fixation)").await?;
    let snap = found(&h, &key_of(&h, new_id.expose())?).await?;
    expect_item(&snap, "n", 1, "old data moves")?;
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
    let s = reopen(&m, key.id().expose()).await?;
    check!(
        s.is_initial_access(),
        "the first request sees the uninitialized session's initial access"
    );
    s.end().await?;
    let s = reopen(&m, key.id().expose()).await?;
    check!(!s.is_initial_access(), "only once");
    Ok(())
}

pub(super) async fn oversized_session_rejected_at_insert(h: Harness) -> Outcome {
    let m = h.manager(|c| c.max_session_size(64 * 1024))?;
    let (_, id) = stored_session(&h).await?;
    let mut s = reopen(&m, &id).await?;
    expect_matches!(
        s.insert("big", &vec![0u8; 70 * 1024]),
        Err(Error::SessionTooLarge { .. }),
        "an oversized session fails at insert"
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
    let what = "an unchanged lock-free session stores nothing";
    expect(s.end().await?, EndOutcome::Nothing, what)
}

pub(super) async fn concurrent_abandon_deletes(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Concurrent).await?;
    s.abandon()?;
    let what = "an abandoned lock-free session is deleted";
    expect(s.end().await?, EndOutcome::Removed, what)?;
    expect_missing(&h, &key_of(&h, &id)?, "the session is gone").await
}

pub(super) async fn concurrent_write_to_vanished_session_is_session_gone(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let mut s = m.open(Some(&id), Access::Concurrent).await?;
    m.delete(&id).await?;
    s.insert("n", &2u32)?;
    expect_matches!(
        s.end().await,
        Err(Error::SessionGone { .. }),
        "a lock-free write to a deleted session is SessionGone"
    );
    expect_missing(&h, &key_of(&h, &id)?, "nothing is resurrected").await
}

pub(super) async fn read_only_force_releases_stale_lock(h: Harness) -> Outcome {
    let (m, id, stuck) = stuck_session(&h).await?;
    let what = "a read-only request must not wait forever for a stale lock";
    let read_only = m.open(Some(&id), Access::ReadOnly);
    let reader = within(Duration::from_secs(5), what, read_only).await??;
    let what = "the reader sees the last stored data";
    expect(reader.get::<u32>("n")?, Some(1), what)?;
    let what = "the stale holder's lock was released, so its write is rejected";
    expect_write_lock_lost(stuck, 9, what).await
}

pub(super) async fn lost_lock_on_release_is_reported(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let s = reopen(&m, &id).await?;
    h.store().delete(&key_of(&h, &id)?).await?;
    let what = "an unchanged session whose lock was lost reports it";
    expect(s.end().await?, EndOutcome::LockWasLost, what)
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
    let what = "the renewed new session is created";
    expect(s.end().await?, EndOutcome::Created, what)?;
    let first = key_of(&h, first.expose())?;
    expect_missing(&h, &first, "nothing under the first id").await?;
    let renewed = key_of(&h, renewed.expose())?;
    expect_exists(&h, &renewed, "stored under the renewed id").await
}

pub(super) async fn manager_delete_logs_out_everywhere(h: Harness) -> Outcome {
    let (m, id) = stored_session(&h).await?;
    let _holder = reopen(&m, &id).await?;
    check!(
        m.delete(&id).await?,
        "delete reports that the session existed"
    );
    check!(!m.delete(&id).await?, "a second delete finds nothing");
    expect_matches!(
        m.delete("not an id").await,
        Err(Error::InvalidId { .. }),
        "a malformed id is InvalidId"
    );
    let s = reopen(&m, &id).await?;
    check!(
        s.is_new(),
        "the deleted session is gone, even though it was locked"
    );
    Ok(())
}

/// How long the holder of `waiter_wakes_*` keeps the lock: long enough that a waiter that only
/// polls (from 2 ms, doubling) has looked about a dozen times and is in a nap of about 2 s.
const LONG_HOLD: Duration = Duration::from_millis(2500);

pub(super) async fn waiter_wakes_on_release_signal(h: Harness) -> Outcome {
    // The waiter runs in a manager of its own (as in another process), with a 10 s poll interval,
    // over a layer that counts its store calls.
    let waiting_store = Arc::new(Faults::wrap(Arc::clone(h.store())));
    let config = h.config().poll_interval(Duration::from_secs(10)).build()?;
    let waiting = SessionManager::new(Arc::clone(&waiting_store) as Arc<dyn SessionStore>, &config);
    let m = h.manager(|c| c)?;
    let (id, _) = store_n1(&m).await?;
    let holder = reopen(&m, &id).await?;
    let open = open_later(&waiting, &id, Access::Exclusive);
    let waiter = tokio::spawn(async move { open.await.map(|s| s.is_new()) });
    sleep(LONG_HOLD).await;
    holder.end().await?;
    let what = "docs/contract.md §3: a waiter must wake on the store's release signal";
    let is_new = within(Duration::from_secs(5), what, joined(waiter)).await???;
    check!(!is_new, "the waiter gets the stored session");
    // Two looks and a subscription before waiting, one of each after the signal; a few spurious
    // wake-ups (allowed: a store may wake its waiters when its listener reconnects) add a pair
    // each. A signal that fires all the time is polling: hundreds of calls in 2.5 s.
    let calls = waiting_store.calls();
    check!(
        calls <= 12,
        "docs/contract.md §3: a waiter on a store with a release signal waits for the signal, not \
         polling, but it called the store {calls} times while the lock was held"
    );
    Ok(())
}

pub(super) async fn waiter_wakes_when_this_manager_releases(h: Harness) -> Outcome {
    // No release signal from the store, a 10 s poll interval: a waiter that only polled would be
    // in a nap of about 2 s when the holder, a request of the same manager, lets the lock go.
    let store = HideCapabilities::wrap(Arc::clone(h.store()));
    let config = h.config().poll_interval(Duration::from_secs(10)).build()?;
    let m = SessionManager::new(Arc::new(store), &config);
    let (id, _) = store_n1(&m).await?;
    let holder = reopen(&m, &id).await?;
    let open = open_later(&m, &id, Access::Exclusive);
    let waiter = tokio::spawn(async move { open.await.map(|s| s.is_new()) });
    sleep(LONG_HOLD).await;
    holder.end().await?;
    let what = "docs/contract.md §3: a request of the same manager that lets the lock go wakes the \
                manager's waiters at once (a polling waiter would look again only about 1.6 s later)";
    let is_new = within(Duration::from_secs(1), what, joined(waiter)).await???;
    check!(!is_new, "the waiter gets the stored session");
    Ok(())
}

/// docs/contract.md §3 (keep-alive): a request that carries a session's cookie but does not use
/// the session slides its expiry through [`SessionManager::keep_alive`]: kept alive every half
/// timeout, an unused session outlives its timeout; left alone, it expires; an expired, unknown or
/// malformed id is kept alive as nothing, and nothing is created.
pub(super) async fn keep_alive_slides_expiry_of_unused_session(h: Harness) -> Outcome {
    let m = h.manager(|c| c)?;
    let key = seed_a1(&h, SHORT).await?;
    let id = key.id().expose().to_owned();
    for _ in 0..4 {
        sleep(SHORT / 2).await;
        check!(
            m.keep_alive(&id).await?,
            "docs/contract.md §3: a live session is kept alive"
        );
    }
    expect_found_item(&h, &key, "a", 1, "kept alive past its timeout").await?;
    sleep(EXPIRE_WAIT).await;
    expect_missing(&h, &key, "left alone, it expires").await?;
    check!(
        !m.keep_alive(&id).await?,
        "an expired session is not kept alive"
    );
    expect_missing(&h, &key, "a keep-alive creates nothing").await?;
    check!(
        !m.keep_alive("not-an-id").await?,
        "a malformed id is no session"
    );
    Ok(())
}

/// What each waiter found when it got the session: its name, and the writers that had committed
/// before it (the session's `trail`, which each writer extends with its name).
type Seen = Arc<Mutex<Vec<(&'static str, Vec<String>)>>>;

/// Opens `id` with `access` on `m` as another request and notes what it found in `seen`; a
/// writer adds its name to the session's `trail`, keeps the lock for `hold` (a writer at work) and
/// commits.
fn serve(
    m: &SessionManager, id: &str, access: Access, name: &'static str, seen: &Seen, hold: Duration,
) -> JoinHandle<crate::Result<()>> {
    let open = open_later(m, id, access);
    let seen = Arc::clone(seen);
    tokio::spawn(async move {
        let mut s = open.await?;
        let mut trail: Vec<String> = s.get("trail")?.unwrap_or_default();
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name, trail.clone()));
        if access == Access::Exclusive {
            trail.push(name.to_owned());
            s.insert("trail", &trail)?;
            sleep(hold).await;
        }
        s.end().await.map(|_| ())
    })
}

/// Queues `waiters` (name, access) on the session `id` of `m` one after the other, each
/// registered before the next arrives, while `holder` (a request of another manager) holds the
/// lock, `settle` apart; then lets `holder` go at once and answers the order in which the waiters
/// got the session. The order is read from the session, not from when the tasks ran: a request
/// was served after the writers whose commits it saw, and a reader that saw a writer's commit
/// missing was served before that writer took the lock (a reader waits while a writer holds it).
async fn arrival_order(
    m: &SessionManager, id: &str, holder: Session, waiters: &[(&'static str, Access)],
    settle: Duration,
) -> Result<Vec<&'static str>, Failed> {
    let seen = Seen::default();
    let mut tasks = Vec::new();
    for (n, &(name, access)) in waiters.iter().enumerate() {
        tasks.push(serve(
            m,
            id,
            access,
            name,
            &seen,
            Duration::from_millis(100),
        ));
        until_waiting(m, id, n + 1).await?;
        if n + 1 < waiters.len() {
            sleep(settle).await;
        }
    }
    holder.end().await?;
    let what = "every waiter gets the session once the holder lets it go";
    for task in tasks {
        within(Duration::from_secs(20), what, joined(task)).await???;
    }
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let writes = |name: &str| {
        waiters
            .iter()
            .any(|&(n, a)| n == name && a == Access::Exclusive)
    };
    seen.sort_by_key(|(name, trail)| (trail.len(), writes(name)));
    Ok(seen.into_iter().map(|(name, _)| name).collect())
}

/// docs/contract.md §3 (fair waiting): the waiters of one manager on one session are served in
/// arrival order, a reader that arrived before a writer included. Here they poll (no release
/// signal, a 10 s poll interval) and the holder is a request of another manager: the reader that
/// arrived first is in a nap of about a second when the lock goes, while the writer that came a
/// second later still looks every few milliseconds. Without a queue, the writer gets the session
/// first.
pub(super) async fn waiters_are_served_in_arrival_order(h: Harness) -> Outcome {
    let store = HideCapabilities::wrap(Arc::clone(h.store()));
    let config = h.config().poll_interval(Duration::from_secs(10)).build()?;
    let m = SessionManager::new(Arc::new(store), &config);
    let (other, id) = stored_session(&h).await?;
    let holder = reopen(&other, &id).await?;
    let waiters = [("reader", Access::ReadOnly), ("writer", Access::Exclusive)];
    let order = arrival_order(&m, &id, holder, &waiters, Duration::from_millis(1200)).await?;
    let what = "docs/contract.md §3: waiters are served in arrival order";
    expect(order, vec!["reader", "writer"], what)
}

/// docs/contract.md §3 (fair waiting), woken by the store's release signal: the signal wakes every
/// waiter at once, and still a reader and three writers get the session in the order they came.
pub(super) async fn waiters_woken_by_the_release_signal_keep_arrival_order(h: Harness) -> Outcome {
    let config = h.config().poll_interval(Duration::from_secs(10)).build()?;
    let m = SessionManager::new(Arc::clone(h.store()), &config);
    let (other, id) = stored_session(&h).await?;
    let holder = reopen(&other, &id).await?;
    let waiters = [
        ("writer 1", Access::Exclusive),
        ("reader", Access::ReadOnly),
        ("writer 2", Access::Exclusive),
        ("writer 3", Access::Exclusive),
    ];
    let order = arrival_order(&m, &id, holder, &waiters, Duration::from_millis(50)).await?;
    let what = "docs/contract.md §3: waiters are served in arrival order";
    expect(
        order,
        vec!["writer 1", "reader", "writer 2", "writer 3"],
        what,
    )
}
