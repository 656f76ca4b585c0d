//! Helpers shared by this crate's unit tests.

use std::time::Duration;

use session_core::{
    AcquireOutcome, AppName, ItemValue, Items, LockToken, ReadOutcome, SessionId, SessionKey,
    SessionStore, Snapshot,
};

use crate::MemoryStore;

/// A lock TTL and session timeout no unit test outlives.
pub(crate) const LONG: Duration = Duration::from_secs(60);

/// A fresh key in application `app`.
pub(crate) fn key_in(app: &str) -> SessionKey {
    SessionKey::new(AppName::new(app).unwrap(), SessionId::generate().unwrap())
}

pub(crate) fn value(bytes: &[u8]) -> ItemValue {
    ItemValue::from_bytes(bytes.to_vec())
}

pub(crate) fn items(pairs: &[(&str, &[u8])]) -> Items {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), value(v)))
        .collect()
}

/// Acquires `key` with a fresh token; panics unless `Acquired`.
pub(crate) async fn locked(store: &MemoryStore, key: &SessionKey) -> LockToken {
    let token = LockToken::generate().unwrap();
    match store.acquire(key, token, LONG).await.unwrap() {
        AcquireOutcome::Acquired(_) => token,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// Reads `key`; panics unless `Found`.
pub(crate) async fn found(store: &MemoryStore, key: &SessionKey) -> Snapshot {
    match store.read(key).await.unwrap() {
        ReadOutcome::Found(s) => s,
        other => panic!("expected Found, got {other:?}"),
    }
}

/// A store holding one session under `key` with item `a` = `1`, unlocked.
pub(crate) async fn seeded(key: &SessionKey) -> MemoryStore {
    let store = MemoryStore::new();
    let out = store.create(key, &items(&[("a", b"1")]), LONG, true).await;
    assert_eq!(out.unwrap(), session_core::CreateOutcome::Created);
    store
}
