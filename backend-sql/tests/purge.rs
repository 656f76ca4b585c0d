//! The purge bounded by what expired (issue 15), on SQLite always and on the Postgres / MySQL
//! servers that `test-support` reads from the environment (skipped when not configured, failing
//! when `SESSION_TEST_REQUIRE` names them). Counts, never wall-clock time (docs/style.md):
//!
//! - what one purge call reads, from the database's own counters: on Postgres a call with nothing
//!   expired fetches no live row (`pg_stat_user_tables`), however many live sessions expire later
//!   in the current minute; on MySQL/MariaDB a call reads about as many index entries as it
//!   deletes sessions (`Handler_read_%`), not every expired one;
//! - what a purge deletes: every expired session and its items, no live one (locked or not), in
//!   calls that each delete at most the batch asked for, in statements of at most 1,000 sessions
//!   — the sweeper's report counts them.
//!
//! (SQLite's plan, `SEARCH ... USING COVERING INDEX ... (expires_at<?)`, is a unit test of the
//! dialect: `sqlite::tests::purge_searches_the_expiry_index`.)
//!
//! Each test uses its own table prefix, so counts are exact on a shared database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_sql::{SqlOptions, SqlStore, SweepReport, SweeperOptions};
use session_core::{
    AcquireOutcome, AppName, Config, ItemValue, Items, LockToken, ReadOutcome, SessionId,
    SessionKey, SessionStore,
};
use sqlx::{AssertSqlSafe, Row};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Db {
    Sqlite,
    Postgres,
    Mysql,
}

impl Db {
    /// The most sessions one purge statement deletes (backend-sql's `purge_statement_max`: a
    /// session is one row on each).
    fn statement_max(self) -> u64 {
        match self {
            Db::Mysql | Db::Postgres | Db::Sqlite => 1000,
        }
    }
}

struct Target {
    db: Db,
    url: String,
    _dir: Option<Arc<tempfile::TempDir>>,
}

fn targets() -> Vec<Target> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut out = vec![Target {
        db: Db::Sqlite,
        url: format!("sqlite:{}", dir.path().join("p.db").display()),
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
                _dir: None,
            });
        }
    }
    out
}

fn target(db: Db) -> Option<Target> {
    targets().into_iter().find(|t| t.db == db)
}

fn prefix(tag: &str) -> String {
    format!("t{}_{tag}_", &SessionId::generate().unwrap().expose()[..8])
}

async fn store(url: &str, p: &str, sweeper: Option<SweeperOptions>) -> SqlStore {
    let options = SqlOptions::new()
        .with_table_prefix(p)
        .unwrap()
        .with_sweeper(sweeper);
    SqlStore::connect_with(&Config::from_url(url).unwrap(), options)
        .await
        .unwrap()
}

/// Runs statements outside the store, on one connection; the first column of the last one's first
/// row (0 if none).
async fn exec(db: Db, url: &str, sql: &[String]) -> i64 {
    macro_rules! run {
        ($conn:ty) => {{
            use sqlx::Connection;
            let mut c = <$conn>::connect(url).await.unwrap();
            let mut last = 0;
            for s in sql {
                let row = sqlx::query(AssertSqlSafe(s.clone()))
                    .fetch_optional(&mut c)
                    .await
                    .unwrap();
                last = row.map_or(0, |r| r.try_get::<i64, _>(0).unwrap_or(0));
            }
            c.close().await.unwrap();
            last
        }};
    }
    match db {
        Db::Postgres => run!(sqlx::PgConnection),
        Db::Mysql => run!(sqlx::MySqlConnection),
        Db::Sqlite => run!(sqlx::SqliteConnection),
    }
}

const DIGITS: &str = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
     UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";

