//! `delete`: administrative delete regardless of locks (script: `delete.lua`).

use std::sync::LazyLock;

use redis::Script;
use session_core::{Operation, RemoveOutcome, Result, SessionKey};

use super::{int, invoke, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("delete.lua");

pub(crate) async fn run(inner: &Inner, key: &SessionKey) -> Result<RemoveOutcome> {
    let keys = Keys::new(key);
    let mut invocation = SCRIPT.key(&keys.meta);
    invocation.key(&keys.items).arg(&keys.channel);
    match int(&invoke(inner, Operation::Delete, &invocation).await?) {
        Some(1) => Ok(RemoveOutcome::Removed),
        Some(0) => Ok(RemoveOutcome::Missing),
        _ => Err(bad_reply(Operation::Delete, "unknown delete outcome")),
    }
}
