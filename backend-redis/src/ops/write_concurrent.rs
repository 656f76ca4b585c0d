//! `write_concurrent`: lock-free per-item merge of a delta (script: `write_concurrent.lua`).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use session_core::{CommitOutcome, Delta, Operation, Result, SessionKey};

use super::{int, invoke, on_session, push_delta, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::layout::{self, corrupt_header};
use crate::store::Inner;

static SCRIPT: LazyLock<Script> =
    script!("open.lua", "slide.lua", "delta.lua", "write_concurrent.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, delta: &Delta, timeout: Duration,
) -> Result<CommitOutcome> {
    let keys = Keys::new(key);
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation
        .arg(layout::timeout_ms(timeout))
        .arg(inner.window.percent());
    push_delta(&mut invocation, delta)?;
    match int(&invoke(inner, key, Operation::WriteConcurrent, &invocation).await?) {
        Some(1) => Ok(CommitOutcome::Committed),
        Some(0) => Ok(CommitOutcome::Missing),
        Some(-1) => Err(corrupt_header(key)),
        _ => Err(bad_reply(
            Operation::WriteConcurrent,
            "unknown write outcome",
        )),
    }
}
