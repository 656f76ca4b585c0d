//! `take`: claim the end of an expired session and take its final items, for its expiry event
//! (script: `take.lua`; run by the expiry listener, not by a `SessionStore` operation).

use std::sync::LazyLock;

use redis::{Script, Value};
use session_core::{Items, Operation, Result, SessionKey};

use super::{on_session, script};
use crate::connection::Connection;
use crate::error::{ErrorContext, bad_reply};
use crate::keys::Keys;
use crate::layout;

static SCRIPT: LazyLock<Script> = script!("open.lua", "claim.lua", "take.lua");
static CLAIM_LOST: LazyLock<Script> = script!("claim.lua", "claim_lost.lua");

/// What a take found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// Not this take's to report: the session exists again, or another take claimed its end.
    NotOurs,
    /// Claimed, with the final items.
    Items(Items),
    /// Claimed, but the final items are gone (or undecodable): reported as
    /// `EndReason::ExpiredItemsLost`.
    Lost,
}

/// Claims the end of `key` with `token` (unique per take; the same to repeat a take whose reply
/// was lost) and takes its final items.
pub(crate) async fn run(
    conn: &mut Connection, errors: &ErrorContext, key: &SessionKey, token: &str,
) -> Result<Taken> {
    let keys = Keys::new(key);
    let mut invocation = on_session(&SCRIPT, &keys);
    invocation.key(keys.ended()).arg(token);
    let reply: Value = invocation
        .invoke_async(conn)
        .await
        .map_err(|e| errors.map_on(Operation::ExpiryEvents, key, e))?;
    match reply {
        Value::Int(0) => Ok(Taken::NotOurs),
        Value::Array(parts) => match parts.as_slice() {
            [Value::Int(1), Value::BulkString(value)] => match layout::items(key, value) {
                Ok(items) => Ok(Taken::Items(items)),
                Err(err) => {
                    // Claimed and gone from the server: reported, as lost, rather than dropped.
                    tracing::warn!(error = %err, "the final items of an expired session could not be decoded");
                    Ok(Taken::Lost)
                }
            },
            [Value::Int(1)] => Ok(Taken::Lost),
            _ => Err(bad_reply(Operation::ExpiryEvents, "unknown take outcome")),
        },
        _ => Err(bad_reply(Operation::ExpiryEvents, "unknown take outcome")),
    }
}

/// Claims the end of `key` with `token` without taking its items (`claim_lost.lua`), for a take
/// that failed in a way a repeat would not cure (the session's value of another type, a reply
/// this version cannot read): `true` when the end is this take's to report (as
/// `ExpiredItemsLost`), `false` when the session is alive again or another take claimed its end.
pub(crate) async fn claim_lost(
    conn: &mut Connection, errors: &ErrorContext, key: &SessionKey, token: &str,
) -> Result<bool> {
    let keys = Keys::new(key);
    let claimed: i64 = CLAIM_LOST
        .key(&keys.alive)
        .key(keys.ended())
        .key(&keys.session)
        .arg(token)
        .invoke_async(conn)
        .await
        .map_err(|e| errors.map_on(Operation::ExpiryEvents, key, e))?;
    Ok(claimed == 1)
}
