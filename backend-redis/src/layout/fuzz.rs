//! Fuzzing on stable Rust (docs/security.md): property tests of the one-string layout's decoders
//! ([`header`], [`items`], [`snapshot`], [`lock_info`]) on arbitrary stored bytes. Whatever a
//! session's value holds, decoding it gives the session's data or `Error::Corrupt` naming the
//! session: never a panic, and never a session with fewer items than its bytes hold (a silently
//! emptied session). `tests/fuzz_stored.rs` does the same end to end, through the scripts of a
//! real Redis.
//!
//! CI runs the case counts below; `PROPTEST_CASES` runs more
//! (`PROPTEST_CASES=100000 cargo test -p backend-redis --lib layout::fuzz --release`).

use std::time::Duration;

use proptest::prelude::*;
use session_core::{AppName, Error, ItemValue, Items, SessionId, SessionKey};

use super::*;

/// `default` cases, unless `PROPTEST_CASES` says otherwise (`ProptestConfig::default` reads it).
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

fn key() -> SessionKey {
    let id = SessionId::parse("0123456789abcdef0123456789abcdef").expect("an id");
    SessionKey::new(AppName::new("/fuzz").expect("a name"), id)
}

/// Items the contract allows: names of 1..=256 bytes of UTF-8, values of any bytes.
fn valid_items() -> impl Strategy<Value = Items> {
    prop::collection::btree_map(
        prop_oneof!["[a-z]{1,8}", "\\PC{1,20}", "[a-z]{256}"]
            .prop_filter("1..=256 bytes", |n| (1..=256).contains(&n.len())),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(ItemValue::from_bytes),
        0..6,
    )
}

/// A header this layout writes: version 2, any flags and waiting byte, locked or not with any
/// token and lock time, any timeout from 1 ms.
fn valid_header() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        any::<bool>(),
        any::<u8>(),
        any::<[u8; 16]>(),
        0..=MAX_MS,
        1..=MAX_MS,
        any::<[u8; 24]>(),
    )
        .prop_map(|(flags, locked, waiting, token, since, timeout, settled)| {
            let mut h = vec![0; HEADER];
            h[0] = VERSION;
            h[FLAGS] = flags;
            h[LOCKED] = u8::from(locked);
            h[3] = waiting;
            h[TOKEN..TOKEN + 16].copy_from_slice(&token);
            h[SINCE..SINCE + 6].copy_from_slice(&u48(since));
            h[TIMEOUT..TIMEOUT + 6].copy_from_slice(&u48(timeout));
            h[32..HEADER].copy_from_slice(&settled);
            h
        })
}

/// Entries as the layout writes them, in any order (the scripts append set items at the end),
/// possibly with one repeated.
fn entries(
    items: &Items, order: &[prop::sample::Index], repeat: Option<prop::sample::Index>,
) -> Vec<u8> {
    let mut list: Vec<Vec<u8>> = items
        .iter()
        .map(|(n, v)| entry(n, v).expect("a valid entry"))
        .collect();
    for (i, at) in order.iter().enumerate() {
        if !list.is_empty() {
            let len = list.len();
            list.swap(i % len, at.index(len));
        }
    }
    if let Some(at) = repeat.filter(|_| !list.is_empty()) {
        let copy = list[at.index(list.len())].clone();
        list.push(copy);
    }
    list.concat()
}

/// One change to stored bytes.
#[derive(Debug, Clone)]
enum Damage {
    /// Sets the byte at `at` to `to`.
    Set { at: prop::sample::Index, to: u8 },
    /// Flips one bit.
    Flip { at: prop::sample::Index, bit: u8 },
    /// Keeps the first `at` bytes.
    Truncate { at: prop::sample::Index },
    /// Inserts bytes at `at`.
    Insert {
        at: prop::sample::Index,
        bytes: Vec<u8>,
    },
    /// Removes up to `len` bytes at `at`.
    Cut { at: prop::sample::Index, len: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, to)| Damage::Set { at, to }),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        any::<prop::sample::Index>().prop_map(|at| Damage::Truncate { at }),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        (any::<prop::sample::Index>(), 1usize..16).prop_map(|(at, len)| Damage::Cut { at, len }),
    ]
}

fn apply(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::Set { at, to } if !bytes.is_empty() => {
            let i = at.index(bytes.len());
            bytes[i] = *to;
        }
        Damage::Flip { at, bit } if !bytes.is_empty() => {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Damage::Truncate { at } => bytes.truncate(at.index(bytes.len() + 1)),
        Damage::Insert { at, bytes: new } => {
            let i = at.index(bytes.len() + 1);
            bytes.splice(i..i, new.iter().copied());
        }
        Damage::Cut { at, len } => {
            let i = at.index(bytes.len() + 1);
            let end = (i + len).min(bytes.len());
            bytes.drain(i..end);
        }
        Damage::Set { .. } | Damage::Flip { .. } => {}
    }
    bytes
}

