//! Fuzzing on stable Rust (issue 14), end to end against a real Redis: arbitrary bytes written
//! into a session's value with a raw client, then read, touched, acquired and committed through
//! the store (its Lua scripts read the header on the server, the client decodes the items).
//! Whatever the value holds, each operation gives a valid outcome that agrees with the layout
//! (`src/layout.rs`, decoded again here by a reference decoder) or `Error::Corrupt` naming the
//! session: never a panic, never another error, never a session silently emptied (a snapshot
//! holds exactly the items the bytes hold), and a corrupt session is not left locked.
//!
//! Needs `SESSION_TEST_REDIS_URL` (skipped without it, failing when `SESSION_TEST_REQUIRE` names
//! `redis`). CI runs 300 cases; `PROPTEST_CASES` runs more
//! (`PROPTEST_CASES=20000 cargo test -p backend-redis --test fuzz_stored --release`).

use std::collections::BTreeMap;
use std::time::Duration;

use backend_redis::RedisStore;
use backend_redis::redis::{self, AsyncCommands};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use session_core::{
    AcquireOutcome, AppName, CommitOutcome, Delta, Error, ItemValue, LockToken, ReadOutcome,
    SessionId, SessionKey, SessionStore, TouchOutcome,
};

/// The layout's header length and field offsets (`src/layout.rs`).
const HEADER: usize = 56;
const LOCKED: usize = 2;
const TOKEN: usize = 4;
const SINCE: usize = 20;
const TIMEOUT: usize = 26;
/// How long the fuzzed values live: far beyond the grace period of expiry events (60 s), so a
/// value is never "missing" during a case.
const PX_MS: u64 = 600_000;

/// `default` cases, unless `PROPTEST_CASES` says otherwise (`ProptestConfig::default` reads it).
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

fn u48(n: u64) -> [u8; 6] {
    let b = n.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

fn read_u48(b: &[u8]) -> u64 {
    b.iter().fold(0, |n, &x| (n << 8) | u64::from(x))
}

/// A stored value as the layout defines it, decoded by this test on its own.
#[derive(Debug)]
struct Reference {
    /// Version 2, lock byte 0 or 1, timeout at least 1 ms.
    header_ok: bool,
    locked: bool,
    token: [u8; 16],
    initialize: bool,
    timeout_ms: u64,
    /// The items, or `None` when they do not decode (truncated, not UTF-8, a name empty, longer
    /// than 256 bytes or repeated).
    items: Option<BTreeMap<String, Vec<u8>>>,
}

fn reference(value: &[u8]) -> Reference {
    let mut r = Reference {
        header_ok: false,
        locked: false,
        token: [0; 16],
        initialize: false,
        timeout_ms: 0,
        items: None,
    };
    let Some(h) = value.get(..HEADER) else {
        return r;
    };
    r.timeout_ms = read_u48(&h[TIMEOUT..TIMEOUT + 6]);
    r.header_ok = h[0] == 2 && h[LOCKED] <= 1 && r.timeout_ms >= 1;
    r.locked = h[LOCKED] == 1;
    r.token.copy_from_slice(&h[TOKEN..TOKEN + 16]);
    r.initialize = h[1] & 1 == 1;
    let mut rest = &value[HEADER..];
    let mut items = BTreeMap::new();
    while !rest.is_empty() {
        if rest.len() < 6 {
            return r;
        }
        let name_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let value_len = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
        let Some(body) = rest.get(6..6 + name_len + value_len) else {
            return r;
        };
        let Ok(name) = std::str::from_utf8(&body[..name_len]) else {
            return r;
        };
        if name.is_empty() || name.len() > 256 {
            return r;
        }
        if items
            .insert(name.to_owned(), body[name_len..].to_vec())
            .is_some()
        {
            return r;
        }
        rest = &rest[6 + name_len + value_len..];
    }
    r.items = Some(items);
    r
}

/// A value's items as the store hands them out, for comparing with the reference.
fn plain(items: &session_core::Items) -> BTreeMap<String, Vec<u8>> {
    items
        .iter()
        .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
        .collect()
}

/// Items the contract allows.
fn valid_items() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    prop::collection::btree_map(
        prop_oneof!["[a-z]{1,8}", "\\PC{1,12}", "[a-z]{256}"],
        prop::collection::vec(any::<u8>(), 0..48),
        0..5,
    )
}

