//! `acquire`: lock with the caller's token and return the data, taking over a stale lock in the same
//! step (script: `acquire.lua`). Lock age is measured with the server's `TIME`.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use session_core::{AcquireOutcome, LockToken, Operation, Result, SessionKey};

use super::{array, corrupt_meta, int, invoke, lock_info, millis, script, snapshot};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("acquire.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, token: LockToken, lock_ttl: Duration,
) -> Result<AcquireOutcome> {
    let keys = Keys::new(key);
    let mut invocation = SCRIPT.key(&keys.meta);
    invocation
        .key(&keys.items)
        .arg(token.to_hex())
        .arg(millis(lock_ttl))
        .arg(keys.channel());
    let reply = array(
        Operation::Acquire,
        invoke(inner, Operation::Acquire, &invocation).await?,
    )?;
    match reply.first().and_then(int) {
        Some(0) => Ok(AcquireOutcome::Missing),
        Some(1) => Ok(AcquireOutcome::Locked(lock_info(key, &reply)?)),
        Some(2) => Ok(AcquireOutcome::Acquired(snapshot(key, reply)?)),
        Some(-1) => Err(corrupt_meta(key)),
        _ => Err(bad_reply(Operation::Acquire, "unknown acquire outcome")),
    }
}
