//! Optional capabilities (SPEC §2): each runs where declared; where not declared, its companion
//! checks that the operation is `Unsupported` and changes nothing.

use std::time::Duration;

use super::support::*;
use super::{Failed, Harness, Outcome, check};
use crate::{
    ChangeIdOutcome, CommitOutcome, Delta, EndReason, Error, LockToken, ReadOutcome, SessionId,
};

pub(super) async fn change_id_moves_data_and_lock(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let new_id = SessionId::generate()?;
    let out = h.store().change_id(&key, new_id, token).await?;
    check!(
        out == ChangeIdOutcome::Changed,
        "change_id by the holder must be Changed, got {out:?}"
    );
    let new_key = key.with_id(new_id);
    check!(
        is_missing(&h, &key).await?,
        "the old id must be gone after change_id"
    );
    let held = h.store().read(&new_key).await?;
    check!(
        matches!(held, ReadOutcome::Locked(i) if i.token == token),
        "the lock moves with the session, got {held:?}"
    );
    let out = h
        .store()
        .commit(
            &new_key,
            token,
            &Delta::new().with_set("b", val(2u32)),
            LONG,
        )
        .await?;
    check!(
        out == CommitOutcome::Committed,
        "the same token commits under the new id, got {out:?}"
    );
    let snap = found(&h, &new_key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(1) && get::<u32>(&snap.items, "b")? == Some(2),
        "data moves with the session"
    );
    check!(snap.timeout == LONG, "the timeout moves with the session");
    Ok(())
}

pub(super) async fn change_id_wrong_token_is_lock_lost(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    lock(&h, &key).await?;
    let new_id = SessionId::generate()?;
    let out = h
        .store()
        .change_id(&key, new_id, LockToken::generate()?)
        .await?;
    check!(
        out == ChangeIdOutcome::LockLost,
        "change_id with a foreign token must be LockLost, got {out:?}"
    );
    check!(
        is_missing(&h, &key.with_id(new_id)).await?,
        "nothing may appear under the new id"
    );
    check!(
        !is_missing(&h, &key).await?,
        "the session stays under its id"
    );
    let missing = h.key()?;
    let out = h
        .store()
        .change_id(&missing, SessionId::generate()?, LockToken::generate()?)
        .await?;
    check!(
        out == ChangeIdOutcome::LockLost,
        "change_id of a missing session must be LockLost, got {out:?}"
    );
    Ok(())
}

