//! `delete`: administrative delete regardless of locks (script: `delete.lua`).

use std::sync::LazyLock;

use redis::{Script, Value};
use session_core::{Operation, RemoveOutcome, Result, SessionKey};

use super::{int, invoke, on_session, removed_with_items, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("open.lua", "delete.lua");

pub(crate) async fn run(inner: &Inner, key: &SessionKey) -> Result<RemoveOutcome> {
    let keys = Keys::new(key);
    // The final items come back only when this store has expiry-event subscribers.
    let wanted = inner.expiry.wanted();
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation
        .arg(keys.channel())
        .arg(if wanted { "1" } else { "0" });
    match invoke(inner, key, Operation::Delete, &invocation).await? {
        reply @ Value::Array(_) => {
            removed_with_items(inner, key, Operation::Delete, reply)?;
            Ok(RemoveOutcome::Removed)
        }
        reply => match int(&reply) {
            Some(1) => Ok(RemoveOutcome::Removed),
            Some(0) => Ok(RemoveOutcome::Missing),
            _ => Err(bad_reply(Operation::Delete, "unknown delete outcome")),
        },
    }
}
