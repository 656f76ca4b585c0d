//! `commit`: write the delta, store the timeout, release the lock (script: `commit.lua`). A repeat
//! of a commit that succeeded is recognised by the delta's fingerprint and applies nothing.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use session_core::{CommitOutcome, Delta, LockToken, Operation, Result, SessionKey};

use super::{int, invoke, on_session, push_delta, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::layout::{self, corrupt_header};
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("delta.lua", "commit.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, token: LockToken, delta: &Delta, timeout: Duration,
) -> Result<CommitOutcome> {
    let keys = Keys::new(key);
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation
        .arg(&layout::token_bytes(token)[..])
        .arg(layout::timeout_ms(timeout))
        // Raw bytes: compared with the header's settled record by the script.
        .arg(&delta.fingerprint(timeout).to_be_bytes()[..])
        .arg(keys.channel())
        .arg(inner.window.percent());
    push_delta(&mut invocation, delta)?;
    match int(&invoke(inner, key, Operation::Commit, &invocation).await?) {
        Some(1) => Ok(CommitOutcome::Committed),
        Some(0) => Ok(CommitOutcome::LockLost),
        Some(-1) => Err(corrupt_header(key)),
        _ => Err(bad_reply(Operation::Commit, "unknown commit outcome")),
    }
}