/// `n` sessions (ids `<tag><i>`) that expired an hour ago, each with two items, inserted directly.
fn seed_expired(db: Db, p: &str, tag: &str, n: u64) -> Vec<String> {
    match db {
        Db::Postgres => vec![format!(
            "INSERT INTO {p}sessions (app, sid, expires_at, timeout_ms, initialize, names, vals) \
             SELECT '\\x2f6f6c64'::bytea, convert_to('{tag}' || g, 'UTF8'), \
                    now() - interval '1 hour' + g * interval '1 microsecond', 1000, false, \
                    ARRAY['a'::bytea, 'b'::bytea], ARRAY['1'::bytea, '2'::bytea] \
               FROM generate_series(1, {n}) g"
        )],
        // The items packed as the `items` column holds them: lengths as 4 bytes big-endian.
        Db::Mysql => vec![format!(
            "INSERT INTO {p}sessions (app, sid, expires_at, timeout_ms, initialize, created_at, items) \
             SELECT '/old', CONCAT('{tag}', i), UTC_TIMESTAMP(6) - INTERVAL 1 HOUR + INTERVAL i MICROSECOND, \
                    1000, false, UTC_TIMESTAMP(6), X'0000000161000000013100000001620000000132' \
             FROM (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS i \
             FROM {DIGITS} a, {DIGITS} b, {DIGITS} c, {DIGITS} e, {DIGITS} f) g WHERE i < {n}"
        )],
        // The items packed as the `items` column holds them: lengths as 4 bytes big-endian.
        Db::Sqlite => vec![format!(
            "INSERT INTO {p}sessions (app, sid, expires_at, timeout_ms, initialize, created_at, items) \
             WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n}) \
             SELECT X'2f6f6c64', CAST('{tag}' || i AS BLOB), 1000 + i, 1000, 0, 0, \
                    X'0000000161000000013100000001620000000132' FROM g"
        )],
    }
}

fn item(bytes: &[u8]) -> ItemValue {
    ItemValue::from_bytes(bytes.to_vec())
}

fn key() -> SessionKey {
    SessionKey::new(
        AppName::new("/live").unwrap(),
        SessionId::generate().unwrap(),
    )
}

/// Everything a purge must leave: 20 live sessions with two items each, one of them locked.
async fn live_sessions(s: &SqlStore) -> (Vec<SessionKey>, SessionKey, LockToken) {
    let items: Items = [("a".to_owned(), item(b"1")), ("b".to_owned(), item(b"2"))].into();
    let mut live = Vec::new();
    for _ in 0..20 {
        let k = key();
        s.create(&k, &items, Duration::from_secs(600), false)
            .await
            .unwrap();
        live.push(k);
    }
    let locked = live[0].clone();
    let token = LockToken::generate().unwrap();
    let out = s
        .acquire(&locked, token, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(out, AcquireOutcome::Acquired(_)), "{out:?}");
    (live, locked, token)
}

/// The rows and items left under prefix `p`.
async fn left(db: Db, url: &str, p: &str) -> (i64, i64) {
    let rows = exec(db, url, &[format!("SELECT COUNT(*) FROM {p}sessions")]).await;
    let items = match db {
        Db::Postgres => {
            format!("SELECT COALESCE(SUM(cardinality(names)), 0)::bigint FROM {p}sessions")
        }
        // Two items of 10 bytes packed (4 + 1 + 4 + 1 each): the blob's length / 10.
        Db::Mysql => format!(
            "SELECT CAST(COALESCE(SUM(LENGTH(items)), 0) DIV 10 AS SIGNED) FROM {p}sessions"
        ),
        Db::Sqlite => format!("SELECT COALESCE(SUM(length(items)), 0) / 10 FROM {p}sessions"),
    };
    (rows, exec(db, url, &[items]).await)
}

/// The report of `store`'s sweeper after its first sweep (within a minute).
async fn first_sweep(store: &SqlStore) -> SweepReport {
    let mut reports = store.sweep_reports();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            reports.changed().await.unwrap();
            let r = reports.borrow_and_update().clone();
            if r.sweeps > 0 {
                return r;
            }
        }
    })
    .await
    .expect("a sweep within a minute")
}

