//! `touch`: slide the expiry by the stored timeout when due; creates nothing (script:
//! `touch.lua`).

use std::sync::LazyLock;

use redis::Script;
use session_core::{Operation, Result, SessionKey, TouchOutcome};

use super::{int, invoke, on_session, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::layout::corrupt_header;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("open.lua", "slide.lua", "touch.lua");

pub(crate) async fn run(inner: &Inner, key: &SessionKey) -> Result<TouchOutcome> {
    let keys = Keys::new(key);
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation.arg(inner.window.percent());
    match int(&invoke(inner, key, Operation::Touch, &invocation).await?) {
        Some(1) => Ok(TouchOutcome::Touched),
        Some(0) => Ok(TouchOutcome::Missing),
        Some(-1) => Err(corrupt_header(key)),
        _ => Err(bad_reply(Operation::Touch, "unknown touch outcome")),
    }
}
