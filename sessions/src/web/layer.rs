//! [`SessionLayer`]: the tower layer that runs the session manager around each request. It reads
//! the cookie before the handler and, after it, ends the session and sets or clears the cookie, or
//! keeps alive a session the handler did not use.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use session_core::{EndOutcome, EndReport, SessionManager};
use tokio::sync::Mutex;
use tower::{Layer, Service};

use super::cookie::CookieOptions;
use super::error::{LastError, SessionError};
use super::extract::{RequestSlot, State};

/// Runs ASP.NET's session module for every request of the router it wraps.
///
/// Before the handler it reads the session cookie (a malformed value counts as none) and gives the
/// request a session slot; the extractors ([`ExclusiveSession`](super::ExclusiveSession),
/// [`ReadOnlySession`](super::ReadOnlySession), [`ConcurrentSession`](super::ConcurrentSession))
/// open the session from it on first use. After the handler it ends the session with one store
/// operation (`docs/contract.md` §3: create, commit, release, remove or nothing) and then:
///
/// | end of the request | response |
/// |---|---|
/// | a new session was stored, or the id was renewed | `Set-Cookie` with the id (after `renew_id`, also when saving failed: the store already moved the session to the new id) |
/// | the session was abandoned | `Set-Cookie` clearing the cookie |
/// | the commit found the lock lost ([`session_core::Error::LockLost`]) | replaced by 409 Conflict: the changes were not saved |
/// | any other failure to save | replaced by the [`SessionError`] response (503 or 500) |
/// | the session was still in use after [`with_end_wait`](Self::with_end_wait) | replaced by 500 ([`SessionError::StillInUse`]): nothing saved |
/// | nothing saved because of a store failure absorbed with `throwOnError = false` (the session was degraded, or saving it failed) | unchanged, with the failure as the extension [`LastError`](super::LastError) |
/// | otherwise | unchanged |
///
/// **Keep-alive.** A request that carries a well-formed session cookie but whose handler took no
/// session extractor (a route that never uses the session) still slides the session's expiry, as
/// ASP.NET's session module does: after the handler the layer performs one `touch`
/// ([`SessionManager::keep_alive`]; the store writes only when the slide is due, its refresh
/// window). It is on by default and off with the setting `skipKeepAliveWhenUnused`. It sets no
/// cookie, an unknown id changes nothing, and a failure is logged and never changes the response.
/// A route that used the session does not touch as well: opening it slid the expiry. Each touch is
/// one store round trip on an otherwise store-free route: put routes that never need a session
/// (static files) outside the layer, or switch keep-alive off.
///
/// A session is saved whatever the handler's status code, as ASP.NET does for a request that
/// completes: a handler that returns an error response after changing the session keeps those
/// changes. A handler that **panics** (or a request whose client goes away) never reaches the end:
/// the session is released unsaved (its lock released, nothing written), even if a task the
/// handler spawned still holds a handle to it; that handle then answers [`SessionError::Ended`]. Put
/// `tower_http::catch_panic::CatchPanicLayer` *outside* this layer (a later `Router::layer` call)
/// to answer 500; inside it, the panic would become an ordinary 500 response and be saved. The
/// same holds for every layer that turns a dropped or failed handler future into a response,
/// such as `tower_http::timeout::TimeoutLayer` or axum's `HandleErrorLayer`: outside this layer,
/// a timed-out request's session is released unsaved; inside it, the timeout's response ends the
/// request normally and whatever the handler had changed so far is saved.
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
}

struct Shared {
    manager: SessionManager,
    cookie: CookieOptions,
    end_wait: Duration,
}

/// How long the layer waits, after the handler, for the handler's last use of the session by
/// default (see [`SessionLayer::with_end_wait`]).
pub const DEFAULT_END_WAIT: Duration = Duration::from_secs(30);

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("manager", &self.shared.manager)
            .field("cookie", &self.shared.cookie)
            .field("end_wait", &self.shared.end_wait)
            .finish()
    }
}

impl SessionLayer {
    /// A layer that opens sessions with `manager` and the default [`CookieOptions`].
    pub fn new(manager: SessionManager) -> Self {
        Self {
            shared: Arc::new(Shared {
                manager,
                cookie: CookieOptions::default(),
                end_wait: DEFAULT_END_WAIT,
            }),
        }
    }

