//! Store decorators: one mechanism for every store that wraps another (docs/style.md H18).
//!
//! A decorator (retries, fault injection, hiding capabilities, counting calls...) is a [`StoreLayer`]: it
//! sees each operation as one value, a [`Call`], decides what to do around it, and answers with a
//! [`Reply`]. [`Layered`] turns a store and a layer into a store again. The methods of
//! [`SessionStore`] are forwarded in exactly one place (the `forward_store!` macro of this module,
//! used for `Layered` and for `Arc<S>`), so a layer is as short as what it adds.
//!
//! ```
//! use session_core::{Call, StoreLayer, Layered, Reply, Result, SessionStore};
//!
//! /// Counts the calls that reach the store.
//! #[derive(Debug, Default)]
//! struct Counted(std::sync::atomic::AtomicU64);
//!
//! impl StoreLayer for Counted {
//!     async fn around(&self, call: Call<'_>, inner: &dyn SessionStore) -> Result<Reply> {
//!         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!         call.run(inner).await
//!     }
//! }
//!
//! fn counted<S: SessionStore>(store: S) -> Layered<S, Counted> {
//!     Layered::new(store, Counted::default())
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Operation, Result};
use crate::id::{LockToken, SessionId};
use crate::model::{
    AcquireOutcome, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, Items, ReadOutcome,
    ReleaseOutcome, RemoveOutcome, TouchOutcome,
};
use crate::names::SessionKey;
use crate::store::{Capabilities, ExpiryEvents, ReleaseWatch, SessionStore};

/// One store operation with its arguments, as a layer sees it. It is `Copy`: a layer may run it
/// more than once (the retry layer does).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Call<'a> {
    /// [`SessionStore::read`].
    Read {
        /// The session.
        key: &'a SessionKey,
    },
    /// [`SessionStore::acquire`].
    Acquire {
        /// The session.
        key: &'a SessionKey,
        /// The caller's lock token.
        token: LockToken,
        /// The lock TTL.
        lock_ttl: Duration,
    },
    /// [`SessionStore::commit`].
    Commit {
        /// The session.
        key: &'a SessionKey,
        /// The holder's lock token.
        token: LockToken,
        /// What changed.
        delta: &'a Delta,
        /// The session's timeout from now on.
        timeout: Duration,
    },
    /// [`SessionStore::release`].
    Release {
        /// The session.
        key: &'a SessionKey,
        /// The holder's lock token.
        token: LockToken,
    },
    /// [`SessionStore::create`].
    Create {
        /// The session.
        key: &'a SessionKey,
        /// Its first items.
        items: &'a Items,
        /// Its timeout.
        timeout: Duration,
        /// `false` to report `initialize` on the first access.
        initialized: bool,
    },
    /// [`SessionStore::remove`].
    Remove {
        /// The session.
        key: &'a SessionKey,
        /// The holder's lock token.
        token: LockToken,
    },
    /// [`SessionStore::touch`].
    Touch {
        /// The session.
        key: &'a SessionKey,
    },
    /// [`SessionStore::write_concurrent`].
    WriteConcurrent {
        /// The session.
        key: &'a SessionKey,
        /// What changed.
        delta: &'a Delta,
        /// The session's timeout from now on.
        timeout: Duration,
    },
    /// [`SessionStore::delete`].
    Delete {
        /// The session.
        key: &'a SessionKey,
    },
    /// [`SessionStore::change_id`].
    ChangeId {
        /// The session.
        key: &'a SessionKey,
        /// Its new id.
        new_id: SessionId,
        /// The holder's lock token.
        token: LockToken,
    },
    /// [`SessionStore::purge_expired`].
    PurgeExpired {
        /// At most this many sessions.
        batch: usize,
    },
    /// [`SessionStore::watch_release`].
    WatchRelease {
        /// The session.
        key: &'a SessionKey,
    },
    /// [`SessionStore::expiry_events`].
    ExpiryEvents,
}

