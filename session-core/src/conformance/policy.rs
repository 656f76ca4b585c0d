//! Retries and the error policy on this store (docs/contract.md §4), with faults injected by
//! [`FaultyStore`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::support::*;
use super::{
    Failed, Faults, FaultyStore, Harness, HideCapabilities, Outcome, WithoutCapabilities, check,
};
use crate::{
    Access, Call, Config, ConfigBuilder, EndOutcome, Error, ItemValue, Items, Layered, Operation,
    Reply, RetryPolicy, Session, SessionKey, SessionManager, SessionStore, StoreLayer,
};

/// A manager on `store` with [`Harness::config`] adjusted by `adjust`.
fn manager(
    h: &Harness, store: &Arc<FaultyStore>, adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> crate::Result<SessionManager> {
    let config: Config = adjust(h.config()).build()?;
    Ok(SessionManager::new(
        Arc::clone(store) as Arc<dyn SessionStore>,
        &config,
    ))
}

/// This store behind a fresh [`Faults`] layer, and a manager on it with [`Harness::config`]
/// adjusted by `adjust`.
fn faulty_manager(
    h: &Harness, adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> crate::Result<(Arc<FaultyStore>, SessionManager)> {
    let store = Arc::new(Faults::wrap(Arc::clone(h.store())));
    let m = manager(h, &store, adjust)?;
    Ok((store, m))
}

/// [`faulty_manager`] without retries, with a 60 s lock TTL and a 10 s lock wait: a lock left
/// behind shows as a wait far longer than a retry interval.
fn without_retries(h: &Harness) -> crate::Result<(Arc<FaultyStore>, SessionManager)> {
    faulty_manager(h, |c| {
        c.retry_timeout(Duration::ZERO)
            .lock_ttl(Duration::from_secs(60))
            .lock_wait_timeout(Duration::from_secs(10))
    })
}

/// [`faulty_manager`] whose manager retries for 3 s.
fn retrying(h: &Harness) -> crate::Result<(Arc<FaultyStore>, SessionManager)> {
    faulty_manager(h, |c| c.retry_timeout(Duration::from_secs(3)))
}

/// Fails with `what` unless `s` is the stored session, found again, with `n = 1`.
fn expect_stored(s: &Session, what: &str) -> Outcome {
    check!(!s.is_new() && s.get::<u32>("n")? == Some(1), "{what}");
    Ok(())
}

pub(super) async fn transient_failures_are_retried(h: Harness) -> Outcome {
    let (store, m) = retrying(&h)?;
    let (s, id) = new_n1(&m).await?;
    store.fail_before(2);
    let before = store.calls();
    let what = "docs/contract.md §4: the create succeeds after two transient failures";
    expect(s.end().await?, EndOutcome::Created, what)?;
    let what = "two failures and one success make three attempts";
    expect(store.calls() - before, 3, what)?;
    store.fail_before(1);
    let s = reopen(&m, &id).await?;
    expect_stored(&s, "a retried acquire returns the stored session")?;
    s.end().await?;
    Ok(())
}

pub(super) async fn lost_commit_reply_is_not_an_error(h: Harness) -> Outcome {
    let (store, m) = retrying(&h)?;
    let (s, id) = new_n1(&m).await?;
    store.lose_reply(1);
    let what = "docs/contract.md §4: a create whose reply was lost is still Created";
    expect(s.end().await?, EndOutcome::Created, what)?;
    let mut s = reopen(&m, &id).await?;
    s.insert("n", &2u32)?;
    store.lose_reply(1);
    expect_matches!(
        s.end().await,
        Ok(EndOutcome::Committed),
        "docs/contract.md §4: a retry never turns a commit that succeeded into an error"
    );
    let s = reopen(&m, &id).await?;
    expect(s.get::<u32>("n")?, Some(2), "the commit was applied once")?;
    store.lose_reply(1);
    let what = "a release whose reply was lost is still Released";
    expect(s.end().await?, EndOutcome::Released, what)?;
    let s = reopen(&m, &id).await?;
    check!(!s.is_new(), "the session is intact and unlocked");
    Ok(())
}

pub(super) async fn errors_propagate_when_throw_on_error(h: Harness) -> Outcome {
    let (store, first) = faulty_manager(&h, |c| c)?;
    let (id, _) = store_n1(&first).await?;
    drop(first);
    let m = manager(&h, &store, |c| c)?;
    store.fail_before(1);
    expect_matches!(
        reopen(&m, &id).await,
        Err(Error::Unavailable { .. }),
        "docs/contract.md §4: with throwOnError a store error is an error, never 'not found'"
    );
    check!(
        m.last_error().is_none(),
        "an error returned to the caller is not also recorded as absorbed"
    );
    Ok(())
}

pub(super) async fn degraded_session_when_not_throw_on_error(h: Harness) -> Outcome {
    let (store, m) = faulty_manager(&h, |c| c.throw_on_error(false))?;
    let (id, _) = store_n1(&m).await?;
    check!(m.last_error().is_none(), "no error yet");
    store.fail_before(1);
    let mut s = reopen(&m, &id).await?;
    let what = "docs/contract.md §4: a failing store gives a degraded session";
    check!(s.is_degraded(), "{what}");
    check!(s.names().is_empty(), "a degraded session is empty");
    check!(
        s.id().expose() == id,
        "a degraded session keeps the client's id, so a passing outage does not log users out"
    );
    check!(
        s.last_error().is_some_and(|e| e.is_store_failure()),
        "docs/contract.md §3: a degraded session carries its own cause"
    );
    s.insert("n", &5u32)?;
    let what = "a degraded session is not saved";
    let report = s.end_report().await?;
    expect(report.outcome(), EndOutcome::NotSaved, what)?;
    check!(
        report.last_error().is_some(),
        "docs/contract.md §3: the end report names the request's cause"
    );
    let cause = m
        .last_error()
        .ok_or_else(|| Failed::new("last_error must hold the cause"))?;
    expect_matches!(
        *cause,
        Error::Unavailable { .. },
        "last_error names the cause"
    );
    let s = reopen(&m, &id).await?;
    check!(
        !s.is_degraded() && s.get::<u32>("n")? == Some(1),
        "the stored session is untouched"
    );
    Ok(())
}

pub(super) async fn corrupt_value_is_a_typed_error(h: Harness) -> Outcome {
    let key = h.key()?;
    let mut all = Items::new();
    all.insert("n".into(), ItemValue::from_bytes(vec![0xc1, 0xff, 0x00]));
    h.store().create(&key, &all, LONG, true).await?;
    let m = h.manager(|c| c)?;
    let s = reopen(&m, key.id().expose()).await?;
    expect_matches!(
        s.get::<u32>("n"),
        Err(Error::Decode { item, .. }) if item == "n",
        "undecodable bytes give a Decode error naming the item"
    );
    let what = "reading a bad value changes nothing";
    expect(s.end().await?, EndOutcome::Released, what)?;
    let kept = found(&h, &key)
        .await?
        .items
        .get("n")
        .map(|v| v.as_bytes().to_vec());
    check!(
        kept == Some(vec![0xc1, 0xff, 0x00]),
        "the bytes are kept, never silently emptied"
    );
    Ok(())
}

pub(super) async fn operation_timeout_applies(h: Harness) -> Outcome {
    // Generous enough for a loaded server's ordinary operations; the injected delay is far longer.
    let (store, m) = faulty_manager(&h, |c| c.operation_timeout(Some(Duration::from_secs(1))))?;
    let (id, _) = store_n1(&m).await?;
    store.delay(1, Duration::from_secs(10));
    let what = "docs/contract.md §4: the operation timeout must cut a slow operation short";
    let out = within(Duration::from_secs(5), what, reopen(&m, &id)).await?;
    expect_matches!(
        out,
        Err(Error::Timeout { .. }),
        "a slow store operation is a Timeout error"
    );
    Ok(())
}

pub(super) async fn lost_acquire_reply_keeps_session_usable(h: Harness) -> Outcome {
    let what = "docs/contract.md §4: an acquire whose reply was lost must not lock the request out";
    let (store, m) = retrying(&h)?;
    let (id, _) = store_n1(&m).await?;
    store.lose_reply(1);
    let s = within(Duration::from_secs(5), what, reopen(&m, &id)).await??;
    expect_stored(&s, "the retried acquire returns the session")?;
    expect(s.end().await?, EndOutcome::Released, "and holds its lock")
}

/// Without retries, an acquire whose reply was lost is an error for its request, and the lock the
/// store took for it is released in the background (docs/contract.md §3): the next request gets
/// the session within a retry interval, not after the lock TTL.
pub(super) async fn lost_acquire_reply_without_retries_leaves_no_lock(h: Harness) -> Outcome {
    let what = "docs/contract.md §3: the lock of an acquire whose reply was lost is released";
    let (store, m) = without_retries(&h)?;
    let (id, _) = store_n1(&m).await?;
    store.lose_reply(1);
    check!(
        reopen(&m, &id).await.is_err(),
        "without retries, a lost acquire reply is the request's error"
    );
    // Without the background release the session would stay locked for the 60 s lock TTL.
    let s = within(Duration::from_secs(3), what, reopen(&m, &id)).await??;
    expect_stored(&s, "the next request gets the session")?;
    expect(s.end().await?, EndOutcome::Released, "and holds its lock")
}

/// An acquire still on its way to the store when its request ended without an answer (here it
/// reaches the store 300 ms after its caller heard a failure, as one queued for a pooled
/// connection or slowed on the network would) takes the lock after the background release's
/// first attempt found nothing: the release made once more a retry interval later frees it
/// (docs/contract.md §3), so the next request gets the session within seconds, not after the 60 s
/// lock TTL.
pub(super) async fn acquire_arriving_late_leaves_no_lock(h: Harness) -> Outcome {
    let what = "docs/contract.md §3: an acquire that reaches the store after its request ended \
                leaves no lock";
    let (store, m) = without_retries(&h)?;
    let (id, _) = store_n1(&m).await?;
    store.arrive_late(Duration::from_millis(300));
    check!(
        reopen(&m, &id).await.is_err(),
        "the request whose acquire is still on its way fails"
    );
    // The late acquire has taken the lock by now, for a token nobody holds.
    sleep(Duration::from_millis(500)).await;
    let s = within(Duration::from_secs(4), what, reopen(&m, &id)).await??;
    expect_stored(&s, "the next request gets the session")?;
    expect(s.end().await?, EndOutcome::Released, "and holds its lock")
}

/// A request cancelled while its acquire is in flight (its future dropped: the client went away,
/// a timeout around the handler) after the store took the lock leaves no lock behind: the manager
/// releases it in the background, as for a lost reply (docs/contract.md §3), so the next request
/// gets the session within a retry interval, not after the 60 s lock TTL.
pub(super) async fn cancelled_acquire_leaves_no_lock(h: Harness) -> Outcome {
    let what =
        "docs/contract.md §3: the lock of an acquire whose request was cancelled is released";
    let (store, m) = faulty_manager(&h, |c| {
        c.lock_ttl(Duration::from_secs(60))
            .lock_wait_timeout(Duration::from_secs(10))
    })?;
    let (id, _) = store_n1(&m).await?;
    // The acquire reaches the store at once; its reply is held back far longer than the request
    // is given.
    store.slow_reply_on(Operation::Acquire, 1, Duration::from_secs(30));
    let cancelled = tokio::time::timeout(Duration::from_secs(1), reopen(&m, &id)).await;
    check!(
        cancelled.is_err(),
        "the request is cancelled while its acquire's reply is held back"
    );
    let s = within(Duration::from_secs(4), what, reopen(&m, &id)).await??;
    expect_stored(&s, "the next request gets the session")?;
    expect(s.end().await?, EndOutcome::Released, "and holds its lock")
}

/// A request cancelled while its acquire is still on its way to the store (here it reaches the
/// store 2 s after it was made, as one queued behind a lock on the server would) leaves no lock
/// when the acquire arrives after every background release has looked (20 ms after the
/// cancellation and a retry interval later, finding nothing held): the manager runs the cancelled
/// acquire on to its answer and releases the lock it took (docs/contract.md §3), so the next
/// request gets the session within seconds, not after the 60 s lock TTL.
pub(super) async fn cancelled_acquire_arriving_later_leaves_no_lock(h: Harness) -> Outcome {
    let what = "docs/contract.md §3: a cancelled acquire that reaches the store after every \
                release has looked leaves no lock";
    let (store, m) = faulty_manager(&h, |c| {
        c.lock_ttl(Duration::from_secs(60))
            .lock_wait_timeout(Duration::from_secs(3))
    })?;
    let (id, _) = store_n1(&m).await?;
    store.acquire_arrives_after(Duration::from_secs(2));
    let cancelled = tokio::time::timeout(Duration::from_millis(200), reopen(&m, &id)).await;
    check!(
        cancelled.is_err(),
        "the request is cancelled while its acquire is on its way"
    );
    // The acquire has taken the lock by now, for a token nobody holds.
    sleep(Duration::from_millis(2300)).await;
    let s = within(Duration::from_secs(5), what, reopen(&m, &id)).await??;
    expect_stored(&s, "the next request gets the session")?;
    expect(s.end().await?, EndOutcome::Released, "and holds its lock")
}

/// A waiter whose look is cut at its deadline while its acquire is still on its way to the store
/// (here it reaches the store 3 s after it was made, after every background release has looked)
/// leaves no lock: the manager runs the cut acquire on to its answer and releases the lock it
/// took (docs/contract.md §3), as for a cancelled request.
pub(super) async fn a_look_cut_at_the_deadline_arriving_later_leaves_no_lock(
    h: Harness,
) -> Outcome {
    let what = "docs/contract.md §3: an acquire cut at the waiter's deadline that reaches the \
                store later leaves no lock";
    let Queued {
        store,
        m,
        id,
        holder,
        waiter,
    } = waiter_behind_holder(&h).await?;
    // The waiter's next look reaches the store 3 s from now, when the holder is long gone.
    store.acquire_arrives_after(Duration::from_secs(3));
    expect(
        holder.end().await?,
        EndOutcome::Released,
        "the holder lets go",
    )?;
    let waited = within(Duration::from_secs(4), what, joined(waiter)).await??;
    check!(
        matches!(waited, Err(Error::WaitTimeout { .. })),
        "the waiter fails with WaitTimeout, got {:?}",
        waited.map(|_| ())
    );
    // The cut acquire has taken the lock by now, for a token nobody holds.
    sleep(Duration::from_millis(2700)).await;
    let s = within(Duration::from_secs(5), what, reopen(&m, &id)).await??;
    expect_stored(&s, "the next request gets the session")?;
    expect(s.end().await?, EndOutcome::Released, "and holds its lock")
}

/// A request waiting for a lock another holds (a 1 s lock wait, a 60 s lock TTL, a 50 ms poll
/// interval): returned once the waiter has made its first looks (a look, with a release signal
/// the subscription, and one more look as it queues), so that every store call it makes from then
/// on is cut at its deadline.
async fn waiter_behind_holder(h: &Harness) -> Result<Queued, Failed> {
    let (store, m) = faulty_manager(h, |c| {
        c.lock_ttl(Duration::from_secs(60))
            .lock_wait_timeout(Duration::from_secs(1))
            .poll_interval(Duration::from_millis(50))
    })?;
    let (id, _) = store_n1(&m).await?;
    let holder = reopen(&m, &id).await?;
    let before = store.calls();
    let waiter = tokio::spawn(open_later(&m, &id, Access::Exclusive));
    let first = if store.capabilities().release_signal {
        3
    } else {
        2
    };
    within(Duration::from_secs(5), "the waiter's first looks", async {
        while store.calls() <= before + first {
            sleep(Duration::from_millis(2)).await;
        }
    })
    .await?;
    Ok(Queued {
        store,
        m,
        id,
        holder,
        waiter,
    })
}

/// What [`waiter_behind_holder`] sets up.
struct Queued {
    store: Arc<FaultyStore>,
    m: SessionManager,
    id: String,
    holder: Session,
    waiter: tokio::task::JoinHandle<crate::Result<Session>>,
}

/// A waiter gives up at its deadline even while a store call of its wait is slow (a slow server,
/// or the retries of one call, each allowed the operation timeout): the call in flight is
/// abandoned and the request fails with `WaitTimeout` when `lockWaitTimeout` says, not when the
/// call would have returned (docs/contract.md §3). The holder keeps its lock.
pub(super) async fn a_waiter_gives_up_at_its_deadline_while_a_store_call_is_slow(
    h: Harness,
) -> Outcome {
    let what = "docs/contract.md §3: a waiter gives up at lockWaitTimeout, whatever its store \
                calls take";
    // The waiter's open runs its first calls in full; once it has waited, every look has its reply
    // held back far longer than the wait.
    let Queued {
        store,
        holder,
        waiter,
        ..
    } = waiter_behind_holder(&h).await?;
    store.slow_reply_on(Operation::Acquire, 1000, Duration::from_secs(30));
    let waited = within(Duration::from_secs(4), what, joined(waiter)).await??;
    store.slow_reply_on(Operation::Acquire, 0, Duration::ZERO);
    check!(
        matches!(waited, Err(Error::WaitTimeout { .. })),
        "the waiter fails with WaitTimeout, got {:?}",
        waited.map(|_| ())
    );
    expect(
        holder.end().await?,
        EndOutcome::Released,
        "the holder kept its lock",
    )
}

/// How long the store stays down in the `store_down_then_back_*` behaviours.
const DOWN: Duration = Duration::from_secs(2);

/// The store goes down while one request holds a session's lock (its commit then fails) and another
/// request was handed a session a moment before (it is dropped during the outage), and comes back
/// [`DOWN`] later. During the outage a new request fails within the retry budget instead of waiting;
/// once the store is back, both sessions are usable again within one retry interval (the background
/// release of docs/contract.md §3 runs on the retry policy's schedule), with their stored data: the
/// failed commit wrote nothing. Without that release, both would stay locked for the 60 s lock TTL.
async fn store_down_then_back(h: &Harness, retry_timeout: Duration) -> Outcome {
    let (store, m) = faulty_manager(h, |c| {
        c.retry_timeout(retry_timeout)
            .lock_ttl(Duration::from_secs(60))
            .lock_wait_timeout(Duration::from_secs(10))
    })?;
    let (held, _) = store_n1(&m).await?;
    let (dropped, _) = store_n1(&m).await?;
    let mut holder = reopen(&m, &held).await?;
    holder.insert("n", &2u32)?;
    let gone = reopen(&m, &dropped).await?;
    store.set_down(true);
    let down_at = Instant::now();
    drop(gone);
    // Each failure comes within the retry budget (plus a margin for a loaded machine).
    let bound = retry_timeout + Duration::from_secs(1);
    let what = "a commit during an outage fails within the retry budget";
    let end = within(bound, what, holder.end()).await?;
    check!(
        end.is_err(),
        "a commit during an outage is an error, got {end:?}"
    );
    let what = "a request during an outage fails within the retry budget, it does not wait";
    let during = within(bound, what, reopen(&m, &held)).await?;
    check!(during.is_err(), "a request during an outage is an error");
    sleep(DOWN.saturating_sub(down_at.elapsed())).await;
    store.set_down(false);
    let within_interval = RetryPolicy::INTERVAL + Duration::from_secs(1);
    for (id, what) in [
        (&held, "the session whose commit failed in the outage"),
        (&dropped, "the session dropped in the outage"),
    ] {
        let why = format!(
            "docs/contract.md §3: {what} is usable within one retry interval of the store's return"
        );
        let s = within(within_interval, &why, reopen(&m, id)).await??;
        expect_stored(&s, &format!("{what} keeps its stored data"))?;
        expect(
            s.end().await?,
            EndOutcome::Released,
            "and its lock is this request's",
        )?;
    }
    Ok(())
}

/// [`store_down_then_back`] without retries (the default).
pub(super) async fn store_down_then_back_without_retries_leaves_no_lock(h: Harness) -> Outcome {
    store_down_then_back(&h, Duration::ZERO).await
}

/// [`store_down_then_back`] with retries for 1 s: shorter than the outage, so they run out.
pub(super) async fn store_down_then_back_with_retries_leaves_no_lock(h: Harness) -> Outcome {
    store_down_then_back(&h, Duration::from_secs(1)).await
}

pub(super) async fn lock_is_released_when_end_fails(h: Harness) -> Outcome {
    let (store, m) = faulty_manager(&h, |c| c.throw_on_error(false))?;
    let (id, _) = store_n1(&m).await?;
    let mut s = reopen(&m, &id).await?;
    s.insert("n", &2u32)?;
    store.fail_before(1);
    let what = "a failed commit is NotSaved with throwOnError = false";
    let report = s.end_report().await?;
    expect(report.outcome(), EndOutcome::NotSaved, what)?;
    check!(
        report.last_error().is_some(),
        "docs/contract.md §3: the end report holds the request's cause"
    );
    check!(m.last_error().is_some(), "last_error holds the cause");
    let what = "a failed end must still release the lock";
    let again = within(Duration::from_secs(5), what, reopen(&m, &id)).await??;
    let what = "the failed commit wrote nothing";
    expect(again.get::<u32>("n")?, Some(1), what)
}

/// The stack the `renew_id` behaviours run on: this store with its capabilities hidden (so the
/// manager takes the copy-then-remove fallback of `renew_id`, as on Redis Cluster), then a
/// [`RenewProbe`], then [`Faults`]. Retries are off (the default), so a lost reply or a failure
/// reaches the manager.
fn renew_stack(h: &Harness) -> crate::Result<(SessionManager, Arc<FaultyStore>, Arc<Probed>)> {
    let hidden = HideCapabilities::wrap(Arc::clone(h.store()));
    let probed = Arc::new(Layered::new(hidden, RenewProbe::default()));
    let store = Arc::new(Faults::wrap(Arc::clone(&probed) as Arc<dyn SessionStore>));
    let m = manager(h, &store, |c| c.retry_timeout(Duration::ZERO))?;
    Ok((m, store, probed))
}

type Probed = Layered<WithoutCapabilities<Arc<dyn SessionStore>>, RenewProbe>;

/// Remembers the last key created through it, so that a behaviour can find the copy `renew_id`
/// made even when `renew_id` failed (the faults themselves are injected by [`Faults`]).
#[derive(Debug, Default)]
struct RenewProbe {
    created: Mutex<Option<SessionKey>>,
}

impl RenewProbe {
    fn last_created(&self) -> Result<SessionKey, Failed> {
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| Failed::new("renew_id created no copy"))
    }
}

impl StoreLayer for RenewProbe {
    async fn around(&self, call: Call<'_>, inner: &dyn SessionStore) -> crate::Result<Reply> {
        if let Call::Create { key, .. } = call {
            *self.created.lock().unwrap_or_else(PoisonError::into_inner) = Some(key.clone());
        }
        call.run(inner).await
    }
}

/// A stored session with `n = 1`, opened exclusively again with `user = "alice"` added. Returns
/// the session and its key.
async fn renew_candidate(m: &SessionManager) -> Result<(Session, SessionKey), Failed> {
    let (id, _) = store_n1(m).await?;
    let mut s = reopen(m, &id).await?;
    check!(!s.is_new(), "the stored session is found");
    s.insert("user", &"alice")?;
    let key = s.key().clone();
    Ok((s, key))
}

/// Adds `after = true`, ends the session (expecting a commit), and checks that `key` holds it
/// whole: its data, and its changes from before and after `renew_id`.
async fn commits_whole(h: &Harness, mut s: Session, key: &SessionKey) -> Outcome {
    s.insert("after", &true)?;
    let what = "the session still holds its lock and commits";
    expect(s.end().await?, EndOutcome::Committed, what)?;
    let snap = found(h, key).await?;
    check!(
        get::<u32>(&snap.items, "n")? == Some(1)
            && get::<String>(&snap.items, "user")?.as_deref() == Some("alice")
            && get::<bool>(&snap.items, "after")? == Some(true),
        "the session keeps its data and its changes from before and after renew_id"
    );
    Ok(())
}

pub(super) async fn renew_id_survives_lost_remove_reply(h: Harness) -> Outcome {
    let (m, store, probe) = renew_stack(&h)?;
    let (mut s, old) = renew_candidate(&m).await?;
    // The copy is made and locked, the original removed, and the remove's reply lost.
    store.lose_reply_on(Operation::Remove, 1);
    let renewed = s.renew_id().await;
    let copy = probe.layer().last_created()?;
    check!(
        !is_missing(&h, &old).await? || !is_missing(&h, &copy).await?,
        "docs/contract.md §3: renew_id must never lose the session; after a remove whose reply \
         was lost, neither the old id nor the new one holds it (renew_id returned {renewed:?})"
    );
    expect_matches!(
        renewed,
        Ok(id) if *s.key() == copy && *id == *copy.id(),
        "the old id was removed, so the renewal happened: expected Ok(new id)"
    );
    expect_missing(&h, &old, "the old id is gone (session fixation)").await?;
    let new = s.key().clone();
    commits_whole(&h, s, &new).await
}

pub(super) async fn renew_id_keeps_original_when_remove_fails(h: Harness) -> Outcome {
    let (m, store, probe) = renew_stack(&h)?;
    let (mut s, old) = renew_candidate(&m).await?;
    // The remove fails without reaching the store: the original is intact, the copy must go.
    store.fail_before_on(Operation::Remove, 1);
    expect_matches!(
        s.renew_id().await,
        Err(Error::Unavailable { .. }),
        "a renewal whose remove failed reports the failure"
    );
    check!(
        *s.key() == old,
        "the session keeps its old id, which still holds it"
    );
    expect_missing(
        &h,
        &probe.layer().last_created()?,
        "the copy under the new id is deleted: the session never lives under two ids",
    )
    .await?;
    commits_whole(&h, s, &old).await
}

pub(super) async fn renew_id_keeps_copy_when_store_cannot_tell(h: Harness) -> Outcome {
    let (m, store, probe) = renew_stack(&h)?;
    let (mut s, old) = renew_candidate(&m).await?;
    // The remove is applied and its reply lost; the read that would tell fails too. Only the copy
    // surely exists.
    store.lose_reply_on(Operation::Remove, 1);
    store.fail_before_on(Operation::Read, 1);
    expect_matches!(
        s.renew_id().await,
        Err(Error::Unavailable { .. }),
        "a renewal that cannot be confirmed reports the failure"
    );
    let copy = probe.layer().last_created()?;
    check!(
        *s.key() == copy,
        "docs/contract.md §3: renew_id must never lose the session; when the store cannot say \
         whether the old id was removed, the session continues under the copy"
    );
    let what = "the old id was removed (its reply was lost)";
    expect_missing(&h, &old, what).await?;
    commits_whole(&h, s, &copy).await
}

/// The remove of the old id fails before the store applies it, and the read that would tell fails
/// too: the session continues under the copy (as above), and the old id, which survived still
/// locked by this request, is removed in the background once the store answers, instead of
/// staying locked for the lock TTL and lingering as a second copy (docs/contract.md §3).
pub(super) async fn renew_id_removes_the_surviving_old_id_when_store_cannot_tell(
    h: Harness,
) -> Outcome {
    let (m, store, probe) = renew_stack(&h)?;
    let (mut s, old) = renew_candidate(&m).await?;
    store.fail_before_on(Operation::Remove, 1);
    store.lose_reply_on(Operation::Read, 1);
    check!(
        s.renew_id().await.is_err(),
        "a renewal that cannot be confirmed reports the failure"
    );
    let copy = probe.layer().last_created()?;
    check!(*s.key() == copy, "the session continues under the copy");
    let what = "docs/contract.md §3: the surviving old id is removed in the background";
    within(Duration::from_secs(3), what, async {
        while !is_missing(&h, &old).await? {
            sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, Failed>(())
    })
    .await??;
    commits_whole(&h, s, &copy).await
}

/// A session whose `change_id` reply is lost after the store applied it: `renew_id` still answers
/// the new id, and the session goes on under it with its data and its lock; the old id is gone.
async fn lost_change_id_reply(h: &Harness, retry_timeout: Duration) -> Outcome {
    let (store, m) = faulty_manager(h, |c| c.retry_timeout(retry_timeout))?;
    let (mut s, old) = renew_candidate(&m).await?;
    store.lose_reply_on(Operation::ChangeId, 1);
    let what = "docs/contract.md §3: a renew_id whose change_id reply was lost after the store \
                applied it answers the new id";
    let new_id = expect_ok(s.renew_id().await, what)?;
    expect(*s.id(), new_id, "the session goes on under the new id")?;
    let new_key = s.key().clone();
    commits_whole(h, s, &new_key).await?;
    expect_missing(h, &old, "the old id is gone").await
}

fn expect_ok<T, E: std::fmt::Debug>(result: Result<T, E>, what: &str) -> Result<T, Failed> {
    result.map_err(|err| Failed::new(format!("{what}, got {err:?}")))
}

/// [`lost_change_id_reply`] without retries: the manager asks the new id.
pub(super) async fn lost_change_id_reply_keeps_the_new_id_without_retries(h: Harness) -> Outcome {
    lost_change_id_reply(&h, Duration::ZERO).await
}

/// [`lost_change_id_reply`] with retries: the retry finds the old id gone, and the retry layer
/// asks the new id.
pub(super) async fn lost_change_id_reply_keeps_the_new_id_with_retries(h: Harness) -> Outcome {
    lost_change_id_reply(&h, Duration::from_secs(3)).await
}

/// Once armed, lets the next `commit` through, then has another request take the lock and commit
/// `a = 99` before it reports the commit failed (its reply lost).
#[derive(Debug, Default)]
struct NextHolderCommitsFirst {
    armed: std::sync::atomic::AtomicBool,
}

impl StoreLayer for NextHolderCommitsFirst {
    async fn around(&self, call: Call<'_>, inner: &dyn SessionStore) -> crate::Result<Reply> {
        let reply = call.run(inner).await?;
        let Call::Commit { key, .. } = call else {
            return Ok(reply);
        };
        if !self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(reply);
        }
        let next = crate::LockToken::generate()?;
        inner.acquire(key, next, LONG_TTL).await?;
        inner.commit(key, next, &set_a(99), LONG).await?;
        Err(Error::Unavailable {
            backend: "faulty",
            operation: Operation::Commit,
            source: "reply lost after the commit was applied".into(),
        })
    }
}

/// A commit whose reply was lost after the store applied it, and whose retry comes after the next
/// request took the lock and committed: the retry cannot tell that it was applied (the store's
/// memory of a commit ends at the next holder's, docs/contract.md §2), and `LockLost` would say
/// that nothing was written. The end fails with a store failure instead, and both commits stand.
pub(super) async fn retried_commit_after_the_next_holder_is_not_lock_lost(h: Harness) -> Outcome {
    let store = Arc::new(Layered::new(
        Arc::clone(h.store()),
        NextHolderCommitsFirst::default(),
    ));
    let config = h.config().retry_timeout(Duration::from_secs(3)).build()?;
    let m = SessionManager::new(Arc::clone(&store) as Arc<dyn SessionStore>, &config);
    let (id, _) = store_n1(&m).await?;
    let mut s = reopen(&m, &id).await?;
    s.insert("n", &2u32)?;
    store
        .layer()
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let end = s.end().await;
    check!(
        !matches!(end, Err(Error::LockLost { .. })),
        "docs/contract.md §4: a retried commit that may have been applied is not LockLost \
         (nothing written), got {end:?}"
    );
    check!(
        end.as_ref().is_err_and(Error::is_store_failure),
        "the end fails as a store failure (the commit's fate is unknown to it), got {end:?}"
    );
    let snap = found(&h, &key_of(&h, &id)?).await?;
    check!(
        get::<u32>(&snap.items, "n")? == Some(2) && get::<u32>(&snap.items, "a")? == Some(99),
        "both commits stand"
    );
    Ok(())
}