/// Purging 5,000 expired sessions: calls of 700 delete exactly 700 until the last (100), every
/// expired session and its items go, every live one stays (the locked one locked); then a
/// sweeper with batches of 5,000 purges 5,000 more in statements of at most 1,000 sessions, which
/// its report counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_purge_removes_every_expired_session_and_no_live_one() {
    for t in targets() {
        let p = prefix("batch");
        let s = store(&t.url, &p, None).await;
        let (live, locked, token) = live_sessions(&s).await;
        exec(t.db, &t.url, &seed_expired(t.db, &p, "old", 5000)).await;

        let mut calls = Vec::new();
        loop {
            let n = s.purge_expired(700).await.unwrap();
            calls.push(n);
            if n < 700 {
                break;
            }
        }
        assert_eq!(
            calls,
            [700, 700, 700, 700, 700, 700, 700, 100],
            "{:?}",
            t.db
        );
        assert_eq!(s.purge_expired(700).await.unwrap(), 0, "{:?}", t.db);
        assert_eq!(left(t.db, &t.url, &p).await, (20, 40), "{:?}", t.db);
        for k in &live {
            let found = s.read(k).await.unwrap();
            if *k == locked {
                assert!(matches!(found, ReadOutcome::Locked(_)), "{:?}", t.db);
            } else {
                assert!(matches!(found, ReadOutcome::Found(_)), "{:?}", t.db);
            }
        }

        // The sweeper: one sweep of batches of 5,000 (the next one a second later: time enough to
        // read the first one's report).
        exec(t.db, &t.url, &seed_expired(t.db, &p, "again", 5000)).await;
        let sweeping = store(
            &t.url,
            &p,
            Some(
                SweeperOptions::new()
                    .with_interval(Duration::from_secs(1))
                    .with_batch(5000),
            ),
        )
        .await;
        let report = first_sweep(&sweeping).await;
        sweeping.close().await;
        assert_eq!(report.last_error, None, "{:?}", t.db);
        assert_eq!(report.last_purged, 5000, "{:?}", t.db);
        // 5,000 in full statements, then one that finds nothing.
        let max = t.db.statement_max();
        assert_eq!(report.last_statements, 5000 / max + 1, "{:?}", t.db);
        // At the default work share (100 %) the statements run back to back.
        assert_eq!(report.last_rested, Duration::ZERO, "{:?}", t.db);
        assert!(report.last_busy > Duration::ZERO, "{:?}", t.db);
        assert_eq!(left(t.db, &t.url, &p).await, (20, 40), "{:?}", t.db);
        s.release(&locked, token).await.unwrap();
        s.close().await;
    }
}

/// A sweeper with a work share of 25 % rests three times as long as each statement took before
/// the next: 3,000 expired sessions go in full statements (1,000 each), each followed
/// by a rest, then one that finds nothing (cheap, and followed by none), so the report's rest is
/// about three times its busy time (asserted: at least once, for a loaded machine); the purge
/// still removes every expired session and no live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeper_rests_for_its_work_share() {
    for t in targets() {
        let p = prefix("share");
        let s = store(&t.url, &p, None).await;
        let (live, locked, token) = live_sessions(&s).await;
        exec(t.db, &t.url, &seed_expired(t.db, &p, "old", 3000)).await;
        let options = SweeperOptions::new()
            .with_interval(Duration::from_secs(1))
            .with_batch(1000)
            .with_work_share(25);
        assert_eq!(options.work_share(), 25);
        let sweeping = store(&t.url, &p, Some(options)).await;
        let report = first_sweep(&sweeping).await;
        sweeping.close().await;
        assert_eq!(report.last_error, None, "{:?}", t.db);
        assert_eq!(report.last_purged, 3000, "{:?}", t.db);
        assert_eq!(
            report.last_statements,
            3000 / t.db.statement_max() + 1,
            "{:?}",
            t.db
        );
        assert!(
            report.last_rested >= report.last_busy,
            "{:?}: rested {:?}, busy {:?}",
            t.db,
            report.last_rested,
            report.last_busy
        );
        assert_eq!(left(t.db, &t.url, &p).await, (20, 40), "{:?}", t.db);
        assert_eq!(live.len(), 20);
        s.release(&locked, token).await.unwrap();
        s.close().await;
    }
    // Out-of-range shares are clamped.
    assert_eq!(SweeperOptions::new().with_work_share(0).work_share(), 1);
    assert_eq!(SweeperOptions::new().with_work_share(200).work_share(), 100);
    assert_eq!(SweeperOptions::new().work_share(), 100);
}

