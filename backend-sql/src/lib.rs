#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `options`: [`SqlOptions`]: table prefix, pool size, sweeper, refresh throttling.
//! - `store`: [`SqlStore`]: connecting (URL → dialect), the [`SessionStore`](session_core::SessionStore)
//!   operations as one shared flow: encode the arguments, run the dialect's one call, decode its reply.
//! - `dialect`: the private `Dialect` trait (one implementation per database) and the reply shape
//!   every dialect returns.
//! - `postgres/`, `sqlite/`, `mysql/`: the dialects; `migrations/<dialect>/` holds their schema.
//! - `migrate`: embedded migrations with the table prefix substituted, run under sqlx's migration
//!   lock.
//! - `sweeper`: the background task that purges expired sessions in batches.
//! - `error`: how sqlx errors become [`session_core::Error`]s.

#[cfg(not(any(feature = "postgres", feature = "sqlite", feature = "mysql")))]
compile_error!("backend-sql needs at least one of the features `postgres`, `sqlite`, `mysql`");

mod dialect;
mod error;
mod migrate;
#[cfg(feature = "mysql")]
mod mysql;
mod options;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod sweeper;

pub use options::{SqlOptions, SweeperOptions};
pub use store::SqlStore;
pub use sweeper::SweepReport;

/// The driver, re-exported so that applications can match on its errors (`source` of store errors).
pub use sqlx;
