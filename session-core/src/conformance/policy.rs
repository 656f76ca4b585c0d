//! Retries and the error policy on this store (SPEC §4), with faults injected by [`FaultyStore`].

use std::sync::Arc;
use std::time::Duration;

use super::FaultyStore;
use super::support::*;
use super::{Harness, Outcome, check};
use crate::{Access, Config, EndOutcome, Error, ItemValue, SessionManager, SessionStore};

fn faulty(h: &Harness) -> Arc<FaultyStore> {
    Arc::new(FaultyStore::new(Arc::clone(h.store())))
}

fn manager(
    h: &Harness,
    store: &Arc<FaultyStore>,
    adjust: impl FnOnce(crate::ConfigBuilder) -> crate::ConfigBuilder,
) -> crate::Result<SessionManager> {
    let config: Config = adjust(h.config()).build()?;
    Ok(SessionManager::new(
        Arc::clone(store) as Arc<dyn SessionStore>,
        &config,
    ))
}

pub(super) async fn transient_failures_are_retried(h: Harness) -> Outcome {
    let store = faulty(&h);
    let m = manager(&h, &store, |c| c.retry_timeout(Duration::from_secs(3)))?;
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    store.fail_before(2);
    let before = store.calls();
    let out = s.end().await?;
    check!(
        out == EndOutcome::Created,
        "SPEC §4: the create succeeds after two transient failures, got {out:?}"
    );
    check!(
        store.calls() - before == 3,
        "two failures and one success make three attempts, got {}",
        store.calls() - before
    );
    store.fail_before(1);
    let s = m.open(Some(&id), Access::Exclusive).await?;
    check!(
        !s.is_new() && s.get::<u32>("n")? == Some(1),
        "a retried acquire returns the stored session"
    );
    s.end().await?;
    Ok(())
}

pub(super) async fn lost_commit_reply_is_not_an_error(h: Harness) -> Outcome {
    let store = faulty(&h);
    let m = manager(&h, &store, |c| c.retry_timeout(Duration::from_secs(3)))?;
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    store.lose_reply(1);
    check!(
        s.end().await? == EndOutcome::Created,
        "SPEC §4: a create whose reply was lost is still Created"
    );
    let mut s = m.open(Some(&id), Access::Exclusive).await?;
    s.insert("n", &2u32)?;
    store.lose_reply(1);
    let out = s.end().await;
    check!(
        matches!(out, Ok(EndOutcome::Committed)),
        "SPEC §4: a retry never turns a commit that succeeded into an error, got {out:?}"
    );
    let s = m.open(Some(&id), Access::Exclusive).await?;
    check!(s.get::<u32>("n")? == Some(2), "the commit was applied once");
    store.lose_reply(1);
    check!(
        s.end().await? == EndOutcome::Released,
        "a release whose reply was lost is still Released"
    );
    let s = m.open(Some(&id), Access::Exclusive).await?;
    check!(!s.is_new(), "the session is intact and unlocked");
    Ok(())
}

pub(super) async fn errors_propagate_when_throw_on_error(h: Harness) -> Outcome {
    let (id, store) = {
        let store = faulty(&h);
        let m = manager(&h, &store, |c| c)?;
        let mut s = m.open(None, Access::Exclusive).await?;
        s.insert("n", &1u32)?;
        let id = s.id().expose().to_owned();
        s.end().await?;
        (id, store)
    };
    let m = manager(&h, &store, |c| c)?;
    store.fail_before(1);
    let out = m.open(Some(&id), Access::Exclusive).await;
    check!(
        matches!(out, Err(Error::Unavailable { .. })),
        "SPEC §4: with throwOnError a store error is an error, never 'not found'; got {out:?}"
    );
    check!(
        m.last_error().is_none(),
        "an error returned to the caller is not also recorded as absorbed"
    );
    Ok(())
}

