//! `remove`: delete a session on behalf of its lock holder (script: `remove.lua`).

use std::sync::LazyLock;

use redis::{Script, Value};
use session_core::{LockToken, Operation, RemoveOutcome, Result, SessionKey};

use super::{int, invoke, on_session, removed_with_items, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::layout::{self, corrupt_header};
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("open.lua", "remove.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, token: LockToken,
) -> Result<RemoveOutcome> {
    let keys = Keys::new(key);
    // The final items come back only when this store has expiry-event subscribers.
    let wanted = inner.expiry.wanted();
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation
        .arg(&layout::token_bytes(token)[..])
        .arg(keys.channel())
        .arg(if wanted { "1" } else { "0" });
    match invoke(inner, key, Operation::Remove, &invocation).await? {
        reply @ Value::Array(_) => {
            removed_with_items(inner, key, Operation::Remove, reply)?;
            Ok(RemoveOutcome::Removed)
        }
        reply => match int(&reply) {
            Some(1) => Ok(RemoveOutcome::Removed),
            Some(0) => Ok(RemoveOutcome::Missing),
            Some(2) => Ok(RemoveOutcome::LockLost),
            Some(-1) => Err(corrupt_header(key)),
            _ => Err(bad_reply(Operation::Remove, "unknown remove outcome")),
        },
    }
}