fn entry(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(value);
    out
}

/// A header of this layout; the lock, when set, is fresh (`now`, the server's clock in ms), stale
/// (long ago) or from the future (a clock that went back), with any token.
fn header(now: u64) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        prop::bool::weighted(0.25),
        any::<[u8; 16]>(),
        prop_oneof![
            Just(0u64),
            Just(now),
            Just(now + 3_600_000),
            0..(1u64 << 48)
        ],
        prop_oneof![1u64..10_000_000, 1..(1u64 << 48)],
    )
        .prop_map(|(flags, locked, token, since, timeout)| {
            let mut h = vec![0; HEADER];
            h[0] = 2;
            h[1] = flags;
            h[LOCKED] = u8::from(locked);
            h[TOKEN..TOKEN + 16].copy_from_slice(&token);
            h[SINCE..SINCE + 6].copy_from_slice(&u48(since));
            h[TIMEOUT..TIMEOUT + 6].copy_from_slice(&u48(timeout));
            h
        })
}

/// One change to stored bytes: a byte set, a bit flipped, bytes inserted or cut, the end cut off.
fn damaged(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len();
    prop::collection::vec(
        (
            0..=len,
            0u8..5,
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 1..6),
        ),
        1..4,
    )
    .prop_map(move |edits| {
        let mut b = bytes.clone();
        for (at, kind, byte, insert) in edits {
            let at = at.min(b.len());
            match kind {
                0 if at < b.len() => b[at] = byte,
                1 if at < b.len() => b[at] ^= 1 << (byte % 8),
                2 => {
                    b.splice(at..at, insert);
                }
                3 => {
                    let end = (at + usize::from(byte % 16) + 1).min(b.len());
                    b.drain(at..end);
                }
                _ => b.truncate(at),
            }
        }
        b
    })
}

/// Stored values: any bytes; a header with any bytes after it; a value this layout writes, with
/// its entries in any order (sometimes one repeated), whole or damaged.
fn stored(now: u64) -> impl Strategy<Value = Vec<u8>> {
    let written = || {
        (header(now), valid_items(), any::<bool>(), any::<bool>()).prop_map(
            |(h, items, reverse, repeat)| {
                let mut list: Vec<Vec<u8>> = items.iter().map(|(n, v)| entry(n, v)).collect();
                if reverse {
                    list.reverse();
                }
                if repeat && let Some(first) = list.first().cloned() {
                    list.push(first);
                }
                [h, list.concat()].concat()
            },
        )
    };
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..100),
        1 => (header(now), prop::collection::vec(any::<u8>(), 0..48))
            .prop_map(|(h, tail)| [h, tail].concat()),
        3 => written(),
        4 => written().prop_flat_map(damaged),
    ]
}

