//! Helpers shared by the behaviours, and [`FaultyStore`], the fault-injecting decorator the
//! policy behaviours use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Failed, Harness, check};
use crate::{
    AcquireOutcome, Capabilities, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, Error,
    ExpiryEvents, ItemValue, Items, LockToken, Operation, ReadOutcome, ReleaseOutcome,
    ReleaseWatch, RemoveOutcome, SessionId, SessionKey, SessionStore, Snapshot, TouchOutcome,
    decode_value, encode_value,
};

/// A long lock TTL: locks in these behaviours are never stale unless a behaviour says so.
pub(super) const LONG_TTL: Duration = Duration::from_secs(600);
/// A long session timeout, for behaviours that are not about expiry.
pub(super) const LONG: Duration = Duration::from_secs(600);
/// The timeout of sliding-expiry behaviours, and the step between accesses (well under it).
pub(super) const SLIDE_TIMEOUT: Duration = Duration::from_millis(1500);
pub(super) const SLIDE_STEP: Duration = Duration::from_millis(1000);
/// A session timeout that has surely passed after [`EXPIRE_WAIT`].
pub(super) const SHORT: Duration = Duration::from_millis(300);
pub(super) const EXPIRE_WAIT: Duration = Duration::from_millis(800);

pub(super) fn val<T: Serialize>(v: T) -> ItemValue {
    encode_value("item", &v).unwrap_or_else(|_| ItemValue::from_bytes(Vec::new()))
}

pub(super) fn items<T: Serialize + Copy>(pairs: &[(&str, T)]) -> Items {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), val(*v)))
        .collect()
}

pub(super) fn get<T: DeserializeOwned>(items: &Items, name: &str) -> Result<Option<T>, Failed> {
    items
        .get(name)
        .map(|v| decode_value(name, v))
        .transpose()
        .map_err(Failed::from)
}

pub(super) async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Creates an initialized session with `items` and `timeout`; fails unless `Created`.
pub(super) async fn seed(
    h: &Harness,
    items: &Items,
    timeout: Duration,
) -> Result<SessionKey, Failed> {
    let key = h.key()?;
    let out = h.store().create(&key, items, timeout, true).await?;
    check!(
        out == CreateOutcome::Created,
        "create of a fresh id: expected Created, got {out:?}"
    );
    Ok(key)
}

/// Acquires `key`; fails unless `Acquired`. Returns the snapshot and token.
pub(super) async fn lock(h: &Harness, key: &SessionKey) -> Result<(Snapshot, LockToken), Failed> {
    match h
        .store()
        .acquire(key, LockToken::generate()?, LONG_TTL)
        .await?
    {
        AcquireOutcome::Acquired(s) => match s.lock {
            Some(t) => Ok((s, t)),
            None => Err(Failed::new(
                "SPEC §2: Acquired snapshot carries no lock token",
            )),
        },
        other => Err(Failed::new(format!(
            "acquire of an unlocked session: expected Acquired, got {other:?}"
        ))),
    }
}

/// Reads `key`; fails unless `Found`.
pub(super) async fn found(h: &Harness, key: &SessionKey) -> Result<Snapshot, Failed> {
    match h.store().read(key).await? {
        ReadOutcome::Found(s) => Ok(s),
        other => Err(Failed::new(format!("read: expected Found, got {other:?}"))),
    }
}

/// Whether `key` reads as `Missing`.
pub(super) async fn is_missing(h: &Harness, key: &SessionKey) -> Result<bool, Failed> {
    Ok(matches!(h.store().read(key).await?, ReadOutcome::Missing))
}

/// A decorator that injects faults: `fail_before(n)` fails the next `n` operations before they
/// reach the store; `lose_reply(n)` lets the next `n` operations reach the store and then reports a
/// transient failure, as when a reply is lost on the wire; `delay(n, by)` makes the next `n`
/// operations slow.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn SessionStore>,
    fail_before: AtomicU32,
    lose_reply: AtomicU32,
    delay: AtomicU32,
    delay_by: std::sync::Mutex<Duration>,
    calls: AtomicU32,
}