/// Postgres `pg_stat_user_tables` counters of a table.
async fn pg_stats(url: &str, p: &str) -> HashMap<&'static str, i64> {
    let mut out = HashMap::new();
    for column in [
        "seq_scan",
        "seq_tup_read",
        "idx_scan",
        "idx_tup_fetch",
        "n_tup_ins",
    ] {
        let sql = format!(
            "SELECT COALESCE({column}, 0) FROM pg_stat_user_tables \
              WHERE relname = lower('{p}sessions') AND schemaname = current_schema()"
        );
        out.insert(column, exec(Db::Postgres, url, &[sql]).await);
    }
    out
}

/// Postgres: a purge call that finds nothing expired fetches no live row, with 5,000 live sessions
/// expiring later in the current minute (0005's purge fetched every one of them from the heap to
/// filter it out: its index bound reached the current minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_purge_with_nothing_expired_reads_no_live_row() {
    let Some(t) = target(Db::Postgres) else {
        return;
    };
    let p = prefix("probe");
    let s = store(&t.url, &p, None).await;
    // The live sessions expire at the end of the current minute, so the test runs while at least
    // 15 s of it are left.
    loop {
        let second = exec(
            t.db,
            &t.url,
            &["SELECT extract(second FROM clock_timestamp())::bigint".to_owned()],
        )
        .await;
        if second < 45 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(61 - second as u64)).await;
    }
    let n = 5000;
    exec(
        t.db,
        &t.url,
        &[format!(
            "INSERT INTO {p}sessions (app, sid, expires_at, timeout_ms, initialize) \
             SELECT '\\x2f'::bytea, convert_to('live' || g, 'UTF8'), \
                    date_trunc('minute', clock_timestamp()) + interval '59.9 seconds', 600000, false \
               FROM generate_series(1, {n}) g"
        )],
    )
    .await;
    // Counters reach the view when a backend flushes them (at the latest when it exits).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = pg_stats(&t.url, &p).await;
    while before["n_tup_ins"] < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        before = pg_stats(&t.url, &p).await;
    }
    assert_eq!(s.purge_expired(1000).await.unwrap(), 0);
    s.close().await;
    let mut after = pg_stats(&t.url, &p).await;
    while after["idx_scan"] + after["seq_scan"] == before["idx_scan"] + before["seq_scan"]
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = pg_stats(&t.url, &p).await;
    }
    assert!(
        after["idx_scan"] > before["idx_scan"],
        "the purge probes an index: {before:?} -> {after:?}"
    );
    let read = (after["seq_tup_read"] - before["seq_tup_read"])
        + (after["idx_tup_fetch"] - before["idx_tup_fetch"]);
    assert_eq!(
        read, 0,
        "a purge that finds nothing expired reads no live row ({n} live in the current minute): \
         {before:?} -> {after:?}"
    );
    let rows = exec(t.db, &t.url, &[format!("SELECT COUNT(*) FROM {p}sessions")]).await;
    assert_eq!(rows, n, "the live sessions are all there");
}

/// MySQL/MariaDB session counters `Handler_read_%` (summed) and `Handler_delete`.
async fn handler_reads(c: &mut sqlx::MySqlConnection) -> (i64, i64) {
    let rows = sqlx::query("SHOW SESSION STATUS WHERE Variable_name LIKE 'Handler_read%' OR Variable_name = 'Handler_delete'")
        .fetch_all(&mut *c)
        .await
        .unwrap();
    let (mut reads, mut deletes) = (0, 0);
    for r in rows {
        let name: String = r.try_get(0).unwrap();
        let value: i64 = r.try_get::<String, _>(1).unwrap().parse().unwrap();
        if name == "Handler_delete" {
            deletes += value;
        } else {
            reads += value;
        }
    }
    (reads, deletes)
}

