//! `read`: data without locking; slides the expiry when due, even when locked (script:
//! `read.lua`). With a near cache (`near`), a read is first looked up in memory, and a miss runs
//! `read_near.lua`, whose reply also says how long the session has left and whether the read
//! wrote, so that the copy it leaves is one a later read may use.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};
use session_core::{Operation, ReadOutcome, Result, SessionKey};

use super::{Opened, invoke, on_session, opened, script};
use crate::error::bad_reply;
use crate::keys::Keys;
use crate::layout;
use crate::near::{Lookup, NearCache, NearCopy, Ticket};
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("read.lua");
static NEAR: LazyLock<Script> = script!("read_near.lua");

pub(crate) async fn run(inner: &Inner, key: &SessionKey) -> Result<ReadOutcome> {
    let keys = Keys::new(key);
    if let Some(near) = &inner.near {
        return match near.lookup(&keys.session, keys.app_prefix()) {
            Lookup::Hit(outcome) => {
                // A hit never waits: spend the task's budget as I/O would, so that a handler
                // reading in a loop lets the worker's other tasks run.
                tokio::task::coop::consume_budget().await;
                Ok(outcome)
            }
            Lookup::Miss(Some(ticket)) => through(inner, near, key, &keys, ticket).await,
            Lookup::Miss(None) => plain(inner, key, &keys).await,
        };
    }
    plain(inner, key, &keys).await
}

async fn plain(inner: &Inner, key: &SessionKey, keys: &Keys) -> Result<ReadOutcome> {
    let mut invocation = on_session(&SCRIPT, keys);
    invocation.arg(inner.window.percent());
    let reply = invoke(inner, key, Operation::Read, &invocation).await?;
    Ok(match opened(key, Operation::Read, reply)? {
        Opened::Missing => ReadOutcome::Missing,
        Opened::Locked(info) => ReadOutcome::Locked(info),
        Opened::Found(value) => ReadOutcome::Found(layout::snapshot(key, &value)?),
    })
}

/// A read that may leave a copy: installed only when the read wrote nothing.
async fn through(
    inner: &Inner, near: &NearCache, key: &SessionKey, keys: &Keys, ticket: Ticket,
) -> Result<ReadOutcome> {
    let mut invocation = on_session(&NEAR, keys);
    invocation.arg(inner.window.percent());
    let decoded = match invoke(inner, key, Operation::Read, &invocation).await {
        Ok(reply) => decode(key, reply),
        Err(e) => Err(e),
    };
    match decoded {
        Ok((outcome, Some((copy, left, timeout)))) => {
            near.install(&keys.session, ticket, copy, left, timeout);
            Ok(outcome)
        }
        Ok((outcome, None)) => {
            near.abandon(&keys.session, ticket);
            Ok(outcome)
        }
        Err(e) => {
            near.abandon(&keys.session, ticket);
            Err(e)
        }
    }
}

type Keep = Option<(NearCopy, Duration, Duration)>;

/// `read_near.lua`'s reply: the outcome, and what to keep (nothing when the read wrote).
fn decode(key: &SessionKey, reply: Value) -> Result<(ReadOutcome, Keep)> {
    let bad = |what| bad_reply(Operation::Read, what);
    let millis = |v: &Value| match v {
        Value::Int(n) => Ok(Duration::from_millis(u64::try_from(*n).unwrap_or(0))),
        _ => Err(bad("a duration is not a number")),
    };
    match reply {
        Value::Array(parts) => match parts.as_slice() {
            [Value::BulkString(value), left, wrote] => {
                let snapshot = layout::snapshot(key, value)?;
                let keep = (*wrote == Value::Int(0))
                    .then(|| {
                        Ok::<_, session_core::Error>((
                            NearCopy::Found(snapshot.clone()),
                            millis(left)?,
                            snapshot.timeout,
                        ))
                    })
                    .transpose()?;
                Ok((ReadOutcome::Found(snapshot), keep))
            }
            [
                Value::BulkString(token),
                Value::Int(age),
                left,
                timeout,
                wrote,
            ] => {
                let info = layout::lock_info(key, token, *age)?;
                let keep = (*wrote == Value::Int(0))
                    .then(|| {
                        Ok::<_, session_core::Error>((
                            NearCopy::Locked(info),
                            millis(left)?,
                            millis(timeout)?,
                        ))
                    })
                    .transpose()?;
                Ok((ReadOutcome::Locked(info), keep))
            }
            _ => Err(bad("unknown near read report")),
        },
        other => Ok((
            match opened(key, Operation::Read, other)? {
                Opened::Missing => ReadOutcome::Missing,
                Opened::Locked(info) => ReadOutcome::Locked(info),
                Opened::Found(value) => ReadOutcome::Found(layout::snapshot(key, &value)?),
            },
            None,
        )),
    }
}
