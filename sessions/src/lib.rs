#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `open`: the dispatch: [`Backend`] (which store a configuration selects: a URL's scheme, or
//!   Redis for a StackExchange.Redis `connectionString` or a `host`; and its cargo feature),
//!   [`connect`], [`open`], [`open_url`], [`open_attributes`] and the `_with` forms that take
//!   [`StoreOptions`]: from a configuration to a store or a manager, with a clear error for a
//!   configuration that names no store (never a silent in-memory one), a scheme no store serves,
//!   or a backend whose feature is off.
//! - `web` (feature `axum`): the tower layer, the extractors, the session cookie and the error
//!   responses.
//! - The re-exports: everything of `session_core` at the root, and each compiled-in backend crate
//!   as a module (`memory`, `redis`, `sql`).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod open;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod web;
mod web_config;

pub use open::{
    Backend, StoreOptions, connect, connect_with, open, open_attributes, open_url, open_with,
};
pub use web_config::{SessionStateMode, WebConfig, open_web_config, open_web_config_with};

#[doc(inline)]
pub use session_core::*;

/// The in-process store (`memory://`): the `backend-memory` crate.
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
#[doc(inline)]
pub use backend_memory as memory;

/// The Redis store (`redis://`, `rediss://`, `redis+cluster://`): the `backend-redis` crate.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use backend_redis as redis;

/// The SQL stores (`postgres://`, `sqlite:`, `mysql://`): the `backend-sql` crate, with the
/// databases whose features are on.
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql")))
)]
#[doc(inline)]
pub use backend_sql as sql;

/// The workspace README's examples, compiled as doctests so that they stay true (this crate's
/// dev-dependencies include every backend the README shows; its own features `axum` and `redis`
/// are on in the workspace test run, see `scripts/test.sh`).
#[cfg(all(doctest, feature = "axum", feature = "redis"))]
#[doc = include_str!("../../README.md")]
struct WorkspaceReadme;
