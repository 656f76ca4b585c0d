//! Optional capabilities (docs/contract.md §2): each runs where declared; where not declared, its
//! companion checks that the operation is `Unsupported` and changes nothing.

use std::time::Duration;

use super::support::*;
use super::{Failed, Harness, Outcome, check};
use crate::{
    ChangeIdOutcome, CommitOutcome, Delta, EndReason, Error, ExpiryEvent, ExpiryEvents, LockToken,
    ReleaseOutcome, ReleaseWatch, SessionId, SessionKey,
};

pub(super) async fn change_id_moves_data_and_lock(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let new_id = SessionId::generate()?;
    let out = h.store().change_id(&key, new_id, token).await?;
    let what = "change_id by the holder must be Changed";
    expect(out, ChangeIdOutcome::Changed, what)?;
    let new_key = key.with_id(new_id);
    expect_missing(&h, &key, "the old id must be gone after change_id").await?;
    held_by(&h, &new_key, token, "the lock moves with the session").await?;
    let b2 = Delta::new().with_set("b", val(2u32));
    let out = h.store().commit(&new_key, token, &b2, LONG).await?;
    let what = "the same token commits under the new id";
    expect(out, CommitOutcome::Committed, what)?;
    let snap = found(&h, &new_key).await?;
    check!(
        get::<u32>(&snap.items, "a")? == Some(1) && get::<u32>(&snap.items, "b")? == Some(2),
        "data moves with the session"
    );
    check!(snap.timeout == LONG, "the timeout moves with the session");
    Ok(())
}

pub(super) async fn change_id_wrong_token_is_lock_lost(h: Harness) -> Outcome {
    let (key, _) = seed_a1_locked(&h, LONG).await?;
    let new_id = SessionId::generate()?;
    let stranger = LockToken::generate()?;
    let out = h.store().change_id(&key, new_id, stranger).await?;
    let what = "change_id with a foreign token must be LockLost";
    expect(out, ChangeIdOutcome::LockLost, what)?;
    let what = "nothing may appear under the new id";
    expect_missing(&h, &key.with_id(new_id), what).await?;
    expect_exists(&h, &key, "the session stays under its id").await?;
    let (missing, stranger) = (h.key()?, LockToken::generate()?);
    let out = h.store().change_id(&missing, new_id, stranger).await?;
    let what = "change_id of a missing session must be LockLost";
    expect(out, ChangeIdOutcome::LockLost, what)
}

pub(super) async fn change_id_to_taken_id_is_already_exists(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let other = seed(&h, &items(&[("a", 2u32)]), LONG).await?;
    let out = h.store().change_id(&key, *other.id(), token).await?;
    let what = "change_id onto a live id must be AlreadyExists";
    expect(out, ChangeIdOutcome::AlreadyExists, what)?;
    expect_found_item(&h, &other, "a", 2, "the other session is untouched").await?;
    let out = h.store().release(&key, token).await?;
    expect(out, ReleaseOutcome::Released, "the original keeps its lock")
}

/// A locked session holding `a = 1`, and a release watch on it.
async fn watched(h: &Harness) -> Result<(SessionKey, LockToken, ReleaseWatch), Failed> {
    let (key, token) = seed_a1_locked(h, LONG).await?;
    let watch = h.store().watch_release(&key).await?;
    Ok((key, token, watch))
}

/// Fails with `what` unless `watch` fires within two seconds.
async fn expect_woken(watch: ReleaseWatch, what: &str) -> Outcome {
    let woken = tokio::time::timeout(Duration::from_secs(2), watch).await;
    check!(woken.is_ok(), "{what}");
    Ok(())
}

pub(super) async fn release_signal_wakes_on_release(h: Harness) -> Outcome {
    let (key, token, watch) = watched(&h).await?;
    let store = std::sync::Arc::clone(h.store());
    tokio::spawn(async move {
        sleep(Duration::from_millis(50)).await;
        let _ = store.release(&key, token).await;
    });
    let what = "the release watch must fire when the lock is released";
    expect_woken(watch, what).await
}

pub(super) async fn release_signal_wakes_on_remove_and_delete(h: Harness) -> Outcome {
    let (key, token, watch) = watched(&h).await?;
    h.store().remove(&key, token).await?;
    let what = "the release watch must fire when the session is removed";
    expect_woken(watch, what).await?;
    let (key, _, watch) = watched(&h).await?;
    h.store().delete(&key).await?;
    let what = "the release watch must fire when a locked session is deleted";
    expect_woken(watch, what).await
}

