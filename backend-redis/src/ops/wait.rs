//! `wait`: after `watch_release` subscribed, mark the session's lock as waited for, so that its
//! end is published (script: `wait.lua`). Locks nobody waits for end without a `PUBLISH`.

use std::sync::LazyLock;

use redis::Script;
use session_core::{Operation, Result, SessionKey};

use super::{invoke, on_session, script};
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("open.lua", "wait.lua");

pub(crate) async fn run(inner: &Inner, key: &SessionKey) -> Result<()> {
    let keys = Keys::new(key);
    let invocation = on_session(&SCRIPT, &keys);
    // 1 (marked) or 0 (nothing locked to wait for): either way the waiter looks again next.
    invoke(inner, Operation::WatchRelease, &invocation).await?;
    Ok(())
}
