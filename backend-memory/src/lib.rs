#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `options`: [`MemoryOptions`], the capacity bound and the maintenance interval.
//! - `store`: [`MemoryStore`], its shared state, and the per-key compute helpers that make every
//!   operation one atomic step (including the two-key step of `change_id`).
//! - `ops`: the [`SessionStore`](session_core::SessionStore) operations, one decision each;
//!   `change_id`, the one that spans two keys, in its own file.
//! - `record`: what the cache holds per session (a version with its own deadline, its lock and
//!   how its last lock ended; immutable but for the deadline, which `read` and `touch` slide in
//!   place under the claim protocol of `record::Deadline`) and the moka `Expiry` that evicts it at
//!   that deadline.
//! - `signals`: the release signal and the expiry events, fed by moka's eviction listener.
//! - `deadlines`: the expiry sweep, which finds sessions past their deadline within one
//!   maintenance interval (moka's own eviction is accurate only to about a second).
//! - `maintenance`: the background task that runs the sweep and moka's housekeeping; it stops
//!   with the store.
//! - `schemes`: the URL that selects this store ([`SCHEMES`], [`accepts`],
//!   [`MemoryStore::from_config`]).

mod change_id;
mod deadlines;
mod maintenance;
mod ops;
mod options;
mod record;
mod schemes;
mod signals;
mod store;
#[cfg(test)]
mod test_util;

pub use options::MemoryOptions;
pub use schemes::{SCHEMES, accepts};
pub use store::MemoryStore;
