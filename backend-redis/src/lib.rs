#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `config`: the URL schemes ([`SCHEMES`], [`accepts`]), a URL split into one URL per node
//!   ([`node_urls`]), [`RedisOptions`] and the resolution of `session_core::Config` (attributes
//!   or URL) into nodes, TLS trust, database and timeouts ([`response_timeout`]).
//! - `config_string`: StackExchange.Redis configuration strings (`host:6380,password=...,ssl=true`),
//!   read as a `connectionString` that is not a URL.
//! - `connection`: `Connection`, a standalone `ConnectionManager` or a `ClusterConnection`, one code
//!   path for every operation.
//! - `keys`: the hash-tagged key layout.
//! - `layout`: the stored value of a session (one string: a fixed header, then the items), encoded
//!   and decoded from one buffer.
//! - `store`: [`RedisStore`], which only connects and delegates.
//! - `ops`: one file per operation with its Lua script (`ops/<op>.lua` after `ops/consts.lua` and
//!   the helpers it uses).
//! - `signals`: the pub/sub release signal.
//! - `near`: the near cache (process-local copies kept current by `CLIENT TRACKING`).
//! - `expiry`: expiry events (keyspace notifications, the grace period, the listener).
//! - `error`: driver errors classified into `session_core::Error`.

mod config;
mod config_string;
mod connection;
mod error;
mod expiry;
mod keys;
mod layout;
mod near;
mod ops;
mod signals;
mod store;

pub use config::{
    DEFAULT_RESPONSE_TIMEOUT, RESPONSE_TIMEOUT_MARGIN, RedisOptions, SCHEMES, accepts, node_urls,
    response_timeout,
};
pub use expiry::{EXPIRY_GRACE, ExpiryListenerLimits, ExpiryListenerStats};
pub use near::{NearCacheLimits, NearCacheStats};
pub use store::RedisStore;

/// The driver, for callers that need its types.
pub use redis;
