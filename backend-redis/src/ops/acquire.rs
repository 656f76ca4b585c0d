//! `acquire`: lock with the caller's token and return the data, taking over a stale lock in the same
//! step (script: `acquire.lua`). Lock age is measured with the server's `TIME`.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use session_core::{AcquireOutcome, LockToken, Operation, Result, SessionKey};

use super::{Opened, invoke, millis, on_session, opened, script};
use crate::keys::Keys;
use crate::layout;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("acquire.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, token: LockToken, lock_ttl: Duration,
) -> Result<AcquireOutcome> {
    let keys = Keys::new(key);
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation
        .arg(&layout::token_bytes(token)[..])
        .arg(millis(lock_ttl))
        .arg(inner.window.percent())
        .arg(keys.channel());
    let reply = invoke(inner, key, Operation::Acquire, &invocation).await?;
    Ok(match opened(key, Operation::Acquire, reply)? {
        Opened::Missing => AcquireOutcome::Missing,
        Opened::Locked(info) => AcquireOutcome::Locked(info),
        Opened::Found(value) => match layout::snapshot(key, &value) {
            Ok(snapshot) => AcquireOutcome::Acquired(snapshot),
            Err(corrupt) => {
                // The script locked the session before its items turned out undecodable: let the
                // lock go again (best effort), so that the error does not leave every later
                // request waiting out the lock TTL on a session nobody can use.
                if let Err(err) = super::release::run(inner, key, token).await {
                    tracing::warn!(error = %err, "could not release the lock of a corrupt session");
                }
                return Err(corrupt);
            }
        },
    })
}
