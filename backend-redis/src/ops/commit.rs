//! `commit`: write the delta, store the timeout, release the lock (script: `commit.lua`). A repeat
//! of a commit that succeeded is recognised by the delta's fingerprint and applies nothing.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use session_core::{CommitOutcome, Delta, LockToken, Operation, Result, SessionKey};

use super::{int, invoke, millis, push_delta, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("commit.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, token: LockToken, delta: &Delta, timeout: Duration,
) -> Result<CommitOutcome> {
    let keys = Keys::new(key);
    let mut invocation = SCRIPT.key(&keys.meta);
    invocation
        .key(&keys.items)
        .arg(token.to_hex())
        .arg(millis(timeout))
        // Decimal text: compared as a string by the script.
        .arg(delta.fingerprint(timeout).to_string())
        .arg(keys.channel());
    push_delta(&mut invocation, delta);
    match int(&invoke(inner, Operation::Commit, &invocation).await?) {
        Some(1) => Ok(CommitOutcome::Committed),
        Some(0) => Ok(CommitOutcome::LockLost),
        _ => Err(bad_reply(Operation::Commit, "unknown commit outcome")),
    }
}
