//! `change_id` (standalone servers only): atomic id rotation keeping data and lock (script:
//! `change_id.lua`). Not offered on a cluster, where the two ids' keys live in different slots.

use std::sync::LazyLock;

use redis::Script;
use session_core::{ChangeIdOutcome, LockToken, Operation, Result, SessionId, SessionKey};

use super::{int, invoke, on_session, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::layout::{self, corrupt_header};
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("open.lua", "change_id.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, new_id: SessionId, token: LockToken,
) -> Result<ChangeIdOutcome> {
    let old = Keys::new(key);
    let new = Keys::new(&key.with_id(new_id));
    let mut invocation = on_session(&SCRIPT, &old);
    invocation
        .key(&new.session)
        .key(&new.alive)
        .arg(&layout::token_bytes(token)[..])
        .arg(old.channel());
    match int(&invoke(inner, key, Operation::ChangeId, &invocation).await?) {
        Some(1) => Ok(ChangeIdOutcome::Changed),
        Some(0) => Ok(ChangeIdOutcome::LockLost),
        Some(2) => Ok(ChangeIdOutcome::AlreadyExists),
        Some(-1) => Err(corrupt_header(key)),
        _ => Err(bad_reply(Operation::ChangeId, "unknown change_id outcome")),
    }
}
