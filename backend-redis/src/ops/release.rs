//! `release`: release the lock without writing, and slide the expiry (script: `release.lua`).

use std::sync::LazyLock;

use redis::Script;
use session_core::{LockToken, Operation, ReleaseOutcome, Result, SessionKey};

use super::{corrupt_meta, int, invoke, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("release.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, token: LockToken,
) -> Result<ReleaseOutcome> {
    let keys = Keys::new(key);
    let mut invocation = SCRIPT.key(&keys.meta);
    invocation
        .key(&keys.items)
        .arg(token.to_hex())
        .arg(keys.channel());
    match int(&invoke(inner, Operation::Release, &invocation).await?) {
        Some(1) => Ok(ReleaseOutcome::Released),
        Some(0) => Ok(ReleaseOutcome::LockLost),
        Some(-1) => Err(corrupt_meta(key)),
        _ => Err(bad_reply(Operation::Release, "unknown release outcome")),
    }
}