pub(super) async fn change_id_to_taken_id_is_already_exists(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let other = seed(&h, &items(&[("a", 2u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let out = h.store().change_id(&key, *other.id(), token).await?;
    check!(
        out == ChangeIdOutcome::AlreadyExists,
        "change_id onto a live id must be AlreadyExists, got {out:?}"
    );
    check!(
        get::<u32>(&found(&h, &other).await?.items, "a")? == Some(2),
        "the other session is untouched"
    );
    let out = h.store().release(&key, token).await?;
    check!(
        out == crate::ReleaseOutcome::Released,
        "the original keeps its lock, got {out:?}"
    );
    Ok(())
}

async fn woken(watch: crate::ReleaseWatch, within: Duration) -> bool {
    tokio::time::timeout(within, watch).await.is_ok()
}

pub(super) async fn release_signal_wakes_on_release(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let watch = h.store().watch_release(&key).await?;
    let store = std::sync::Arc::clone(h.store());
    let k = key.clone();
    tokio::spawn(async move {
        sleep(Duration::from_millis(50)).await;
        let _ = store.release(&k, token).await;
    });
    check!(
        woken(watch, Duration::from_secs(2)).await,
        "the release watch must fire when the lock is released"
    );
    Ok(())
}

pub(super) async fn release_signal_wakes_on_remove_and_delete(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let watch = h.store().watch_release(&key).await?;
    h.store().remove(&key, token).await?;
    check!(
        woken(watch, Duration::from_secs(2)).await,
        "the release watch must fire when the session is removed"
    );
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    lock(&h, &key).await?;
    let watch = h.store().watch_release(&key).await?;
    h.store().delete(&key).await?;
    check!(
        woken(watch, Duration::from_secs(2)).await,
        "the release watch must fire when a locked session is deleted"
    );
    Ok(())
}

pub(super) async fn release_signal_wakes_on_commit(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let watch = h.store().watch_release(&key).await?;
    h.store()
        .commit(&key, token, &Delta::new().with_set("a", val(2u32)), LONG)
        .await?;
    check!(
        woken(watch, Duration::from_secs(2)).await,
        "the release watch must fire on commit"
    );
    Ok(())
}

async fn next_event_for(
    events: &mut crate::ExpiryEvents,
    key: &crate::SessionKey,
    within: Duration,
) -> Result<crate::ExpiryEvent, Failed> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| {
                Failed::new(format!("no expiry event for the session within {within:?}"))
            })?;
        match next {
            Some(e) if &e.key == key => return Ok(e),
            Some(_) => {}
            None => return Err(Failed::new("expiry event stream closed")),
        }
    }
}

pub(super) async fn expiry_event_on_expiry(h: Harness) -> Outcome {
    let mut events = h.store().expiry_events().await?;
    let key = seed(&h, &items(&[("a", 1u32)]), SHORT).await?;
    let (_, token) = lock(&h, &key).await?;
    h.store()
        .commit(
            &key,
            token,
            &Delta::new().with_set("last", val("words")),
            SHORT,
        )
        .await?;
    let event = next_event_for(&mut events, &key, Duration::from_secs(5)).await?;
    check!(
        event.reason == EndReason::Expired,
        "reason must be Expired, got {:?}",
        event.reason
    );
    check!(
        get::<String>(&event.items, "last")?.as_deref() == Some("words"),
        "the event carries the final items"
    );
    check!(
        get::<u32>(&event.items, "a")? == Some(1),
        "the event carries every final item"
    );
    Ok(())
}

pub(super) async fn expiry_event_on_remove(h: Harness) -> Outcome {
    let mut events = h.store().expiry_events().await?;
    let key = seed(&h, &items(&[("a", 5u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    h.store().remove(&key, token).await?;
    let event = next_event_for(&mut events, &key, Duration::from_secs(5)).await?;
    check!(
        event.reason == EndReason::Removed,
        "reason must be Removed, got {:?}",
        event.reason
    );
    check!(
        get::<u32>(&event.items, "a")? == Some(5),
        "the event carries the final items"
    );
    let key = seed(&h, &items(&[("a", 6u32)]), LONG).await?;
    h.store().delete(&key).await?;
    let event = next_event_for(&mut events, &key, Duration::from_secs(5)).await?;
    check!(
        event.reason == EndReason::Removed && get::<u32>(&event.items, "a")? == Some(6),
        "delete ends the session with its final items"
    );
    Ok(())
}

pub(super) async fn purge_removes_only_expired(h: Harness) -> Outcome {
    let mut expired = Vec::new();
    for _ in 0..3 {
        expired.push(seed(&h, &items(&[("a", 1u32)]), SHORT).await?);
    }
    let live = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    sleep(EXPIRE_WAIT).await;
    // Other behaviours may purge concurrently on a shared server, so the count is not checked here;
    // the backend's own tests count rows.
    let mut rounds = 0;
    while h.store().purge_expired(1000).await? > 0 {
        rounds += 1;
        check!(rounds < 10_000, "purge_expired must reach zero");
    }
    check!(
        !is_missing(&h, &live).await?,
        "purge_expired must not delete a live session"
    );
    for key in &expired {
        check!(is_missing(&h, key).await?, "expired sessions stay gone");
    }
    Ok(())
}

fn unsupported<T: std::fmt::Debug>(r: crate::Result<T>, what: &str) -> Outcome {
    match r {
        Err(Error::Unsupported { .. }) => Ok(()),
        other => Err(Failed::new(format!(
            "SPEC §2: an undeclared capability ({what}) must return Error::Unsupported, got {other:?}"
        ))),
    }
}

pub(super) async fn change_id_unsupported(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let new_id = SessionId::generate()?;
    unsupported(h.store().change_id(&key, new_id, token).await, "change_id")?;
    check!(
        is_missing(&h, &key.with_id(new_id)).await?,
        "an unsupported change_id must change nothing"
    );
    let out = h.store().release(&key, token).await?;
    check!(
        out == crate::ReleaseOutcome::Released,
        "the lock must be intact, got {out:?}"
    );
    Ok(())
}

pub(super) async fn release_signal_unsupported(h: Harness) -> Outcome {
    unsupported(h.store().watch_release(&h.key()?).await, "release_signal")
}

pub(super) async fn expiry_events_unsupported(h: Harness) -> Outcome {
    unsupported(h.store().expiry_events().await, "expiry_events")
}

pub(super) async fn purge_expired_unsupported(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    unsupported(h.store().purge_expired(10).await, "purge_expired")?;
    check!(
        !is_missing(&h, &key).await?,
        "an unsupported purge must delete nothing"
    );
    Ok(())
}

pub(super) async fn release_signal_wakes_on_change_id(h: Harness) -> Outcome {
    let key = seed(&h, &items(&[("a", 1u32)]), LONG).await?;
    let (_, token) = lock(&h, &key).await?;
    let watch = h.store().watch_release(&key).await?;
    let out = h
        .store()
        .change_id(&key, SessionId::generate()?, token)
        .await?;
    check!(
        out == ChangeIdOutcome::Changed,
        "expected Changed, got {out:?}"
    );
    check!(
        woken(watch, Duration::from_secs(2)).await,
        "waiters on the old id must wake when the session moves away (they look again and find it gone)"
    );
    Ok(())
}
