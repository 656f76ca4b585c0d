#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `options`: [`SqlOptions`]: table prefix, pool size, pool acquire timeout, sweeper, refresh
//!   window.
//! - `schemes`: which database a URL names ([`accepts`], [`POSTGRES_SCHEMES`], [`SQLITE_SCHEMES`],
//!   [`MYSQL_SCHEMES`]), and the first connection under the connect timeout.
//! - `store`: [`SqlStore`]: connecting (URL → dialect), the [`SessionStore`](session_core::SessionStore)
//!   operations as one shared flow: encode the arguments, run the dialect's one call, decode its reply.
//! - `dialect`: the private `Dialect` trait, the operations it runs (`Op`, each atomic) and the
//!   reply every dialect returns.
//! - `routines`: the dialect of a database whose operations are stored routines (Postgres,
//!   MySQL): connecting, binding a call, decoding its reply, written once; the `RoutineDb` trait
//!   says what differs.
//! - `postgres/`, `mysql/`: their `RoutineDb` implementations (`postgres/signal`: the release
//!   signal, `LISTEN`/`NOTIFY`); `sqlite/`: the SQLite dialect, each operation as Rust in one
//!   transaction (a plain `SELECT` where it writes nothing). `migrations/<dialect>/` holds their
//!   schema.
//! - `migrate`: embedded migrations with the table prefix substituted, run under sqlx's migration
//!   lock.
//! - `sweeper`: the background task that purges expired sessions in batches.
//! - `health`: fast failure during an outage on Postgres and MySQL: the server's health as the
//!   operations see it (a lost connection, a probe connection within
//!   `connectionTimeoutInMilliseconds`), so that an operation fails at once as `Unavailable`
//!   while the server cannot be reached instead of waiting out the pool's acquire timeout.
//! - `error`: how sqlx errors become [`session_core::Error`]s.

#[cfg(not(any(feature = "postgres", feature = "sqlite", feature = "mysql")))]
compile_error!("backend-sql needs at least one of the features `postgres`, `sqlite`, `mysql`");

mod dialect;
mod error;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod health;
mod migrate;
#[cfg(feature = "mysql")]
mod mysql;
mod options;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod routines;
mod schemes;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod sweeper;

pub use options::{
    DEFAULT_POOL_ACQUIRE_TIMEOUT, DEFAULT_SQLITE_POOL_ACQUIRE_TIMEOUT, SqlOptions, SweeperOptions,
};
pub use schemes::{MYSQL_SCHEMES, POSTGRES_SCHEMES, SQLITE_SCHEMES, accepts};
pub use store::SqlStore;
pub use sweeper::SweepReport;

/// The driver, re-exported so that applications can match on its errors (`source` of store errors).
pub use sqlx;
