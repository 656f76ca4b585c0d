//! Fuzzing on stable Rust (docs/security.md): property tests of the SQLite `items` column's decoder
//! ([`unpack`]) and of the commit's merge ([`merge`]) on arbitrary stored bytes. A blob either
//! decodes into items that pack back into exactly the same bytes (nothing skipped or dropped), or
//! is an error that the store turns into `Error::Corrupt` naming the session (`CorruptData`);
//! never a panic. `tests/fuzz_stored.rs` does the same end to end, writing garbage into a row.
//!
//! CI runs the case counts below; `PROPTEST_CASES` runs more
//! (`PROPTEST_CASES=100000 cargo test -p backend-sql --lib sqlite::fuzz --release`).

use proptest::prelude::*;
use session_core::ItemValue;

use super::*;
use crate::dialect::{CorruptData, Item};

/// `default` cases, unless `PROPTEST_CASES` says otherwise (`ProptestConfig::default` reads it).
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

/// Raw items as a blob holds them: any bytes as names and values.
fn raw_items() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 0..12),
            prop::collection::vec(any::<u8>(), 0..40),
        ),
        0..5,
    )
}

fn packed(items: &[Item]) -> Vec<u8> {
    pack(items.iter().map(|(n, v)| (&n[..], &v[..])))
}

/// Blobs: any bytes; packed items; packed items with bytes changed, inserted, cut or cut off;
/// lengths announcing up to 4 GiB.
fn blob() -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<prop::sample::Index>(), 0u8..4, any::<u8>());
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        raw_items().prop_map(|items| packed(&items)),
        (raw_items(), prop::collection::vec(edit, 1..4)).prop_map(|(items, edits)| {
            let mut b = packed(&items);
            for (at, kind, byte) in edits {
                let i = at.index(b.len() + 1);
                match kind {
                    0 if i < b.len() => b[i] = byte,
                    1 => b.insert(i, byte),
                    2 if i < b.len() => {
                        b.remove(i);
                    }
                    _ => b.truncate(i),
                }
            }
            b
        }),
        (any::<u32>(), prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(len, rest)| [
            &len.to_be_bytes()[..],
            &rest
        ]
        .concat()),
    ]
}

/// The error a dialect gives for undecodable stored data (the store names the session).
fn is_corrupt_data(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Decode(inner) if inner.downcast_ref::<CorruptData>().is_some())
}

/// A delta of valid names over a few letters, so that it meets stored names.
fn delta() -> impl Strategy<Value = Delta> {
    let name = "[a-c]{1,2}";
    (
        any::<bool>(),
        prop::collection::btree_set(name, 0..3),
        prop::collection::btree_map(
            name,
            prop::collection::vec(any::<u8>(), 0..8).prop_map(ItemValue::from_bytes),
            0..3,
        ),
    )
        .prop_map(|(cleared, removed, set)| {
            let mut delta = if cleared {
                Delta::new().with_cleared()
            } else {
                Delta::new()
            };
            delta.removed = removed;
            delta.set = set;
            delta
        })
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Any blob (2000 cases): decoded items pack back into the very same bytes, or the blob is
    /// `CorruptData`; never a panic.
    #[test]
    fn blobs_unpack_losslessly_or_are_corrupt(blob in blob()) {
        match unpack(&blob) {
            Ok(items) => prop_assert_eq!(packed(&items), blob, "bytes left out"),
            Err(e) => prop_assert!(is_corrupt_data(&e), "{e:?}"),
        }
    }

    /// Packing round-trips (1000 cases): any names and values, in any order, duplicates too.
    #[test]
    fn packed_items_unpack(items in raw_items()) {
        prop_assert_eq!(unpack(&packed(&items)).expect("it decodes"), items);
    }

    /// The commit's merge on any stored blob (2000 cases): a blob that decodes gets the delta
    /// (cleared, then removed, then set) and keeps every other item, byte for byte; one that
    /// does not is `CorruptData` (and is not overwritten), unless the delta clears it.
    #[test]
    fn merges_keep_what_the_delta_does_not_name(
        names in prop::collection::vec("[a-d]{1,2}", 0..4),
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 4),
        garbage in prop::option::weighted(0.3, blob()),
        delta in delta(),
    ) {
        let stored: Vec<Item> = names
            .iter()
            .zip(&values)
            .map(|(n, v)| (n.clone().into_bytes(), v.clone()))
            .collect();
        let blob = garbage.unwrap_or_else(|| packed(&stored));
        match (merge(&blob, &delta), unpack(&blob)) {
            (Ok(merged), before) => {
                let before = if delta.cleared {
                    Vec::new()
                } else {
                    before.expect("a merge decodes what it keeps")
                };
                let named = |n: &[u8]| {
                    std::str::from_utf8(n)
                        .is_ok_and(|n| delta.removed.contains(n) || delta.set.contains_key(n))
                };
                let want: Vec<Item> = before
                    .into_iter()
                    .filter(|(n, _)| !named(n))
                    .chain(
                        delta
                            .set
                            .iter()
                            .map(|(n, v)| (n.clone().into_bytes(), v.as_bytes().to_vec())),
                    )
                    .collect();
                prop_assert_eq!(unpack(&merged).expect("a merge packs"), want);
            }
            (Err(e), before) => {
                prop_assert!(is_corrupt_data(&e), "{e:?}");
                prop_assert!(!delta.cleared && before.is_err());
            }
        }
    }
}
