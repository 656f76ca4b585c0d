//! Fuzzing on stable Rust (issue 14), end to end: garbage written into a session's row with a
//! raw connection, then read, acquired and committed through the store. On SQLite (always, a
//! temporary file) the row's `items` blob gets arbitrary bytes (and sometimes its lock token
//! arbitrary bytes); on Postgres the `names`/`vals` arrays get arbitrary names, NULL elements and
//! mismatched lengths; on MySQL/MariaDB the row's `items` blob gets arbitrary bytes (the two
//! servers when configured: skipped without `SESSION_TEST_POSTGRES_URL` or
//! `SESSION_TEST_MYSQL_URL`, failing when `SESSION_TEST_REQUIRE` names them). Whatever the row
//! holds, each operation gives a
//! valid outcome that agrees with the layout (decoded again here by a reference decoder) or
//! `Error::Corrupt` naming the session: never a panic, never another error, never a session
//! silently emptied (a snapshot holds exactly the items the row holds).
//!
//! CI runs the case counts below; `PROPTEST_CASES` runs more
//! (`PROPTEST_CASES=20000 cargo test -p backend-sql --test fuzz_stored --release`).

use std::collections::BTreeMap;
use std::time::Duration;

use backend_sql::{SqlOptions, SqlStore};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use session_core::{
    AcquireOutcome, AppName, Config, CreateOutcome, Delta, Error, ItemValue, Items, LockToken,
    ReadOutcome, SessionId, SessionKey, SessionStore,
};
use sqlx::AssertSqlSafe;
use test_support::stored::{self, plain};

/// `default` cases, unless `PROPTEST_CASES` says otherwise (`ProptestConfig::default` reads it);
/// failures are saved beside this file.
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config.source_file = Some(file!());
    config
}

/// The items a row holds, as the store must hand them out: `None` when a name is not UTF-8,
/// empty, longer than 256 bytes or repeated (the store's `Corrupt`).
fn decoded(raw: &[(Vec<u8>, Vec<u8>)]) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut items = BTreeMap::new();
    for (name, value) in raw {
        let name = String::from_utf8(name.clone()).ok()?;
        if name.is_empty() || name.len() > 256 || items.insert(name, value.clone()).is_some() {
            return None;
        }
    }
    Some(items)
}

/// Raw items: names that are mostly valid (a few letters, so that they repeat sometimes), or
/// empty, long, not UTF-8; values of any bytes.
fn raw_items() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        6 => "[a-e]{1,2}".prop_map(String::into_bytes),
        2 => "\\PC{1,10}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
        1 => Just(vec![b'n'; 257]),
        1 => prop::collection::vec(any::<u8>(), 1..6),
    ];
    prop::collection::vec((name, prop::collection::vec(any::<u8>(), 0..32)), 0..5)
}

/// `Error::Corrupt` naming `key`'s session.
fn names_the_session(e: &Error, key: &SessionKey, backend: &str) -> Result<(), TestCaseError> {
    stored::names_the_session(e, key, backend).map_err(TestCaseError::fail)
}

/// Reads, acquires and (when acquired) commits `key`, whose row now holds `raw` (`None`: items
/// the reference decoder cannot even split, a truncated blob); `locked`: the row's lock token
/// was replaced by one that is not 16 bytes (held, fresh).
async fn check(
    store: &SqlStore, key: &SessionKey, raw: Option<&[(Vec<u8>, Vec<u8>)]>, locked: bool,
) -> Result<(), TestCaseError> {
    let backend = store.backend();
    let want = raw.and_then(decoded);
    match store.read(key).await {
        Ok(ReadOutcome::Found(snap)) => {
            prop_assert!(!locked);
            let items = want
                .as_ref()
                .ok_or_else(|| TestCaseError::fail("found items that do not decode"))?;
            prop_assert_eq!(&plain(&snap.items), items, "items lost or changed");
        }
        Ok(other) => prop_assert!(false, "read: {other:?}"),
        Err(e) => {
            prop_assert!(locked || want.is_none(), "read refused a good row: {e:?}");
            names_the_session(&e, key, backend)?;
        }
    }
    let token = LockToken::generate().expect("a token");
    let acquired = match store.acquire(key, token, Duration::from_secs(60)).await {
        Ok(AcquireOutcome::Acquired(snap)) => {
            prop_assert!(!locked);
            let items = want
                .clone()
                .ok_or_else(|| TestCaseError::fail("acquired items that do not decode"))?;
            prop_assert_eq!(&plain(&snap.items), &items, "items lost or changed");
            Some(items)
        }
        Ok(other) => return Err(TestCaseError::fail(format!("acquire: {other:?}"))),
        Err(e) => {
            prop_assert!(
                locked || want.is_none(),
                "acquire refused a good row: {e:?}"
            );
            names_the_session(&e, key, backend)?;
            None
        }
    };
    if let Some(mut items) = acquired {
        // Remove one item, replace another, add one: every other item stays byte for byte.
        let mut delta = Delta::new();
        let mut names = items.keys().cloned().collect::<Vec<_>>().into_iter();
        if let Some(first) = names.next() {
            delta.removed.insert(first.clone());
            items.remove(&first);
        }
        if let Some(second) = names.next() {
            delta
                .set
                .insert(second.clone(), ItemValue::from_bytes(vec![7]));
            items.insert(second, vec![7]);
        }
        delta
            .set
            .insert("zz".into(), ItemValue::from_bytes(vec![1, 2]));
        items.insert("zz".into(), vec![1, 2]);
        stored::commit_reads_back(store, key, token, &delta, &items)
            .await
            .map_err(TestCaseError::fail)?;
    }
    Ok(())
}