impl<'a> Call<'a> {
    /// Which operation this is.
    pub const fn operation(&self) -> Operation {
        match self {
            Self::Read { .. } => Operation::Read,
            Self::Acquire { .. } => Operation::Acquire,
            Self::Commit { .. } => Operation::Commit,
            Self::Release { .. } => Operation::Release,
            Self::Create { .. } => Operation::Create,
            Self::Remove { .. } => Operation::Remove,
            Self::Touch { .. } => Operation::Touch,
            Self::WriteConcurrent { .. } => Operation::WriteConcurrent,
            Self::Delete { .. } => Operation::Delete,
            Self::ChangeId { .. } => Operation::ChangeId,
            Self::PurgeExpired { .. } => Operation::PurgeExpired,
            Self::WatchRelease { .. } => Operation::WatchRelease,
            Self::ExpiryEvents => Operation::ExpiryEvents,
        }
    }

    /// The session the call is about, if it is about one.
    pub const fn key(&self) -> Option<&'a SessionKey> {
        match *self {
            Self::Read { key }
            | Self::Acquire { key, .. }
            | Self::Commit { key, .. }
            | Self::Release { key, .. }
            | Self::Create { key, .. }
            | Self::Remove { key, .. }
            | Self::Touch { key }
            | Self::WriteConcurrent { key, .. }
            | Self::Delete { key }
            | Self::ChangeId { key, .. }
            | Self::WatchRelease { key } => Some(key),
            Self::PurgeExpired { .. } | Self::ExpiryEvents => None,
        }
    }

    /// The item bytes (names and values) the call sends: the delta of a write, the items of a
    /// create, zero otherwise.
    pub fn item_bytes(&self) -> usize {
        match self {
            Self::Commit { delta, .. } | Self::WriteConcurrent { delta, .. } => delta.size(),
            Self::Create { items, .. } => crate::model::items_size(items),
            _ => 0,
        }
    }

    /// Performs the call on `store`.
    ///
    /// # Errors
    /// Whatever the store's operation returns.
    pub async fn run<S: SessionStore + ?Sized>(self, store: &S) -> Result<Reply> {
        Ok(match self {
            Self::Read { key } => Reply::Read(store.read(key).await?),
            Self::Acquire {
                key,
                token,
                lock_ttl,
            } => Reply::Acquire(store.acquire(key, token, lock_ttl).await?),
            Self::Commit {
                key,
                token,
                delta,
                timeout,
            } => Reply::Commit(store.commit(key, token, delta, timeout).await?),
            Self::Release { key, token } => Reply::Release(store.release(key, token).await?),
            Self::Create {
                key,
                items,
                timeout,
                initialized,
            } => Reply::Create(store.create(key, items, timeout, initialized).await?),
            Self::Remove { key, token } => Reply::Remove(store.remove(key, token).await?),
            Self::Touch { key } => Reply::Touch(store.touch(key).await?),
            Self::WriteConcurrent {
                key,
                delta,
                timeout,
            } => Reply::Commit(store.write_concurrent(key, delta, timeout).await?),
            Self::Delete { key } => Reply::Remove(store.delete(key).await?),
            Self::ChangeId { key, new_id, token } => {
                Reply::ChangeId(store.change_id(key, new_id, token).await?)
            }
            Self::PurgeExpired { batch } => Reply::Purged(store.purge_expired(batch).await?),
            Self::WatchRelease { key } => Reply::Watch(store.watch_release(key).await?),
            Self::ExpiryEvents => Reply::Events(store.expiry_events().await?),
        })
    }
}

/// What a [`Call`] answered: one variant per outcome type. `commit` and `write_concurrent` answer
/// [`Reply::Commit`]; `remove` and `delete` answer [`Reply::Remove`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Reply {
    /// From `read`.
    Read(ReadOutcome),
    /// From `acquire`.
    Acquire(AcquireOutcome),
    /// From `commit` or `write_concurrent`.
    Commit(CommitOutcome),
    /// From `release`.
    Release(ReleaseOutcome),
    /// From `create`.
    Create(CreateOutcome),
    /// From `remove` or `delete`.
    Remove(RemoveOutcome),
    /// From `touch`.
    Touch(TouchOutcome),
    /// From `change_id`.
    ChangeId(ChangeIdOutcome),
    /// From `purge_expired`: how many sessions were deleted.
    Purged(u64),
    /// From `watch_release`.
    Watch(ReleaseWatch),
    /// From `expiry_events`.
    Events(ExpiryEvents),
}

