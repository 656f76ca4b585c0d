//! A counting decorator: a `SessionStore` that counts the calls (one round trip each, by contract)
//! and the item bytes (names + values) sent in each call's arguments, and can log the sequence of
//! operations so tests can prove every backend receives the same calls.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use session_core::{
    AcquireOutcome, Capabilities, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta,
    ExpiryEvents, Items, LockToken, ReadOutcome, ReleaseOutcome, ReleaseWatch, RemoveOutcome,
    Result, SessionId, SessionKey, SessionStore, TouchOutcome, items_size,
};

/// Wraps a store, counting calls and bytes sent.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn SessionStore>,
    calls: AtomicU64,
    bytes: AtomicU64,
    logging: AtomicBool,
    log: Mutex<Vec<&'static str>>,
}

impl CountingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn SessionStore>) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            logging: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        }
    }

    /// Starts or stops logging operation names (for tests; it costs a lock per call).
    pub fn set_logging(&self, on: bool) {
        self.logging.store(on, Ordering::Relaxed);
    }

    /// Takes the logged operation names.
    pub fn take_log(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Calls and bytes so far, and resets both to zero.
    pub fn take_counts(&self) -> (u64, u64) {
        (
            self.calls.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }

    fn count(&self, op: &'static str, bytes: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if self.logging.load(Ordering::Relaxed) {
            self.log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(op);
        }
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &SessionKey) -> Result<ReadOutcome> {
        self.count("read", 0);
        self.inner.read(key).await
    }
    async fn acquire(
        &self,
        key: &SessionKey,
        token: LockToken,
        lock_ttl: Duration,
    ) -> Result<AcquireOutcome> {
        self.count("acquire", 0);
        self.inner.acquire(key, token, lock_ttl).await
    }
    async fn commit(
        &self,
        key: &SessionKey,
        token: LockToken,
        delta: &Delta,
        timeout: Duration,
    ) -> Result<CommitOutcome> {
        self.count("commit", delta.size());
        self.inner.commit(key, token, delta, timeout).await
    }
    async fn release(&self, key: &SessionKey, token: LockToken) -> Result<ReleaseOutcome> {
        self.count("release", 0);
        self.inner.release(key, token).await
    }
    async fn create(
        &self,
        key: &SessionKey,
        items: &Items,
        timeout: Duration,
        initialized: bool,
    ) -> Result<CreateOutcome> {
        self.count("create", items_size(items));
        self.inner.create(key, items, timeout, initialized).await
    }
    async fn remove(&self, key: &SessionKey, token: LockToken) -> Result<RemoveOutcome> {
        self.count("remove", 0);
        self.inner.remove(key, token).await
    }
    async fn touch(&self, key: &SessionKey) -> Result<TouchOutcome> {
        self.count("touch", 0);
        self.inner.touch(key).await
    }
    async fn write_concurrent(
        &self,
        key: &SessionKey,
        delta: &Delta,
        timeout: Duration,
    ) -> Result<CommitOutcome> {
        self.count("write_concurrent", delta.size());
        self.inner.write_concurrent(key, delta, timeout).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<RemoveOutcome> {
        self.count("delete", 0);
        self.inner.delete(key).await
    }
    async fn change_id(
        &self,
        key: &SessionKey,
        new_id: SessionId,
        token: LockToken,
    ) -> Result<ChangeIdOutcome> {
        self.count("change_id", 0);
        self.inner.change_id(key, new_id, token).await
    }
    async fn purge_expired(&self, batch: usize) -> Result<u64> {
        self.count("purge_expired", 0);
        self.inner.purge_expired(batch).await
    }
    async fn watch_release(&self, key: &SessionKey) -> Result<ReleaseWatch> {
        self.count("watch_release", 0);
        self.inner.watch_release(key).await
    }
    async fn expiry_events(&self) -> Result<ExpiryEvents> {
        self.count("expiry_events", 0);
        self.inner.expiry_events().await
    }
}
