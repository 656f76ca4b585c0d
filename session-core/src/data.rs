//! A session's items as the application sees them: typed get/insert over encoded values, with change
//! tracking that produces the [`Delta`] of docs/contract.md §2.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::model::{Delta, ItemValue, Items, items_size};
use crate::names::validate_item_name;

/// Encodes a value the way sessions store it: MessagePack with named fields.
///
/// # Errors
/// [`Error::Encode`] naming `item` if the value cannot be encoded.
pub fn encode_value<T: Serialize + ?Sized>(item: &str, value: &T) -> Result<ItemValue> {
    rmp_serde::to_vec_named(value)
        .map(ItemValue::from_bytes)
        .map_err(|source| Error::Encode {
            item: item.to_owned(),
            source,
        })
}

/// How deeply nested a stored value may be (arrays and maps in arrays and maps), as serde_json's
/// default recursion limit. rmp-serde's own limit (1024) is deeper than a 2 MiB thread stack
/// reaches in a debug build: 800 nested one-element arrays, decoded into a self-describing type,
/// overflowed it and aborted the process (docs/security.md §2.5; `tests/fuzz_parsers.rs`).
const MAX_VALUE_DEPTH: usize = 128;

/// Decodes a value stored by [`encode_value`].
///
/// # Errors
/// [`Error::Decode`] naming `item` if the bytes do not decode into `T`, or nest deeper than 128
/// arrays and maps.
pub fn decode_value<T: DeserializeOwned>(item: &str, value: &ItemValue) -> Result<T> {
    let mut decoder = rmp_serde::Deserializer::from_read_ref(value.as_bytes());
    decoder.set_max_depth(MAX_VALUE_DEPTH);
    T::deserialize(&mut decoder).map_err(|source| Error::Decode {
        item: item.to_owned(),
        source,
    })
}

/// Items with change tracking: the stored items (shared, never copied) plus an overlay of changes.
#[derive(Debug, Clone)]
pub struct SessionData {
    base: Arc<Items>,
    /// `Some(v)`: set to `v`; `None`: removed. Names not here keep their base value (unless cleared).
    changes: BTreeMap<String, Option<ItemValue>>,
    /// Every base item is gone; `changes` applies on top of an empty session.
    cleared: bool,
    /// Current total size (names + encoded values), kept up to date for the size limit.
    size: usize,
    max_size: usize,
}

impl SessionData {
    /// Wraps stored items; `max_size` limits the session's total size (names plus encoded values).
    pub fn new(base: Arc<Items>, max_size: usize) -> Self {
        let size = items_size(&base);
        Self {
            base,
            changes: BTreeMap::new(),
            cleared: false,
            size,
            max_size,
        }
    }

    /// The encoded value of `name`, if present.
    pub fn get_raw(&self, name: &str) -> Option<&ItemValue> {
        match self.changes.get(name) {
            Some(change) => change.as_ref(),
            None if self.cleared => None,
            None => self.base.get(name),
        }
    }

