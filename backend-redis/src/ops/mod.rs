//! One file per store operation: each holds its Lua script (`<op>.lua`, prepended with
//! `consts.lua` and the helper files it uses, see `script!`), the argument encoding and the reply
//! decoding. Every operation is one `EVALSHA`: one round trip, atomic on the server.
//! `redis::Script` falls back to `SCRIPT LOAD` + `EVALSHA` on `NOSCRIPT`, so a `SCRIPT FLUSH`, a
//! restart or a failover to a replica without the script costs one extra round trip once,
//! unnoticed by the caller.
//!
//! The session is one string (`layout.rs`): reads move it whole and the client decodes it from
//! one buffer; writes send only the delta, and the script patches the stored value.

use std::time::Duration;

use redis::{Script, ScriptInvocation, Value};
use session_core::{Delta, Error, Items, LockInfo, Operation, Result, SessionKey};

use crate::error::bad_reply;
use crate::keys::Keys;
use crate::layout::{self, corrupt_header};
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
pub(crate) mod wait;
pub(crate) mod write_concurrent;

/// A lazily hashed script: `consts.lua` (the constants shared with the Rust side), then the listed
/// Lua files in order, the operation's own file last. Only the helpers a script uses are included
/// (`open.lua`, `slide.lua`, `delta.lua`): Lua creates every `local function` of a script anew on
/// each call, so the hot scripts (`read.lua`, `acquire.lua`, and `commit.lua` but for `delta.lua`)
/// inline theirs.
macro_rules! script {
    ($($file:literal),+) => {
        std::sync::LazyLock::new(|| {
            redis::Script::new(concat!(include_str!("consts.lua"), $(include_str!($file)),+))
        })
    };
}
pub(crate) use script;

/// An invocation of `script` with the session's two keys (its value, then its alive marker).
pub(crate) fn on_session<'a>(script: &'a Script, keys: &Keys) -> ScriptInvocation<'a> {
    let mut invocation = script.key(&keys.session);
    invocation.key(&keys.alive);
    invocation
}

/// Runs a prepared invocation on `key`'s session: one `EVALSHA` (plus `SCRIPT LOAD` and a second
/// `EVALSHA` once after the server lost its script cache). A key of another type than a string
/// is `Error::Corrupt` naming the session (`ErrorContext::map_on`), found on the error path only.
pub(crate) async fn invoke(
    inner: &Inner, key: &SessionKey, operation: Operation, invocation: &ScriptInvocation<'_>,
) -> Result<Value> {
    let mut conn = inner.conn.clone();
    invocation
        .invoke_async::<Value>(&mut conn)
        .await
        .map_err(|e| inner.errors.map_on(operation, key, e))
}

/// Milliseconds for a script argument (durations are validated to ≥ 1 ms by the core).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Appends `delta` in the layout `items_after` (delta.lua) reads: cleared flag, number of
/// removed names, the removed names, then each item to set, encoded as stored.
///
/// # Errors
/// An item name or value too long for its length field (never for names the core validated).
pub(crate) fn push_delta(invocation: &mut ScriptInvocation<'_>, delta: &Delta) -> Result<()> {
    invocation
        .arg(if delta.cleared { "1" } else { "0" })
        .arg(delta.removed.len());
    for name in &delta.removed {
        invocation.arg(name.as_bytes());
    }
    for (name, value) in &delta.set {
        invocation.arg(layout::entry(name, value).ok_or_else(|| too_long(name, value.len()))?);
    }
    Ok(())
}

/// The error for an item whose name or value does not fit its length field.
pub(crate) fn too_long(name: &str, value_len: usize) -> Error {
    if name.len() > usize::from(u16::MAX) {
        Error::InvalidName {
            kind: "item name",
            reason: "longer than 65535 bytes",
        }
    } else {
        Error::SessionTooLarge {
            size: value_len,
            limit: u32::MAX as usize,
        }
    }
}

/// An integer reply.
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// What the `read` and `acquire` scripts report.
pub(crate) enum Opened {
    /// No such session.
    Missing,
    /// Another request holds the lock.
    Locked(LockInfo),
    /// The stored value (header and items) as the script found it.
    Found(Vec<u8>),
}

/// Decodes `0` (missing), `-1` (corrupt header), `{token, age}` (locked) or the stored value.
pub(crate) fn opened(key: &SessionKey, operation: Operation, reply: Value) -> Result<Opened> {
    match reply {
        Value::BulkString(value) => Ok(Opened::Found(value)),
        Value::Int(0) => Ok(Opened::Missing),
        Value::Int(-1) => Err(corrupt_header(key)),
        Value::Array(parts) => match parts.as_slice() {
            [Value::BulkString(token), Value::Int(age)] => {
                Ok(Opened::Locked(layout::lock_info(key, token, *age)?))
            }
            _ => Err(bad_reply(operation, "unknown lock report")),
        },
        _ => Err(bad_reply(operation, "unknown outcome")),
    }
}

/// `{1, final value}` from `remove` or `delete`: reports the end with the final items. Only the
/// process that removed the session gets them, so only it reports the end.
pub(crate) fn removed_with_items(
    inner: &Inner, key: &SessionKey, operation: Operation, reply: Value,
) -> Result<()> {
    // The session is gone whatever its final value held: undecodable final items are reported
    // (logged), and the end is announced without them, rather than failing a removal that
    // happened.
    let items = final_items(key, operation, reply).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "the final items of a removed session could not be decoded");
        Items::new()
    });
    inner.expiry.removed(key, items);
    Ok(())
}

/// The items of a `{1, final value}` reply (`{1}`: the value was already gone, no items).
pub(crate) fn final_items(key: &SessionKey, operation: Operation, reply: Value) -> Result<Items> {
    match reply {
        Value::Array(parts) => match parts.as_slice() {
            [Value::Int(1), Value::BulkString(value)] => layout::items(key, value),
            [Value::Int(1)] => Ok(Items::new()),
            _ => Err(bad_reply(operation, "unknown removal outcome")),
        },
        _ => Err(bad_reply(operation, "unknown removal outcome")),
    }
}

#[cfg(test)]
mod tests {
    /// The hot scripts' own files and `consts.lua`, which every script starts with (`commit.lua`
    /// adds only `delta.lua`'s two helpers).
    const HOT: [&str; 4] = [
        include_str!("consts.lua"),
        include_str!("read.lua"),
        include_str!("acquire.lua"),
        include_str!("commit.lua"),
    ];

    #[test]
    fn hot_scripts_create_no_closures() {
        for source in HOT {
            let code = source.lines().filter(|l| !l.trim_start().starts_with("--"));
            for line in code {
                assert!(!line.contains("function"), "a closure per call: {line}");
            }
        }
    }

    #[test]
    fn only_consts_declares_the_shared_constants() {
        for own in [
            include_str!("open.lua"),
            include_str!("slide.lua"),
            include_str!("delta.lua"),
            include_str!("read.lua"),
            include_str!("acquire.lua"),
            include_str!("commit.lua"),
            include_str!("write_concurrent.lua"),
        ] {
            assert!(
                !own.contains("local HEADER"),
                "HEADER declared outside consts.lua"
            );
            assert!(
                !own.contains("local GRACE_MS"),
                "GRACE_MS declared outside consts.lua"
            );
        }
    }
}
