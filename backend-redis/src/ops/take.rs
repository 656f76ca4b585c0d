//! `take`: claim the end of an expired session and take its final items, for its expiry event
//! (script: `take.lua`; run by the expiry listener, not by a `SessionStore` operation).

use std::sync::LazyLock;

use redis::{Script, Value};
use session_core::{Items, Operation, Result, SessionKey};

use super::{final_items, on_session, script};
use crate::connection::Connection;
use crate::error::ErrorContext;
use crate::keys::Keys;

static SCRIPT: LazyLock<Script> = script!("open.lua", "take.lua");

/// The final items of `key`, or `None` when the session exists again or another process (or an
/// earlier notification) already claimed its end.
pub(crate) async fn run(
    conn: &mut Connection, errors: &ErrorContext, key: &SessionKey,
) -> Result<Option<Items>> {
    let keys = Keys::new(key);
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation.key(keys.ended());
    let reply: Value = invocation
        .invoke_async(conn)
        .await
        .map_err(|e| errors.map_on(Operation::ExpiryEvents, key, e))?;
    if reply == Value::Int(0) {
        return Ok(None);
    }
    final_items(key, Operation::ExpiryEvents, reply).map(Some)
}