    /// The value of `name` decoded as `T`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::Decode`] if the stored value does not decode into `T`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.get_raw(name)
            .map(|v| decode_value(name, v))
            .transpose()
    }

    /// Sets `name` to `value`, encoding it now: a value that cannot be encoded fails here, never at
    /// commit (docs/contract.md §1).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Encode`], or [`Error::SessionTooLarge`]; on error nothing
    /// changes.
    pub fn insert<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        validate_item_name(name)?;
        let encoded = encode_value(name, value)?;
        self.insert_raw(name, encoded)
    }

    /// Sets `name` to an already-encoded value.
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::SessionTooLarge`]; on error nothing changes.
    pub fn insert_raw(&mut self, name: &str, value: ItemValue) -> Result<()> {
        validate_item_name(name)?;
        let old = self.get_raw(name).map_or(0, |v| name.len() + v.len());
        let new_size = self.size - old + name.len() + value.len();
        if new_size > self.max_size {
            return Err(Error::SessionTooLarge {
                size: new_size,
                limit: self.max_size,
            });
        }
        self.size = new_size;
        self.changes.insert(name.to_owned(), Some(value));
        Ok(())
    }

    /// Removes `name`; returns whether it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(old) = self.get_raw(name).map(ItemValue::len) else {
            return false;
        };
        self.size -= name.len() + old;
        self.changes.insert(name.to_owned(), None);
        true
    }

    /// Removes every item.
    pub fn clear(&mut self) {
        if self.is_empty() && !self.cleared && self.changes.is_empty() {
            // Clearing an empty session changes nothing worth writing.
            return;
        }
        self.cleared = true;
        self.changes.clear();
        self.size = 0;
    }

    /// The names of the current items, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        if !self.cleared {
            names.extend(
                self.base
                    .keys()
                    .filter(|k| !self.changes.contains_key(*k))
                    .map(String::as_str),
            );
        }
        names.extend(
            self.changes
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k.as_str()),
        );
        names.sort_unstable();
        names
    }

    /// Number of current items.
    pub fn len(&self) -> usize {
        self.names().len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Current total size in bytes (names plus encoded values).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether anything changed since the data was loaded (or since [`SessionData::rebase`]).
    pub fn is_changed(&self) -> bool {
        self.cleared || !self.changes.is_empty()
    }

    /// The delta to store: only what changed (docs/contract.md §2).
    pub fn delta(&self) -> Delta {
        let mut delta = Delta::new();
        if self.cleared {
            delta = delta.with_cleared();
        }
        for (name, change) in &self.changes {
            delta = match change {
                Some(v) => delta.with_set(name.clone(), v.clone()),
                // Removing a name that was never stored needs no write.
                None if self.cleared || !self.base.contains_key(name) => delta,
                None => delta.with_removed(name.clone()),
            };
        }
        delta
    }

    /// All current items (for creating a session, or writing it under a new id).
    pub fn to_items(&self) -> Items {
        let mut items = if self.cleared {
            Items::new()
        } else {
            (*self.base).clone()
        };
        self.delta().apply_to(&mut items);
        items
    }

    /// Makes the current items the new base (after they were stored).
    pub fn rebase(&mut self) {
        let items = Arc::new(self.to_items());
        *self = Self::new(items, self.max_size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Arc<Items> {
        let mut items = Items::new();
        items.insert("a".into(), encode_value("a", &1u32).unwrap());
        items.insert("b".into(), encode_value("b", &"two").unwrap());
        Arc::new(items)
    }

    #[test]
    fn unchanged_data_has_empty_delta() {
        let d = SessionData::new(base(), 1 << 20);
        assert!(!d.is_changed());
        assert!(d.delta().is_empty());
        assert_eq!(d.get::<u32>("a").unwrap(), Some(1));
        assert_eq!(d.names(), ["a", "b"]);
    }

    #[test]
    fn delta_holds_only_changes() {
        let mut d = SessionData::new(base(), 1 << 20);
        d.insert("c", &3u8).unwrap();
        assert!(d.remove("b"));
        assert!(!d.remove("zzz"));
        let delta = d.delta();
        assert_eq!(delta.set.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(delta.removed.iter().collect::<Vec<_>>(), ["b"]);
        assert!(!delta.cleared);
        assert_eq!(d.names(), ["a", "c"]);
    }

    #[test]
    fn insert_then_remove_of_new_name_sends_nothing() {
        let mut d = SessionData::new(base(), 1 << 20);
        d.insert("n", &1u8).unwrap();
        d.remove("n");
        assert!(d.delta().is_empty());
    }

    #[test]
    fn clear_then_insert() {
        let mut d = SessionData::new(base(), 1 << 20);
        d.clear();
        d.insert("z", &true).unwrap();
        let delta = d.delta();
        assert!(delta.cleared);
        assert_eq!(delta.set.len(), 1);
        assert_eq!(d.names(), ["z"]);
        assert_eq!(d.get::<u32>("a").unwrap(), None);
        assert_eq!(d.to_items().len(), 1);
    }

    #[test]
    fn wrong_type_is_a_decode_error() {
        let d = SessionData::new(base(), 1 << 20);
        assert!(matches!(d.get::<String>("a"), Err(Error::Decode { .. })));
    }

    #[test]
    fn unencodable_value_fails_at_insert() {
        // A map with non-string keys encodes fine in MessagePack; a failing Serialize impl does not.
        struct Bad;
        impl Serialize for Bad {
            fn serialize<S: serde::Serializer>(
                &self, _: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("nope"))
            }
        }
        let mut d = SessionData::new(base(), 1 << 20);
        assert!(matches!(d.insert("x", &Bad), Err(Error::Encode { .. })));
        assert!(!d.is_changed());
    }

    #[test]
    fn size_limit_is_enforced_at_insert() {
        let mut d = SessionData::new(Arc::new(Items::new()), 100);
        d.insert("a", &vec![0u8; 50]).unwrap();
        let err = d.insert("b", &vec![0u8; 50]).unwrap_err();
        assert!(matches!(err, Error::SessionTooLarge { limit: 100, .. }));
        assert_eq!(d.names(), ["a"]);
        // Replacing an item counts only the difference.
        d.insert("a", &vec![0u8; 60]).unwrap();
        assert!(d.size() <= 100);
    }

    #[test]
    fn rebase_makes_changes_the_base() {
        let mut d = SessionData::new(base(), 1 << 20);
        d.insert("a", &9u32).unwrap();
        d.rebase();
        assert!(!d.is_changed());
        assert_eq!(d.get::<u32>("a").unwrap(), Some(9));
    }
}
