//! `change_id` (standalone servers only): atomic id rotation keeping data and lock (script:
//! `change_id.lua`). Not offered on a cluster, where the two ids' keys live in different slots.

use std::sync::LazyLock;

use redis::Script;
use session_core::{ChangeIdOutcome, LockToken, Operation, Result, SessionId, SessionKey};

use super::{int, invoke, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("change_id.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, new_id: SessionId, token: LockToken,
) -> Result<ChangeIdOutcome> {
    let old = Keys::new(key);
    let new = Keys::new(&key.with_id(new_id));
    let mut invocation = SCRIPT.key(&old.meta);
    invocation
        .key(&old.items)
        .key(&new.meta)
        .key(&new.items)
        .arg(token.to_hex())
        .arg(old.channel());
    match int(&invoke(inner, Operation::ChangeId, &invocation).await?) {
        Some(1) => Ok(ChangeIdOutcome::Changed),
        Some(0) => Ok(ChangeIdOutcome::LockLost),
        Some(2) => Ok(ChangeIdOutcome::AlreadyExists),
        _ => Err(bad_reply(Operation::ChangeId, "unknown change_id outcome")),
    }
}