/// A session created through the store, to be overwritten with garbage.
async fn created(store: &SqlStore, app: &AppName) -> SessionKey {
    let key = SessionKey::new(app.clone(), SessionId::generate().expect("an id"));
    let mut items = Items::new();
    items.insert("a".into(), ItemValue::from_bytes(vec![1]));
    let outcome = store
        .create(&key, &items, Duration::from_secs(600), true)
        .await
        .expect("create");
    assert!(matches!(outcome, CreateOutcome::Created));
    key
}

fn pack(items: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in items {
        for part in [name, value] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The SQLite and MySQL blob layout (`src/dialect.rs` `unpack`): each name and value as a `u32` big-endian
/// length and the bytes. `None` when the blob does not split that way.
fn unpack(mut blob: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let part = |blob: &mut &[u8]| -> Option<Vec<u8>> {
        let (len, rest) = blob.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let part = rest.get(..len)?.to_vec();
        *blob = &rest[len..];
        Some(part)
    };
    let mut items = Vec::new();
    while !blob.is_empty() {
        let name = part(&mut blob)?;
        let value = part(&mut blob)?;
        items.push((name, value));
    }
    Some(items)
}

/// SQLite and MySQL `items` blobs: packed raw items, whole or damaged, or any bytes.
fn blob() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => raw_items().prop_map(|items| pack(&items)),
        2 => (raw_items(), any::<prop::sample::Index>(), any::<u8>(), 0u8..3).prop_map(
            |(items, at, byte, kind)| {
                let mut b = pack(&items);
                let i = at.index(b.len() + 1);
                match kind {
                    0 if i < b.len() => b[i] = byte,
                    1 => b.insert(i, byte),
                    _ => b.truncate(i),
                }
                b
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..48),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn open(url: &str, prefix: &str) -> SqlStore {
    let options = SqlOptions::new()
        .with_table_prefix(prefix)
        .expect("a prefix")
        .with_sweeper(None);
    SqlStore::connect_with(&Config::from_url(url).expect("a URL"), options)
        .await
        .expect("the store")
}

/// A runtime, a table prefix of this run's own, the store on the server at `url` with its
/// tables under that prefix, and a raw pool on the same server.
fn on_server<DB: sqlx::Database>(
    url: &str,
) -> (tokio::runtime::Runtime, String, SqlStore, sqlx::Pool<DB>) {
    let runtime = runtime();
    let prefix = format!(
        "fz{}_",
        &SessionId::generate().expect("an id").expose()[..8]
    );
    let (store, raw) = runtime.block_on(async {
        let store = open(url, &prefix).await;
        let raw = sqlx::Pool::<DB>::connect(url).await.expect("a raw pool");
        (store, raw)
    });
    (runtime, prefix, store, raw)
}

fn app() -> AppName {
    AppName::new(&format!(
        "/fuzz-stored/{}",
        &SessionId::generate().expect("an id").expose()[..8]
    ))
    .expect("a name")
}

/// SQLite (300 cases): arbitrary bytes in the `items` blob, and sometimes a lock token that is
/// not 16 bytes.
#[test]
fn sqlite_rows_with_garbage() {
    let dir = tempfile::tempdir().expect("a directory");
    let url = format!("sqlite:{}", dir.path().join("fuzz.db").display());
    let runtime = runtime();
    let (store, raw) = runtime.block_on(async {
        let store = open(&url, "fz_").await;
        let raw = sqlx::SqlitePool::connect(&url).await.expect("a raw pool");
        (store, raw)
    });
    let app = app();
    let strategy = (
        blob(),
        prop::option::weighted(0.15, prop::collection::vec(any::<u8>(), 0..20)),
    );
    TestRunner::new(cases(300))
        .run(&strategy, |(blob, token)| {
            runtime.block_on(async {
                let key = created(&store, &app).await;
                let token = token.filter(|t| t.len() != 16);
                sqlx::query(
                    "UPDATE fz_sessions SET items = ?, lock_token = ?, \
                     locked_at = CASE WHEN ? THEN expires_at - 1000 ELSE locked_at END \
                     WHERE app = ? AND sid = ?",
                )
                .bind(&blob)
                .bind(&token)
                .bind(token.is_some())
                .bind(key.app().as_str().as_bytes())
                .bind(key.id().expose().as_bytes())
                .execute(&raw)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let items = unpack(&blob);
                let result = check(&store, &key, items.as_deref(), token.is_some()).await;
                let _ = store.delete(&key).await;
                result
            })
        })
        .expect("every row reads back or is corrupt");
}

/// Postgres (200 cases, when configured): arbitrary names (NULL among them) and values in the
/// `names`/`vals` arrays, of the same length or not.
#[test]
fn postgres_rows_with_garbage() {
    let Some(server) = test_support::configured(test_support::postgres()) else {
        return;
    };
    let (runtime, prefix, store, raw) = on_server::<sqlx::Postgres>(server.url());
    let app = app();
    let strategy = (
        raw_items(),
        prop::option::weighted(0.1, any::<prop::sample::Index>()),
        prop::option::weighted(0.1, prop::collection::vec(any::<u8>(), 0..4)),
    );
    let update =
        format!("UPDATE {prefix}sessions SET names = $1, vals = $2 WHERE app = $3 AND sid = $4");
    TestRunner::new(cases(200))
        .run(&strategy, |(items, null_at, extra)| {
            runtime.block_on(async {
                let key = created(&store, &app).await;
                let mut names: Vec<Option<Vec<u8>>> =
                    items.iter().map(|(n, _)| Some(n.clone())).collect();
                let values: Vec<Option<Vec<u8>>> = items
                    .iter()
                    .map(|(_, v)| Some(v.clone()))
                    .chain(extra.clone().map(Some))
                    .collect();
                // A NULL name (the column allows it inside the array).
                let null = null_at.filter(|_| !names.is_empty());
                if let Some(at) = null {
                    let i = at.index(names.len());
                    names[i] = None;
                }
                sqlx::query(AssertSqlSafe(update.clone()))
                    .bind(&names)
                    .bind(&values)
                    .bind(key.app().as_str().as_bytes())
                    .bind(key.id().expose().as_bytes())
                    .execute(&raw)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let intact = null.is_none() && extra.is_none();
                let result = check(&store, &key, intact.then_some(&items[..]), false).await;
                let _ = store.delete(&key).await;
                result
            })
        })
        .expect("every row reads back or is corrupt");
}

/// MySQL/MariaDB (200 cases, when configured): arbitrary bytes in the row's packed `items` blob
/// (migration 0005; the SQLite layout), whole or damaged.
#[test]
fn mysql_rows_with_garbage() {
    let Some(server) = test_support::configured(test_support::mysql()) else {
        return;
    };
    let (runtime, prefix, store, raw) = on_server::<sqlx::MySql>(server.url());
    let app = app();
    let update = format!("UPDATE {prefix}sessions SET items = ? WHERE app = ? AND sid = ?");
    TestRunner::new(cases(200))
        .run(&blob(), |blob| {
            runtime.block_on(async {
                let key = created(&store, &app).await;
                sqlx::query(AssertSqlSafe(update.clone()))
                    .bind(&blob)
                    .bind(key.app().as_str().as_bytes())
                    .bind(key.id().expose().as_bytes())
                    .execute(&raw)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let items = unpack(&blob);
                let result = check(&store, &key, items.as_deref(), false).await;
                let _ = store.delete(&key).await;
                result
            })
        })
        .expect("every row reads back or is corrupt");
}
