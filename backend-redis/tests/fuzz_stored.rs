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
    AcquireOutcome, AppName, ChangeIdOutcome, CreateOutcome, Delta, Error, ItemValue, Items,
    LockToken, ReadOutcome, RemoveOutcome, SessionId, SessionKey, SessionStore, TouchOutcome,
};
use test_support::stored::{self, plain};

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
    stored::names_the_session(e, key, "redis").map_err(TestCaseError::fail)
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    store: RedisStore,
    raw: redis::aio::MultiplexedConnection,
    app: AppName,
}

/// The Redis key of `key`'s value (`src/keys.rs`).
fn value_key(key: &SessionKey) -> String {
    format!("{{{}_{}}}:v2", key.app().as_str(), key.id().expose())
}

impl Fixture {
    /// One case: `value` stored under a fresh session, then every reading operation.
    async fn case(&self, value: Vec<u8>) -> Result<(), TestCaseError> {
        let key = SessionKey::new(self.app.clone(), SessionId::generate().expect("an id"));
        let name = value_key(&key);
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

        // touch reads the header only (GETRANGE; an empty value is corrupt, not missing).
        match store.touch(key).await {
            Ok(TouchOutcome::Touched) => prop_assert!(r.header_ok, "touched a bad header"),
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
            stored::commit_reads_back(store, key, token, &delta, &items)
                .await
                .map_err(TestCaseError::fail)?;
        }
        Ok(())
    }
}

/// A store on `url`, with the near cache when `near`.
async fn open(url: &str, near: bool) -> RedisStore {
    let options = backend_redis::RedisOptions::new();
    let store = if near {
        test_support::open_redis_near_with(url, options, Default::default()).await
    } else {
        test_support::open_redis(url, options).await
    };
    store.expect("the store")
}

/// A raw connection to the standalone server at `url`.
async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a client")
        .get_multiplexed_async_connection()
        .await
        .expect("a raw connection")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Arbitrary stored values through the store's scripts (300 cases; each writes one value).