impl Reply {
    /// A short name for the outcome, for tracing (`"found"`, `"lock_lost"`...); never session data.
    pub fn outcome_name(&self) -> &'static str {
        match self {
            Self::Read(ReadOutcome::Missing)
            | Self::Acquire(AcquireOutcome::Missing)
            | Self::Commit(CommitOutcome::Missing)
            | Self::Remove(RemoveOutcome::Missing)
            | Self::Touch(TouchOutcome::Missing) => "missing",
            Self::Read(ReadOutcome::Locked(_)) | Self::Acquire(AcquireOutcome::Locked(_)) => {
                "locked"
            }
            Self::Read(ReadOutcome::Found(_)) => "found",
            Self::Acquire(AcquireOutcome::Acquired(_)) => "acquired",
            Self::Commit(CommitOutcome::Committed) => "committed",
            Self::Commit(CommitOutcome::LockLost)
            | Self::Release(ReleaseOutcome::LockLost)
            | Self::Remove(RemoveOutcome::LockLost)
            | Self::ChangeId(ChangeIdOutcome::LockLost) => "lock_lost",
            Self::Release(ReleaseOutcome::Released) => "released",
            Self::Create(CreateOutcome::Created) => "created",
            Self::Create(CreateOutcome::AlreadyExists)
            | Self::ChangeId(ChangeIdOutcome::AlreadyExists) => "already_exists",
            Self::Remove(RemoveOutcome::Removed) => "removed",
            Self::Touch(TouchOutcome::Touched) => "touched",
            Self::ChangeId(ChangeIdOutcome::Changed) => "changed",
            Self::Purged(_) | Self::Watch(_) | Self::Events(_) => "ok",
            #[allow(unreachable_patterns)]
            _ => "other",
        }
    }

    fn mismatch(self, backend: &'static str, operation: Operation) -> Error {
        Error::Backend {
            backend,
            operation,
            source: format!(
                "a store layer answered `{}` to `{}`",
                self.outcome_name(),
                operation.as_str()
            )
            .into(),
        }
    }
}

macro_rules! reply_into {
    ($($fn:ident => $variant:ident($ty:ty),)*) => {
        impl Reply {$(
            #[doc = concat!("The outcome of a [`Reply::", stringify!($variant), "`], or an error naming `operation` if a layer answered another kind.")]
            ///
            /// # Errors
            /// [`Error::Backend`] if the reply is of another kind (a layer bug).
            pub fn $fn(self, backend: &'static str, operation: Operation) -> Result<$ty> {
                match self {
                    Self::$variant(outcome) => Ok(outcome),
                    other => Err(other.mismatch(backend, operation)),
                }
            }
        )*}
    };
}

reply_into! {
    into_read => Read(ReadOutcome),
    into_acquire => Acquire(AcquireOutcome),
    into_commit => Commit(CommitOutcome),
    into_release => Release(ReleaseOutcome),
    into_create => Create(CreateOutcome),
    into_remove => Remove(RemoveOutcome),
    into_touch => Touch(TouchOutcome),
    into_change_id => ChangeId(ChangeIdOutcome),
    into_purged => Purged(u64),
    into_watch => Watch(ReleaseWatch),
    into_events => Events(ExpiryEvents),
}

/// A store decorator: what it adds around each operation of the store it wraps.
///
/// Every method has a default that passes straight through, so a layer overrides only what it
/// changes. Wrap a store in one with [`Layered::new`]; the result is a [`SessionStore`] again, so
/// layers stack.
pub trait StoreLayer: fmt::Debug + Send + Sync + 'static {
    /// The backend name the wrapped store reports (default: the inner store's).
    fn backend(&self, inner: &dyn SessionStore) -> &'static str {
        inner.backend()
    }

    /// The capabilities the wrapped store declares (default: the inner store's). A layer that
    /// hides a capability must also answer its operations with `Unsupported`.
    fn capabilities(&self, inner: &dyn SessionStore) -> Capabilities {
        inner.capabilities()
    }

    /// Performs `call` on `inner` with whatever this layer adds: run it with
    /// [`Call::run`] (once, several times, or not at all) and return a reply of the call's kind.
    /// Implement it as an `async fn`; its future is not boxed, so a layer costs no allocation.
    ///
    /// # Errors
    /// Whatever the layer or the inner store reports.
    fn around(
        &self, call: Call<'_>, inner: &dyn SessionStore,
    ) -> impl Future<Output = Result<Reply>> + Send {
        call.run(inner)
    }
}

