//! `create`: insert a new, unlocked session if none exists; never overwrites (script: `create.lua`).
//! The client builds the whole stored value; the script only checks and writes it.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use session_core::{CreateOutcome, Items, Operation, Result, SessionKey};

use super::{int, invoke, on_session, script, too_long};
use crate::error::bad_reply;
use crate::expiry::EXPIRY_GRACE;
use crate::keys::Keys;
use crate::layout::{self, EVENTS, INITIALIZE};
use crate::store::Inner;

static SCRIPT: LazyLock<Script> = script!("open.lua", "create.lua");

pub(crate) async fn run(
    inner: &Inner, key: &SessionKey, items: &Items, timeout: Duration, initialized: bool,
) -> Result<CreateOutcome> {
    let keys = Keys::new(key);
    let timeout_ms = layout::timeout_ms(timeout);
    // Sessions get the alive marker and the grace period only where the server reports expiries.
    let events = inner.expiry.enabled();
    let mut flags = if events { EVENTS } else { 0 };
    if !initialized {
        flags |= INITIALIZE;
    }
    let value = layout::new_session(items, timeout_ms, flags).ok_or_else(|| {
        let (name, value) = items
            .iter()
            .max_by_key(|(k, v)| k.len().max(v.len()))
            .map_or(("", 0), |(k, v)| (k.as_str(), v.len()));
        too_long(name, value)
    })?;
    let to = timeout_ms + inner.window.window_ms(timeout_ms);
    let grace = if events {
        u64::try_from(EXPIRY_GRACE.as_millis()).unwrap_or(u64::MAX)
    } else {
        0
    };
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation
        .arg(value)
        .arg(to + grace)
        .arg(if events { to } else { 0 });
    match int(&invoke(inner, key, Operation::Create, &invocation).await?) {
        Some(1) => Ok(CreateOutcome::Created),
        Some(0) => Ok(CreateOutcome::AlreadyExists),
        _ => Err(bad_reply(Operation::Create, "unknown create outcome")),
    }
}
