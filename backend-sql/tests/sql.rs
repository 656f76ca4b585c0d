//! SQL-specific tests (issue 4), on SQLite always and on the Postgres / MySQL servers that
//! `test-support` reads from the environment (skipped when not configured, failing when required).
//! The TLS test also needs the servers' CA files, the restart test the Postgres cluster's
//! directories (scripts/sql/start.sh writes them all; test-support's crate docs list them).
//!
//! Each test uses its own table prefix, so row counts are exact even on a shared database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backend_sql::{SqlOptions, SqlStore};
use session_core::{
    AcquireOutcome, AppName, CommitOutcome, Config, CreateOutcome, Delta, Error, ItemValue, Items,
    Layered, LockToken, ReadOutcome, RefreshWindow, RetryLayer, RetryPolicy, SessionId, SessionKey,
    SessionStore, TouchOutcome,
};
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};
use test_support::SqlServer;

/// Tests that restart the Postgres cluster take this for writing; other Postgres tests read.
static PG_GATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

#[derive(Clone, Copy, Debug, PartialEq)]
enum Db {
    Sqlite,
    Postgres,
    Mysql,
}

struct Target {
    db: Db,
    url: String,
    /// The server (Postgres, MySQL); `None` for SQLite.
    server: Option<SqlServer>,
    _dir: Option<Arc<tempfile::TempDir>>,
}

fn targets() -> Vec<Target> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut out = vec![Target {
        db: Db::Sqlite,
        url: format!("sqlite:{}", dir.path().join("s.db").display()),
        server: None,
        _dir: Some(dir),
    }];
    for (db, server) in [
        (Db::Postgres, test_support::postgres()),
        (Db::Mysql, test_support::mysql()),
    ] {
        if let Some(server) = test_support::configured(server) {
            out.push(Target {
                db,
                url: server.url().to_owned(),
                server: Some(server),
                _dir: None,
            });
        }
    }
    out
}

fn prefix(tag: &str) -> String {
    format!("t{}_{tag}_", &SessionId::generate().unwrap().expose()[..8])
}

async fn store(url: &str, prefix: &str) -> SqlStore {
    store_with(url, SqlOptions::new().with_table_prefix(prefix).unwrap()).await
}

async fn store_with(url: &str, options: SqlOptions) -> SqlStore {
    let config = Config::from_url(url).unwrap();
    SqlStore::connect_with(&config, options.with_sweeper(None))
        .await
        .unwrap()
}

/// Runs one SQL statement outside the store (test setup and row counts), per dialect.
async fn exec(db: Db, url: &str, sql: String) -> i64 {
    use sqlx::Row;
    // The same steps on each dialect's pool type: connect, one statement, the first column.
    macro_rules! scalar {
        ($pool:ty) => {{
            let pool = <$pool>::connect(url).await.unwrap();
            let row = sqlx::query(AssertSqlSafe(sql))
                .fetch_optional(&pool)
                .await
                .unwrap();
            pool.close().await;
            row.map(|r| r.try_get::<i64, _>(0).unwrap_or(0))
                .unwrap_or(0)
        }};
    }
    match db {
        Db::Postgres => scalar!(sqlx::PgPool),
        Db::Mysql => scalar!(sqlx::MySqlPool),
        Db::Sqlite => scalar!(sqlx::SqlitePool),
    }
}

/// How many items the sessions under prefix `p` hold where they are packed in the row (SQLite,
/// MySQL/MariaDB): each row's `items` blob is `[u32 BE name length][name][u32 BE value
/// length][value]…` (NULL on MySQL: none).
async fn packed_items(db: Db, url: &str, p: &str) -> i64 {
    let sql = AssertSqlSafe(format!("SELECT items FROM {p}sessions"));
    let blobs: Vec<Option<Vec<u8>>> = match db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let blobs = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            blobs
        }
        Db::Mysql => {
            let pool = sqlx::MySqlPool::connect(url).await.unwrap();
            let blobs = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            blobs
        }
        Db::Postgres => unreachable!("Postgres keeps two arrays"),
    };
    let mut count = 0;
    for blob in blobs.into_iter().flatten() {
        let mut rest = &blob[..];
        while !rest.is_empty() {
            for _ in 0..2 {
                let (len, tail) = rest.split_first_chunk::<4>().unwrap();
                rest = &tail[u32::from_be_bytes(*len) as usize..];
            }
            count += 1;
        }
    }
    count
}

fn key(app: &str) -> SessionKey {
    SessionKey::new(AppName::new(app).unwrap(), SessionId::generate().unwrap())
}

fn v(bytes: &[u8]) -> ItemValue {
    ItemValue::from_bytes(bytes.to_vec())
}

