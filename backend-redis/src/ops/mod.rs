//! One file per store operation: each holds its Lua script (`<op>.lua`, prepended with
//! `prelude.lua`), the argument encoding and the reply decoding. Every operation is one `EVALSHA`:
//! one round trip, atomic on the server. `redis::Script` falls back to `SCRIPT LOAD` + `EVALSHA` on
//! `NOSCRIPT`, so a `SCRIPT FLUSH`, a restart or a failover to a replica without the script costs
//! one extra round trip once, unnoticed by the caller.

use std::sync::Arc;
use std::time::Duration;

use redis::{ScriptInvocation, Value};
use session_core::{
    Delta, Error, ItemValue, Items, LockInfo, LockToken, Operation, Result, SessionKey, Snapshot,
};

use crate::error::{bad_reply, corrupt};
use crate::store::Inner;

pub(crate) mod acquire;
pub(crate) mod change_id;
pub(crate) mod commit;
pub(crate) mod create;
pub(crate) mod delete;
pub(crate) mod read;
pub(crate) mod release;
pub(crate) mod remove;
pub(crate) mod take;
pub(crate) mod touch;
pub(crate) mod write_concurrent;

/// A lazily hashed script: the shared prelude followed by the operation's own Lua file.
macro_rules! script {
    ($file:literal) => {
        std::sync::LazyLock::new(|| {
            redis::Script::new(concat!(include_str!("prelude.lua"), include_str!($file)))
        })
    };
}
pub(crate) use script;

/// Runs a prepared invocation: one `EVALSHA` (plus `SCRIPT LOAD` and a second `EVALSHA` once after
/// the server lost its script cache).
pub(crate) async fn invoke(
    inner: &Inner, operation: Operation, invocation: &ScriptInvocation<'_>,
) -> Result<Value> {
    let mut conn = inner.conn.clone();
    invocation
        .invoke_async::<Value>(&mut conn)
        .await
        .map_err(|e| inner.errors.map(operation, e))
}

/// Milliseconds for a script argument (durations are validated to ≥ 1 ms by the core).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Appends `delta` in the layout `apply_delta` (prelude.lua) reads: cleared flag, number of removed
/// names, the removed names, then name/value pairs.
pub(crate) fn push_delta(invocation: &mut ScriptInvocation<'_>, delta: &Delta) {
    invocation
        .arg(if delta.cleared { "1" } else { "0" })
        .arg(delta.removed.len());
    for name in &delta.removed {
        invocation.arg(name.as_bytes());
    }
    for (name, value) in &delta.set {
        invocation.arg(name.as_bytes()).arg(value.as_bytes());
    }
}

/// An integer reply.
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// The elements of an array reply.
pub(crate) fn array(operation: Operation, value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        _ => Err(bad_reply(operation, "expected an array")),
    }
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// `{1, token, age}`: the holder of a lock.
pub(crate) fn lock_info(key: &SessionKey, reply: &[Value]) -> Result<LockInfo> {
    let token = reply
        .get(1)
        .and_then(text)
        .and_then(|t| LockToken::from_hex(t).ok())
        .ok_or_else(|| corrupt(key, "the stored lock token is not 32 hex characters"))?;
    let age = reply
        .get(2)
        .and_then(int)
        .and_then(|a| u64::try_from(a).ok())
        .ok_or_else(|| corrupt(key, "the stored lock time is not a number"))?;
    Ok(LockInfo::new(token, Duration::from_millis(age)))
}

/// `{2, timeout, initialize, {name, value, ...}}`: a session's data.
pub(crate) fn snapshot(key: &SessionKey, reply: Vec<Value>) -> Result<Snapshot> {
    let mut reply = reply.into_iter().skip(1);
    let timeout = reply
        .next()
        .as_ref()
        .and_then(text)
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| corrupt(key, "the stored timeout is not a number"))?;
    let initialize = reply.next().as_ref().and_then(int) == Some(1);
    let items = match reply.next() {
        Some(value) => items(key, value)?,
        None => return Err(corrupt(key, "the items are not a hash")),
    };
    Ok(Snapshot::new(Arc::new(items), Duration::from_millis(timeout)).with_initialize(initialize))
}

/// An `HGETALL` reply (flat name/value array, or a map) as items.
pub(crate) fn items(key: &SessionKey, value: Value) -> Result<Items> {
    match value {
        Value::Array(flat) => items_from_pairs(key, flat),
        Value::Map(pairs) => {
            items_from_pairs(key, pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
        }
        _ => Err(corrupt(key, "the items are not a hash")),
    }
}

fn items_from_pairs(key: &SessionKey, flat: Vec<Value>) -> Result<Items> {
    // Collected first, then built in one go: `BTreeMap`'s bulk build from a sorted run is cheaper
    // than one insert per item (this runs on every `read` and `acquire`).
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
        let (Value::BulkString(name), Value::BulkString(value)) = (name, value) else {
            return Err(corrupt(key, "an item is not a name/value pair of strings"));
        };
        let name =
            String::from_utf8(name).map_err(|_| corrupt(key, "an item name is not UTF-8"))?;
        pairs.push((name, ItemValue::from_bytes(value)));
    }
    Ok(pairs.into_iter().collect())
}

/// `{1, {name, value, ...}}` from `remove` or `delete`: reports the end with the final items.
/// Only the process that removed the session gets them, so only it reports the end.
pub(crate) fn removed_with_items(
    inner: &Inner, key: &SessionKey, operation: Operation, reply: Value,
) -> Result<()> {
    let mut parts = array(operation, reply)?.into_iter();
    match (parts.next(), parts.next()) {
        (Some(Value::Int(1)), Some(final_items)) => {
            inner.expiry.removed(key, items(key, final_items)?);
            Ok(())
        }
        _ => Err(bad_reply(operation, "unknown removal outcome")),
    }
}

/// The reply `-1` (or `{-1}`): the meta hash exists but cannot be read.
pub(crate) fn corrupt_meta(key: &SessionKey) -> Error {
    corrupt(
        key,
        "the session's meta hash has no valid timeout or lock time",
    )
}
