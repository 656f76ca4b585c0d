//! `read`: data without locking; slides the expiry even when locked (script: `read.lua`).

use std::sync::LazyLock;

use redis::Script;
use session_core::{Operation, ReadOutcome, Result, SessionKey};

use super::{array, corrupt_meta, int, invoke, lock_info, script, snapshot};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("read.lua");

pub(crate) async fn run(inner: &Inner, key: &SessionKey) -> Result<ReadOutcome> {
    let keys = Keys::new(key);
    let mut invocation = SCRIPT.key(&keys.meta);
    invocation.key(&keys.items);
    let reply = array(
        Operation::Read,
        invoke(inner, Operation::Read, &invocation).await?,
    )?;
    match reply.first().and_then(int) {
        Some(0) => Ok(ReadOutcome::Missing),
        Some(1) => Ok(ReadOutcome::Locked(lock_info(key, &reply)?)),
        Some(2) => Ok(ReadOutcome::Found(snapshot(key, reply)?)),
        Some(-1) => Err(corrupt_meta(key)),
        _ => Err(bad_reply(Operation::Read, "unknown read outcome")),
    }
}
