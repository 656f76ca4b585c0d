//! The extractors. Each route picks its access mode by the extractor it takes:
//! [`ExclusiveSession`], [`ReadOnlySession`] or [`ConcurrentSession`]. The session is opened on
//! the first extraction of the request, and the layer ends it after the handler. A route that
//! takes none never opens it: the layer only keeps the client's session alive (one `touch`, see
//! [`SessionLayer`](super::SessionLayer)).
//!
//! Read-only is a type, not a convention: [`ReadOnlySession`] has no method that changes the
//! session, and its [`ReadOnlyGuard`] only dereferences to `&Session`, so a change through it does
//! not compile. The two writing extractors dereference to [`SessionHandle`], whose
//! [`SessionGuard`] dereferences to `&mut Session`.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use session_core::{Access, Error, SessionId, SessionManager};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use super::error::SessionError;

/// Where a request's session lives between the layer and the handler.
pub(crate) enum State {
    /// No extractor has run yet: after the handler, the layer keeps the client's session alive.
    Unopened,
    /// An extractor tried to open the session and failed (its rejection went to the handler); a
    /// later extractor of the request tries again. The route uses the session, so the layer does
    /// not keep it alive.
    OpenFailed,
    /// Opened by an extractor; the layer ends it after the handler.
    Open(session_core::Session),
    /// The layer has ended it (or the request finished without it).
    Ended,
}

/// One request's session slot, put into the request's extensions by the layer.
#[derive(Clone)]
pub(crate) struct RequestSlot {
    pub(crate) manager: SessionManager,
    /// The well-formed id from the cookie, if any (not yet known to exist).
    pub(crate) client_id: Option<SessionId>,
    /// A tokio mutex: `renew_id` holds it across the store call, and the layer waits for the
    /// handler's last use before ending the session.
    pub(crate) state: Arc<Mutex<State>>,
}

impl RequestSlot {
    pub(crate) fn new(manager: SessionManager, client_id: Option<SessionId>) -> Self {
        Self {
            manager,
            client_id,
            state: Arc::new(Mutex::new(State::Unopened)),
        }
    }
}

/// Whether a session opened as `opened` can serve an extractor that wants `wanted`: an exclusive
/// session serves everything, and anything serves reading.
fn compatible(opened: Access, wanted: Access) -> bool {
    opened == wanted || opened == Access::Exclusive || wanted == Access::ReadOnly
}

/// Opens the request's session with `wanted` access on the first extraction, or joins the one an
/// earlier extractor of this request opened; answers the shared slot.
async fn extract(parts: &Parts, wanted: Access) -> Result<Arc<Mutex<State>>, SessionError> {
    let slot = parts
        .extensions
        .get::<RequestSlot>()
        .ok_or(SessionError::MissingLayer)?;
    let mut state = slot.state.lock().await;
    match &*state {
        State::Unopened | State::OpenFailed => {
            let id = slot.client_id.as_ref().map(SessionId::expose);
            // Waits here while another request holds the lock (Exclusive, ReadOnly).
            match slot.manager.open(id, wanted).await {
                Ok(session) => *state = State::Open(session),
                Err(err) => {
                    *state = State::OpenFailed;
                    return Err(err.into());
                }
            }
        }
        State::Open(session) if !compatible(session.access(), wanted) => {
            return Err(SessionError::AccessConflict {
                opened: session.access(),
                wanted,
            });
        }
        State::Open(_) => {}
        State::Ended => return Err(SessionError::Ended),
    }
    Ok(Arc::clone(&slot.state))
}

/// Locks the slot and maps the guard to the open session.
async fn lock_open(
    state: &Arc<Mutex<State>>,
) -> Result<OwnedMappedMutexGuard<State, session_core::Session>, SessionError> {
    let guard: OwnedMutexGuard<State> = Arc::clone(state).lock_owned().await;
    OwnedMutexGuard::try_map(guard, |state| match state {
        State::Open(session) => Some(session),
        _ => None,
    })
    .map_err(|_| SessionError::Ended)
}

/// The request's session as the writing extractors ([`ExclusiveSession`], [`ConcurrentSession`])
/// hand it out: a cheap handle (clones share the session) whose methods lock the session for the
/// duration of one call.
///
/// The layer ends the session after the handler returns (the decision table of
/// `docs/contract.md` §3) and sets or clears the cookie; a session used after that (from a task
/// that outlived the request) answers [`SessionError::Ended`].
///
/// Everything a [`ReadOnlySession`] reads (`id`, `is_new`, `get`) is available on the handle too:
/// it dereferences to the read-only view of the same session.
#[derive(Clone)]
pub struct SessionHandle {
    reader: ReadOnlySession,
    access: Access,
}