/// `Error::Corrupt` naming `key`'s session.
fn names_the_session(e: &Error, key: &SessionKey) -> Result<(), TestCaseError> {
    match e {
        Error::Corrupt {
            backend,
            app,
            id_prefix,
            ..
        } => {
            prop_assert_eq!(*backend, "redis");
            prop_assert_eq!(app.as_str(), key.app().as_str());
            prop_assert_eq!(id_prefix.as_str(), key.id().prefix());
            Ok(())
        }
        other => Err(TestCaseError::fail(format!("not Corrupt: {other:?}"))),
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    store: RedisStore,
    raw: redis::aio::MultiplexedConnection,
    app: AppName,
}

impl Fixture {
    fn key_name(&self, key: &SessionKey) -> String {
        format!("{{{}_{}}}:v2", key.app().as_str(), key.id().expose())
    }

    /// One case: `value` stored under a fresh session, then every reading operation.
    async fn case(&self, value: Vec<u8>) -> Result<(), TestCaseError> {
        let key = SessionKey::new(self.app.clone(), SessionId::generate().expect("an id"));
        let name = self.key_name(&key);
        let mut raw = self.raw.clone();
        let fail = |e: redis::RedisError| TestCaseError::fail(e.to_string());
        let () = raw.pset_ex(&name, &value, PX_MS).await.map_err(fail)?;
        let result = self.check(&key, &name, &value).await;
        let () = raw
            .del(&[name.clone(), format!("{name}:alive")])
            .await
            .map_err(fail)?;
        result
    }

    async fn check(&self, key: &SessionKey, name: &str, value: &[u8]) -> Result<(), TestCaseError> {
        let r = reference(value);
        let store = &self.store;

        // touch reads the header only. Like release, remove, delete and change_id, its script
        // reads the header with GETRANGE, which answers the same for an empty value as for no
        // value: a session whose value is empty is missing to them (read and acquire, which GET
        // the whole value, call it corrupt).
        match store.touch(key).await {
            Ok(TouchOutcome::Touched) => prop_assert!(r.header_ok, "touched a bad header"),
            Ok(TouchOutcome::Missing) if value.is_empty() => {}
            Ok(other) => prop_assert!(false, "touch: {other:?}"),
            Err(e) => {
                prop_assert!(!r.header_ok, "touch refused a good header: {e:?}");
                names_the_session(&e, key)?;
            }
        }

        // read: locked (no data), the items, or corrupt.
        match store.read(key).await {
            Ok(ReadOutcome::Locked(info)) => {
                prop_assert!(r.header_ok && r.locked);
                prop_assert_eq!(
                    info.token,
                    LockToken::from_u128(u128::from_be_bytes(r.token))
                );
            }
            Ok(ReadOutcome::Found(snap)) => {
                prop_assert!(r.header_ok && !r.locked);
                let items = r
                    .items
                    .as_ref()
                    .ok_or_else(|| TestCaseError::fail("found items the layout does not decode"))?;
                prop_assert_eq!(&plain(&snap.items), items, "items lost or changed");
                prop_assert_eq!(snap.timeout, Duration::from_millis(r.timeout_ms));
                prop_assert_eq!(snap.initialize, r.initialize);
            }
            Ok(other) => prop_assert!(false, "read: {other:?}"),
            Err(e) => {
                prop_assert!(
                    !r.header_ok || (!r.locked && r.items.is_none()),
                    "read refused a good value: {e:?}"
                );
                names_the_session(&e, key)?;
            }
        }

        // acquire (lock TTL 10 s: the fresh locks stay, the old ones are taken over).
        let token = LockToken::generate().expect("a token");
        let acquired = match store.acquire(key, token, Duration::from_secs(10)).await {
            Ok(AcquireOutcome::Locked(info)) => {
                prop_assert!(r.header_ok && r.locked);
                prop_assert_eq!(
                    info.token,
                    LockToken::from_u128(u128::from_be_bytes(r.token))
                );
                None
            }
            Ok(AcquireOutcome::Acquired(snap)) => {
                prop_assert!(r.header_ok);
                let items = r.items.clone().ok_or_else(|| {
                    TestCaseError::fail("acquired items the layout does not decode")
                })?;
                prop_assert_eq!(&plain(&snap.items), &items, "items lost or changed");
                Some(items)
            }
            Ok(AcquireOutcome::Missing) => return Err(TestCaseError::fail("acquire: missing")),
            Ok(other) => return Err(TestCaseError::fail(format!("acquire: {other:?}"))),
            Err(e) => {
                prop_assert!(
                    !r.header_ok || r.items.is_none(),
                    "acquire refused a good value: {e:?}"
                );
                names_the_session(&e, key)?;
                // A corrupt session is not left locked by this acquire.
                let mut raw = self.raw.clone();
                let now: Vec<u8> = raw
                    .get(name)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let ours = token.as_u128().to_be_bytes();
                prop_assert!(
                    now.get(LOCKED) != Some(&1) || now.get(TOKEN..TOKEN + 16) != Some(&ours[..]),
                    "left locked by the failed acquire"
                );
                None
            }
        };

        // A commit on the session acquired: the scripts merge the delta into whatever valid
        // layout the value had (in place when it only replaces a value with one of the same
        // length, else rebuilt); what is read back is the old items with the delta applied.
        if let Some(mut items) = acquired {
            let mut delta = Delta::new();
            let first = items.iter().next().map(|(n, v)| (n.clone(), v.len()));
            match first {
                Some((name, len)) if value.len() % 2 == 1 => {
                    let new = vec![0xA5; len];
                    delta
                        .set
                        .insert(name.clone(), ItemValue::from_bytes(new.clone()));
                    items.insert(name, new);
                }
                _ => {
                    if let Some((name, _)) = first {
                        delta.removed.insert(name.clone());
                        items.remove(&name);
                    }
                    delta
                        .set
                        .insert("fuzz".into(), ItemValue::from_bytes(vec![1, 2, 3]));
                    items.insert("fuzz".into(), vec![1, 2, 3]);
                }
            }
            let committed = store
                .commit(key, token, &delta, Duration::from_secs(60))
                .await;
            prop_assert!(
                matches!(committed, Ok(CommitOutcome::Committed)),
                "commit: {committed:?}"
            );
            match store.read(key).await {
                Ok(ReadOutcome::Found(snap)) => {
                    prop_assert_eq!(&plain(&snap.items), &items, "the commit lost items");
                }
                other => prop_assert!(false, "read after commit: {other:?}"),
            }
        }
        Ok(())
    }
}

/// Arbitrary stored values through the store's scripts (300 cases; each writes one value).
#[test]
fn stored_bytes_through_the_store() {
    let Some(server) = test_support::configured(test_support::redis()) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (store, raw, now) = runtime.block_on(async {
        let store = test_support::open_redis(server.url(), backend_redis::RedisOptions::new())
            .await
            .expect("the store");
        let mut raw = redis::Client::open(server.url())
            .expect("a client")
            .get_multiplexed_async_connection()
            .await
            .expect("a raw connection");
        // The server's clock, which lock ages are measured on.
        let (seconds, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut raw)
            .await
            .expect("TIME");
        (store, raw, seconds * 1000 + micros / 1000)
    });
    let app = AppName::new(&format!(
        "/fuzz-stored/{}",
        SessionId::generate().expect("an id").expose()
    ))
    .expect("a name");
    let fixture = Fixture {
        runtime,
        store,
        raw,
        app,
    };
    let mut config = cases(300);
    // Failures are saved beside this file (`proptest-regressions/fuzz_stored.txt`).
    config.source_file = Some(file!());
    let mut runner = TestRunner::new(config);
    runner
        .run(&stored(now), |value| {
            fixture.runtime.block_on(fixture.case(value))
        })
        .expect("every stored value reads back or is corrupt");
}

/// A session key holding another type than a string (here a hash): every operation is a
/// permanent error, never a panic nor a session.
#[test]
fn a_key_of_another_type_is_an_error() {
    let Some(server) = test_support::configured(test_support::redis()) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = test_support::open_redis(server.url(), backend_redis::RedisOptions::new())
            .await
            .expect("the store");
        let mut raw = redis::Client::open(server.url())
            .expect("a client")
            .get_multiplexed_async_connection()
            .await
            .expect("a raw connection");
        let app = AppName::new("/fuzz-stored/types").expect("a name");
        let key = SessionKey::new(app, SessionId::generate().expect("an id"));
        let name = format!("{{{}_{}}}:v2", key.app().as_str(), key.id().expose());
        let () = raw.hset(&name, "f", "v").await.expect("HSET");
        let read = store.read(&key).await;
        let acquired = store
            .acquire(
                &key,
                LockToken::generate().expect("a token"),
                Duration::from_secs(1),
            )
            .await;
        let touched = store.touch(&key).await;
        let () = raw.del(&name).await.expect("DEL");
        // WRONGTYPE: a permanent `Error::Backend` (the server's error names the command), not
        // retried; not `Corrupt`, as the value is not this layout's bytes but no string at all.
        for result in [read.map(drop), acquired.map(drop), touched.map(drop)] {
            let err = result.expect_err("an error");
            assert!(
                matches!(err, Error::Backend { .. } | Error::Corrupt { .. }) && !err.is_transient(),
                "{err:?}"
            );
        }
    });
}
