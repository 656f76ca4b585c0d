#![doc = include_str!("../../docs/writing-a-backend.md")]
//!
//! # Layout
//!
//! - `store`: [`ReferenceStore`], the store, with its entry type and the helpers its operations
//!   share (the live-session lookup that hides expired sessions, the expiry slide).
//! - `tests/conformance.rs`: the conformance suite run against it.

mod store;

pub use store::ReferenceStore;
