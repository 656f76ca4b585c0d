//! The refresh window (docs/contract.md §1): every access leaves `expires_at >= now + timeout`; a
//! slide the store writes sets `now + timeout + w`, and an access that finds
//! `expires_at >= now + timeout` writes nothing. So a session lives at least `timeout` after its
//! last access and at most `timeout + w`. Each behaviour reads `w` from
//! [`SessionStore::refresh_window`](crate::SessionStore::refresh_window).

use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};

use super::support::{LONG_TTL, expect_found, expect_missing, found, seed_a1};
use super::{Failed, Harness, Outcome, check};
use crate::{AcquireOutcome, LockToken, ReleaseOutcome, SessionKey, TouchOutcome};

/// The timeout of the busy-session behaviours.
const BUSY_TIMEOUT: Duration = Duration::from_millis(1500);
/// The time between a busy session's accesses.
const BUSY_STEP: Duration = Duration::from_millis(100);
/// Clock and expiry granularity allowed at each bound.
const SLACK: Duration = Duration::from_millis(200);

/// One access of each kind that slides (read, touch, acquire, release), `BUSY_STEP` apart; returns
/// when the last one started and when it returned.
async fn busy(h: &Harness, key: &SessionKey) -> Result<(Instant, Instant), Failed> {
    let mut started = Instant::now();
    for step in 0..6 {
        sleep(BUSY_STEP).await;
        started = Instant::now();
        match step % 3 {
            0 => drop(found(h, key).await?),
            1 => {
                let out = h.store().touch(key).await?;
                check!(
                    out == TouchOutcome::Touched,
                    "touch of a live session, got {out:?}"
                );
            }
            _ => {
                let token = LockToken::generate()?;
                let out = h.store().acquire(key, token, LONG_TTL).await?;
                check!(
                    matches!(out, AcquireOutcome::Acquired(..)),
                    "acquire of an unlocked session, got {out:?}"
                );
                started = Instant::now();
                let out = h.store().release(key, token).await?;
                check!(
                    out == ReleaseOutcome::Released,
                    "release by the holder, got {out:?}"
                );
            }
        }
    }
    Ok((started, Instant::now()))
}

pub(super) async fn never_expires_before_timeout_after_last_access(h: Harness) -> Outcome {
    let key = seed_a1(&h, BUSY_TIMEOUT).await?;
    let (last, _) = busy(&h, &key).await?;
    sleep_until(last + BUSY_TIMEOUT - SLACK).await;
    expect_found(
        &h,
        &key,
        "docs/contract.md §1: every access leaves expires_at >= now + timeout, but the session \
         expired before `timeout` had passed since its last access",
    )
    .await
}

pub(super) async fn never_lives_past_timeout_plus_window(h: Harness) -> Outcome {
    let w = h.store().refresh_window().for_timeout(BUSY_TIMEOUT);
    let key = seed_a1(&h, BUSY_TIMEOUT).await?;
    let (_, last_end) = busy(&h, &key).await?;
    sleep_until(last_end + BUSY_TIMEOUT + w + SLACK).await;
    expect_missing(
        &h,
        &key,
        &format!(
            "docs/contract.md §1: a session lives at most timeout + w ({BUSY_TIMEOUT:?} + {w:?}) \
             after its last access"
        ),
    )
    .await
}

pub(super) async fn access_inside_window_writes_nothing(h: Harness) -> Outcome {
    let window = h.store().refresh_window();
    // A timeout whose window is about a second (at most 30 s for small windows).
    let timeout_ms = (100_000 / u64::from(window.percent().max(1))).min(30_000);
    let timeout = Duration::from_millis(timeout_ms);
    let w = window.for_timeout(timeout);
    let key = seed_a1(&h, timeout).await?;
    // Right after create, at most one slide write: expires_at <= now + timeout + w.
    let out = h.store().touch(&key).await?;
    check!(
        out == TouchOutcome::Touched,
        "touch of a new session, got {out:?}"
    );
    let slid = Instant::now();
    // Well inside the window: expires_at >= now + timeout already, so this must write nothing.
    sleep(w * 2 / 5).await;
    let out = h.store().touch(&key).await?;
    check!(
        out == TouchOutcome::Touched,
        "touch inside the window, got {out:?}"
    );
    // Had the second touch written now + timeout + w, the session would outlive this point.
    sleep_until(slid + timeout + w + w / 5).await;
    expect_missing(
        &h,
        &key,
        &format!(
            "docs/contract.md §1: an access that finds expires_at >= now + timeout writes nothing \
             (window {window}, timeout {timeout:?}), but the session's expiry moved"
        ),
    )
    .await
}

pub(super) async fn exact_window_slides_on_every_access(h: Harness) -> Outcome {
    let key = seed_a1(&h, BUSY_TIMEOUT).await?;
    let (last, last_end) = busy(&h, &key).await?;
    sleep_until(last + BUSY_TIMEOUT - SLACK).await;
    expect_found(
        &h,
        &key,
        "docs/contract.md §1: with w = 0 every access slides to now + timeout, but the session \
         expired before `timeout` after its last access",
    )
    .await?;
    // That read slid it again; with w = 0 it lives exactly `timeout` after it.
    let read_end = Instant::now();
    sleep_until(read_end.max(last_end) + BUSY_TIMEOUT + SLACK).await;
    expect_missing(
        &h,
        &key,
        "docs/contract.md §1: with w = 0 a session lives exactly `timeout` after its last access",
    )
    .await
}
