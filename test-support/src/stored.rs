//! Checks shared by the backends' fuzz tests of stored bytes (`backend-redis/tests/fuzz_stored.rs`,
//! `backend-sql/tests/fuzz_stored.rs`): what a store hands out, compared with what a reference
//! decoder makes of the same bytes. Each check answers `Err` with what went wrong, for the caller's
//! test runner to report (`TestCaseError::fail` under proptest).

use std::collections::BTreeMap;
use std::time::Duration;

use session_core::{
    CommitOutcome, Delta, Error, Items, LockToken, ReadOutcome, SessionKey, SessionStore,
};

/// A snapshot's items as plain names and bytes, the form a reference decoder produces.
pub fn plain(items: &Items) -> BTreeMap<String, Vec<u8>> {
    items
        .iter()
        .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
        .collect()
}

/// `Ok` when `err` is `Error::Corrupt` naming `key`'s session (its application and id prefix) on
/// `backend`.
///
/// # Errors
/// Any other error, or a `Corrupt` naming another backend or session.
pub fn names_the_session(err: &Error, key: &SessionKey, backend: &str) -> Result<(), String> {
    match err {
        Error::Corrupt {
            backend: b,
            app,
            id_prefix,
            ..
        } if *b == backend && app == key.app().as_str() && id_prefix == key.id().prefix() => Ok(()),
        Error::Corrupt { .. } => Err(format!("Corrupt names another session: {err:?}")),
        other => Err(format!("not Corrupt: {other:?}")),
    }
}

/// Commits `delta` on `key`, whose lock `token` holds (timeout 60 s), then reads the session
/// back: `Ok` when the commit succeeded and the read finds exactly `expected`, the items before
/// the commit with the delta applied.
///
/// # Errors
/// Any other commit outcome, or a read that does not find exactly `expected`.
pub async fn commit_reads_back<S: SessionStore + ?Sized>(
    store: &S, key: &SessionKey, token: LockToken, delta: &Delta,
    expected: &BTreeMap<String, Vec<u8>>,
) -> Result<(), String> {
    let committed = store
        .commit(key, token, delta, Duration::from_secs(60))
        .await;
    if !matches!(committed, Ok(CommitOutcome::Committed)) {
        return Err(format!("commit: {committed:?}"));
    }
    match store.read(key).await {
        Ok(ReadOutcome::Found(snap)) if plain(&snap.items) == *expected => Ok(()),
        Ok(ReadOutcome::Found(snap)) => Err(format!(
            "the commit lost items: read {:?}, expected {expected:?}",
            plain(&snap.items)
        )),
        other => Err(format!("read after commit: {other:?}")),
    }
}
