//! `take`: claim the end of an expired session and take its final items, for its expiry event
//! (script: `take.lua`; run by the expiry listener, not by a `SessionStore` operation).

use std::sync::LazyLock;

use redis::{Script, Value};
use session_core::{Items, Operation, Result, SessionKey};

use super::{array, items, script};
use crate::connection::Connection;
use crate::error::{ErrorContext, bad_reply};
use crate::keys::Keys;

static SCRIPT: LazyLock<Script> = script!("take.lua");

/// The final items of `key`, or `None` when the session exists again or another process (or an
/// earlier notification) already claimed its end.
pub(crate) async fn run(
    conn: &mut Connection, errors: &ErrorContext, key: &SessionKey,
) -> Result<Option<Items>> {
    let keys = Keys::new(key);
    let mut invocation = SCRIPT.key(&keys.meta);
    invocation.key(&keys.items).key(keys.ended());
    let reply: Value = invocation
        .invoke_async(conn)
        .await
        .map_err(|e| errors.map(Operation::ExpiryEvents, e))?;
    if reply == Value::Int(0) {
        return Ok(None);
    }
    let mut parts = array(Operation::ExpiryEvents, reply)?.into_iter();
    match (parts.next(), parts.next()) {
        (Some(Value::Int(1)), Some(final_items)) => items(key, final_items).map(Some),
        _ => Err(bad_reply(Operation::ExpiryEvents, "unknown take outcome")),
    }
}