/// MySQL/MariaDB: a purge call reads rows in proportion to the sessions it deletes (0001's read
/// every expired session for each batch: over 5,000 here for a batch of 100), and one that finds
/// nothing expired reads next to nothing, with 2,020 live sessions (a plan that scans the index or
/// the table, which MariaDB picks right after a batch without the named index, reads them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_purge_reads_what_it_deletes() {
    use sqlx::Connection;
    let Some(t) = target(Db::Mysql) else {
        return;
    };
    let p = prefix("reads");
    let s = store(&t.url, &p, None).await;
    let (live, _, _) = live_sessions(&s).await;
    exec(t.db, &t.url, &seed_expired(t.db, &p, "old", 5000)).await;
    // More live sessions, expiring in an hour, so that the table is not so small that reading all
    // of it is the plan of choice.
    let more = 2000;
    exec(
        t.db,
        &t.url,
        &[format!(
            "INSERT INTO {p}sessions (app, sid, expires_at, timeout_ms, initialize, created_at) \
             SELECT '/live', CONCAT('live', i), UTC_TIMESTAMP(6) + INTERVAL 1 HOUR, 3600000, false, \
                    UTC_TIMESTAMP(6) \
             FROM (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d AS i \
             FROM {DIGITS} a, {DIGITS} b, {DIGITS} c, {DIGITS} e) g WHERE i < {more}"
        )],
    )
    .await;
    // The routine the store calls, on a connection of the test's, whose session counters count
    // the routine's statements.
    let mut c = sqlx::MySqlConnection::connect(&t.url).await.unwrap();
    let call = format!("CALL {p}purge(100)");
    let mut purged = 0;
    let mut calls = 0;
    loop {
        let before = handler_reads(&mut c).await;
        let row = sqlx::query(AssertSqlSafe(call.clone()))
            .fetch_one(&mut c)
            .await
            .unwrap();
        let n: i64 = row.try_get(0).unwrap();
        let after = handler_reads(&mut c).await;
        let (reads, deletes) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(
            deletes, n,
            "sessions deleted (one row each, its items in it)"
        );
        // A few per session deleted (its index entry, its materialised candidate, its row by
        // primary key; 4 here), plus a few to start and end the scans.
        assert!(
            reads <= 5 * n + 10,
            "call {calls}: {reads} rows read to delete {n} (of {} expired)",
            5000 - purged
        );
        purged += n;
        calls += 1;
        if n < 100 {
            break;
        }
    }
    assert_eq!(purged, 5000);
    assert_eq!(calls, 51, "50 full calls, then one that finds nothing");
    c.close().await.unwrap();
    assert_eq!(left(t.db, &t.url, &p).await, (live.len() as i64 + more, 40));
    s.close().await;
}

/// Postgres `pg_stat_user_indexes` counters (`idx_scan`, `idx_tup_read`) of the purge's index.
async fn purge_index_stats(url: &str, p: &str) -> (i64, i64) {
    let sql = |column: &str| {
        format!(
            "SELECT COALESCE({column}, 0) FROM pg_stat_user_indexes \
              WHERE indexrelname = lower('{p}exp_bucket_pk') AND schemaname = current_schema()"
        )
    };
    (
        exec(Db::Postgres, url, &[sql("idx_scan")]).await,
        exec(Db::Postgres, url, &[sql("idx_tup_read")]).await,
    )
}

