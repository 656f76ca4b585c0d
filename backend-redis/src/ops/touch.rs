//! `touch`: slide the expiry by the stored timeout; creates nothing (script: `touch.lua`).

use std::sync::LazyLock;

use redis::Script;
use session_core::{Operation, Result, SessionKey, TouchOutcome};

use super::{corrupt_meta, int, invoke, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("touch.lua");

pub(crate) async fn run(inner: &Inner, key: &SessionKey) -> Result<TouchOutcome> {
    let keys = Keys::new(key);
    let mut invocation = SCRIPT.key(&keys.meta);
    invocation.key(&keys.items);
    match int(&invoke(inner, Operation::Touch, &invocation).await?) {
        Some(1) => Ok(TouchOutcome::Touched),
        Some(0) => Ok(TouchOutcome::Missing),
        Some(-1) => Err(corrupt_meta(key)),
        _ => Err(bad_reply(Operation::Touch, "unknown touch outcome")),
    }
}