impl Deref for SessionHandle {
    type Target = ReadOnlySession;
    fn deref(&self) -> &ReadOnlySession {
        &self.reader
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// The request's session, locked for as long as it is held, through a writing extractor. It
/// dereferences to [`session_core::Session`] mutably, so every method of the core session is
/// available.
pub struct SessionGuard {
    guard: OwnedMappedMutexGuard<State, session_core::Session>,
}

impl fmt::Debug for SessionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SessionGuard").field(&*self.guard).finish()
    }
}

impl Deref for SessionGuard {
    type Target = session_core::Session;
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl DerefMut for SessionGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

impl SessionHandle {
    /// The access mode this extractor asked for: `Exclusive` or `Concurrent`.
    pub fn access(&self) -> Access {
        self.access
    }

    /// A read-only view of the same session, for code that only reads (a helper that takes a
    /// [`ReadOnlySession`] can serve every route).
    pub fn read_only(&self) -> ReadOnlySession {
        self.reader.clone()
    }

    /// Locks the session for direct use of the core [`session_core::Session`] API (several
    /// changes under one lock, `is_initial_access`, `data`, ...): the [`SessionGuard`]
    /// dereferences to `&mut Session`. While it is held, the other methods of this handle (and of
    /// its clones) wait for it, so drop it before calling them; and do not keep it past the
    /// handler (in a spawned task or the response body): the layer waits for it before ending the
    /// session, at most [`SessionLayer::with_end_wait`] (then the request answers 500 and nothing
    /// is saved).
    ///
    /// [`SessionLayer::with_end_wait`]: super::SessionLayer::with_end_wait
    ///
    /// # Errors
    /// [`SessionError::Ended`] after the layer has ended the session.
    pub async fn lock(&self) -> Result<SessionGuard, SessionError> {
        lock_open(&self.reader.state)
            .await
            .map(|guard| SessionGuard { guard })
    }

    /// Sets item `name`, encoding it now; stored when the request ends.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::InvalidName`],
    /// [`session_core::Error::Encode`], [`session_core::Error::SessionTooLarge`].
    pub async fn insert<T: Serialize + Sync + ?Sized>(
        &self, name: &str, value: &T,
    ) -> Result<(), SessionError> {
        Ok(self.lock().await?.insert(name, value)?)
    }

    /// Removes item `name`; returns whether it was there.
    ///
    /// # Errors
    /// [`SessionError::Ended`].
    pub async fn remove(&self, name: &str) -> Result<bool, SessionError> {
        Ok(self.lock().await?.remove(name)?)
    }

    /// Removes every item.
    ///
    /// # Errors
    /// [`SessionError::Ended`].
    pub async fn clear(&self) -> Result<(), SessionError> {
        Ok(self.lock().await?.clear()?)
    }

    /// Changes this session's idle timeout.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::InvalidConfig`] for zero or more than a
    /// year.
    pub async fn set_timeout(&self, timeout: Duration) -> Result<(), SessionError> {
        Ok(self.lock().await?.set_timeout(timeout)?)
    }

    /// Gives the session a fresh id, keeping its data (call it after login: session-fixation
    /// defence). The response carries the new id's cookie; the old id no longer finds the session.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::NotWritable`] unless the session is
    /// exclusive (or new); [`session_core::Error::LockLost`]; store failures.
    pub async fn renew_id(&self) -> Result<SessionId, SessionError> {
        Ok(self.lock().await?.renew_id().await?)
    }

