//! The stored value of a session: one Redis string, a fixed-size binary header followed by the
//! items, so that a read moves one string and the client decodes it from one buffer.
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 1 | layout version, [`VERSION`] |
//! | 1 | 1 | flags: [`INITIALIZE`] (the uninitialized flag is unreported), [`EVENTS`] (the session keeps an alive marker and a grace period for expiry events) |
//! | 2 | 1 | 1 while locked, else 0 |
//! | 3 | 1 | waiting: 1 when a `watch_release` waits for the current lock's end (`ops/wait.lua`); the script that ends the lock publishes only then, and clears it |
//! | 4 | 16 | lock token (big-endian `u128`; zeros while unlocked) |
//! | 20 | 6 | lock time, ms on the server's clock (big-endian) |
//! | 26 | 6 | the session's timeout, ms (big-endian) |
//! | 32 | 16 | the last successful commit's token (settled record, see `ops/commit.lua`) |
//! | 48 | 8 | the last successful commit's delta fingerprint |
//! | 56 | … | items, each: name length (2 bytes), value length (4 bytes), name, value |
//!
//! Integers are big-endian. Six-byte numbers stay below 2^48 ms (8,900 years): exact in Lua's
//! doubles, which the scripts read them with (`open` in `ops/open.lua`, inlined in `read.lua`,
//! `acquire.lua` and `commit.lua`). The scripts rely on these offsets; a unit test checks that
//! `consts.lua` declares the same header length.

use std::sync::Arc;
use std::time::Duration;

use session_core::{Error, ItemValue, Items, LockInfo, LockToken, Result, SessionKey, Snapshot};

use crate::error::corrupt;

/// The layout version in byte 0 (the first layout, hash fields, had none).
pub(crate) const VERSION: u8 = 2;
/// Flag: the session was created uninitialized and no read or acquire has reported it yet.
pub(crate) const INITIALIZE: u8 = 1;
/// Flag: the session keeps an alive marker and a grace period, for expiry events.
pub(crate) const EVENTS: u8 = 2;
/// Length of the fixed header; the items follow.
pub(crate) const HEADER: usize = 56;
/// The largest number a six-byte field holds; longer timeouts are stored as this.
pub(crate) const MAX_MS: u64 = (1 << 48) - 1;

const FLAGS: usize = 1;
const LOCKED: usize = 2;
const TOKEN: usize = 4;
const SINCE: usize = 20;
const TIMEOUT: usize = 26;
/// Bytes before an item's name: its name length (2) and value length (4).
const ENTRY: usize = 6;

/// A timeout in whole milliseconds as stored (at least 1, at most [`MAX_MS`]).
pub(crate) fn timeout_ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis())
        .unwrap_or(MAX_MS)
        .clamp(1, MAX_MS)
}

/// A lock token as the 16 bytes the header stores and the scripts compare.
pub(crate) fn token_bytes(token: LockToken) -> [u8; 16] {
    token.as_u128().to_be_bytes()
}

/// One item as stored: name length, value length, name, value. `None` when the name or value is
/// longer than its length field (names are at most 256 bytes, values bounded by the size limit).
pub(crate) fn entry(name: &str, value: &ItemValue) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(ENTRY + name.len() + value.len());
    push_entry(&mut out, name, value)?;
    Some(out)
}

