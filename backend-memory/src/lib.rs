#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `options`: [`MemoryOptions`], the capacity bound, the maintenance interval and the refresh
//!   window.
//! - `store`: [`MemoryStore`], its shared state (the shards), and the locked sections through
//!   which every operation reads and writes a session atomically (`change_id`'s two-key one
//!   included), the capacity bound, the sweep over all shards and [`MemoryStats`].
//! - `shard`: one shard: a hash map of sessions, the deadline index the sweep follows, and the
//!   recency index a capacity bound evicts by.
//! - `record`: what a shard holds per session, and the refresh-window rule of a slide.
//! - `ops`: the [`SessionStore`](session_core::SessionStore) operations, one decision each;
//!   `change_id`, the one that spans two keys, in its own file.
//! - `signals`: the release signal and the expiry events.
//! - `maintenance`: the background task that runs the sweep; it stops with the store.
//! - `schemes`: the URL that selects this store ([`SCHEMES`], [`accepts`],
//!   [`MemoryStore::from_config`]).

mod change_id;
mod maintenance;
mod ops;
mod options;
mod record;
mod schemes;
mod shard;
mod signals;
mod store;
#[cfg(test)]
mod test_util;

pub use options::MemoryOptions;
pub use schemes::{SCHEMES, accepts};
pub use store::{MemoryStats, MemoryStore};