    /// Deletes the session when the request ends (log out); the response clears the cookie.
    ///
    /// # Errors
    /// [`SessionError::Ended`].
    pub async fn abandon(&self) -> Result<(), SessionError> {
        Ok(self.lock().await?.abandon()?)
    }
}

/// The request's session with `ReadOnly` access: no lock; waits while a writer holds the lock, so
/// it never sees a half-finished exclusive request. A cheap handle (clones share the session)
/// whose methods lock the session for the duration of one call.
///
/// It can only read, by type: it has no `insert`, `remove`, `clear`, `set_timeout`, `renew_id` or
/// `abandon`, and [`lock`](Self::lock) hands out a [`ReadOnlyGuard`], which dereferences to
/// `&Session` only. That holds even when another extractor of the same request opened the session
/// `Exclusive`. Reading:
///
/// ```
/// use sessions::web::{ReadOnlySession, SessionError};
///
/// async fn show(session: ReadOnlySession) -> Result<String, SessionError> {
///     let count = session.get::<u64>("count").await?.unwrap_or(0);
///     let timeout = session.lock().await?.timeout();
///     Ok(format!("{count} (expires after {timeout:?} idle)"))
/// }
/// ```
///
/// A change does not compile, through the handle:
///
/// ```compile_fail,E0599
/// use sessions::web::{ReadOnlySession, SessionError};
///
/// async fn set(session: ReadOnlySession) -> Result<(), SessionError> {
///     session.insert("count", &1u64).await
/// }
/// ```
///
/// nor through its guard:
///
/// ```compile_fail,E0596
/// use sessions::web::{ReadOnlySession, SessionError};
///
/// async fn set(session: ReadOnlySession) -> Result<(), SessionError> {
///     Ok(session.lock().await?.insert("count", &1u64)?)
/// }
/// ```
///
/// Rejects with [`SessionError`] (503 when the wait for a writer times out or too many requests
/// wait).
#[derive(Clone)]
pub struct ReadOnlySession {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for ReadOnlySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadOnlySession").finish_non_exhaustive()
    }
}

/// The request's session, locked for as long as it is held, through a [`ReadOnlySession`]. It
/// dereferences to `&`[`session_core::Session`] only: every reading method of the core session
/// (`get`, `names`, `data`, `id`, `timeout`, `is_new`, `is_initial_access`, ...) and none that
/// changes it.
pub struct ReadOnlyGuard {
    guard: OwnedMappedMutexGuard<State, session_core::Session>,
}

impl fmt::Debug for ReadOnlyGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReadOnlyGuard").field(&*self.guard).finish()
    }
}

impl Deref for ReadOnlyGuard {
    type Target = session_core::Session;
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl ReadOnlySession {
    /// The access mode this extractor asked for: always `ReadOnly` (the session itself may have
    /// been opened `Exclusive` or `Concurrent` by another extractor of the request).
    pub fn access(&self) -> Access {
        Access::ReadOnly
    }

    /// Locks the session for direct use of the reading half of the core [`session_core::Session`]
    /// API (`names`, `data`, `timeout`, `is_initial_access`, ...): the [`ReadOnlyGuard`]
    /// dereferences to `&Session`. The rules of [`SessionHandle::lock`] hold: drop the guard
    /// before calling this handle's other methods, and do not keep it past the handler.
    ///
    /// # Errors
    /// [`SessionError::Ended`] after the layer has ended the session.
    pub async fn lock(&self) -> Result<ReadOnlyGuard, SessionError> {
        lock_open(&self.state)
            .await
            .map(|guard| ReadOnlyGuard { guard })
    }

    /// The session's id. A new session's id reaches the client only if the session is stored.
    ///
    /// # Errors
    /// [`SessionError::Ended`].
    pub async fn id(&self) -> Result<SessionId, SessionError> {
        Ok(*self.lock().await?.id())
    }

    /// Whether the session is new (it was not in the store when the request began).
    ///
    /// # Errors
    /// [`SessionError::Ended`].
    pub async fn is_new(&self) -> Result<bool, SessionError> {
        Ok(self.lock().await?.is_new())
    }

    /// Whether the store failed with `throwOnError = false` when the session was opened: it is
    /// empty and will not be saved; [`last_error`](Self::last_error) tells why.
    ///
    /// # Errors
    /// [`SessionError::Ended`].
    pub async fn is_degraded(&self) -> Result<bool, SessionError> {
        Ok(self.lock().await?.is_degraded())
    }

    /// This request's own store failure, absorbed with `throwOnError = false` when the session was
    /// opened (ASP.NET's per-request `LastException`): `Some` exactly when the session is
    /// degraded. Concurrent requests never see each other's. A failure while the layer saves the
    /// session, after the handler, reaches the layers outside [`SessionLayer`] as the response
    /// extension [`LastError`].
    ///
    /// [`SessionLayer`]: super::SessionLayer
    /// [`LastError`]: super::LastError
    ///
    /// # Errors
    /// [`SessionError::Ended`].
    pub async fn last_error(&self) -> Result<Option<Arc<Error>>, SessionError> {
        Ok(self.lock().await?.last_error().cloned())
    }

    /// The value of item `name` decoded as `T`, or `None`.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::Decode`] if the value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, SessionError> {
        Ok(self.lock().await?.get(name)?)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ReadOnlySession {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        extract(parts, Access::ReadOnly)
            .await
            .map(|state| Self { state })
    }
}

/// A writing extractor: a [`SessionHandle`] with the access mode `$access`.
macro_rules! extractor {
    ($(#[$doc:meta])* $name:ident, $access:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(SessionHandle);

        impl Deref for $name {
            type Target = SessionHandle;
            fn deref(&self) -> &SessionHandle {
                &self.0
            }
        }

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = SessionError;

            async fn from_request_parts(
                parts: &mut Parts,
                _state: &S,
            ) -> Result<Self, Self::Rejection> {
                let state = extract(parts, $access).await?;
                Ok(Self(SessionHandle {
                    reader: ReadOnlySession { state },
                    access: $access,
                }))
            }
        }
    };
}

extractor!(
    /// The request's session with `Exclusive` access (the default, as in ASP.NET): the session is
    /// locked for the request, and a second request of the same session waits until this one ends.
    /// Changes are saved when the request ends. It dereferences to [`SessionHandle`]. Rejects with
    /// [`SessionError`] (503 when the lock wait times out or too many requests wait).
    ExclusiveSession,
    Access::Exclusive
);

extractor!(
    /// The request's session with `Concurrent` access: no lock and no waiting on other concurrent
    /// requests; changes are merged per item when the request ends (last writer wins per item).
    /// It dereferences to [`SessionHandle`].
    ConcurrentSession,
    Access::Concurrent
);

#[cfg(test)]
mod tests {
    use session_core::{Config, Error};