/// Stored values: any bytes; a valid header with any bytes after it; a whole value this layout
/// writes (items in any order, sometimes one repeated), damaged in up to three places.
fn stored() -> impl Strategy<Value = Vec<u8>> {
    let written = || {
        (
            valid_header(),
            valid_items(),
            prop::collection::vec(any::<prop::sample::Index>(), 0..4),
            prop::option::weighted(0.1, any::<prop::sample::Index>()),
        )
            .prop_map(|(header, items, order, repeat)| {
                [header, entries(&items, &order, repeat)].concat()
            })
    };
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..120),
        1 => (valid_header(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(h, tail)| [h, tail].concat()),
        2 => written(),
        4 => (written(), prop::collection::vec(damage(), 1..4))
            .prop_map(|(bytes, damages)| damages.iter().fold(bytes, apply)),
    ]
}

/// `Error::Corrupt` naming [`key`]'s session, from the Redis backend.
fn names_the_session(e: &Error) -> Result<(), TestCaseError> {
    match e {
        Error::Corrupt {
            backend,
            app,
            id_prefix,
            ..
        } => {
            prop_assert_eq!(*backend, "redis");
            prop_assert_eq!(app.as_str(), "/fuzz");
            let key = key();
            prop_assert_eq!(id_prefix.as_str(), key.id().prefix());
            Ok(())
        }
        other => Err(TestCaseError::fail(format!("not Corrupt: {other:?}"))),
    }
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Any stored value (2000 cases): the header decodes or is `Corrupt` naming the session;
    /// the snapshot decodes or is `Corrupt`; a snapshot accounts for every byte after the header
    /// (each entry became an item: nothing was skipped, dropped or merged), and keeps the
    /// header's timeout and flag.
    #[test]
    fn stored_bytes_decode_or_are_corrupt(value in stored()) {
        let key = key();
        let header = header(&key, &value);
        match &header {
            Ok(h) => {
                prop_assert!(h.timeout_ms >= 1);
                prop_assert_eq!(h.lock.is_some(), value[LOCKED] == 1);
            }
            Err(e) => names_the_session(e)?,
        }
        match snapshot(&key, &value) {
            Ok(snap) => {
                let h = header.expect("a snapshot has a header");
                let stored: usize = snap
                    .items
                    .iter()
                    .map(|(n, v)| ENTRY + n.len() + v.len())
                    .sum();
                prop_assert_eq!(HEADER + stored, value.len(), "bytes left out of the items");
                prop_assert_eq!(snap.timeout, Duration::from_millis(h.timeout_ms));
                prop_assert_eq!(snap.initialize, h.initialize);
                for name in snap.items.keys() {
                    prop_assert!(session_core::validate_item_name(name).is_ok());
                }
            }
            Err(e) => names_the_session(&e)?,
        }
        if let Err(e) = items(&key, &value) {
            names_the_session(&e)?;
        }
    }

    /// What this layout writes reads back (1000 cases): a new session's value, and the same
    /// header followed by entries in any order (as the scripts append them), give the items
    /// they were made of.
    #[test]
    fn written_values_read_back(
        items in valid_items(),
        timeout in 1..=MAX_MS,
        flags in any::<u8>(),
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let key = key();
        let value = new_session(&items, timeout, flags).expect("a valid session");
        let snap = snapshot(&key, &value).expect("it decodes");
        prop_assert_eq!(&*snap.items, &items);
        prop_assert_eq!(snap.timeout, Duration::from_millis(timeout));
        prop_assert_eq!(snap.initialize, flags & INITIALIZE != 0);
        let empty = new_session(&Items::new(), timeout, flags).expect("a valid session");
        let shuffled = [empty, entries(&items, &order, None)].concat();
        prop_assert_eq!(&*snapshot(&key, &shuffled).expect("it decodes").items, &items);
    }

    /// A lock holder as the scripts report it (1000 cases): 16 bytes of token, else `Corrupt`.
    #[test]
    fn lock_holders_decode_or_are_corrupt(
        token in prop::collection::vec(any::<u8>(), 0..20),
        age in any::<i64>(),
    ) {
        match lock_info(&key(), &token, age) {
            Ok(info) => {
                prop_assert_eq!(token.len(), 16);
                prop_assert_eq!(info.age, Duration::from_millis(u64::try_from(age).unwrap_or(0)));
            }
            Err(e) => {
                prop_assert_ne!(token.len(), 16);
                names_the_session(&e)?;
            }
        }
    }
}
