//! The values that cross the store boundary: encoded items, snapshots, deltas, and one outcome enum
//! per operation (docs/contract.md §2). Outcomes are distinct values, never `bool`s or silent no-ops.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::id::LockToken;

/// One item's value, MessagePack-encoded (`rmp-serde`, named fields). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ItemValue(Arc<[u8]>);

impl ItemValue {
    /// Wraps already-encoded bytes (as read back from a store).
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        Self(bytes.into())
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the encoded value is empty (never true for values encoded by the session object).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ItemValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemValue({} bytes)", self.0.len())
    }
}

/// A session's items by name. Names are case-sensitive.
pub type Items = BTreeMap<String, ItemValue>;

/// The total size of a set of items as the size limit counts it: names plus encoded values.
pub fn items_size(items: &Items) -> usize {
    items.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// What `read` and `acquire` return for an existing, visible session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Snapshot {
    /// The session's items, encoded.
    pub items: Arc<Items>,
    /// The session's own idle timeout.
    pub timeout: Duration,
    /// True exactly once: on the first `read`/`acquire` that returns the data of a session created
    /// uninitialized (ASP.NET `InitializeItem`, docs/contract.md §2 rule 3).
    pub initialize: bool,
}

impl Snapshot {
    /// A snapshot of `items` with `timeout`.
    pub fn new(items: Arc<Items>, timeout: Duration) -> Self {
        Self {
            items,
            timeout,
            initialize: false,
        }
    }

    /// Marks this snapshot as the first access of an uninitialized session.
    pub fn with_initialize(mut self, initialize: bool) -> Self {
        self.initialize = initialize;
        self
    }
}

/// What changed in a session: only this is written (docs/contract.md §2).
///
/// Applying a delta means, in this order: if `cleared`, remove every stored item; remove the items
/// in `removed`; set the items in `set`. A name is never in both `removed` and `set`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delta {
    /// Items set (added or replaced).
    pub set: Items,
    /// Items removed.
    pub removed: BTreeSet<String>,
    /// Whether every stored item is removed before `removed` and `set` apply.
    pub cleared: bool,
}

impl Delta {
    /// An empty delta.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an item to set (and takes it out of `removed`).
    pub fn with_set(mut self, name: impl Into<String>, value: ItemValue) -> Self {
        let name = name.into();
        self.removed.remove(&name);
        self.set.insert(name, value);
        self
    }

    /// Adds an item to remove (and takes it out of `set`).
    pub fn with_removed(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.set.remove(&name);
        self.removed.insert(name);
        self
    }

    /// Marks the delta as clearing every stored item first.
    pub fn with_cleared(mut self) -> Self {
        self.cleared = true;
        self.removed.clear();
        self
    }

    /// Whether the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.removed.is_empty() && !self.cleared
    }

    /// Applies the delta to `items` (for stores that keep items in memory, and for tests).
    pub fn apply_to(&self, items: &mut Items) {
        if self.cleared {
            items.clear();
        }
        for name in &self.removed {
            items.remove(name);
        }
        for (name, value) in &self.set {
            items.insert(name.clone(), value.clone());
        }
    }

    /// A stable 64-bit fingerprint of this delta and `timeout` (FNV-1a over a length-prefixed
    /// encoding), for stores that recognise a retried commit without keeping the whole delta.
    pub fn fingerprint(&self, timeout: Duration) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        fn eat(mut h: u64, bytes: &[u8]) -> u64 {
            for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(PRIME);
            }
            h
        }
        let mut h = eat(OFFSET, &[u8::from(self.cleared)]);
        h = eat(h, &timeout.as_millis().to_le_bytes());
        for (name, value) in &self.set {
            h = eat(h, b"s");
            h = eat(h, name.as_bytes());
            h = eat(h, value.as_bytes());
        }
        for name in &self.removed {
            h = eat(h, b"r");
            h = eat(h, name.as_bytes());
        }
        h
    }

    /// Bytes of item names and values this delta sends.
    pub fn size(&self) -> usize {
        items_size(&self.set) + self.removed.iter().map(String::len).sum::<usize>()
    }
}

/// Who holds a lock, as reported to a request that did not get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The holder's token (a forced release uses it).
    pub token: LockToken,
    /// How long the lock has been held, on the store's clock (docs/contract.md §2 rule 5).
    pub age: Duration,
}