/// A store wrapped in a [`StoreLayer`]: a [`SessionStore`] whose every operation goes through
/// [`StoreLayer::around`].
#[derive(Debug)]
pub struct Layered<S, L> {
    inner: S,
    layer: L,
}

impl<S: SessionStore, L: StoreLayer> Layered<S, L> {
    /// Wraps `inner` in `layer`.
    pub fn new(inner: S, layer: L) -> Self {
        Self { inner, layer }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The layer.
    pub fn layer(&self) -> &L {
        &self.layer
    }
}

/// The one hand-written forwarding of the whole [`SessionStore`] trait: every method builds its
/// [`Call`], hands it to `$run` (an expression of `$this` and `$call` returning a future of
/// `Result<Reply>`), and unpacks the reply.
macro_rules! forward_store {
    (
        impl [$($generics:tt)*] for $ty:ty;
        backend($b:ident) = $backend:expr;
        capabilities($c:ident) = $caps:expr;
        refresh_window($w:ident) = $window:expr;
        run($this:ident, $call:ident) = $run:expr;
    ) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<$($generics)*> SessionStore for $ty {
            fn backend(&self) -> &'static str {
                let $b = self;
                $backend
            }
            fn capabilities(&self) -> Capabilities {
                let $c = self;
                $caps
            }
            fn refresh_window(&self) -> $crate::RefreshWindow {
                let $w = self;
                $window
            }
            async fn read(&self, key: &SessionKey) -> Result<ReadOutcome> {
                let ($this, $call) = (self, Call::Read { key });
                $run.await?.into_read(self.backend(), Operation::Read)
            }
            async fn acquire(
                &self,
                key: &SessionKey,
                token: LockToken,
                lock_ttl: Duration,
            ) -> Result<AcquireOutcome> {
                let ($this, $call) = (self, Call::Acquire { key, token, lock_ttl });
                $run.await?.into_acquire(self.backend(), Operation::Acquire)
            }
            async fn commit(
                &self,
                key: &SessionKey,
                token: LockToken,
                delta: &Delta,
                timeout: Duration,
            ) -> Result<CommitOutcome> {
                let ($this, $call) = (self, Call::Commit { key, token, delta, timeout });
                $run.await?.into_commit(self.backend(), Operation::Commit)
            }
            async fn release(&self, key: &SessionKey, token: LockToken) -> Result<ReleaseOutcome> {
                let ($this, $call) = (self, Call::Release { key, token });
                $run.await?.into_release(self.backend(), Operation::Release)
            }
            async fn create(
                &self,
                key: &SessionKey,
                items: &Items,
                timeout: Duration,
                initialized: bool,
            ) -> Result<CreateOutcome> {
                let ($this, $call) = (self, Call::Create { key, items, timeout, initialized });
                $run.await?.into_create(self.backend(), Operation::Create)
            }
            async fn remove(&self, key: &SessionKey, token: LockToken) -> Result<RemoveOutcome> {
                let ($this, $call) = (self, Call::Remove { key, token });
                $run.await?.into_remove(self.backend(), Operation::Remove)
            }
            async fn touch(&self, key: &SessionKey) -> Result<TouchOutcome> {
                let ($this, $call) = (self, Call::Touch { key });
                $run.await?.into_touch(self.backend(), Operation::Touch)
            }
            async fn write_concurrent(
                &self,
                key: &SessionKey,
                delta: &Delta,
                timeout: Duration,
            ) -> Result<CommitOutcome> {
                let ($this, $call) = (self, Call::WriteConcurrent { key, delta, timeout });
                $run.await?.into_commit(self.backend(), Operation::WriteConcurrent)
            }
            async fn delete(&self, key: &SessionKey) -> Result<RemoveOutcome> {
                let ($this, $call) = (self, Call::Delete { key });
                $run.await?.into_remove(self.backend(), Operation::Delete)
            }
            async fn change_id(
                &self,
                key: &SessionKey,
                new_id: SessionId,
                token: LockToken,
            ) -> Result<ChangeIdOutcome> {
                let ($this, $call) = (self, Call::ChangeId { key, new_id, token });
                $run.await?.into_change_id(self.backend(), Operation::ChangeId)
            }
            async fn purge_expired(&self, batch: usize) -> Result<u64> {
                let ($this, $call) = (self, Call::PurgeExpired { batch });
                $run.await?.into_purged(self.backend(), Operation::PurgeExpired)
            }
            async fn watch_release(&self, key: &SessionKey) -> Result<ReleaseWatch> {
                let ($this, $call) = (self, Call::WatchRelease { key });
                $run.await?.into_watch(self.backend(), Operation::WatchRelease)
            }
            async fn expiry_events(&self) -> Result<ExpiryEvents> {
                let ($this, $call) = (self, Call::ExpiryEvents);
                $run.await?.into_events(self.backend(), Operation::ExpiryEvents)
            }
        }
    };
}
#[cfg(test)]
pub(crate) use forward_store;

