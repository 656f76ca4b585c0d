//! `create`: insert a new, unlocked session if none exists; never overwrites (script: `create.lua`).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use session_core::{CreateOutcome, Items, Operation, Result, SessionKey};

use super::{int, invoke, millis, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("create.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, items: &Items, timeout: Duration, initialized: bool,
) -> Result<CreateOutcome> {
    let keys = Keys::new(key);
    let mut invocation = SCRIPT.key(&keys.meta);
    invocation
        .key(&keys.items)
        .arg(millis(timeout))
        .arg(if initialized { "1" } else { "0" });
    for (name, value) in items {
        invocation.arg(name.as_bytes()).arg(value.as_bytes());
    }
    match int(&invoke(inner, Operation::Create, &invocation).await?) {
        Some(1) => Ok(CreateOutcome::Created),
        Some(0) => Ok(CreateOutcome::AlreadyExists),
        _ => Err(bad_reply(Operation::Create, "unknown create outcome")),
    }
}