#[test]
fn stored_bytes_through_the_store() {
    let Some(server) = test_support::configured(test_support::redis()) else {
        return;
    };
    let runtime = runtime();
    let (store, raw, now) = runtime.block_on(async {
        let mut raw = raw_connection(server.url()).await;
        // The server's clock, which lock ages are measured on.
        let (seconds, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut raw)
            .await
            .expect("TIME");
        (
            open(server.url(), false).await,
            raw,
            seconds * 1000 + micros / 1000,
        )
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
    // Failures are saved beside this file (`fuzz_stored.proptest-regressions`, committed: it
    // holds the empty value, always run first).
    config.source_file = Some(file!());
    let mut runner = TestRunner::new(config);
    runner
        .run(&stored(now), |value| {
            fixture.runtime.block_on(fixture.case(value))
        })
        .expect("every stored value reads back or is corrupt");
}

/// What a session's key may hold that this layout never writes, beyond bytes: an empty string
/// (the scripts that read only the header use GETRANGE, which answers the same for an empty value
/// as for none) and keys of other types (the scripts' reads of them fail with `WRONGTYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Foreign {
    Empty,
    List,
    Hash,
    Set,
}

impl Foreign {
    const ALL: [Self; 4] = [Self::Empty, Self::List, Self::Hash, Self::Set];

    /// Writes it at `name`, expiring like a session's value.
    async fn plant<C: redis::aio::ConnectionLike>(
        self, raw: &mut C, name: &str,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        match self {
            Self::Empty => pipe.cmd("SET").arg(name).arg(""),
            Self::List => pipe.cmd("RPUSH").arg(name).arg("x"),
            Self::Hash => pipe.cmd("HSET").arg(name).arg("f").arg("v"),
            Self::Set => pipe.cmd("SADD").arg(name).arg("x"),
        };
        pipe.cmd("PEXPIRE").arg(name).arg(PX_MS);
        pipe.exec_async(raw).await
    }
}

/// What a raw connection says `name` holds (`DUMP`: type and contents), to check that nothing
/// was written to it.
async fn dump<C: redis::aio::ConnectionLike>(
    raw: &mut C, name: &str,
) -> Result<Option<Vec<u8>>, String> {
    redis::cmd("DUMP")
        .arg(name)
        .query_async(raw)
        .await
        .map_err(|e| format!("DUMP: {e}"))
}

/// `Ok` when `result` is `Error::Corrupt` naming `key`'s session.
fn corrupt<T: std::fmt::Debug>(
    what: &str, key: &SessionKey, result: session_core::Result<T>,
) -> Result<(), String> {
    match result {
        Err(e) => stored::names_the_session(&e, key, "redis").map_err(|m| format!("{what}: {m}")),
        Ok(outcome) => Err(format!("{what}: {outcome:?}, expected Error::Corrupt")),
    }
}

/// Every operation on a session whose key holds `foreign`: `Error::Corrupt` naming the session,
/// never `Missing`, `LockLost` or a driver error, and nothing written to the key; `create` does
/// not overwrite it (an empty value: `AlreadyExists`, as for any value this layout did not write;
/// another type: `Corrupt`); `delete` removes it; `change_id` neither moves it nor moves a session
/// onto it. Each wrong outcome is added to `failures`; `Err` when the test itself cannot go on.
async fn foreign_key<C>(
    store: &RedisStore, raw: &mut C, app: &AppName, foreign: Foreign, failures: &mut Vec<String>,
) -> Result<(), String>
where
    C: redis::aio::ConnectionLike + Send,
{
    let delta = Delta::new().with_set("n", ItemValue::from_bytes(vec![1]));
    let items: Items = [("n".to_owned(), ItemValue::from_bytes(vec![0]))].into();
    let long = Duration::from_secs(60);
    let id = || SessionId::generate().map_err(|e| e.to_string());
    let token = LockToken::generate().map_err(|e| e.to_string())?;
    let key = SessionKey::new(app.clone(), id()?);
    let name = value_key(&key);
    foreign.plant(raw, &name).await.map_err(|e| e.to_string())?;
    let before = dump(raw, &name).await?;
    let mut check = |result: Result<(), String>| {
        if let Err(e) = result {
            failures.push(format!("{foreign:?}: {e}"));
        }
    };
    check(corrupt("read", &key, store.read(&key).await));
    // Again: the first read left no copy in a near cache.
    check(corrupt("read again", &key, store.read(&key).await));
    check(corrupt(
        "acquire",
        &key,
        store.acquire(&key, token, long).await,
    ));
    let committed = store.commit(&key, token, &delta, long).await;
    check(corrupt("commit", &key, committed));
    check(corrupt("release", &key, store.release(&key, token).await));
    check(corrupt("touch", &key, store.touch(&key).await));
    let written = store.write_concurrent(&key, &delta, long).await;
    check(corrupt("write_concurrent", &key, written));
    check(corrupt("remove", &key, store.remove(&key, token).await));
    let created = store.create(&key, &items, long, true).await;
    check(match (foreign, created) {
        (Foreign::Empty, Ok(CreateOutcome::AlreadyExists)) => Ok(()),
        (Foreign::Empty, other) => Err(format!("create: {other:?}, expected AlreadyExists")),
        (_, other) => corrupt("create", &key, other),
    });
    // An empty value holds no lock to wait for: the watch ends at once, and the waiter's next
    // look reports the error. Another type is reported at once.
    let watch = store.watch_release(&key).await;
    check(match (foreign, watch) {
        (Foreign::Empty, Ok(watch)) => tokio::time::timeout(Duration::from_secs(1), watch)
            .await
            .map_err(|_| "the watch on an empty value does not end at once".to_owned()),
        (Foreign::Empty, Err(e)) => Err(format!("watch_release: {e:?}")),
        (_, other) => corrupt("watch_release", &key, other.map(drop)),
    });
    if store.capabilities().change_id {
        let renamed = store.change_id(&key, id()?, token).await;
        check(corrupt("change_id", &key, renamed));
    }
    if dump(raw, &name).await? != before {
        check(Err("an operation wrote to the key".into()));
    }
    if store.capabilities().change_id {
        // A live, locked session is never moved onto an id whose key holds a foreign value.
        let moved = SessionKey::new(app.clone(), id()?);
        store
            .create(&moved, &items, long, true)
            .await
            .map_err(|e| e.to_string())?;
        let holder = LockToken::generate().map_err(|e| e.to_string())?;
        let acquired = store.acquire(&moved, holder, long).await;
        if !matches!(acquired, Ok(AcquireOutcome::Acquired(_))) {
            return Err(format!("acquire a good session: {acquired:?}"));
        }
        let renamed = store.change_id(&moved, *key.id(), holder).await;
        if !matches!(renamed, Ok(ChangeIdOutcome::AlreadyExists)) {
            check(Err(format!(
                "change_id onto it: {renamed:?}, expected AlreadyExists"
            )));
        }
        if dump(raw, &name).await? != before {
            check(Err("change_id onto it wrote to the key".into()));
        }
        store.delete(&moved).await.map_err(|e| e.to_string())?;
    }
    // An administrative delete removes it.
    let deleted = store.delete(&key).await;
    if !matches!(deleted, Ok(RemoveOutcome::Removed)) {
        check(Err(format!("delete: {deleted:?}, expected Removed")));
    }
    if dump(raw, &name).await?.is_some() {
        check(Err("still there after delete".into()));
        let () = redis::cmd("DEL")
            .arg(&name)
            .query_async(raw)
            .await
            .map_err(|e| e.to_string())?;
    }
    let read = store.read(&key).await;
    if !matches!(read, Ok(ReadOutcome::Missing)) {
        check(Err(format!("read after delete: {read:?}")));
    }
    Ok(())
}

/// [`foreign_key`] for every [`Foreign`] value, through two stores on `url`: one without near
/// cache nor subscriber, one with the near cache and subscribed to expiry events where the server
/// reports them (`remove` and `delete` then read the whole value, GET, rather than its header,
/// GETRANGE). `raw` writes the values. Panics with every wrong outcome.
async fn foreign_keys<C>(url: &str, mut raw: C, label: &str)
where
    C: redis::aio::ConnectionLike + Send,
{
    let (plain, near) = (open(url, false).await, open(url, true).await);
    let app = AppName::new(&format!(
        "/fuzz-stored/foreign/{label}/{}",
        &SessionId::generate().expect("an id").expose()[..8]
    ))
    .expect("a name");
    let _events = if near.capabilities().expiry_events {
        Some(near.expiry_events().await.expect("expiry events"))
    } else {
        None
    };
    let mut failures = Vec::new();
    for (store, which) in [(&plain, "plain"), (&near, "near cache, subscriber")] {
        let mut found = Vec::new();
        for foreign in Foreign::ALL {
            if let Err(e) = foreign_key(store, &mut raw, &app, foreign, &mut found).await {
                found.push(format!("{foreign:?}: {e}"));
            }
        }
        failures.extend(found.into_iter().map(|f| format!("{label} ({which}): {f}")));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A standalone server: every operation on an empty value or a key of another type.
#[test]
fn foreign_keys_are_corrupt_standalone() {
    let Some(server) = test_support::configured(test_support::redis()) else {
        return;
    };
    runtime().block_on(async {
        let raw = raw_connection(server.url()).await;
        foreign_keys(server.url(), raw, "standalone").await;
    });
}

/// A cluster (its own slot routing, no `change_id`): the same.
#[test]
fn foreign_keys_are_corrupt_cluster() {
    let Some(cluster) = test_support::configured(test_support::redis_cluster()) else {
        return;
    };
    runtime().block_on(async {
        let raw = redis::cluster::ClusterClient::new(cluster.seeds().to_vec())
            .expect("a cluster client")
            .get_async_connection()
            .await
            .expect("a raw cluster connection");
        foreign_keys(cluster.url(), raw, "cluster").await;
    });
}