fn push_entry(out: &mut Vec<u8>, name: &str, value: &ItemValue) -> Option<()> {
    let name_len = u16::try_from(name.len()).ok()?;
    let value_len = u32::try_from(value.len()).ok()?;
    out.extend_from_slice(&name_len.to_be_bytes());
    out.extend_from_slice(&value_len.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(value.as_bytes());
    Some(())
}

/// The whole value of a new, unlocked session.
pub(crate) fn new_session(items: &Items, timeout_ms: u64, flags: u8) -> Option<Vec<u8>> {
    let size = HEADER
        + items
            .iter()
            .map(|(k, v)| ENTRY + k.len() + v.len())
            .sum::<usize>();
    let mut out = vec![0; HEADER];
    out.reserve(size - HEADER);
    out[0] = VERSION;
    out[FLAGS] = flags;
    out[TIMEOUT..TIMEOUT + 6].copy_from_slice(&u48(timeout_ms.min(MAX_MS)));
    for (name, value) in items {
        push_entry(&mut out, name, value)?;
    }
    Some(out)
}

fn u48(n: u64) -> [u8; 6] {
    let b = n.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

fn read_u48(b: &[u8]) -> u64 {
    b.iter().fold(0, |n, &x| (n << 8) | u64::from(x))
}

/// A stored value's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Whether the uninitialized flag was still unreported.
    pub(crate) initialize: bool,
    /// The holder and lock time (ms, server clock), while locked.
    pub(crate) lock: Option<(LockToken, u64)>,
    /// The session's timeout, ms.
    pub(crate) timeout_ms: u64,
}

/// The header of `value`, or `Error::Corrupt` when it is not one this layout wrote.
pub(crate) fn header(key: &SessionKey, value: &[u8]) -> Result<Header> {
    let Some(h) = value.get(..HEADER) else {
        return Err(corrupt(
            key,
            "the stored session is shorter than its header",
        ));
    };
    if h[0] != VERSION {
        return Err(corrupt(
            key,
            "the stored session has an unknown layout version",
        ));
    }
    let timeout_ms = read_u48(&h[TIMEOUT..TIMEOUT + 6]);
    if timeout_ms == 0 {
        return Err(corrupt(key, "the stored timeout is zero"));
    }
    let lock = match h[LOCKED] {
        0 => None,
        1 => {
            let mut token = [0; 16];
            token.copy_from_slice(&h[TOKEN..TOKEN + 16]);
            let since = read_u48(&h[SINCE..SINCE + 6]);
            Some((LockToken::from_u128(u128::from_be_bytes(token)), since))
        }
        _ => return Err(corrupt(key, "the stored lock state is neither 0 nor 1")),
    };
    Ok(Header {
        initialize: h[FLAGS] & INITIALIZE != 0,
        lock,
        timeout_ms,
    })
}

/// The items stored after the header, decoded from one buffer.
pub(crate) fn items(key: &SessionKey, value: &[u8]) -> Result<Items> {
    let mut rest = value
        .get(HEADER..)
        .ok_or_else(|| corrupt(key, "the stored session is shorter than its header"))?;
    let truncated = || corrupt(key, "a stored item runs past the end of the session");
    let mut pairs = Vec::new();
    while !rest.is_empty() {
        let Some((lengths, tail)) = rest.split_first_chunk::<ENTRY>() else {
            return Err(truncated());
        };
        let name_len = usize::from(u16::from_be_bytes([lengths[0], lengths[1]]));
        let value_len =
            u32::from_be_bytes([lengths[2], lengths[3], lengths[4], lengths[5]]) as usize;
        if tail.len() < name_len.saturating_add(value_len) {
            return Err(truncated());
        }
        let (name, tail) = tail.split_at(name_len);
        let (item, tail) = tail.split_at(value_len);
        let name = std::str::from_utf8(name)
            .map_err(|_| corrupt(key, "a stored item name is not UTF-8"))?;
        // Names the application could never have stored (docs/contract.md §1: 1..=256 bytes).
        session_core::validate_item_name(name)
            .map_err(|_| corrupt(key, "a stored item name is empty or too long"))?;
        pairs.push((name.to_owned(), ItemValue::from_bytes(item)));
        rest = tail;
    }
    let count = pairs.len();
    // Built in one go: `BTreeMap`'s bulk build from a sorted run is cheaper than one insert per
    // item (this runs on every read and acquire).
    let items: Items = pairs.into_iter().collect();
    if items.len() != count {
        return Err(corrupt(key, "a stored item name appears twice"));
    }
    Ok(items)
}

/// A session's data from its stored value: items, timeout and whether this access reports the
/// uninitialized flag (the script cleared it, so it is reported exactly once).
pub(crate) fn snapshot(key: &SessionKey, value: &[u8]) -> Result<Snapshot> {
    let h = header(key, value)?;
    let items = items(key, value)?;
    Ok(
        Snapshot::new(Arc::new(items), Duration::from_millis(h.timeout_ms))
            .with_initialize(h.initialize),
    )
}

/// `{token (16 bytes), age ms}`: the holder of a lock, as the scripts report it.
pub(crate) fn lock_info(key: &SessionKey, token: &[u8], age: i64) -> Result<LockInfo> {
    let token: [u8; 16] = token
        .try_into()
        .map_err(|_| corrupt(key, "the stored lock token is not 16 bytes"))?;
    let age = u64::try_from(age).unwrap_or(0);
    Ok(LockInfo::new(
        LockToken::from_u128(u128::from_be_bytes(token)),
        Duration::from_millis(age),
    ))
}

/// Error for a value whose header a script rejected.
pub(crate) fn corrupt_header(key: &SessionKey) -> Error {
    corrupt(
        key,
        "the stored session has no valid header (layout version, timeout or lock state)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::{AppName, SessionId};

    fn key() -> SessionKey {
        let id = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        SessionKey::new(AppName::new("/t").unwrap(), id)
    }

    fn sample() -> Items {
        let mut items = Items::new();
        items.insert("a".into(), ItemValue::from_bytes(vec![1, 2, 3]));
        items.insert("é".into(), ItemValue::from_bytes(Vec::new()));
        items.insert("z".repeat(256), ItemValue::from_bytes(vec![9; 1000]));
        items
    }

    #[test]
    fn a_new_session_round_trips() {
        let items = sample();
        let value = new_session(&items, 1_200_000, INITIALIZE | EVENTS).unwrap();
        assert_eq!(value[0], VERSION);
        let h = header(&key(), &value).unwrap();
        assert_eq!(
            h,
            Header {
                initialize: true,
                lock: None,
                timeout_ms: 1_200_000
            }
        );
        let snap = snapshot(&key(), &value).unwrap();
        assert_eq!(*snap.items, items);
        assert_eq!(snap.timeout, Duration::from_millis(1_200_000));
        assert!(snap.initialize);
        let empty = new_session(&Items::new(), 5, 0).unwrap();
        assert_eq!(empty.len(), HEADER);
        assert!(items_of(&empty).is_empty());
        assert!(!header(&key(), &empty).unwrap().initialize);
    }

    fn items_of(value: &[u8]) -> Items {
        items(&key(), value).unwrap()
    }

    #[test]
    fn entries_concatenate_into_items() {
        let mut value = new_session(&Items::new(), 10, 0).unwrap();
        for (name, item) in &sample() {
            value.extend(entry(name, item).unwrap());
        }
        assert_eq!(items_of(&value), sample());
    }

    #[test]
    fn the_lock_and_large_numbers_decode() {
        let mut value = new_session(&Items::new(), MAX_MS + 5, 0).unwrap();
        let token = LockToken::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        value[LOCKED] = 1;
        value[TOKEN..TOKEN + 16].copy_from_slice(&token_bytes(token));
        value[SINCE..SINCE + 6].copy_from_slice(&u48(1_700_000_000_123));
        let h = header(&key(), &value).unwrap();
        assert_eq!(h.lock, Some((token, 1_700_000_000_123)));
        assert_eq!(h.timeout_ms, MAX_MS);
        let info = lock_info(&key(), &token_bytes(token), 42).unwrap();
        assert_eq!(info.token, token);
        assert_eq!(info.age, Duration::from_millis(42));
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX)), MAX_MS);
        assert_eq!(timeout_ms(Duration::ZERO), 1);
    }

    #[test]
    fn corrupt_values_are_typed_errors() {
        let good = new_session(&sample(), 1000, 0).unwrap();
        let is_corrupt = |value: &[u8]| {
            let header_err = header(&key(), value).err();
            let items_err = items(&key(), value).err();
            let e = header_err.or(items_err).expect("an error");
            assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
        };
        is_corrupt(b"");
        is_corrupt(&good[..HEADER - 1]);
        let mut bad = good.clone();
        bad[0] = 1;
        is_corrupt(&bad);
        let mut bad = good.clone();
        bad[LOCKED] = 7;
        is_corrupt(&bad);
        let mut bad = good.clone();
        bad[TIMEOUT..TIMEOUT + 6].fill(0);
        is_corrupt(&bad);
        // Truncated inside an entry's lengths, and inside its value.
        is_corrupt(&good[..HEADER + 3]);
        is_corrupt(&good[..good.len() - 1]);
        // A name that is not UTF-8.
        let mut bad = new_session(&Items::new(), 1000, 0).unwrap();
        bad.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0xff]);
        is_corrupt(&bad);
        // An empty name, a 257-byte name and a name stored twice: never stored by the contract.
        let mut bad = new_session(&Items::new(), 1000, 0).unwrap();
        bad.extend_from_slice(&[0, 0, 0, 0, 0, 1, 7]);
        is_corrupt(&bad);
        let mut bad = new_session(&Items::new(), 1000, 0).unwrap();
        bad.extend_from_slice(&[1, 1, 0, 0, 0, 0]);
        bad.extend(std::iter::repeat_n(b'x', 257));
        is_corrupt(&bad);
        let mut bad = new_session(&Items::new(), 1000, 0).unwrap();
        let twice = entry("a", &ItemValue::from_bytes(vec![1])).unwrap();
        bad.extend(&twice);
        bad.extend(&twice);
        is_corrupt(&bad);
        assert!(lock_info(&key(), b"short", 1).is_err());
    }

    #[test]
    fn the_scripts_use_the_same_header_length() {
        let consts = include_str!("ops/consts.lua");
        let line = format!("local HEADER = {HEADER}\n");
        assert!(consts.contains(&line), "consts.lua must declare {line}");
    }
}

#[cfg(test)]
mod fuzz;
