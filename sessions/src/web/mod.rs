//! Sessions in axum (feature `axum`): [`SessionLayer`] runs the session manager around each
//! request, and the extractors [`ExclusiveSession`], [`ReadOnlySession`] and
//! [`ConcurrentSession`] let each route pick its access mode.
//!
//! The extractors are handles on the request's [`sessions::Session`](crate::Session) (the core
//! session, which [`SessionHandle::lock`] and [`ReadOnlySession::lock`] expose): the layer owns
//! it and ends it after the handler, so handlers never call `end` themselves. The writing
//! extractors dereference to [`SessionHandle`]; [`ReadOnlySession`] has only the reading methods,
//! and its [`ReadOnlyGuard`] dereferences to `&Session`, so a read-only route cannot change the
//! session: it does not compile. A panicking handler's session is released unsaved; see
//! [`SessionLayer`] for the whole end-of-request table. A route that takes no extractor still
//! keeps the client's session alive (one `touch`, as ASP.NET does; off with
//! `skipKeepAliveWhenUnused`). With `throwOnError = false` a store failure is the request's own:
//! the extractors' `last_error`, and [`LastError`] in the response's extensions.
//!
//! Use the session within the handler. A handle may outlive it (in a spawned task), but its
//! methods then answer [`SessionError::Ended`]; a [`SessionGuard`] or [`ReadOnlyGuard`] must not:
//! the layer waits for it after the handler (at most [`SessionLayer::with_end_wait`], then 500 and
//! nothing saved), and a guard kept in the response body can never be let go before that wait
//! ends.
//!
//! ```no_run
//! use axum::{Router, routing::{get, post}};
//! use sessions::web::{ExclusiveSession, ReadOnlySession, SessionError, SessionLayer};
//!
//! async fn count(session: ReadOnlySession) -> Result<String, SessionError> {
//!     Ok(session.get::<u64>("count").await?.unwrap_or(0).to_string())
//! }
//!
//! async fn increment(session: ExclusiveSession) -> Result<String, SessionError> {
//!     let n = session.get::<u64>("count").await?.unwrap_or(0) + 1;
//!     session.insert("count", &n).await?;
//!     Ok(n.to_string())
//! }
//!
//! # async fn app() -> sessions::Result<Router> {
//! let manager = sessions::open_url("memory://").await?;
//! Ok(Router::new()
//!     .route("/count", get(count))
//!     .route("/increment", post(increment))
//!     .layer(SessionLayer::new(manager)))
//! # }
//! ```

mod cookie;
mod error;
mod extract;
mod layer;

pub use cookie::CookieOptions;
pub use error::{LastError, SessionError};
pub use extract::{
    ConcurrentSession, ExclusiveSession, ReadOnlyGuard, ReadOnlySession, SessionGuard,
    SessionHandle,
};
pub use layer::{DEFAULT_END_WAIT, SessionLayer, SessionService};
