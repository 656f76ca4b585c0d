//! # session-core
//!
//! The session-state provider contract, after ASP.NET's session-state providers: a store trait that
//! every backend implements, the session manager that plays ASP.NET's session module (exclusive
//! per-session locking, sliding expiry, retries, `throwOnError`), the configuration, the errors, and
//! a conformance suite any backend can run.
//!
//! Applications use [`SessionManager`]; backends implement [`SessionStore`].
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn session_core::SessionStore>) -> session_core::Result<()> {
//! use session_core::{Access, Config, SessionManager};
//!
//! let config = Config::builder().application_name(session_core::AppName::new("/shop")?).build()?;
//! let manager = SessionManager::new(store, &config);
//! let mut session = manager.open(None, Access::Exclusive).await?;
//! let visits: u32 = session.get("visits")?.unwrap_or(0);
//! session.insert("visits", &(visits + 1))?;
//! let cookie_value = session.id().expose().to_owned();
//! session.end().await?;
//! # let _ = cookie_value; Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`id`](SessionId): session ids and lock tokens from the OS CSPRNG, with redacted `Debug`.
//! - [`names`](AppName): validated application names, item names and session keys.
//! - `model`: what crosses the store boundary: [`ItemValue`], [`Snapshot`], [`Delta`] and one outcome
//!   enum per operation.
//! - `store`: the [`SessionStore`] trait, [`Capabilities`], the release signal and expiry events.
//! - `data`: [`SessionData`], typed items with change tracking that yields the delta.
//! - `config`: [`Config`], from attributes, a URL or a builder.
//! - `conn_url`: [`url_scheme`] and [`redact_url`]: connection URLs read without knowing any
//!   backend's schemes.
//! - `layer`: store decorators: a [`StoreLayer`] sees each operation as a [`Call`] and answers a
//!   [`Reply`]; [`Layered`] makes a store and a layer a store again.
//! - `retry`: the retry schedule and [`RetryLayer`], the layer that adds retries, operation
//!   timeouts and tracing spans to any store ([`ResilientStore`]).
//! - `manager`: [`SessionManager`] and [`Session`], the per-request protocol.
//! - `conformance` (feature `conformance`): the suite.
//!
//! # Conformance suite
//!
//! Enable the `conformance` feature in your store's dev-dependencies and add a test target with
//! `harness = false`; the `conformance` module's docs show the ten lines it takes.

mod config;
mod conn_string;
mod conn_url;
mod data;
mod error;
mod id;
mod layer;
mod manager;
mod model;
mod names;
mod refresh;
mod retry;
mod store;
#[cfg(test)]
mod test_store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use config::{Config, ConfigBuilder, DEFAULT_CONNECTION_TIMEOUT, MAX_SESSION_TIMEOUT};
pub use conn_url::{REDACTED, redact_url, url_scheme};
pub use data::{SessionData, decode_value, encode_value};
pub use error::{BoxError, Error, Operation, Result};
pub use id::{LockToken, SessionId};
pub use layer::{Call, Layered, Reply, StoreLayer};
pub use manager::{Access, EndOutcome, EndReport, Session, SessionManager};
pub use model::{
    AcquireOutcome, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, ItemValue, Items,
    LockInfo, ReadOutcome, ReleaseOutcome, RemoveOutcome, Snapshot, TouchOutcome, items_size,
};
pub use names::{AppName, MAX_APP_NAME_BYTES, MAX_ITEM_NAME_BYTES, SessionKey, validate_item_name};
pub use refresh::RefreshWindow;
pub use retry::{ResilientStore, RetryLayer, RetryPolicy};
pub use store::{
    Capabilities, DynSessionStore, EndReason, ExpiryEvent, ExpiryEvents, ReleaseWatch, SessionStore,
};
