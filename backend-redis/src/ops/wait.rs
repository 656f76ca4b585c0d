//! `wait`: after `watch_release` subscribed, mark the session's lock as waited for, so that its
//! end is published (script: `wait.lua`). Locks nobody waits for end without a `PUBLISH`.

use std::sync::LazyLock;

use redis::Script;
use session_core::{Operation, Result, SessionKey};

use super::{invoke, on_session, script};
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("open.lua", "wait.lua");

/// Marks the session's current lock as waited for. `true`: marked (or already marked), so its end
/// will be published; `false`: nothing is locked now (missing, unlocked, or not this layout's
/// value), so there is no lock whose end could be published.
pub(crate) async fn run(inner: &Inner, key: &SessionKey) -> Result<bool> {
    let keys = Keys::new(key);
    let invocation = on_session(&SCRIPT, &keys);
    let marked = invoke(inner, key, Operation::WatchRelease, &invocation).await?;
    Ok(matches!(marked, redis::Value::Int(1)))
}
