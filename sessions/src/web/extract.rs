//! The extractors. Each route picks its access mode by the extractor it takes: [`Session`]
//! (`Exclusive`), [`ReadOnlySession`] or [`ConcurrentSession`]. The session is opened on the first
//! extraction of the request (a route that takes none never touches the store), and the layer ends
//! it after the handler.

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
    /// No extractor has run yet.
    Unopened,
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

/// The request's session, as the extractors hand it out: a cheap handle (clones share the session)
/// whose methods lock the session for the duration of one call.
///
/// The layer ends the session after the handler returns (SPEC §3's decision table) and sets or
/// clears the cookie; a session used after that (from a task that outlived the request) answers
/// [`SessionError::Ended`].
#[derive(Clone)]
pub struct SessionHandle {
    state: Arc<Mutex<State>>,
    access: Access,
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// Exclusive access to the request's session, for as long as it is held. It dereferences to
/// [`session_core::Session`], so every method of the core session is available.
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
    /// Opens the request's session with `wanted` access on the first extraction, or joins the one
    /// an earlier extractor of this request opened.
    async fn extract(parts: &Parts, wanted: Access) -> Result<Self, SessionError> {
        let slot = parts
            .extensions
            .get::<RequestSlot>()
            .ok_or(SessionError::MissingLayer)?;
        let mut state = slot.state.lock().await;
        match &*state {
            State::Unopened => {
                let id = slot.client_id.as_ref().map(SessionId::expose);
                // Waits here while another request holds the lock (Exclusive, ReadOnly).
                let session = slot.manager.open(id, wanted).await?;
                *state = State::Open(session);
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
        Ok(Self {
            state: Arc::clone(&slot.state),
            access: wanted,
        })
    }

    /// The access mode this extractor asked for.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Refuses a change through a [`ReadOnlySession`], even when another extractor of the same
    /// request opened the session with a mode that allows it.
    fn writable(&self) -> Result<(), SessionError> {
        if self.access == Access::ReadOnly {
            return Err(Error::NotWritable("read-only").into());
        }
        Ok(())
    }

    /// Locks the session for direct use of the core [`session_core::Session`] API (several
    /// changes under one lock, `is_initial_access`, `data`, ...). The guard has the access of the
    /// session as it was opened: through a [`ReadOnlySession`] of a request whose session another
    /// extractor opened `Exclusive`, it could change the session, so only read through it. While it is held, the other
    /// methods of this handle (and of its clones) wait for it, so drop it before calling them; and
    /// do not keep it past the handler (in a spawned task or the response body): the layer waits
    /// for it before ending the session, at most [`SessionLayer::with_end_wait`] (then the request
    /// answers 500 and nothing is saved).
    ///
    /// [`SessionLayer::with_end_wait`]: super::SessionLayer::with_end_wait
    ///
    /// # Errors
    /// [`SessionError::Ended`] after the layer has ended the session.
    pub async fn lock(&self) -> Result<SessionGuard, SessionError> {
        let guard: OwnedMutexGuard<State> = Arc::clone(&self.state).lock_owned().await;
        OwnedMutexGuard::try_map(guard, |state| match state {
            State::Open(session) => Some(session),
            _ => None,
        })
        .map(|guard| SessionGuard { guard })
        .map_err(|_| SessionError::Ended)
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

    /// The value of item `name` decoded as `T`, or `None`.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::Decode`] if the value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, SessionError> {
        Ok(self.lock().await?.get(name)?)
    }

    /// Sets item `name`, encoding it now; stored when the request ends.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::NotWritable`] for a read-only session,
    /// [`session_core::Error::InvalidName`], [`session_core::Error::Encode`],
    /// [`session_core::Error::SessionTooLarge`].
    pub async fn insert<T: Serialize + Sync + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        self.writable()?;
        Ok(self.lock().await?.insert(name, value)?)
    }

    /// Removes item `name`; returns whether it was there.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::NotWritable`] for a read-only session.
    pub async fn remove(&self, name: &str) -> Result<bool, SessionError> {
        self.writable()?;
        Ok(self.lock().await?.remove(name)?)
    }

    /// Removes every item.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::NotWritable`] for a read-only session.
    pub async fn clear(&self) -> Result<(), SessionError> {
        self.writable()?;
        Ok(self.lock().await?.clear()?)
    }

    /// Changes this session's idle timeout.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::NotWritable`],
    /// [`session_core::Error::InvalidConfig`] for zero or more than a year.
    pub async fn set_timeout(&self, timeout: Duration) -> Result<(), SessionError> {
        self.writable()?;
        Ok(self.lock().await?.set_timeout(timeout)?)
    }

    /// Gives the session a fresh id, keeping its data (call it after login: session-fixation
    /// defence). The response carries the new id's cookie; the old id no longer finds the session.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::NotWritable`] unless the session is
    /// exclusive (or new); [`session_core::Error::LockLost`]; store failures.
    pub async fn renew_id(&self) -> Result<SessionId, SessionError> {
        self.writable()?;
        Ok(self.lock().await?.renew_id().await?)
    }

    /// Deletes the session when the request ends (log out); the response clears the cookie.
    ///
    /// # Errors
    /// [`SessionError::Ended`]; [`session_core::Error::NotWritable`] for a read-only session.
    pub async fn abandon(&self) -> Result<(), SessionError> {
        self.writable()?;
        Ok(self.lock().await?.abandon()?)
    }
}

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
                SessionHandle::extract(parts, $access).await.map(Self)
            }
        }
    };
}