async fn acquire(store: &dyn SessionStore, k: &SessionKey) -> (Arc<Items>, LockToken) {
    loop {
        let token = LockToken::generate().unwrap();
        match store
            .acquire(k, token, Duration::from_secs(60))
            .await
            .unwrap()
        {
            AcquireOutcome::Acquired(s) => return (s.items, token),
            AcquireOutcome::Locked(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_names_and_values_are_stored_verbatim() {
    let _gate = PG_GATE.read().await;
    for t in targets() {
        let p = prefix("hostile");
        let s = store(&t.url, &p).await;
        let names = [
            "'",
            "\"",
            "'; DROP TABLE sess_sessions; --",
            "%",
            "%s%n",
            "_",
            ";",
            "a\0b",
            "\0",
            "ünï ✓ 🦀",
            "\\",
            "Case",
            "case",
        ];
        let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        let values: [&[u8]; 5] = [b"'", b"%;\0", "ü🦀".as_bytes(), b"", &big];
        let mut items = Items::new();
        for (i, n) in names.iter().enumerate() {
            items.insert((*n).to_owned(), v(values[i % values.len()]));
        }
        for app in ["/'quote", "/%percent;semi", "/--\"dq\\bs", "/ok"] {
            let k = key(app);
            assert_eq!(
                s.create(&k, &items, Duration::from_secs(60), true)
                    .await
                    .unwrap(),
                CreateOutcome::Created
            );
            let ReadOutcome::Found(snap) = s.read(&k).await.unwrap() else {
                panic!("{:?}: not found", t.db)
            };
            assert_eq!(*snap.items, items, "{:?}: items round-trip verbatim", t.db);
            // A commit of one changed item writes one row; the others stay as they are.
            let (_, token) = acquire(&s, &k).await;
            let d = Delta::new()
                .with_set("a\0b", v(b"changed"))
                .with_removed("Case");
            assert_eq!(
                s.commit(&k, token, &d, Duration::from_secs(60))
                    .await
                    .unwrap(),
                CommitOutcome::Committed
            );
            let ReadOutcome::Found(snap) = s.read(&k).await.unwrap() else {
                panic!()
            };
            let mut expected = items.clone();
            d.apply_to(&mut expected);
            assert_eq!(*snap.items, expected, "{:?}", t.db);
        }
        // In the session's row: on Postgres one array element per item, on SQLite and MySQL one
        // entry of the packed blob.
        let rows = match t.db {
            Db::Postgres => {
                let count =
                    format!("SELECT COALESCE(SUM(cardinality(names)), 0)::bigint FROM {p}sessions");
                exec(t.db, &t.url, count).await
            }
            _ => packed_items(t.db, &t.url, &p).await,
        };
        assert_eq!(
            rows as usize,
            4 * (names.len() - 1),
            "{:?}: one stored item per item",
            t.db
        );
        s.close().await;
    }
}

const DIGITS: &str = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
     UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";

/// Expired sessions inserted directly (fast), per dialect: `n` sessions expired an hour ago, each
/// with one item.
fn seed_expired_sql(db: Db, p: &str, n: u64) -> Vec<String> {
    match db {
        Db::Postgres => vec![format!(
            "INSERT INTO {p}sessions (app, sid, expires_at, timeout_ms, initialize, names, vals) \
                     SELECT '\\x2f6f6c64'::bytea, convert_to('old' || g, 'UTF8'), now() - interval '1 hour' + g * interval '1 microsecond', 1000, false, \
                            ARRAY['n'::bytea], ARRAY['v'::bytea] \
                     FROM generate_series(1, {n}) g"
        )],
        // Digits cross-joined (MariaDB caps recursive CTEs at 1000 iterations by default); the
        // item packed as the `items` column holds it: lengths as 4 bytes big-endian.
        Db::Mysql => vec![format!(
            "INSERT INTO {p}sessions (app, sid, expires_at, timeout_ms, initialize, created_at, items) \
             SELECT '/old', CONCAT('old', i), UTC_TIMESTAMP(6) - INTERVAL 1 HOUR, 1000, false, UTC_TIMESTAMP(6), \
                    X'000000016e0000000176' \
             FROM (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS i \
             FROM {DIGITS} a, {DIGITS} b, {DIGITS} c, {DIGITS} e, {DIGITS} f) g WHERE i < {n}"
        )],
        // The item packed as the `items` column holds it: lengths as 4 bytes big-endian.
        Db::Sqlite => vec![format!(
            "INSERT INTO {p}sessions (app, sid, expires_at, timeout_ms, initialize, created_at, items) \
                 WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n}) \
                 SELECT X'2f6f6c64', CAST('old' || i AS BLOB), 1000 + i, 1000, 0, 0, \
                        X'000000016e0000000176' FROM g"
        )],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_deletes_exactly_the_expired_with_two_purgers_and_live_traffic() {
    let _gate = PG_GATE.read().await;
    for t in targets() {
        // 100,000 expired sessions on every database (about a second each here).
        let n: u64 = 100_000;
        let p = prefix("purge");
        let s = Arc::new(store(&t.url, &p).await);
        for sql in seed_expired_sql(t.db, &p, n) {
            exec(t.db, &t.url, sql).await;
        }
        let live: Vec<SessionKey> = (0..50).map(|_| key("/live")).collect();
        for k in &live {
            let items: Items = [("n".to_owned(), v(&0u64.to_le_bytes()))].into();
            s.create(k, &items, Duration::from_secs(600), true)
                .await
                .unwrap();
        }
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = {
            let (s, live, stop) = (Arc::clone(&s), live.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for k in &live {
                        let (_, token) = acquire(&*s, k).await;
                        let d = Delta::new().with_set("touched", v(b"1"));
                        s.commit(k, token, &d, Duration::from_secs(600))
                            .await
                            .unwrap();
                        ops += 1;
                    }
                }
                ops
            })
        };
        let purger = |s: Arc<SqlStore>| {
            tokio::spawn(async move {
                let mut total = 0u64;
                loop {
                    let n = s.purge_expired(1000).await.unwrap();
                    total += n;
                    if n == 0 {
                        return total;
                    }
                }
            })
        };
        let (a, b) = (purger(Arc::clone(&s)), purger(Arc::clone(&s)));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        stop.store(true, Ordering::Relaxed);
        let ops = traffic.await.unwrap();
        eprintln!(
            "{:?}: purged {n} ({a} + {b}) in {:?} with {ops} live commits",
            t.db,
            started.elapsed()
        );
        assert_eq!(a + b, n, "{:?}: exactly the expired sessions", t.db);
        let left = exec(t.db, &t.url, format!("SELECT COUNT(*) FROM {p}sessions")).await;
        assert_eq!(left, live.len() as i64, "{:?}", t.db);
        // Items live in the session rows.
        let items = match t.db {
            Db::Postgres => {
                let count =
                    format!("SELECT COALESCE(SUM(cardinality(names)), 0)::bigint FROM {p}sessions");
                exec(t.db, &t.url, count).await
            }
            _ => packed_items(t.db, &t.url, &p).await,
        };
        assert_eq!(
            items,
            2 * live.len() as i64,
            "{:?}: items of purged sessions are gone",
            t.db
        );
        for k in &live {
            assert!(matches!(s.read(k).await.unwrap(), ReadOutcome::Found(_)));
        }
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_all_succeed() {
    let _gate = PG_GATE.read().await;
    for t in targets() {
        let p = prefix("mig");
        let opens = (0..4).map(|_| {
            let (url, p) = (t.url.clone(), p.clone());
            tokio::spawn(async move {
                let config = Config::from_url(&url).unwrap();
                let options = SqlOptions::new()
                    .with_table_prefix(&p)
                    .unwrap()
                    .with_sweeper(None);
                SqlStore::connect_with(&config, options).await
            })
        });
        let mut stores = Vec::new();
        for open in opens {
            stores.push(
                open.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{:?}: {e:?}", t.db)),
            );
        }
        let k = key("/mig");
        assert_eq!(
            stores[0]
                .create(&k, &Items::new(), Duration::from_secs(60), true)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        assert!(matches!(
            stores[3].read(&k).await.unwrap(),
            ReadOutcome::Found(_)
        ));
        let applied = exec(t.db, &t.url, format!("SELECT COUNT(*) FROM {p}migrations")).await;
        // Postgres has four migrations, MySQL three; SQLite's schema has one.
        let expected = latest_migration(t.db);
        assert_eq!(
            applied, expected,
            "{:?}: each migration is recorded once",
            t.db
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_writers_from_four_pools_lose_nothing() {
    let _gate = PG_GATE.read().await;
    for t in targets() {
        let p = prefix("w32");
        let mut pools = Vec::new();
        for _ in 0..4 {
            pools.push(Arc::new(
                store_with(
                    &t.url,
                    SqlOptions::new()
                        .with_table_prefix(&p)
                        .unwrap()
                        .with_max_connections(4),
                )
                .await,
            ));
        }
        let k = key("/counter");
        let zero: Items = [("n".to_owned(), v(&0u64.to_le_bytes()))].into();
        pools[0]
            .create(&k, &zero, Duration::from_secs(600), true)
            .await
            .unwrap();
        const ROUNDS: u64 = 5;
        let writers: Vec<_> = (0..32)
            .map(|i| {
                let (s, k) = (Arc::clone(&pools[i % 4]), k.clone());
                tokio::spawn(async move {
                    for _ in 0..ROUNDS {
                        let (items, token) = acquire(&*s, &k).await;
                        let n = u64::from_le_bytes(items["n"].as_bytes().try_into().unwrap());
                        let d = Delta::new().with_set("n", v(&(n + 1).to_le_bytes()));
                        assert_eq!(
                            s.commit(&k, token, &d, Duration::from_secs(600))
                                .await
                                .unwrap(),
                            CommitOutcome::Committed
                        );
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let ReadOutcome::Found(snap) = pools[1].read(&k).await.unwrap() else {
            panic!()
        };
        let n = u64::from_le_bytes(snap.items["n"].as_bytes().try_into().unwrap());
        assert_eq!(n, 32 * ROUNDS, "{:?}: no lost update", t.db);
    }
}

/// The session row's version as seen from outside: Postgres `xmin` (it changes with every
/// `UPDATE`, even one that changes nothing), elsewhere `expires_at` in microseconds (every slide
/// moves it; clearing the initialize flag slides too).
/// Every shape of delta a commit merges (Postgres: nothing to merge; one existing item replaced in
/// place, first, middle or last; otherwise the general merge), and write_concurrent, against the
/// same delta applied in memory: names and values stay paired, nothing else moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_delta_shape_merges_like_apply_to() {
    let _gate = PG_GATE.read().await;
    for t in targets() {
        let p = prefix("merge");
        let s = store(&t.url, &p).await;
        let k = key("/merge");
        let mut want: Items = [("a", b"1" as &[u8]), ("b", b"22"), ("c", b"333")]
            .iter()
            .map(|(n, val)| ((*n).to_owned(), v(val)))
            .collect();
        let created = s.create(&k, &want, MINUTE, true).await.unwrap();
        assert_eq!(created, CreateOutcome::Created);
        let deltas = [
            Delta::new(),
            Delta::new().with_set("a", v(b"first")),
            Delta::new().with_set("b", v(b"middle")),
            Delta::new().with_set("c", v(b"last")),
            Delta::new().with_set("d", v(b"new")),
            Delta::new().with_set("a", v(b"x")).with_set("d", v(b"y")),
            Delta::new().with_removed("b"),
            Delta::new().with_removed("a").with_set("c", v(b"\0z")),
            Delta::new().with_removed("nothing"),
            Delta::new().with_cleared().with_set("e", v(b"5")),
            Delta::new().with_set("e", v(b"")),
            Delta::new().with_cleared(),
            Delta::new().with_set("f", v(b"6")),
        ];
        for (i, delta) in deltas.iter().enumerate() {
            let what = format!("{:?}: delta {i}", t.db);
            if i % 3 == 2 {
                let out = s.write_concurrent(&k, delta, MINUTE).await.unwrap();
                assert_eq!(out, CommitOutcome::Committed, "{what}");
            } else {
                let (_, token) = acquire(&s, &k).await;
                let out = s.commit(&k, token, delta, MINUTE).await.unwrap();
                assert_eq!(out, CommitOutcome::Committed, "{what}");
            }
            delta.apply_to(&mut want);
            match s.read(&k).await.unwrap() {
                ReadOutcome::Found(snap) => assert_eq!(*snap.items, want, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        s.close().await;
    }
}

/// How many migrations each database's schema has.
fn latest_migration(db: Db) -> i64 {
    match db {
        Db::Sqlite => 2,
        Db::Mysql => 5,
        Db::Postgres => 9,
    }
}

async fn row_version(db: Db, url: &str, p: &str, k: &SessionKey) -> i64 {
    let sid = hex(k.id().expose().as_bytes());
    let sql = match db {
        Db::Postgres => {
            format!("SELECT xmin::text::bigint FROM {p}sessions WHERE sid = '\\x{sid}'::bytea")
        }
        Db::Mysql => format!(
            "SELECT CAST(UNIX_TIMESTAMP(expires_at) * 1000000 AS SIGNED) FROM {p}sessions \
             WHERE sid = X'{sid}'"
        ),
        Db::Sqlite => format!("SELECT expires_at FROM {p}sessions WHERE sid = X'{sid}'"),
    };
    exec(db, url, sql).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// docs/contract.md §1: an access that finds `expires_at >= now + timeout` writes nothing (reads,
/// touches and refused acquires of a busy session are pure reads: on Postgres the row's `xmin`
/// stays), while exact sliding writes on every access and the first read of an uninitialized
/// session writes once (it clears the flag, reported once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accesses_inside_the_window_write_nothing() {
    let _gate = PG_GATE.read().await;
    for t in targets() {
        let p = prefix("win");
        let lazy = store(&t.url, &p).await;
        assert_eq!(lazy.refresh_window(), RefreshWindow::DEFAULT);
        let config = Config::builder()
            .url(&t.url)
            .refresh_window(RefreshWindow::EXACT)
            .build()
            .unwrap();
        let options = SqlOptions::new().with_table_prefix(&p).unwrap();
        let exact = SqlStore::connect_with(&config, options.with_sweeper(None))
            .await
            .unwrap();
        let k = key("/win");
        let items: Items = [("a".to_owned(), v(b"1"))].into();
        let created = lazy.create(&k, &items, MINUTE, false).await.unwrap();
        assert_eq!(created, CreateOutcome::Created);
        let fresh = row_version(t.db, &t.url, &p, &k).await;
        // The first read reports the flag, once, and clears it: a write.
        let ReadOutcome::Found(first) = lazy.read(&k).await.unwrap() else {
            panic!("{:?}: not found", t.db)
        };
        assert!(first.initialize, "{:?}", t.db);
        assert_eq!(*first.items, items, "{:?}", t.db);
        let cleared = row_version(t.db, &t.url, &p, &k).await;
        assert_ne!(cleared, fresh, "{:?}: clearing the flag writes", t.db);
        for _ in 0..3 {
            let ReadOutcome::Found(snap) = lazy.read(&k).await.unwrap() else {
                panic!("{:?}: not found", t.db)
            };
            assert!(!snap.initialize, "{:?}: the flag is reported once", t.db);
            assert_eq!(*snap.items, items, "{:?}", t.db);
            assert_eq!(lazy.touch(&k).await.unwrap(), TouchOutcome::Touched);
        }
        let after = row_version(t.db, &t.url, &p, &k).await;
        assert_eq!(
            after, cleared,
            "{:?}: reads inside the window write nothing",
            t.db
        );

        // Locked by another: reads and refused acquires write nothing either.
        let (_, holder) = acquire(&lazy, &k).await;
        let locked = row_version(t.db, &t.url, &p, &k).await;
        assert!(matches!(
            lazy.read(&k).await.unwrap(),
            ReadOutcome::Locked(_)
        ));
        let other = LockToken::generate().unwrap();
        let refused = lazy.acquire(&k, other, MINUTE).await.unwrap();
        assert!(matches!(refused, AcquireOutcome::Locked(_)), "{:?}", t.db);
        let after = row_version(t.db, &t.url, &p, &k).await;
        assert_eq!(after, locked, "{:?}: refused accesses write nothing", t.db);
        let released = lazy.release(&k, holder).await.unwrap();
        assert_eq!(released, session_core::ReleaseOutcome::Released);

        // Exact sliding writes on every access.
        let before = row_version(t.db, &t.url, &p, &k).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(
            exact.read(&k).await.unwrap(),
            ReadOutcome::Found(_)
        ));
        let after = row_version(t.db, &t.url, &p, &k).await;
        assert_ne!(after, before, "{:?}: w = 0 slides on every read", t.db);
        lazy.close().await;
        exact.close().await;
    }
}

/// Postgres' release signal crosses store instances: a commit through one store wakes the
/// waiters of that session on another (their own `LISTEN` connection), and only them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_reaches_another_store() {
    let _gate = PG_GATE.read().await;
    for t in targets().into_iter().filter(|t| t.db == Db::Postgres) {
        let p = prefix("ntf");
        let (a, b) = (store(&t.url, &p).await, store(&t.url, &p).await);
        assert!(b.capabilities().release_signal);
        let (k, other) = (key("/ntf"), key("/ntf"));
        for k in [&k, &other] {
            a.create(k, &Items::new(), MINUTE, true).await.unwrap();
        }
        // The first watch starts b's listener and is woken once it listens.
        let warm = b.watch_release(&other).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), warm)
            .await
            .expect("the listener listens");
        let (_, token) = acquire(&a, &k).await;
        let (_, other_token) = acquire(&a, &other).await;
        let watch = b.watch_release(&k).await.unwrap();
        let unrelated = b.watch_release(&other).await.unwrap();
        let d = Delta::new().with_set("n", v(b"1"));
        let out = a.commit(&k, token, &d, MINUTE).await.unwrap();
        assert_eq!(out, CommitOutcome::Committed);
        tokio::time::timeout(Duration::from_secs(2), watch)
            .await
            .expect("the commit through store a wakes store b's waiter");
        let quiet = tokio::time::timeout(Duration::from_millis(300), unrelated).await;
        assert!(quiet.is_err(), "another session's waiter stays asleep");
        a.release(&other, other_token).await.unwrap();
        a.close().await;
        b.close().await;
    }
}

/// docs/security.md §2.4: a store's `Debug` prints no password (the servers' URLs carry one).
#[tokio::test]
async fn debug_prints_no_password() {
    for t in targets() {
        let Some(password) = t
            .url
            .split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, password)| password.to_owned())
            .filter(|p| !p.is_empty())
        else {
            continue;
        };
        let s = store(&t.url, &prefix("dbg")).await;
        let shown = format!("{s:?}");
        assert!(!shown.contains(&password), "{:?}: {shown}", t.db);
        s.close().await;
    }
}

#[tokio::test]
async fn a_near_cache_is_refused() {
    let config = Config::builder()
        .url("sqlite::memory:")
        .near_cache(true)
        .build()
        .unwrap();
    let err = SqlStore::connect(&config)
        .await
        .expect_err("nearCache accepted");
    assert!(
        matches!(&err, Error::InvalidConfig { setting, .. } if *setting == "nearCache"),
        "{err:?}"
    );
}

#[tokio::test]
async fn connect_errors_are_clear() {
    let _gate = PG_GATE.read().await;
    let fast = |url: &str| {
        Config::builder()
            .url(url)
            .connection_timeout(Some(Duration::from_secs(3)))
            .build()
            .unwrap()
    };
    let unreachable = SqlStore::connect(&fast("postgres://u:p@127.0.0.1:1/db"))
        .await
        .unwrap_err();
    assert!(
        matches!(unreachable, Error::Unavailable { .. }),
        "{unreachable:?}"
    );
    let unreachable = SqlStore::connect(&fast("mysql://u:p@127.0.0.1:1/db"))
        .await
        .unwrap_err();
    assert!(
        matches!(unreachable, Error::Unavailable { .. }),
        "{unreachable:?}"
    );
    let no_url = SqlStore::connect(&Config::builder().build().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(no_url, Error::InvalidConfig { .. }), "{no_url:?}");
    for t in targets().into_iter().filter(|t| t.db != Db::Sqlite) {
        let wrong_pw = t.url.replacen(":sesspw@", ":wrong@", 1);
        let e = SqlStore::connect(&fast(&wrong_pw)).await.unwrap_err();
        assert!(
            matches!(e, Error::Backend { .. }) && !e.is_transient(),
            "{:?}: {e:?}",
            t.db
        );
        let (base, _) = t.url.rsplit_once('/').unwrap();
        let e = SqlStore::connect(&fast(&format!("{base}/no_such_db")))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Backend { .. }) && !e.is_transient(),
            "{:?}: {e:?}",
            t.db
        );
        let text = format!("{:?}", std::error::Error::source(&e));
        assert!(
            text.contains("no_such_db"),
            "{:?}: the server's message names the database: {text}",
            t.db
        );
    }
}

/// A TCP proxy that counts round trips: a "turn" starts each time the client sends after the
/// server has answered (or first).
struct Proxy {
    addr: std::net::SocketAddr,
    /// Round trips that carry a statement.
    turns: Arc<AtomicU64>,
    /// Round trips that are only a liveness ping (Postgres `Sync`, MySQL `COM_PING`): sqlx's pool
    /// pings a connection when it returns to the pool, in the background after the operation
    /// has its reply.
    pings: Arc<AtomicU64>,
}

fn is_ping(chunk: &[u8]) -> bool {
    chunk == b"S\0\0\0\x04" || chunk == [1, 0, 0, 0, 0x0e]
}

async fn proxy(upstream: String) -> Proxy {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let turns = Arc::new(AtomicU64::new(0));
    let pings = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&turns);
    let ping_counter = Arc::clone(&pings);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            // true: the client spoke last.
            let client_last = Arc::new(AtomicBool::new(false));
            let (c1, t1, p1) = (
                Arc::clone(&client_last),
                Arc::clone(&counter),
                Arc::clone(&ping_counter),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !c1.swap(true, Ordering::SeqCst) {
                        let which = if is_ping(&buf[..n]) { &p1 } else { &t1 };
                        which.fetch_add(1, Ordering::SeqCst);
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    client_last.store(false, Ordering::SeqCst);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Proxy { addr, turns, pings }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_operation_is_one_round_trip() {
    let _gate = PG_GATE.read().await;
    for t in targets().into_iter().filter(|t| t.db != Db::Sqlite) {
        let (head, tail) = t.url.split_once('@').unwrap();
        let (hostport, db) = tail.split_once('/').unwrap();
        let px = proxy(hostport.to_owned()).await;
        let url = format!("{head}@{}/{db}", px.addr);
        let p = prefix("rt");
        let s = store_with(
            &url,
            SqlOptions::new()
                .with_table_prefix(&p)
                .unwrap()
                .with_max_connections(1),
        )
        .await;
        let app = "/rt";
        let items: Items = [("a".to_owned(), v(b"1"))].into();
        let d = Delta::new().with_set("b", v(b"2")).with_removed("a");
        // Runs every operation once; returns the round trips each took.
        let run = || async {
            let mut counts = Vec::new();
            let k = key(app);
            let mut measure = |name: &'static str, before: u64| {
                counts.push((name, px.turns.load(Ordering::SeqCst) - before))
            };
            let b = px.turns.load(Ordering::SeqCst);
            s.create(&k, &items, Duration::from_secs(60), false)
                .await
                .unwrap();
            measure("create", b);
            let b = px.turns.load(Ordering::SeqCst);
            s.read(&k).await.unwrap();
            measure("read", b);
            let token = LockToken::generate().unwrap();
            let b = px.turns.load(Ordering::SeqCst);
            s.acquire(&k, token, Duration::from_secs(60)).await.unwrap();
            measure("acquire", b);
            let b = px.turns.load(Ordering::SeqCst);
            s.commit(&k, token, &d, Duration::from_secs(60))
                .await
                .unwrap();
            measure("commit", b);
            let token = LockToken::generate().unwrap();
            s.acquire(&k, token, Duration::from_secs(60)).await.unwrap();
            let b = px.turns.load(Ordering::SeqCst);
            s.release(&k, token).await.unwrap();
            measure("release", b);
            let b = px.turns.load(Ordering::SeqCst);
            s.touch(&k).await.unwrap();
            measure("touch", b);
            let b = px.turns.load(Ordering::SeqCst);
            s.write_concurrent(&k, &d, Duration::from_secs(60))
                .await
                .unwrap();
            measure("write_concurrent", b);
            let token = LockToken::generate().unwrap();
            s.acquire(&k, token, Duration::from_secs(60)).await.unwrap();
            let new_id = SessionId::generate().unwrap();
            let b = px.turns.load(Ordering::SeqCst);
            s.change_id(&k, new_id, token).await.unwrap();
            measure("change_id", b);
            let k = k.with_id(new_id);
            let b = px.turns.load(Ordering::SeqCst);
            s.remove(&k, token).await.unwrap();
            measure("remove", b);
            let k2 = key(app);
            s.create(&k2, &items, Duration::from_secs(60), true)
                .await
                .unwrap();
            let b = px.turns.load(Ordering::SeqCst);
            s.delete(&k2).await.unwrap();
            measure("delete", b);
            let b = px.turns.load(Ordering::SeqCst);
            s.purge_expired(10).await.unwrap();
            measure("purge_expired", b);
            counts
        };
        // The first run prepares each statement on the connection (sqlx caches them).
        run().await;
        let pings = px.pings.load(Ordering::SeqCst);
        let counts = run().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pings = px.pings.load(Ordering::SeqCst) - pings;
        eprintln!(
            "{:?}: round trips {counts:?}; pool pings on release: {pings}",
            t.db
        );
        for (op, turns) in counts {
            assert_eq!(turns, 1, "{:?}: {op} took {turns} round trips", t.db);
        }
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_is_recovered() {
    let Some(cluster) = test_support::configured(test_support::postgres_cluster()) else {
        return;
    };
    let (url, data, bin) = (
        cluster.url().to_owned(),
        cluster.data().display().to_string(),
        cluster.bin().display().to_string(),
    );
    let _gate = PG_GATE.write().await;
    let p = prefix("restart");
    let plain = store(&url, &p).await;
    let resilient = Layered::new(
        plain.clone(),
        RetryLayer::new(
            RetryPolicy::new(Duration::from_secs(15)),
            Some(Duration::from_secs(20)),
        ),
    );
    let k = key("/restart");
    plain
        .create(&k, &Items::new(), Duration::from_secs(600), true)
        .await
        .unwrap();
    let (_, token) = acquire(&plain, &k).await;
    let restart = tokio::task::spawn_blocking(move || {
        std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{bin}/pg_ctl"),
                "-D",
                &data,
                "-m",
                "fast",
                "-w",
                "restart",
            ])
            .stdout(std::process::Stdio::null())
            .status()
    });
    assert!(
        restart.await.unwrap().unwrap().success(),
        "pg_ctl restart failed"
    );
    // Pooled connections died with the server: the next operation may fail as transient, never
    // as anything else; the resilient store retries through it and the data is intact.
    match plain.read(&k).await {
        Ok(_) => {}
        Err(e) => assert!(e.is_transient(), "a dropped connection is transient: {e:?}"),
    }
    let d = Delta::new().with_set("after", v(b"restart"));
    let out = resilient
        .commit(&k, token, &d, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(out, CommitOutcome::Committed);
    let ReadOutcome::Found(snap) = resilient.read(&k).await.unwrap() else {
        panic!()
    };
    assert_eq!(snap.items["after"], v(b"restart"));
}

/// Every message in an error's chain, lower-cased: its `Display`, each source's `Display`, and
/// the `Debug` of the whole (rustls' reasons, such as `UnknownIssuer`, are in the `Debug`).
fn chain_text(e: &Error) -> String {
    let mut out = format!("{e} | {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!(" | {s}"));
        source = s.source();
    }
    out.to_lowercase()
}

/// Whether TLS is in use on a connection of its own to `url` (plain sqlx, the same URL):
/// Postgres `pg_stat_ssl.ssl` of the backend, MySQL/MariaDB a non-empty `Ssl_cipher`.
async fn tls_in_use(db: Db, url: &str) -> bool {
    use sqlx::Row;
    match db {
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let row = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            row.try_get::<bool, _>(0).unwrap()
        }
        Db::Mysql => {
            let pool = sqlx::MySqlPool::connect(url).await.unwrap();
            let row = sqlx::query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            !row.try_get::<String, _>(1).unwrap().is_empty()
        }
        Db::Sqlite => unreachable!(),
    }
}

/// create, acquire, commit, read on `store`.
async fn round_trip(store: &SqlStore, what: &str) {
    let k = key("/tls");
    let created = store
        .create(&k, &Items::new(), Duration::from_secs(600), true)
        .await
        .unwrap();
    assert_eq!(created, CreateOutcome::Created, "{what}");
    let (_, token) = acquire(store, &k).await;
    let d = Delta::new().with_set("tls", v(what.as_bytes()));
    let out = store
        .commit(&k, token, &d, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(out, CommitOutcome::Committed, "{what}");
    let ReadOutcome::Found(snap) = store.read(&k).await.unwrap() else {
        panic!("{what}: not found")
    };
    assert_eq!(snap.items["tls"], v(what.as_bytes()), "{what}");
}

/// The first packet of a MySQL server (protocol 10, the MySQL 8.0.18 handshake of sqlx's own
/// decoder test) without the `CLIENT_SSL` capability: a server that cannot speak TLS.
fn mysql_handshake_without_tls() -> Vec<u8> {
    let mut payload = b"\n8.0.18\x00\x19\x00\x00\x00\x114aB0c\x06g\x00\xff\xff\xff\x02\x00\xff\xc7\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00tL\x03s\x0f[4\rl4. \x00caching_sha2_password\x00".to_vec();
    // Lower capability bytes at offset 21..23; CLIENT_SSL is 0x0800.
    payload[22] &= !0x08;
    let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let mut packet = vec![len[0], len[1], len[2], 0];
    packet.extend(payload);
    packet
}

/// A server that declines TLS (Postgres answers `N` to the SSLRequest, MySQL announces no
/// `CLIENT_SSL`), then closes each connection. Stops when the returned task is aborted.
async fn server_without_tls(db: Db) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if db == Db::Postgres {
                    let mut request = [0u8; 8];
                    if socket.read_exact(&mut request).await.is_ok()
                        && request == [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
                    {
                        let _ = socket.write_all(b"N").await;
                    }
                } else {
                    let _ = socket.write_all(&mysql_handshake_without_tls()).await;
                }
                let mut buf = [0u8; 4096];
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), socket.read(&mut buf)).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_with_a_custom_ca() {
    let _gate = PG_GATE.read().await;
    let config = |url: &str, ssl: bool| {
        Config::builder()
            .url(url)
            .ssl(ssl)
            .connection_timeout(Some(Duration::from_secs(3)))
            .build()
            .unwrap()
    };
    let options = |p: &str| {
        SqlOptions::new()
            .with_table_prefix(p)
            .unwrap()
            .with_sweeper(None)
    };
    for t in targets().into_iter().filter(|t| t.db != Db::Sqlite) {
        let Some(tls) = t
            .server
            .as_ref()
            .and_then(|s| test_support::configured(s.tls()))
        else {
            continue;
        };
        let ca = tls.ca().display().to_string();
        let other_ca = tls.other_ca().display().to_string();
        let db = t.db;
        // The URL without its query (scripts/sql/start.sh's URLs say `sslmode=disable`).
        let base = t.url.split_once('?').map_or(t.url.as_str(), |(b, _)| b);
        let verified = |ca: &str| match db {
            Db::Postgres => format!("{base}?sslmode=verify-full&sslrootcert={ca}"),
            _ => format!("{base}?ssl-mode=verify_identity&ssl-ca={ca}"),
        };
        let plain_only = match db {
            Db::Postgres => format!("{base}?sslmode=disable"),
            _ => format!("{base}?ssl-mode=disabled"),
        };

        // TLS required, the certificate checked against the custom CA and the host name.
        let url = verified(&ca);
        let p = prefix("tls");
        let s = SqlStore::connect_with(&config(&url, false), options(&p))
            .await
            .unwrap_or_else(|e| panic!("{db:?}: {}", chain_text(&e)));
        round_trip(&s, "verified").await;
        s.close().await;
        assert!(tls_in_use(db, &url).await, "{db:?}: TLS in use with {url}");
        assert!(
            !tls_in_use(db, &plain_only).await,
            "{db:?}: the check tells TLS from plain"
        );

        // An unrelated CA: a certificate error at connect, promptly, as an error.
        let started = Instant::now();
        let e = tokio::time::timeout(
            Duration::from_secs(20),
            SqlStore::connect_with(&config(&verified(&other_ca), false), options(&p)),
        )
        .await
        .expect("a rejected certificate does not hang")
        .unwrap_err();
        let text = chain_text(&e);
        eprintln!("{db:?} wrong CA after {:?}: {text}", started.elapsed());
        assert!(
            matches!(e, Error::Backend { .. }) && !e.is_transient(),
            "{db:?}: {e:?}"
        );
        assert!(
            text.contains("certificate") || text.contains("unknownissuer"),
            "{db:?}: the chain names the certificate problem: {text}"
        );

        // `Config::ssl(true)` with a plain URL: TLS is required. It works against the TLS server...
        let s = SqlStore::connect_with(&config(base, true), options(&p))
            .await
            .unwrap_or_else(|e| panic!("{db:?}: {}", chain_text(&e)));
        round_trip(&s, "ssl(true)").await;
        s.close().await;
        // ...and refuses a server that declines TLS, where the default (TLS preferred) would go
        // on without it.
        let (addr, server) = server_without_tls(db).await;
        let scheme = if db == Db::Postgres {
            "postgres"
        } else {
            "mysql"
        };
        let fake = format!("{scheme}://sess:sesspw@{addr}/sessdb");
        let e = SqlStore::connect_with(&config(&fake, true), options(&p))
            .await
            .unwrap_err();
        let text = chain_text(&e);
        eprintln!("{db:?} ssl(true) without TLS: {text}");
        assert!(
            matches!(e, Error::Backend { .. }) && text.contains("does not support tls"),
            "{db:?}: {text}"
        );
        let e = SqlStore::connect_with(&config(&fake, false), options(&p))
            .await
            .unwrap_err();
        let text = chain_text(&e);
        eprintln!("{db:?} default without TLS: {text}");
        assert!(!text.contains("tls"), "{db:?}: went on without TLS: {text}");
        // A TLS mode in the URL wins over `ssl(true)`, in either spelling sqlx reads.
        let off = match db {
            Db::Postgres => "ssl-mode=disable",
            _ => "sslmode=disabled",
        };
        let e = SqlStore::connect_with(&config(&format!("{fake}?{off}"), true), options(&p))
            .await
            .unwrap_err();
        let text = chain_text(&e);
        assert!(
            !text.contains("tls"),
            "{db:?}: the URL's {off} wins: {text}"
        );
        server.abort();
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// The settled record is the session's last commit (docs/contract.md §2, "Repeated calls"): a
/// release records nothing (its repeat is `LockLost` here; the retry layer reads it as `Released`),
/// and a commit's repeat outlives another holder's acquire and release, until the next commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settled_record_is_the_last_commit() {
    use session_core::ReleaseOutcome::{LockLost, Released};
    let _gate = PG_GATE.read().await;
    for t in targets() {
        let s = store(&t.url, &prefix("settled")).await;
        let k = key("/settled");
        s.create(&k, &Items::new(), MINUTE, true).await.unwrap();
        let (_, released) = acquire(&s, &k).await;
        assert_eq!(s.release(&k, released).await.unwrap(), Released);
        let again = s.release(&k, released).await.unwrap();
        assert_eq!(again, LockLost, "{:?}: a release records nothing", t.db);

        let (_, token) = acquire(&s, &k).await;
        let delta = Delta::new().with_set("n", v(b"1"));
        let commit = async |token| s.commit(&k, token, &delta, MINUTE).await.unwrap();
        assert_eq!(commit(token).await, CommitOutcome::Committed);
        let (_, other) = acquire(&s, &k).await;
        assert_eq!(s.release(&k, other).await.unwrap(), Released);
        let again = commit(token).await;
        assert_eq!(
            again,
            CommitOutcome::Committed,
            "{:?}: after a release",
            t.db
        );
        let (_, next) = acquire(&s, &k).await;
        let out = s.commit(&k, next, &Delta::new(), MINUTE).await.unwrap();
        assert_eq!(out, CommitOutcome::Committed);
        let again = commit(token).await;
        assert_eq!(
            again,
            CommitOutcome::LockLost,
            "{:?}: after the next commit",
            t.db
        );
        s.close().await;
    }
}

/// Runs the migrations exactly as a store of an earlier schema did: 0001 up to `version` (the same
/// SQL, versions and table, so sqlx's checksums are the ones the current store finds).
async fn migrate_earlier_schema(
    db: Db, url: &str, p: &str, version: i64,
) -> Result<(), MigrateError> {
    let files: &[(&str, &str)] = match db {
        Db::Postgres => &[
            (
                "schema",
                include_str!("../migrations/postgres/0001_schema.sql"),
            ),
            (
                "release records nothing",
                include_str!("../migrations/postgres/0002_release_records_nothing.sql"),
            ),
            (
                "refresh window",
                include_str!("../migrations/postgres/0003_refresh_window.sql"),
            ),
            (
                "plain statements",
                include_str!("../migrations/postgres/0004_plain_statements.sql"),
            ),
        ],
        Db::Mysql => &[
            (
                "schema",
                include_str!("../migrations/mysql/0001_schema.sql"),
            ),
            (
                "release records nothing",
                include_str!("../migrations/mysql/0002_release_records_nothing.sql"),
            ),
        ],
        Db::Sqlite => &[(
            "schema",
            include_str!("../migrations/sqlite/0001_schema.sql"),
        )],
    };
    let migrations = files
        .iter()
        .zip(1..=version)
        .map(|((description, sql), v)| {
            let sql = AssertSqlSafe(sql.replace("{prefix}", p)).into_sql_str();
            Migration::new(v, (*description).into(), MigrationType::Simple, sql, false)
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(format!("{p}migrations"));
    match db {
        Db::Postgres => migrator.run(&sqlx::PgPool::connect(url).await?).await,
        Db::Mysql => migrator.run(&sqlx::MySqlPool::connect(url).await?).await,
        Db::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true)).await?;
            migrator.run(&pool).await
        }
    }
}

/// The calls of the earlier schemas' routines (Postgres, MySQL), as literal SQL.
struct OldCalls {
    db: Db,
    p: String,
}

impl OldCalls {
    fn bytes(&self, b: &[u8]) -> String {
        match self.db {
            Db::Postgres => format!("'\\x{}'::bytea", hex(b)),
            _ if b.is_empty() => "''".to_owned(),
            _ => format!("X'{}'", hex(b)),
        }
    }

    fn key(&self, k: &SessionKey) -> String {
        format!(
            "{}, {}",
            self.bytes(k.app().as_str().as_bytes()),
            self.bytes(k.id().expose().as_bytes())
        )
    }

    /// Items to set: two arrays on Postgres, one packed string on MySQL.
    fn set(&self, items: &[(&str, &[u8])]) -> String {
        match self.db {
            Db::Postgres => {
                let array = |parts: Vec<String>| {
                    if parts.is_empty() {
                        "'{}'::bytea[]".to_owned()
                    } else {
                        format!("ARRAY[{}]", parts.join(", "))
                    }
                };
                format!(
                    "{}, {}",
                    array(
                        items
                            .iter()
                            .map(|(n, _)| self.bytes(n.as_bytes()))
                            .collect()
                    ),
                    array(items.iter().map(|(_, v)| self.bytes(v)).collect())
                )
            }
            _ => {
                let mut packed = Vec::new();
                for (n, v) in items {
                    for part in [n.as_bytes(), v] {
                        packed.extend_from_slice(&u32::try_from(part.len()).unwrap().to_be_bytes());
                        packed.extend_from_slice(part);
                    }
                }
                self.bytes(&packed)
            }
        }
    }

    fn call(&self, routine: &str, args: &str) -> String {
        let p = &self.p;
        match self.db {
            Db::Postgres => format!("SELECT 0 FROM {p}{routine}({args})"),
            _ => format!("CALL {p}{routine}({args})"),
        }
    }

    fn create(&self, k: &SessionKey, items: &[(&str, &[u8])]) -> String {
        let args = format!("{}, 60000, false, {}", self.key(k), self.set(items));
        self.call("create", &args)
    }

    fn acquire(&self, k: &SessionKey, token: LockToken) -> String {
        let args = format!(
            "{}, {}, 60000",
            self.key(k),
            self.bytes(&token.as_u128().to_be_bytes())
        );
        self.call("acquire", &args)
    }

    fn release(&self, k: &SessionKey, token: LockToken) -> String {
        let args = format!(
            "{}, {}",
            self.key(k),
            self.bytes(&token.as_u128().to_be_bytes())
        );
        self.call("release", &args)
    }

    fn commit(&self, k: &SessionKey, token: LockToken, fp: i64, set: &[(&str, &[u8])]) -> String {
        let removed = match self.db {
            Db::Postgres => "'{}'::bytea[]",
            _ => "''",
        };
        let args = format!(
            "{}, {}, {fp}, 60000, false, {}, {removed}",
            self.key(k),
            self.bytes(&token.as_u128().to_be_bytes()),
            self.set(set)
        );
        self.call("commit", &args)
    }
}

/// Databases migrated by an earlier schema (0001 only; 0001 and 0002) upgrade on connect without
/// losing a session, its items, a lock or a commit's settled record; a release record the first
/// schema wrote (kind 2) matches nothing. On Postgres, 0003 moves the items into the session
/// rows (two arrays); on SQLite, 0002, and on MySQL/MariaDB, 0005 (one packed blob; a session
/// without items reads back empty). Afterwards a process of an earlier schema refuses to migrate (sqlx: a newer migration
/// applied but unknown), which the changelog tells users upgrading.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn databases_of_earlier_schemas_upgrade() {
    use session_core::ReleaseOutcome::{LockLost, Released};
    let _gate = PG_GATE.read().await;
    for t in targets() {
        let versions: &[i64] = if t.db == Db::Sqlite { &[1] } else { &[1, 2] };
        for &version in versions {
            let p = prefix(&format!("up{version}"));
            migrate_earlier_schema(t.db, &t.url, &p, version)
                .await
                .unwrap();
            let (released, committed, locked) = (key("/upgrade"), key("/upgrade"), key("/upgrade"));
            let (spent, token, holder) = (
                LockToken::generate().unwrap(),
                LockToken::generate().unwrap(),
                LockToken::generate().unwrap(),
            );
            let stored: [(&str, &[u8]); 2] = [("a", b"1"), ("b\0'", b"\0two")];
            let delta = Delta::new().with_set("n", v(b"1"));
            let fp = delta.fingerprint(MINUTE) as i64;
            let empty_session: Option<SessionKey>;
            if t.db == Db::Sqlite {
                // SQLite's operations are this crate's code, and this version's no longer run on
                // the first schema: write the rows as that version left them (an item row per
                // item; the release record of the first schema, kind 2).
                let now = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";
                let sid = |k: &SessionKey| hex(k.id().expose().as_bytes());
                let tok = |t: LockToken| t.to_hex();
                let app = hex(b"/upgrade");
                let rows = [
                    (
                        &released,
                        "NULL, NULL".to_owned(),
                        format!("X'{}', 2, NULL", tok(spent)),
                    ),
                    (
                        &committed,
                        "NULL, NULL".to_owned(),
                        format!("X'{}', 1, {fp}", tok(token)),
                    ),
                    (
                        &locked,
                        format!("X'{}', {now}", tok(holder)),
                        "NULL, NULL, NULL".to_owned(),
                    ),
                ];
                for (k, lock, settled) in rows {
                    let insert = format!(
                        "INSERT INTO {p}sessions (app, sid, expires_at, timeout_ms, lock_token, \
                         locked_at, initialize, settled_token, settled_kind, settled_fp, created_at) \
                         VALUES (X'{app}', X'{}', {now} + 60000, 60000, {lock}, 0, {settled}, {now})",
                        sid(k)
                    );
                    exec(t.db, &t.url, insert).await;
                    let mut items = stored.to_vec();
                    if k == &committed {
                        items.push(("n", b"1"));
                    }
                    for (name, value) in items {
                        let item = format!(
                            "INSERT INTO {p}items (session_pk, name, value) SELECT pk, X'{}', X'{}' \
                             FROM {p}sessions WHERE sid = X'{}'",
                            hex(name.as_bytes()),
                            hex(value),
                            sid(k)
                        );
                        exec(t.db, &t.url, item).await;
                    }
                }
                // A session without items keeps an empty list.
                let empty = key("/upgrade");
                let insert = format!(
                    "INSERT INTO {p}sessions (app, sid, expires_at, timeout_ms, initialize, created_at) \
                     VALUES (X'{app}', X'{}', {now} + 60000, 60000, 0, {now})",
                    sid(&empty)
                );
                exec(t.db, &t.url, insert).await;
                empty_session = Some(empty);
            } else {
                let old = OldCalls {
                    db: t.db,
                    p: p.clone(),
                };
                for k in [&released, &committed, &locked] {
                    exec(t.db, &t.url, old.create(k, &stored)).await;
                }
                // A session without items (MySQL 0005: its `items` stays NULL).
                let empty = key("/upgrade");
                exec(t.db, &t.url, old.create(&empty, &[])).await;
                empty_session = Some(empty);
                for (k, tok) in [(&released, spent), (&committed, token), (&locked, holder)] {
                    exec(t.db, &t.url, old.acquire(k, tok)).await;
                }
                exec(t.db, &t.url, old.release(&released, spent)).await;
                exec(
                    t.db,
                    &t.url,
                    old.commit(&committed, token, fp, &[("n", b"1")]),
                )
                .await;
            }

            let new = store(&t.url, &p).await;
            let applied = exec(t.db, &t.url, format!("SELECT COUNT(*) FROM {p}migrations")).await;
            assert_eq!(applied, latest_migration(t.db), "{:?} from {version}", t.db);
            let what = format!("{:?} from {version}", t.db);
            let again = new.release(&released, spent).await.unwrap();
            assert_eq!(again, LockLost, "{what}: a release records nothing now");
            let out = new.commit(&released, spent, &Delta::new(), MINUTE).await;
            assert_eq!(out.unwrap(), CommitOutcome::LockLost, "{what}: kind 2");
            let again = new.commit(&committed, token, &delta, MINUTE).await.unwrap();
            assert_eq!(again, CommitOutcome::Committed, "{what}: the commit record");
            let (_, other) = acquire(&new, &committed).await;
            assert_eq!(new.release(&committed, other).await.unwrap(), Released);
            let again = new.commit(&committed, token, &delta, MINUTE).await.unwrap();
            assert_eq!(again, CommitOutcome::Committed, "{what}: after a release");
            let mut expected: Items = stored
                .iter()
                .map(|(n, val)| ((*n).to_owned(), v(val)))
                .collect();
            for k in [&released, &committed] {
                match new.read(k).await.unwrap() {
                    ReadOutcome::Found(s) => {
                        let mut want = expected.clone();
                        if k == &committed {
                            delta.apply_to(&mut want);
                        }
                        assert_eq!(*s.items, want, "{what}: the items survive");
                        assert_eq!(s.timeout, MINUTE, "{what}");
                    }
                    other => panic!("{what}: {other:?}"),
                }
            }
            assert!(
                matches!(new.read(&locked).await.unwrap(), ReadOutcome::Locked(_)),
                "{what}: the lock survives"
            );
            assert_eq!(new.release(&locked, holder).await.unwrap(), Released);
            let (_, tok) = acquire(&new, &locked).await;
            let d = Delta::new().with_removed("a").with_set("c", v(b"3"));
            let out = new.commit(&locked, tok, &d, MINUTE).await.unwrap();
            assert_eq!(out, CommitOutcome::Committed);
            d.apply_to(&mut expected);
            match new.read(&locked).await.unwrap() {
                ReadOutcome::Found(s) => assert_eq!(*s.items, expected, "{what}: a delta applies"),
                other => panic!("{what}: {other:?}"),
            }
            if let Some(empty) = &empty_session {
                match new.read(empty).await.unwrap() {
                    ReadOutcome::Found(s) => assert!(s.items.is_empty(), "{what}: empty"),
                    other => panic!("{what}: {other:?}"),
                }
            }
            new.close().await;
            if t.db != Db::Sqlite {
                let refused = migrate_earlier_schema(t.db, &t.url, &p, version).await;
                assert!(
                    matches!(refused, Err(MigrateError::VersionMissing(v)) if v > version),
                    "{what}: {refused:?}"
                );
            }
        }
    }
}

/// Postgres, migration 0005: the purge's index is on the expiry minute, so a commit that moves
/// `expires_at` within the minute changes no indexed column and is a HOT update (the table's
/// `n_tup_hot_upd` counts it), and the purge still deletes exactly the expired sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_commits_are_hot_updates() {
    let _gate = PG_GATE.read().await;
    let Some(t) = targets().into_iter().find(|t| t.db == Db::Postgres) else {
        return;
    };
    let p = prefix("hot");
    let s = store(&t.url, &p).await;
    let k = key("/hot");
    s.create(&k, &Items::new(), MINUTE, true).await.unwrap();
    let stats = |column: &str| {
        format!(
            "SELECT {column} FROM pg_stat_user_tables WHERE relname = lower('{p}sessions') \
             AND schemaname = current_schema()"
        )
    };
    let commits = 20;
    for i in 0..commits {
        let (_, token) = acquire(&s, &k).await;
        let d = Delta::new().with_set("n", v(&[i as u8; 150]));
        assert_eq!(
            s.commit(&k, token, &d, MINUTE).await.unwrap(),
            CommitOutcome::Committed
        );
    }
    // Statistics reach the view when a backend flushes its pending counters, at the latest when
    // it exits: close the pool.
    s.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut updates, mut hot) = (0, 0);
    while Instant::now() < deadline {
        updates = exec(t.db, &t.url, stats("n_tup_upd")).await;
        hot = exec(t.db, &t.url, stats("n_tup_hot_upd")).await;
        if updates >= 2 * commits {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each acquire and each commit is one update; a minute boundary crossed during the loop
    // costs at most one non-HOT commit.
    assert!(updates >= 2 * commits, "updates: {updates}");
    assert!(hot >= updates - 1, "{hot} of {updates} updates were HOT");
    let indexed = exec(
        t.db,
        &t.url,
        format!(
            "SELECT COUNT(*) FROM pg_indexes WHERE tablename = lower('{p}sessions') \
             AND schemaname = current_schema() AND indexdef LIKE '%(expires_at)%'"
        ),
    )
    .await;
    assert_eq!(indexed, 0, "expires_at itself is not indexed");
}

/// A Postgres database at migration 0004 (the release that put items in the row) upgrades to
/// 0005 on connect, keeping its sessions, their items and locks; the purge then walks the bucket
/// index and deletes exactly the expired sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_0004_databases_upgrade_to_the_expiry_bucket() {
    use session_core::ReleaseOutcome::Released;
    let _gate = PG_GATE.read().await;
    let Some(t) = targets().into_iter().find(|t| t.db == Db::Postgres) else {
        return;
    };
    let p = prefix("up4");
    migrate_earlier_schema(t.db, &t.url, &p, 4).await.unwrap();
    // This version's read, acquire and commit statements run unchanged on the 0004 schema.
    let old = store_with(
        &t.url,
        SqlOptions::new()
            .with_table_prefix(&p)
            .unwrap()
            .with_migrate(false),
    )
    .await;
    let items: Items = [("a".to_owned(), v(b"1")), ("b\0'".to_owned(), v(b"\0two"))].into();
    let (kept, locked) = (key("/up4"), key("/up4"));
    for k in [&kept, &locked] {
        old.create(k, &items, MINUTE, true).await.unwrap();
    }
    let (_, holder) = acquire(&old, &locked).await;
    old.close().await;
    for sql in seed_expired_sql(t.db, &p, 30) {
        exec(t.db, &t.url, sql).await;
    }

    let new = store(&t.url, &p).await;
    let applied = exec(t.db, &t.url, format!("SELECT COUNT(*) FROM {p}migrations")).await;
    assert_eq!(applied, latest_migration(t.db));
    match new.read(&kept).await.unwrap() {
        ReadOutcome::Found(s) => assert_eq!(*s.items, items, "the items survive"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        new.read(&locked).await.unwrap(),
        ReadOutcome::Locked(_)
    ));
    assert_eq!(new.release(&locked, holder).await.unwrap(), Released);
    let mut purged = 0;
    loop {
        let n = new.purge_expired(7).await.unwrap();
        purged += n;
        if n < 7 {
            break;
        }
    }
    assert_eq!(purged, 30, "exactly the expired sessions");
    let left = exec(t.db, &t.url, format!("SELECT COUNT(*) FROM {p}sessions")).await;
    assert_eq!(left, 2);
    let (_, token) = acquire(&new, &kept).await;
    let d = Delta::new().with_set("c", v(b"3"));
    let out = new.commit(&kept, token, &d, MINUTE).await.unwrap();
    assert_eq!(out, CommitOutcome::Committed);
    new.close().await;
    let refused = migrate_earlier_schema(t.db, &t.url, &p, 4).await;
    assert!(
        matches!(refused, Err(MigrateError::VersionMissing(5))),
        "{refused:?}"
    );
}

/// Review fix (migration 0006): an `acquire` of a session's OLD id that waits on the row lock
/// while a `change_id` moves the session to a new id must not lock the session under its new id
/// (nor return its items): the old id no longer exists, so it is `Missing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_acquire_of_a_renamed_id_finds_nothing() {
    let _gate = PG_GATE.read().await;
    let Some(t) = targets().into_iter().find(|t| t.db == Db::Postgres) else {
        return;
    };
    let p = prefix("ren");
    // Exact sliding: a refused acquire then always decides under the row lock (with a window, a
    // fresh foreign lock is refused from the first look, without waiting).
    let config = Config::builder()
        .url(&t.url)
        .refresh_window(RefreshWindow::EXACT)
        .build()
        .unwrap();
    let options = SqlOptions::new().with_table_prefix(&p).unwrap();
    let s = Arc::new(
        SqlStore::connect_with(&config, options.with_sweeper(None))
            .await
            .unwrap(),
    );
    let old = key("/renamed");
    let new = SessionKey::new(old.app().clone(), SessionId::generate().unwrap());
    let mut secret = Items::new();
    secret.insert("secret".into(), v(b"s3cret"));
    s.create(&old, &secret, MINUTE, true).await.unwrap();
    let (_, holder) = acquire(&*s, &old).await;
    // A transaction that renames the session and releases its lock, held open while the
    // acquire of the old id runs into the row lock (as a change_id followed by the holder's
    // commit, in another process).
    let pool = sqlx::PgPool::connect(&t.url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let rename = format!(
        "UPDATE {p}sessions SET sid = '{}'::bytea, lock_token = NULL, locked_at = NULL \
         WHERE app = '{}'::bytea AND sid = '{}'::bytea",
        new.id().expose(),
        old.app().as_str(),
        old.id().expose()
    );
    sqlx::query(AssertSqlSafe(rename))
        .execute(&mut *tx)
        .await
        .unwrap();
    let (s2, old2) = (Arc::clone(&s), old.clone());
    let waiter = tokio::spawn(async move {
        s2.acquire(
            &old2,
            LockToken::generate().unwrap(),
            Duration::from_secs(60),
        )
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.commit().await.unwrap();
    let got = waiter.await.unwrap();
    assert!(
        matches!(got, AcquireOutcome::Missing),
        "an acquire of the old id after the rename: {got:?}"
    );
    // The renamed session is untouched: free, with its items.
    let (items, _) = acquire(&*s, &new).await;
    assert!(items.contains_key("secret"));
    let _ = holder;
    pool.close().await;
}

/// Review fix (migration 0006): with the longest table prefix (48 characters), Postgres' 63-byte
/// identifier limit must not leave the sessions table without an index for the purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_longest_prefix_keeps_a_purge_index() {
    let _gate = PG_GATE.read().await;
    let Some(t) = targets().into_iter().find(|t| t.db == Db::Postgres) else {
        return;
    };
    let short = prefix("long");
    let p = format!("{short}{}", "x".repeat(48 - short.len()));
    assert_eq!(p.len(), 48);
    let _s = store(&t.url, &p).await;
    let indexes = exec(
        t.db,
        &t.url,
        format!(
            "SELECT count(*)::BIGINT FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = '{p}sessions'::regclass AND a.attname = 'expires_bucket'"
        ),
    )
    .await;
    assert_eq!(indexes, 1, "one index on expires_bucket for prefix {p}");
}

/// Review fix: stored items that cannot be decoded (a truncated SQLite blob, Postgres name and
/// value arrays of different lengths) are `Error::Corrupt` naming the session
/// (docs/contract.md §4), not a generic backend error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_items_are_corrupt() {
    let _gate = PG_GATE.read().await;
    for t in targets() {
        let spoil = match t.db {
            Db::Sqlite => "UPDATE {p}sessions SET items = x'000000ff'",
            Db::Postgres => "UPDATE {p}sessions SET vals = '{}'::bytea[]",
            Db::Mysql => continue,
        };
        let p = prefix("bad");
        let s = store(&t.url, &p).await;
        let k = key("/corrupt");
        let mut items = Items::new();
        items.insert("a".into(), v(b"1"));
        s.create(&k, &items, MINUTE, true).await.unwrap();
        exec(t.db, &t.url, spoil.replace("{p}", &p)).await;
        match s.read(&k).await {
            Err(Error::Corrupt { app, id_prefix, .. }) => {
                assert_eq!(app, "/corrupt", "{:?}", t.db);
                assert_eq!(id_prefix, k.id().prefix(), "{:?}", t.db);
            }
            other => panic!("{:?}: expected Corrupt, got {other:?}", t.db),
        }
    }
}

/// The MySQL/MariaDB target, when configured, and its server's `max_allowed_packet`.
async fn mysql_with_its_packet() -> Option<(Target, usize)> {
    let t = targets().into_iter().find(|t| t.db == Db::Mysql)?;
    let sql = "SELECT CAST(@@max_allowed_packet AS SIGNED)".to_owned();
    let packet = usize::try_from(exec(t.db, &t.url, sql).await).unwrap();
    Some((t, packet))
}

/// MySQL/MariaDB (migration 0005): a commit whose merged items would pass `max_allowed_packet`
/// fails and writes nothing, instead of storing the session without its items; the session keeps
/// its items and its lock. (Under a strict `sql_mode`, as here, MariaDB already turns the
/// `CONCAT` warning into an error; `mysql_merge_items_never_answers_null` covers the others.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_merge_past_max_allowed_packet_writes_nothing() {
    use session_core::ReleaseOutcome::Released;
    let Some((t, packet)) = mysql_with_its_packet().await else {
        return;
    };
    // Two items of just over half the packet: each one fits, the two together do not.
    let half = packet / 2 + 1024;
    let p = prefix("packet");
    let s = store(&t.url, &p).await;
    let k = key("/packet");
    let a = vec![1u8; half];
    let items: Items = [("a".to_owned(), v(&a))].into();
    s.create(&k, &items, MINUTE, false).await.unwrap();
    let (_, token) = acquire(&s, &k).await;
    let d = Delta::new().with_set("b", v(&vec![2u8; half]));
    let out = s.commit(&k, token, &d, MINUTE).await;
    assert!(out.is_err(), "a merge past the packet must fail: {out:?}");
    assert_eq!(
        s.release(&k, token).await.unwrap(),
        Released,
        "the lock is kept"
    );
    match s.read(&k).await.unwrap() {
        ReadOutcome::Found(snap) => {
            assert_eq!(snap.items.len(), 1, "only the stored item");
            assert_eq!(snap.items.get("a"), Some(&v(&a)), "its bytes intact");
        }
        other => panic!("{other:?}"),
    }
    s.close().await;
}

/// MySQL/MariaDB: `merge_items` as migration 0005 creates it, created under a `sql_mode` that is
/// not strict (where `CONCAT` past `max_allowed_packet` answers NULL with a mere warning, and a
/// stored routine keeps the mode it was created under): a merge past the packet fails rather than
/// answer NULL, which the commit would store as "no items".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_merge_items_never_answers_null() {
    use sqlx::Connection;
    let Some((t, packet)) = mysql_with_its_packet().await else {
        return;
    };
    let p = prefix("mnull");
    let migration = include_str!("../migrations/mysql/0005_items_in_row.sql");
    let start = migration
        .find("CREATE PROCEDURE {prefix}merge_items")
        .unwrap();
    let end = start + migration[start..].find("\nEND;").unwrap() + "\nEND;".len();
    let routine = migration[start..end].replace("{prefix}", &p);
    let mut c = sqlx::MySqlConnection::connect(&t.url).await.unwrap();
    for sql in ["SET SESSION sql_mode = ''".to_owned(), routine] {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    }
    // One item of just over half the packet stored, another as large set: each fits a packet
    // (sent in statements of their own), the two together do not.
    let item = |name: u8, byte: u8| {
        let half = packet / 2 + 1024;
        let mut b = 1u32.to_be_bytes().to_vec();
        b.push(name);
        b.extend_from_slice(&u32::try_from(half).unwrap().to_be_bytes());
        b.resize(b.len() + half, byte);
        b
    };
    for (var, blob) in [("@stored", item(b'a', 1)), ("@set", item(b'b', 2))] {
        sqlx::query(AssertSqlSafe(format!("SET {var} = ?")))
            .bind(blob)
            .execute(&mut c)
            .await
            .unwrap();
    }
    let call = format!("CALL {p}merge_items(@stored, FALSE, @set, '', @merged)");
    let merged = sqlx::raw_sql(AssertSqlSafe(call)).execute(&mut c).await;
    let null: Option<i64> = sqlx::query_scalar("SELECT CAST(@merged IS NULL AS SIGNED)")
        .fetch_one(&mut c)
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("DROP PROCEDURE {p}merge_items")))
        .execute(&mut c)
        .await
        .unwrap();
    assert!(
        merged.is_err(),
        "a merge past the packet must fail, not answer NULL (NULL: {null:?})"
    );
}