    use super::*;

    /// A read-only session and a writing handle on one session that an exclusive extractor of
    /// the same request opened.
    async fn read_only_beside_exclusive() -> (ReadOnlySession, SessionHandle) {
        let store = Arc::new(backend_memory::MemoryStore::new());
        let manager = SessionManager::new(store, &Config::builder().build().unwrap());
        let session = manager.open(None, Access::Exclusive).await.unwrap();
        let state = Arc::new(Mutex::new(State::Open(session)));
        let exclusive = SessionHandle {
            reader: ReadOnlySession { state },
            access: Access::Exclusive,
        };
        (exclusive.read_only(), exclusive)
    }

    #[tokio::test]
    async fn read_only_session_reads_what_the_request_wrote() {
        let (read_only, exclusive) = read_only_beside_exclusive().await;
        exclusive.insert("a", &1u8).await.unwrap();
        assert_eq!(read_only.access(), Access::ReadOnly);
        assert_eq!(read_only.get::<u8>("a").await.unwrap(), Some(1));
        assert_eq!(read_only.get::<u8>("b").await.unwrap(), None);
        assert!(matches!(
            read_only.get::<String>("a").await,
            Err(SessionError::Session(Error::Decode { .. }))
        ));
        assert_eq!(read_only.id().await.unwrap(), exclusive.id().await.unwrap());
        assert!(read_only.is_new().await.unwrap());
        {
            let guard = read_only.lock().await.unwrap();
            assert_eq!(guard.names(), ["a"]);
            assert!(!guard.is_abandoned());
            assert_eq!(guard.timeout(), Config::default().session_timeout());
            assert!(format!("{guard:?}").starts_with("ReadOnlyGuard("));
        }
        // The writer's later changes show through the same view.
        exclusive.set_timeout(Duration::from_secs(5)).await.unwrap();
        exclusive.abandon().await.unwrap();
        let guard = read_only.lock().await.unwrap();
        assert!(guard.is_abandoned());
        assert_eq!(guard.timeout(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_ended_session_answers_ended_to_every_reader() {
        let (read_only, exclusive) = read_only_beside_exclusive().await;
        *exclusive.state.lock().await = State::Ended;
        assert!(matches!(read_only.lock().await, Err(SessionError::Ended)));
        assert!(matches!(read_only.id().await, Err(SessionError::Ended)));
        assert!(matches!(read_only.is_new().await, Err(SessionError::Ended)));
        assert!(matches!(
            read_only.get::<u8>("a").await,
            Err(SessionError::Ended)
        ));
        assert!(matches!(exclusive.lock().await, Err(SessionError::Ended)));
    }

    #[test]
    fn exclusive_serves_every_mode_and_everything_serves_reading() {
        use Access::{Concurrent, Exclusive, ReadOnly};
        assert!(compatible(Exclusive, Concurrent));
        assert!(compatible(Exclusive, ReadOnly));
        assert!(compatible(Concurrent, ReadOnly));
        assert!(compatible(Concurrent, Concurrent));
        assert!(!compatible(ReadOnly, Exclusive));
        assert!(!compatible(ReadOnly, Concurrent));
        assert!(!compatible(Concurrent, Exclusive));
    }
}