impl FaultyStore {
    /// Wraps `inner`, injecting nothing yet.
    pub fn new(inner: Arc<dyn SessionStore>) -> Self {
        Self {
            inner,
            fail_before: AtomicU32::new(0),
            lose_reply: AtomicU32::new(0),
            delay: AtomicU32::new(0),
            delay_by: std::sync::Mutex::new(Duration::ZERO),
            calls: AtomicU32::new(0),
        }
    }

    /// Fails the next `n` operations without reaching the store.
    pub fn fail_before(&self, n: u32) {
        self.fail_before.store(n, Ordering::SeqCst);
    }

    /// Lets the next `n` operations reach the store, then reports them failed.
    pub fn lose_reply(&self, n: u32) {
        self.lose_reply.store(n, Ordering::SeqCst);
    }

    /// Delays the next `n` operations by `by` before they reach the store (a slow server).
    pub fn delay(&self, n: u32, by: Duration) {
        *self
            .delay_by
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = by;
        self.delay.store(n, Ordering::SeqCst);
    }

    /// How many operations were attempted through this decorator.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    async fn wrap<T>(
        &self,
        operation: Operation,
        fut: impl std::future::Future<Output = crate::Result<T>>,
    ) -> crate::Result<T> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = || Error::Unavailable {
            backend: "faulty",
            operation,
            source: "injected transient failure".into(),
        };
        if Self::take(&self.fail_before) {
            return Err(fail());
        }
        if Self::take(&self.delay) {
            let by = *self
                .delay_by
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tokio::time::sleep(by).await;
        }
        let out = fut.await?;
        if Self::take(&self.lose_reply) {
            return Err(fail());
        }
        Ok(out)
    }
}

#[async_trait]
impl SessionStore for FaultyStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &SessionKey) -> crate::Result<ReadOutcome> {
        self.wrap(Operation::Read, self.inner.read(key)).await
    }
    async fn acquire(
        &self,
        key: &SessionKey,
        token: LockToken,
        ttl: Duration,
    ) -> crate::Result<AcquireOutcome> {
        self.wrap(Operation::Acquire, self.inner.acquire(key, token, ttl))
            .await
    }
    async fn commit(
        &self,
        key: &SessionKey,
        token: LockToken,
        delta: &Delta,
        timeout: Duration,
    ) -> crate::Result<CommitOutcome> {
        self.wrap(
            Operation::Commit,
            self.inner.commit(key, token, delta, timeout),
        )
        .await
    }
    async fn release(&self, key: &SessionKey, token: LockToken) -> crate::Result<ReleaseOutcome> {
        self.wrap(Operation::Release, self.inner.release(key, token))
            .await
    }
    async fn create(
        &self,
        key: &SessionKey,
        items: &Items,
        timeout: Duration,
        initialized: bool,
    ) -> crate::Result<CreateOutcome> {
        self.wrap(
            Operation::Create,
            self.inner.create(key, items, timeout, initialized),
        )
        .await
    }
    async fn remove(&self, key: &SessionKey, token: LockToken) -> crate::Result<RemoveOutcome> {
        self.wrap(Operation::Remove, self.inner.remove(key, token))
            .await
    }
    async fn touch(&self, key: &SessionKey) -> crate::Result<TouchOutcome> {
        self.wrap(Operation::Touch, self.inner.touch(key)).await
    }
    async fn write_concurrent(
        &self,
        key: &SessionKey,
        delta: &Delta,
        timeout: Duration,
    ) -> crate::Result<CommitOutcome> {
        self.wrap(
            Operation::WriteConcurrent,
            self.inner.write_concurrent(key, delta, timeout),
        )
        .await
    }
    async fn delete(&self, key: &SessionKey) -> crate::Result<RemoveOutcome> {
        self.wrap(Operation::Delete, self.inner.delete(key)).await
    }
    async fn change_id(
        &self,
        key: &SessionKey,
        new_id: SessionId,
        token: LockToken,
    ) -> crate::Result<ChangeIdOutcome> {
        self.wrap(
            Operation::ChangeId,
            self.inner.change_id(key, new_id, token),
        )
        .await
    }
    async fn purge_expired(&self, batch: usize) -> crate::Result<u64> {
        self.wrap(Operation::PurgeExpired, self.inner.purge_expired(batch))
            .await
    }
    async fn watch_release(&self, key: &SessionKey) -> crate::Result<ReleaseWatch> {
        self.wrap(Operation::WatchRelease, self.inner.watch_release(key))
            .await
    }
    async fn expiry_events(&self) -> crate::Result<ExpiryEvents> {
        self.wrap(Operation::ExpiryEvents, self.inner.expiry_events())
            .await
    }
}