    /// The same layer with `cookie` as the session cookie's settings.
    pub fn with_cookie(self, cookie: CookieOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                manager: self.shared.manager.clone(),
                cookie,
                end_wait: self.shared.end_wait,
            }),
        }
    }

    /// The same layer, waiting at most `wait` (default [`DEFAULT_END_WAIT`], 30 s) after the
    /// handler for its last use of the session: a [`SessionGuard`](super::SessionGuard) or
    /// [`ReadOnlyGuard`](super::ReadOnlyGuard), or a handle's method call, still in progress in a
    /// task the handler spawned or in the response body. After that the request answers 500
    /// ([`SessionError::StillInUse`]) and the session is released unsaved as soon as that use
    /// ends.
    pub fn with_end_wait(self, wait: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                manager: self.shared.manager.clone(),
                cookie: self.shared.cookie.clone(),
                end_wait: wait,
            }),
        }
    }

    /// The session manager.
    pub fn manager(&self) -> &SessionManager {
        &self.shared.manager
    }

    /// The session cookie's settings.
    pub fn cookie(&self) -> &CookieOptions {
        &self.shared.cookie
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`SessionLayer`] wraps around a router or handler.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("cookie", &self.shared.cookie)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for SessionService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let client_id = shared.cookie.read(request.headers());
        let slot = RequestSlot::new(shared.manager.clone(), client_id);
        request.extensions_mut().insert(slot.clone());
        // The clone that was driven to readiness serves this request (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            // If the handler panics or fails, or this future is dropped, the guard ends the
            // session unsaved, even while handles to it live on in tasks the handler spawned.
            let guard = ReleaseOnDrop(Some(Arc::clone(&slot.state)));
            let response = inner.call(request).await?;
            let response = finish(&slot, &shared, response).await;
            guard.disarm();
            Ok(response)
        })
    }
}

/// Until disarmed, ends the request's session unsaved when dropped: the request's future was
/// dropped (a panic caught outside the layer, a client that went away, a timeout) or the inner
/// service failed, so [`finish`] never ran.
///
/// The core session lives in the slot that every extractor's handle shares, so without this a
/// handle kept by a task the handler spawned would keep the session, and its store lock, until
/// that task ends or the lock TTL passes. Taking the session out of the slot
/// drops it, which releases the lock and writes nothing; the handles then answer
/// [`SessionError::Ended`].
struct ReleaseOnDrop(Option<Arc<Mutex<State>>>);

impl ReleaseOnDrop {
    /// [`finish`] ran: nothing left to do.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            release_unsaved(state);
        }
    }
}

/// Takes the session out of the slot and drops it, which releases its lock and writes nothing;
/// handles then answer [`SessionError::Ended`]. If a handle's method or a guard holds
/// the slot right now, a task does it as soon as that use ends.
fn release_unsaved(state: Arc<Mutex<State>>) {
    if let Ok(mut slot) = state.try_lock() {
        drop(std::mem::replace(&mut *slot, State::Ended));
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                drop(std::mem::replace(&mut *state.lock().await, State::Ended));
            });
        }
        Err(_) => tracing::warn!(
            "request dropped outside a tokio runtime while its session was in use; its lock is \
             released when the last handle is dropped"
        ),
    }
}

/// Ends the request's session, if one was opened, and applies the cookie rules of the table on
/// [`SessionLayer`].
async fn finish(slot: &RequestSlot, shared: &Shared, mut response: Response) -> Response {
    let cookie = &shared.cookie;
    // Waits for the handler's last use of the session (a guard it still holds in a spawned task
    // or in the response body), but not for ever: the response body cannot even start before
    // this returns.
    let state = match tokio::time::timeout(shared.end_wait, slot.state.lock()).await {
        Ok(mut state) => std::mem::replace(&mut *state, State::Ended),
        Err(_) => {
            release_unsaved(Arc::clone(&slot.state));
            return SessionError::StillInUse {
                waited: shared.end_wait,
            }
            .into_response();
        }
    };
    let session = match state {
        State::Open(session) => session,
        State::Unopened => {
            keep_alive(slot).await;
            return response;
        }
        State::OpenFailed | State::Ended => return response,
    };
    let id = *session.id();
    let ended = Ended {
        abandoned: session.is_abandoned(),
        // A stored session whose id changed during the request (renew_id): the store already
        // holds it under the new id, whatever `end` does next.
        renewed: !session.is_new() && slot.client_id != Some(id),
        client_sent_id: slot.client_id.is_some(),
    };
    let report = session.end_report().await;
    let action = ended.cookie(report.as_ref().ok().map(EndReport::outcome));
    match report {
        Ok(report) => {
            if let Some(err) = report.last_error() {
                response
                    .extensions_mut()
                    .insert(LastError::new(Arc::clone(err)));
            }
        }
        Err(err) => response = SessionError::from(err).into_response(),
    }
    let header = match action {
        CookieAction::Issue => cookie.issue(&id),
        CookieAction::Clear => cookie.clear(),
        CookieAction::Keep => None,
    };
    if let Some(header) = header {
        response.headers_mut().append(SET_COOKIE, header);
    }
    response
}

