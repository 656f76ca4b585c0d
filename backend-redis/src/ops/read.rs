//! `read`: data without locking; slides the expiry when due, even when locked (script:
//! `read.lua`).

use std::sync::LazyLock;

use redis::Script;
use session_core::{Operation, ReadOutcome, Result, SessionKey};

use super::{Opened, invoke, on_session, opened, script};
use crate::keys::Keys;
use crate::layout;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("read.lua");

pub(crate) async fn run(inner: &Inner, key: &SessionKey) -> Result<ReadOutcome> {
    let keys = Keys::new(key);
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation.arg(inner.window.percent());
    let reply = invoke(inner, Operation::Read, &invocation).await?;
    Ok(match opened(key, Operation::Read, reply)? {
        Opened::Missing => ReadOutcome::Missing,
        Opened::Locked(info) => ReadOutcome::Locked(info),
        Opened::Found(value) => ReadOutcome::Found(layout::snapshot(key, &value)?),
    })
}