/// A decorator that hides a store's optional capabilities: it declares none and answers
/// `Unsupported` for them. Running the suite through it exercises the paths every store without
/// those capabilities takes: the manager's lock polling and its `renew_id` fallback.
#[derive(Debug)]
pub struct WithoutCapabilities<S>(pub S);

#[async_trait]
impl<S: SessionStore> SessionStore for WithoutCapabilities<S> {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
    async fn read(&self, key: &SessionKey) -> crate::Result<ReadOutcome> {
        self.0.read(key).await
    }
    async fn acquire(
        &self,
        key: &SessionKey,
        token: LockToken,
        ttl: Duration,
    ) -> crate::Result<AcquireOutcome> {
        self.0.acquire(key, token, ttl).await
    }
    async fn commit(
        &self,
        key: &SessionKey,
        token: LockToken,
        delta: &Delta,
        timeout: Duration,
    ) -> crate::Result<CommitOutcome> {
        self.0.commit(key, token, delta, timeout).await
    }
    async fn release(&self, key: &SessionKey, token: LockToken) -> crate::Result<ReleaseOutcome> {
        self.0.release(key, token).await
    }
    async fn create(
        &self,
        key: &SessionKey,
        items: &Items,
        timeout: Duration,
        initialized: bool,
    ) -> crate::Result<CreateOutcome> {
        self.0.create(key, items, timeout, initialized).await
    }
    async fn remove(&self, key: &SessionKey, token: LockToken) -> crate::Result<RemoveOutcome> {
        self.0.remove(key, token).await
    }
    async fn touch(&self, key: &SessionKey) -> crate::Result<TouchOutcome> {
        self.0.touch(key).await
    }
    async fn write_concurrent(
        &self,
        key: &SessionKey,
        delta: &Delta,
        timeout: Duration,
    ) -> crate::Result<CommitOutcome> {
        self.0.write_concurrent(key, delta, timeout).await
    }
    async fn delete(&self, key: &SessionKey) -> crate::Result<RemoveOutcome> {
        self.0.delete(key).await
    }
    async fn change_id(
        &self,
        _: &SessionKey,
        _: SessionId,
        _: LockToken,
    ) -> crate::Result<ChangeIdOutcome> {
        Err(self.unsupported(Operation::ChangeId))
    }
    async fn purge_expired(&self, _: usize) -> crate::Result<u64> {
        Err(self.unsupported(Operation::PurgeExpired))
    }
    async fn watch_release(&self, _: &SessionKey) -> crate::Result<ReleaseWatch> {
        Err(self.unsupported(Operation::WatchRelease))
    }
    async fn expiry_events(&self) -> crate::Result<ExpiryEvents> {
        Err(self.unsupported(Operation::ExpiryEvents))
    }
}

impl<S: SessionStore> WithoutCapabilities<S> {
    fn unsupported(&self, operation: Operation) -> Error {
        Error::Unsupported {
            backend: self.0.backend(),
            operation,
        }
    }
}