/// Keeps alive the session whose cookie the request carried, for a handler that did not use it
/// (the keep-alive paragraph on [`SessionLayer`]). A failure is logged; the response stays the
/// handler's.
async fn keep_alive(slot: &RequestSlot) {
    let Some(id) = slot.client_id else {
        return;
    };
    if let Err(err) = slot.manager.keep_alive(id.expose()).await {
        tracing::warn!(error = %err, "keeping an unused session alive failed; the response is unchanged");
    }
}

/// What the response does with the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CookieAction {
    /// `Set-Cookie` with the session's (new or renewed) id.
    Issue,
    /// `Set-Cookie` that removes the cookie.
    Clear,
    /// No `Set-Cookie`.
    Keep,
}

/// What the layer knows about the session as it ends it.
#[derive(Debug, Clone, Copy)]
struct Ended {
    abandoned: bool,
    renewed: bool,
    client_sent_id: bool,
}

impl Ended {
    /// The cookie rule for `outcome` (`None`: `end` failed and the response is the error's).
    fn cookie(self, outcome: Option<EndOutcome>) -> CookieAction {
        match outcome {
            Some(EndOutcome::Removed) => CookieAction::Clear,
            Some(EndOutcome::Nothing) if self.abandoned && self.client_sent_id => {
                CookieAction::Clear
            }
            Some(EndOutcome::Created) => CookieAction::Issue,
            // The store moved the session to the new id when renew_id ran, so the client needs it
            // even if this request's changes were not saved (`NotSaved`, `LockWasLost`, or `end`
            // failed): with the old id it would have lost its session (and its login).
            _ if self.renewed && !self.abandoned => CookieAction::Issue,
            // Nothing stored (read-only, unchanged, never written, degraded): the cookie stays as
            // it is. An unknown id the client sent is not cleared: a parallel request may be
            // issuing its replacement.
            _ => CookieAction::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_id_is_issued_even_when_the_changes_are_not_saved() {
        let renewed = Ended {
            abandoned: false,
            renewed: true,
            client_sent_id: true,
        };
        for outcome in [
            Some(EndOutcome::Committed),
            Some(EndOutcome::Released),
            Some(EndOutcome::LockWasLost),
            Some(EndOutcome::NotSaved),
            None,
        ] {
            assert_eq!(renewed.cookie(outcome), CookieAction::Issue, "{outcome:?}");
        }
        let logged_out = Ended {
            abandoned: true,
            ..renewed
        };
        assert_eq!(
            logged_out.cookie(Some(EndOutcome::Removed)),
            CookieAction::Clear
        );
        assert_eq!(logged_out.cookie(None), CookieAction::Keep);
    }

    #[test]
    fn an_unchanged_id_is_not_reissued() {
        let same = Ended {
            abandoned: false,
            renewed: false,
            client_sent_id: true,
        };
        for outcome in [
            Some(EndOutcome::Committed),
            Some(EndOutcome::Released),
            Some(EndOutcome::Nothing),
            Some(EndOutcome::NotSaved),
            None,
        ] {
            assert_eq!(same.cookie(outcome), CookieAction::Keep, "{outcome:?}");
        }
        assert_eq!(same.cookie(Some(EndOutcome::Created)), CookieAction::Issue);
        let abandoned = Ended {
            abandoned: true,
            ..same
        };
        assert_eq!(
            abandoned.cookie(Some(EndOutcome::Nothing)),
            CookieAction::Clear
        );
        let abandoned_new = Ended {
            client_sent_id: false,
            ..abandoned
        };
        assert_eq!(
            abandoned_new.cookie(Some(EndOutcome::Nothing)),
            CookieAction::Keep
        );
    }
}