pub(super) async fn degraded_session_when_not_throw_on_error(h: Harness) -> Outcome {
    let store = faulty(&h);
    let m = manager(&h, &store, |c| c.throw_on_error(false))?;
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    s.end().await?;
    check!(m.last_error().is_none(), "no error yet");
    store.fail_before(1);
    let mut s = m.open(Some(&id), Access::Exclusive).await?;
    check!(
        s.is_degraded(),
        "SPEC §4: a failing store gives a degraded session"
    );
    check!(s.names().is_empty(), "a degraded session is empty");
    check!(
        s.id().expose() == id,
        "a degraded session keeps the client's id, so a passing outage does not log users out"
    );
    s.insert("n", &5u32)?;
    check!(
        s.end().await? == EndOutcome::NotSaved,
        "a degraded session is not saved"
    );
    let cause = m
        .last_error()
        .ok_or_else(|| super::Failed::new("last_error must hold the cause"))?;
    check!(
        matches!(*cause, Error::Unavailable { .. }),
        "last_error names the cause, got {cause:?}"
    );
    let s = m.open(Some(&id), Access::Exclusive).await?;
    check!(
        !s.is_degraded() && s.get::<u32>("n")? == Some(1),
        "the stored session is untouched"
    );
    Ok(())
}

pub(super) async fn corrupt_value_is_a_typed_error(h: Harness) -> Outcome {
    let key = h.key()?;
    let mut all = crate::Items::new();
    all.insert("n".into(), ItemValue::from_bytes(vec![0xc1, 0xff, 0x00]));
    h.store().create(&key, &all, LONG, true).await?;
    let m = h.manager(|c| c)?;
    let s = m.open(Some(key.id().expose()), Access::Exclusive).await?;
    let out = s.get::<u32>("n");
    check!(
        matches!(&out, Err(Error::Decode { item, .. }) if item == "n"),
        "undecodable bytes give a Decode error naming the item, got {out:?}"
    );
    check!(
        s.end().await? == EndOutcome::Released,
        "reading a bad value changes nothing"
    );
    check!(
        found(&h, &key)
            .await?
            .items
            .get("n")
            .map(|v| v.as_bytes().to_vec())
            == Some(vec![0xc1, 0xff, 0x00]),
        "the bytes are kept, never silently emptied"
    );
    Ok(())
}

pub(super) async fn operation_timeout_applies(h: Harness) -> Outcome {
    let store = faulty(&h);
    let m = manager(&h, &store, |c| {
        // Generous enough for a loaded server's ordinary operations; the injected delay is far longer.
        c.operation_timeout(Some(Duration::from_secs(1)))
    })?;
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    s.end().await?;
    store.delay(1, Duration::from_secs(10));
    let out = tokio::time::timeout(Duration::from_secs(5), m.open(Some(&id), Access::Exclusive))
        .await
        .map_err(|_| {
            super::Failed::new("SPEC §4: the operation timeout must cut a slow operation short")
        })?;
    check!(
        matches!(out, Err(Error::Timeout { .. })),
        "a slow store operation is a Timeout error, got {out:?}"
    );
    Ok(())
}

pub(super) async fn lost_acquire_reply_keeps_session_usable(h: Harness) -> Outcome {
    let store = faulty(&h);
    let m = manager(&h, &store, |c| c.retry_timeout(Duration::from_secs(3)))?;
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    s.end().await?;
    store.lose_reply(1);
    let s = tokio::time::timeout(Duration::from_secs(5), m.open(Some(&id), Access::Exclusive))
        .await
        .map_err(|_| {
            super::Failed::new(
                "SPEC §4: an acquire whose reply was lost must not lock the request out",
            )
        })??;
    check!(
        !s.is_new() && s.get::<u32>("n")? == Some(1),
        "the retried acquire returns the session"
    );
    check!(s.end().await? == EndOutcome::Released, "and holds its lock");
    Ok(())
}

pub(super) async fn lock_is_released_when_end_fails(h: Harness) -> Outcome {
    let store = faulty(&h);
    let m = manager(&h, &store, |c| c.throw_on_error(false))?;
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    s.end().await?;
    let mut s = m.open(Some(&id), Access::Exclusive).await?;
    s.insert("n", &2u32)?;
    store.fail_before(1);
    check!(
        s.end().await? == EndOutcome::NotSaved,
        "a failed commit is NotSaved with throwOnError = false"
    );
    check!(m.last_error().is_some(), "last_error holds the cause");
    let again = tokio::time::timeout(Duration::from_secs(5), m.open(Some(&id), Access::Exclusive))
        .await
        .map_err(|_| super::Failed::new("a failed end must still release the lock"))??;
    check!(
        again.get::<u32>("n")? == Some(1),
        "the failed commit wrote nothing"
    );
    Ok(())
}
