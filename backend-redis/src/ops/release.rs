//! `release`: release the lock without writing, and slide the expiry when due (script:
//! `release.lua`).

use std::sync::LazyLock;

use redis::Script;
use session_core::{LockToken, Operation, ReleaseOutcome, Result, SessionKey};

use super::{int, invoke, on_session, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::layout::{self, corrupt_header};
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("open.lua", "slide.lua", "release.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, token: LockToken,
) -> Result<ReleaseOutcome> {
    let keys = Keys::new(key);
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation
        .arg(&layout::token_bytes(token)[..])
        .arg(keys.channel())
        .arg(inner.window.percent());
    match int(&invoke(inner, key, Operation::Release, &invocation).await?) {
        Some(1) => Ok(ReleaseOutcome::Released),
        Some(0) => Ok(ReleaseOutcome::LockLost),
        Some(-1) => Err(corrupt_header(key)),
        _ => Err(bad_reply(Operation::Release, "unknown release outcome")),
    }
}