extractor!(
    /// The request's session with `Exclusive` access (the default, as in ASP.NET): the session is
    /// locked for the request, and a second request of the same session waits until this one ends.
    /// Changes are saved when the request ends. Rejects with [`SessionError`] (503 when the lock
    /// wait times out or too many requests wait).
    Session,
    Access::Exclusive
);

extractor!(
    /// The request's session with `ReadOnly` access: no lock; waits while a writer holds the
    /// lock, so it never sees a half-finished exclusive request; any change through it is an error
    /// ([`session_core::Error::NotWritable`]), even when another extractor of the same request
    /// opened the session `Exclusive`.
    ReadOnlySession,
    Access::ReadOnly
);

extractor!(
    /// The request's session with `Concurrent` access: no lock and no waiting on other concurrent
    /// requests; changes are merged per item when the request ends (last writer wins per item).
    ConcurrentSession,
    Access::Concurrent
);

#[cfg(test)]
mod tests {
    use session_core::Config;

    use super::*;

    /// A read-only handle on a session that an exclusive extractor of the same request opened.
    async fn read_only_beside_exclusive() -> (SessionHandle, SessionHandle) {
        let store = Arc::new(backend_memory::MemoryStore::new());
        let manager = SessionManager::new(store, &Config::builder().build().unwrap());
        let session = manager.open(None, Access::Exclusive).await.unwrap();
        let state = Arc::new(Mutex::new(State::Open(session)));
        let handle = |access| SessionHandle {
            state: Arc::clone(&state),
            access,
        };
        (handle(Access::ReadOnly), handle(Access::Exclusive))
    }

    fn not_writable<T: fmt::Debug>(result: Result<T, SessionError>) -> bool {
        matches!(result, Err(SessionError::Session(Error::NotWritable(_))))
    }

    #[tokio::test]
    async fn read_only_handles_refuse_changes_on_an_exclusive_session() {
        let (read_only, exclusive) = read_only_beside_exclusive().await;
        exclusive.insert("a", &1u8).await.unwrap();
        assert!(not_writable(read_only.insert("b", &2u8).await));
        assert!(not_writable(read_only.remove("a").await));
        assert!(not_writable(read_only.clear().await));
        assert!(not_writable(
            read_only.set_timeout(Duration::from_secs(5)).await
        ));
        assert!(not_writable(read_only.renew_id().await));
        assert!(not_writable(read_only.abandon().await));
        // Nothing changed, and reading still works.
        assert_eq!(read_only.get::<u8>("a").await.unwrap(), Some(1));
        assert_eq!(read_only.get::<u8>("b").await.unwrap(), None);
        let guard = read_only.lock().await.unwrap();
        assert!(!guard.is_abandoned());
        assert_eq!(guard.timeout(), Config::default().session_timeout());
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
