//! `remove`: delete a session on behalf of its lock holder (script: `remove.lua`).

use std::sync::LazyLock;

use redis::{Script, Value};
use session_core::{LockToken, Operation, RemoveOutcome, Result, SessionKey};

use super::{int, invoke, removed_with_items, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("remove.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, token: LockToken,
) -> Result<RemoveOutcome> {
    let keys = Keys::new(key);
    // The final items come back only when this store has expiry-event subscribers.
    let wanted = inner.expiry.wanted();
    let mut invocation = SCRIPT.key(&keys.meta);
    invocation
        .key(&keys.items)
        .arg(token.to_hex())
        .arg(keys.channel())
        .arg(if wanted { "1" } else { "0" });
    match invoke(inner, Operation::Remove, &invocation).await? {
        reply @ Value::Array(_) => {
            removed_with_items(inner, key, Operation::Remove, reply)?;
            Ok(RemoveOutcome::Removed)
        }
        reply => match int(&reply) {
            Some(1) => Ok(RemoveOutcome::Removed),
            Some(0) => Ok(RemoveOutcome::Missing),
            Some(2) => Ok(RemoveOutcome::LockLost),
            _ => Err(bad_reply(Operation::Remove, "unknown remove outcome")),
        },
    }
}