/// Postgres: a drain of many expired sessions in small statements reads each index entry about
/// once (migration 0009's cursor): without it every statement stepped over the entries of all the
/// sessions the statements before it had deleted (VACUUM removes them later), about n^2 / (2 x
/// statement) entries for n sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_drain_reads_each_index_entry_once() {
    let Some(t) = target(Db::Postgres) else {
        return;
    };
    let p = prefix("drain");
    let s = store(&t.url, &p, None).await;
    let n = 3000;
    exec(t.db, &t.url, &seed_expired(t.db, &p, "old", n as u64)).await;
    let before = purge_index_stats(&t.url, &p).await;
    let mut purged = 0;
    let mut statements = 0;
    loop {
        let got = s.purge_expired(100).await.unwrap();
        purged += got;
        statements += 1;
        if got < 100 {
            break;
        }
    }
    assert_eq!(purged, n as u64, "every expired session purged");
    s.close().await;
    // Counters reach the view when a backend flushes them (at the latest when it exits).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = purge_index_stats(&t.url, &p).await;
    while after.0 < before.0 + statements && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = purge_index_stats(&t.url, &p).await;
    }
    assert!(after.0 >= before.0 + statements, "{before:?} -> {after:?}");
    let read = after.1 - before.1;
    assert!(
        read < n + n / 2,
        "{statements} statements purging {n} sessions read {read} index entries"
    );
}

/// One `purge_expired(100)` while another connection holds the row of session `sid` (`FOR
/// UPDATE`, as a request's statement does), released after it: how many sessions it purged.
async fn purge_while_held(url: &str, p: &str, sid: &str, s: &SqlStore) -> u64 {
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect(url).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "SELECT pk FROM {p}sessions WHERE sid = '{sid}'::bytea FOR UPDATE"
    )))
    .fetch_one(&mut *held)
    .await
    .unwrap();
    let purged = s.purge_expired(100).await.unwrap();
    held.commit().await.unwrap();
    purged
}

/// Postgres: a drain passes over a session whose row a request holds (`SKIP LOCKED`) and goes on
/// after it; the next drain, or a drain whose cursor is more than 60 s old, starts from the lowest
/// bucket again and purges it (migration 0009).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_purge_cursor_comes_back_for_what_it_passed_over() {
    let Some(t) = target(Db::Postgres) else {
        return;
    };
    let p = prefix("cursor");
    let s = store(&t.url, &p, None).await;
    exec(t.db, &t.url, &seed_expired(t.db, &p, "old", 400)).await;
    let first = format!("SELECT count(*)::BIGINT FROM {p}sessions WHERE sid = 'old1'::bytea");
    // A request holds the first session's row while the drain starts.
    assert_eq!(purge_while_held(&t.url, &p, "old1", &s).await, 100);
    assert_eq!(
        exec(t.db, &t.url, std::slice::from_ref(&first)).await,
        1,
        "passed over"
    );
    assert_eq!(s.purge_expired(100).await.unwrap(), 100);
    assert_eq!(
        exec(t.db, &t.url, std::slice::from_ref(&first)).await,
        1,
        "the drain goes on after its cursor"
    );
    // The drain is now older than a minute: the next statement starts from the lowest bucket.
    exec(
        t.db,
        &t.url,
        &[format!(
            "UPDATE {p}purge_cursor SET started = started - interval '61 seconds'"
        )],
    )
    .await;
    assert_eq!(s.purge_expired(100).await.unwrap(), 100);
    assert_eq!(
        exec(t.db, &t.url, std::slice::from_ref(&first)).await,
        0,
        "come back for"
    );
    assert_eq!(s.purge_expired(100).await.unwrap(), 100, "the rest");
    assert_eq!(s.purge_expired(100).await.unwrap(), 0, "nothing left");
    let cursor = format!("SELECT count(*)::BIGINT FROM {p}purge_cursor WHERE bucket IS NULL");
    assert_eq!(
        exec(t.db, &t.url, &[cursor]).await,
        1,
        "a short statement ends the drain and forgets the cursor"
    );
    // And a drain that ends short leaves the next one to start from the lowest bucket.
    exec(t.db, &t.url, &seed_expired(t.db, &p, "again", 150)).await;
    assert_eq!(purge_while_held(&t.url, &p, "again1", &s).await, 100);
    assert_eq!(
        s.purge_expired(100).await.unwrap(),
        49,
        "the rest of the drain"
    );
    assert_eq!(s.purge_expired(100).await.unwrap(), 1, "the next drain");
    s.close().await;
}