impl LockInfo {
    /// A lock held by `token` for `age`.
    pub fn new(token: LockToken, age: Duration) -> Self {
        Self { token, age }
    }
}

/// Outcome of `read`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ReadOutcome {
    /// No such session (or it expired).
    Missing,
    /// Another request holds the lock; no data is returned.
    Locked(LockInfo),
    /// The session's data; it stays unlocked.
    Found(Snapshot),
}

/// Outcome of `acquire`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AcquireOutcome {
    /// No such session (or it expired). Nothing was created.
    Missing,
    /// Another request holds a lock younger than the lock TTL.
    Locked(LockInfo),
    /// The lock is now held by the token the caller passed (the snapshot does not echo it).
    Acquired(Snapshot),
}

/// Outcome of `commit` and `write_concurrent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitOutcome {
    /// The delta and the timeout were stored (and, for `commit`, the lock released).
    Committed,
    /// `commit` only: the token is not the current holder's; nothing was written (docs/contract.md §2 rule 1).
    LockLost,
    /// `write_concurrent` only: no such session; nothing was written or created.
    Missing,
}

/// Outcome of `release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseOutcome {
    /// The lock was released and the expiry slid.
    Released,
    /// The token is not the current holder's (or the session is gone); nothing changed.
    LockLost,
}

/// Outcome of `create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateOutcome {
    /// A new, unlocked session was stored.
    Created,
    /// A live session with this id exists; it was not touched (docs/contract.md §2 rule 2).
    AlreadyExists,
}

/// Outcome of `remove` and `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoveOutcome {
    /// The session was deleted.
    Removed,
    /// `remove` only: the session exists but the token is not the holder's; nothing changed.
    LockLost,
    /// No such session.
    Missing,
}

/// Outcome of `touch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TouchOutcome {
    /// The expiry slid by the session's stored timeout.
    Touched,
    /// No such session; nothing was created.
    Missing,
}

/// Outcome of `change_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeIdOutcome {
    /// The session now lives under the new id, with its data and its lock (same token).
    Changed,
    /// The token is not the current holder's, or the session is gone; nothing changed.
    LockLost,
    /// A live session already has the new id; nothing changed.
    AlreadyExists,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(b: &[u8]) -> ItemValue {
        ItemValue::from_bytes(b.to_vec())
    }

    #[test]
    fn delta_applies_clear_then_remove_then_set() {
        let mut items = Items::new();
        items.insert("a".into(), v(b"1"));
        items.insert("b".into(), v(b"2"));
        Delta::new()
            .with_removed("a")
            .with_set("c", v(b"3"))
            .apply_to(&mut items);
        assert_eq!(items.keys().collect::<Vec<_>>(), ["b", "c"]);
        Delta::new()
            .with_cleared()
            .with_set("d", v(b"4"))
            .apply_to(&mut items);
        assert_eq!(items.keys().collect::<Vec<_>>(), ["d"]);
    }

    #[test]
    fn delta_keeps_set_and_removed_disjoint() {
        let d = Delta::new().with_set("a", v(b"1")).with_removed("a");
        assert!(d.set.is_empty());
        assert!(d.removed.contains("a"));
        let d = d.with_set("a", v(b"2"));
        assert!(d.removed.is_empty());
        assert_eq!(d.size(), 2);
    }

    #[test]
    fn fingerprints_tell_deltas_apart() {
        let t = Duration::from_secs(1);
        let a = Delta::new().with_set("a", v(b"1"));
        assert_eq!(a.fingerprint(t), a.clone().fingerprint(t));
        assert_ne!(
            a.fingerprint(t),
            Delta::new().with_set("a", v(b"2")).fingerprint(t)
        );
        assert_ne!(a.fingerprint(t), a.fingerprint(Duration::from_secs(2)));
        assert_ne!(a.fingerprint(t), a.clone().with_cleared().fingerprint(t));
        // Name/value boundaries count: ("ab", "c") is not ("a", "bc").
        let x = Delta::new().with_set("ab", v(b"c"));
        let y = Delta::new().with_set("a", v(b"bc"));
        assert_ne!(x.fingerprint(t), y.fingerprint(t));
        assert_ne!(
            Delta::new().with_removed("a").fingerprint(t),
            Delta::new().fingerprint(t)
        );
    }
}