forward_store! {
    impl [S: SessionStore, L: StoreLayer] for Layered<S, L>;
    backend(this) = this.layer.backend(&this.inner);
    capabilities(this) = this.layer.capabilities(&this.inner);
    refresh_window(this) = this.inner.refresh_window();
    run(this, call) = this.layer.around(call, &this.inner);
}

forward_store! {
    impl [S: SessionStore + ?Sized] for Arc<S>;
    backend(this) = (**this).backend();
    capabilities(this) = (**this).capabilities();
    refresh_window(this) = (**this).refresh_window();
    run(this, call) = call.run(&**this);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_store::ScriptedStore;

    /// A broken layer: answers every call with a `touch` reply.
    #[derive(Debug)]
    struct WrongKind;

    impl StoreLayer for WrongKind {
        async fn around(&self, _: Call<'_>, _: &dyn SessionStore) -> Result<Reply> {
            Ok(Reply::Touch(TouchOutcome::Touched))
        }
    }

    fn key() -> SessionKey {
        SessionKey::new(crate::AppName::default(), SessionId::generate().unwrap())
    }

    #[tokio::test]
    async fn a_reply_of_the_wrong_kind_is_an_error_naming_the_operation() {
        let store = Layered::new(ScriptedStore::default(), WrongKind);
        match store.read(&key()).await {
            Err(Error::Backend {
                backend, operation, ..
            }) => {
                assert_eq!((backend, operation), ("scripted", Operation::Read));
            }
            other => panic!("expected a Backend error, got {other:?}"),
        }
        assert_eq!(store.touch(&key()).await.unwrap(), TouchOutcome::Touched);
    }

    /// The default layer passes every call through, and stacks.
    #[derive(Debug)]
    struct Nothing;
    impl StoreLayer for Nothing {}

    #[tokio::test]
    async fn default_layers_pass_calls_through_and_stack() {
        let scripted = Arc::new(ScriptedStore::default());
        let store = Layered::new(Layered::new(Arc::clone(&scripted), Nothing), Nothing);
        assert_eq!(store.backend(), "scripted");
        assert_eq!(store.capabilities(), Capabilities::none());
        let k = key();
        assert_eq!(store.touch(&k).await.unwrap(), TouchOutcome::Touched);
        assert_eq!(
            store
                .create(&k, &Items::new(), Duration::ZERO, true)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        assert!(matches!(
            store.purge_expired(1).await,
            Err(Error::Unsupported {
                operation: Operation::PurgeExpired,
                ..
            })
        ));
        let ops: Vec<_> = scripted
            .attempts
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.0)
            .collect();
        assert_eq!(
            ops,
            [Operation::Touch, Operation::Create, Operation::PurgeExpired]
        );
    }
}