pub(super) async fn release_signal_wakes_on_commit(h: Harness) -> Outcome {
    let (key, token, watch) = watched(&h).await?;
    h.store().commit(&key, token, &set_a(2), LONG).await?;
    expect_woken(watch, "the release watch must fire on commit").await
}

/// The next expiry event for `key`, skipping other sessions' events; fails after `within`.
async fn next_event_for(
    events: &mut ExpiryEvents, key: &SessionKey, within: Duration,
) -> Result<ExpiryEvent, Failed> {
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
    let (key, token) = seed_a1_locked(&h, SHORT).await?;
    let last = Delta::new().with_set("last", val("words"));
    h.store().commit(&key, token, &last, SHORT).await?;
    let event = next_event_for(&mut events, &key, Duration::from_secs(5)).await?;
    expect(event.reason, EndReason::Expired, "reason must be Expired")?;
    check!(
        get::<String>(&event.items, "last")?.as_deref() == Some("words"),
        "the event carries the final items"
    );
    let what = "the event carries every final item";
    expect(get::<u32>(&event.items, "a")?, Some(1), what)
}

pub(super) async fn expiry_event_on_remove(h: Harness) -> Outcome {
    let mut events = h.store().expiry_events().await?;
    let (key, token) = seed_locked(&h, &items(&[("a", 5u32)]), LONG).await?;
    h.store().remove(&key, token).await?;
    let event = next_event_for(&mut events, &key, Duration::from_secs(5)).await?;
    expect(event.reason, EndReason::Removed, "reason must be Removed")?;
    let what = "the event carries the final items";
    expect(get::<u32>(&event.items, "a")?, Some(5), what)?;
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
        expired.push(seed_a1(&h, SHORT).await?);
    }
    let live = seed_a1(&h, LONG).await?;
    sleep(EXPIRE_WAIT).await;
    // Other behaviours may purge concurrently on a shared server, so the count is not checked here;
    // the backend's own tests count rows.
    let mut rounds = 0;
    while h.store().purge_expired(1000).await? > 0 {
        rounds += 1;
        check!(rounds < 10_000, "purge_expired must reach zero");
    }
    let what = "purge_expired must not delete a live session";
    expect_exists(&h, &live, what).await?;
    for key in &expired {
        expect_missing(&h, key, "expired sessions stay gone").await?;
    }
    Ok(())
}

fn unsupported<T: std::fmt::Debug>(r: crate::Result<T>, what: &str) -> Outcome {
    match r {
        Err(Error::Unsupported { .. }) => Ok(()),
        other => Err(Failed::new(format!(
            "docs/contract.md §2: an undeclared capability ({what}) must return Error::Unsupported, got {other:?}"
        ))),
    }
}

pub(super) async fn change_id_unsupported(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let new_id = SessionId::generate()?;
    unsupported(h.store().change_id(&key, new_id, token).await, "change_id")?;
    let what = "an unsupported change_id must change nothing";
    expect_missing(&h, &key.with_id(new_id), what).await?;
    let out = h.store().release(&key, token).await?;
    expect(out, ReleaseOutcome::Released, "the lock must be intact")
}

pub(super) async fn release_signal_unsupported(h: Harness) -> Outcome {
    unsupported(h.store().watch_release(&h.key()?).await, "release_signal")
}

pub(super) async fn expiry_events_unsupported(h: Harness) -> Outcome {
    unsupported(h.store().expiry_events().await, "expiry_events")
}

pub(super) async fn purge_expired_unsupported(h: Harness) -> Outcome {
    let key = seed_a1(&h, LONG).await?;
    unsupported(h.store().purge_expired(10).await, "purge_expired")?;
    let what = "an unsupported purge must delete nothing";
    expect_exists(&h, &key, what).await
}

pub(super) async fn release_signal_wakes_on_change_id(h: Harness) -> Outcome {
    let (key, token, watch) = watched(&h).await?;
    let out = h
        .store()
        .change_id(&key, SessionId::generate()?, token)
        .await?;
    expect(out, ChangeIdOutcome::Changed, "expected Changed")?;
    let what = "waiters on the old id must wake when the session moves away (they look again and find it gone)";
    expect_woken(watch, what).await
}
