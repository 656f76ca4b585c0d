//! Purge at scale: what a purge costs with many live sessions, how fast it removes many expired
//! ones, and what it does to reads meanwhile (issue 15). Not a test: it prints numbers.
//!
//! ```text
//! cargo run --release -p backend-sql --features postgres,mysql,sqlite --example purge_scale -- \
//!     <url> <live> <expired> [--readers R] [--batch B] [--probes K] [--items I] [--settle S]
//! ```
//!
//! `<url>` is a Postgres, MySQL/MariaDB or SQLite URL (`sqlite:/tmp/scale.db`). The store's
//! tables use the prefix `purge_scale_`, emptied first and at the end. Every session holds 10
//! items of 150 B (`--items`: another number; 0 saves disk for a probe of many live sessions). Outside the measured time, the example loads `<live>` live sessions whose
//! expiries are spread evenly over the next 20 minutes (1 s steps, timeout 60 s: a read writes
//! only for a session in its last minute), with plain bulk `INSERT ... SELECT`s.
//!
//! Then it measures:
//! 1. **probe**: at the start of a minute, after purging whatever already expired (and waiting
//!    `--settle` seconds, default 0), `K` purge calls back to back (each finds nothing expired, or
//!    the few sessions that expired since the previous call): the latency of each (median, max;
//!    and the median of those that found nothing).
//! 2. **purge**: loads `<expired>` sessions that expired an hour ago, then starts `R` reader tasks
//!    (random live sessions, `read`, as fast as they can) for 5 s alone, then purges
//!    (`purge_expired(B)` until a call comes back short, as the sweeper does) while they read:
//!    sessions per second, and the readers' p50 / p99 / max before and during the purge and the
//!    worst read of each second of the purge. With `--share P` (percent, 1..=100) the purge is
//!    the store's sweeper at that work share (`SweeperOptions::with_work_share`) instead: the
//!    calls are its statements, the time its sweep's statements and rests (no slowest call).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backend_sql::sqlx::{self, AssertSqlSafe};
use backend_sql::{SqlOptions, SqlStore, SweeperOptions};
use session_core::{AppName, Config, ReadOutcome, SessionId, SessionKey, SessionStore};

const PREFIX: &str = "purge_scale_";
const APP: &str = "/scale";
const VALUE: usize = 150;
/// Rows per bulk insert statement.
const CHUNK: u64 = 20_000;

#[derive(Clone, Copy, PartialEq)]
enum Db {
    Postgres,
    Mysql,
    Sqlite,
}

enum Pool {
    Postgres(sqlx::PgPool),
    Mysql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

/// Items per session (`--items`, default 10).
static ITEMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(10);

fn items() -> usize {
    ITEMS.load(Ordering::Relaxed)
}

impl Pool {
    async fn connect(db: Db, url: &str) -> Pool {
        match db {
            Db::Postgres => Pool::Postgres(sqlx::PgPool::connect(url).await.expect("postgres")),
            Db::Mysql => {
                let url = url.replacen("mariadb://", "mysql://", 1);
                Pool::Mysql(sqlx::MySqlPool::connect(&url).await.expect("mysql"))
            }
            Db::Sqlite => Pool::Sqlite(sqlx::SqlitePool::connect(url).await.expect("sqlite")),
        }
    }

    async fn exec(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        match self {
            Pool::Postgres(p) => drop(sqlx::raw_sql(sql).execute(p).await.expect(SQL)),
            Pool::Mysql(p) => drop(sqlx::raw_sql(sql).execute(p).await.expect(SQL)),
            Pool::Sqlite(p) => drop(sqlx::raw_sql(sql).execute(p).await.expect(SQL)),
        }
    }

    async fn count(&self) -> i64 {
        let sql = AssertSqlSafe(format!("SELECT COUNT(*) FROM {PREFIX}sessions"));
        match self {
            Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect(SQL),
            Pool::Mysql(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect(SQL),
            Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect(SQL),
        }
    }

    /// The second of the minute on the database clock.
    async fn second(&self) -> u64 {
        let second: i64 = match self {
            Pool::Postgres(p) => {
                sqlx::query_scalar("SELECT floor(extract(second FROM clock_timestamp()))::bigint")
                    .fetch_one(p)
                    .await
            }
            Pool::Mysql(p) => {
                sqlx::query_scalar("SELECT CAST(SECOND(UTC_TIMESTAMP()) AS SIGNED)")
                    .fetch_one(p)
                    .await
            }
            Pool::Sqlite(p) => {
                sqlx::query_scalar("SELECT CAST(strftime('%S', 'now') AS INTEGER)")
                    .fetch_one(p)
                    .await
            }
        }
        .expect(SQL);
        u64::try_from(second).unwrap_or(0).min(59)
    }

    async fn empty(&self) {
        match self {
            Pool::Postgres(_) => self.exec(&format!("TRUNCATE {PREFIX}sessions")).await,
            Pool::Mysql(_) => self.exec(&format!("TRUNCATE {PREFIX}sessions")).await,
            Pool::Sqlite(_) => self.exec(&format!("DELETE FROM {PREFIX}sessions")).await,
        }
    }

    /// Inserts sessions `lo..=hi` of a kind: `live` ones expire `(i % 1200) + 1` s from now
    /// (timeout 60 s), expired ones an hour ago. Ids: 32 hex digits, the first `a` (live) or `e`.
    async fn load(&self, live: bool, lo: u64, hi: u64) {
        let n_items = items();
        let first = if live { 'a' } else { 'e' };
        match self {
            Pool::Postgres(_) => {
                let exp = if live {
                    "now() + ((g % 1200) + 1) * interval '1 second'"
                } else {
                    "now() - interval '1 hour' + g * interval '1 microsecond'"
                };
                let names: Vec<String> = (0..n_items).map(|i| format!("'item{i}'")).collect();
                let sql = format!(
                    "INSERT INTO {PREFIX}sessions (app, sid, expires_at, timeout_ms, initialize, names, vals) \
                     SELECT convert_to('{APP}', 'UTF8'), convert_to('{first}' || lpad(to_hex(g), 31, '0'), 'UTF8'), \
                            {exp}, 60000, false, c.n, c.v \
                       FROM (SELECT ARRAY(SELECT convert_to(x, 'UTF8') FROM unnest(ARRAY[{}]::text[]) x) AS n, \
                                    array_fill(convert_to(repeat('x', {VALUE}), 'UTF8'), ARRAY[{n_items}]) AS v) c, \
                            generate_series({lo}, {hi}) g",
                    names.join(",")
                );
                self.exec(&sql).await;
            }
            Pool::Mysql(_) => {
                let exp = if live {
                    "UTC_TIMESTAMP(6) + INTERVAL ((g.i % 1200) + 1) SECOND"
                } else {
                    "UTC_TIMESTAMP(6) - INTERVAL 1 HOUR + INTERVAL g.i MICROSECOND"
                };
                let d = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                         UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                         UNION ALL SELECT 8 UNION ALL SELECT 9)";
                let g = format!(
                    "(SELECT {lo} + a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS i \
                      FROM {d} a, {d} b, {d} c, {d} e, {d} f) g WHERE g.i <= {hi}"
                );
                self.exec(&format!(
                    "INSERT INTO {PREFIX}sessions (app, sid, expires_at, timeout_ms, initialize, created_at, items) \
                     SELECT '{APP}', CONCAT('{first}', LPAD(LOWER(HEX(g.i)), 31, '0')), {exp}, 60000, false, \
                            UTC_TIMESTAMP(6), X'{}' FROM {g}",
                    packed_hex(n_items)
                ))
                .await;
            }
            Pool::Sqlite(_) => {
                let blob = packed_hex(n_items);
                let now = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";
                let exp = if live {
                    format!("{now} + ((i % 1200) + 1) * 1000")
                } else {
                    format!("{now} - 3600000 + i % 1000")
                };
                self.exec(&format!(
                    "INSERT INTO {PREFIX}sessions (app, sid, expires_at, timeout_ms, initialize, created_at, items) \
                     WITH RECURSIVE g(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM g WHERE i < {hi}) \
                     SELECT CAST('{APP}' AS BLOB), CAST(printf('{first}%031x', i) AS BLOB), {exp}, 60000, 0, 0, \
                            X'{blob}' FROM g"
                ))
                .await;
            }
        }
    }

    async fn load_all(&self, live: bool, n: u64) {
        let mut lo = 1;
        while lo <= n {
            let hi = (lo + CHUNK - 1).min(n);
            self.load(live, lo, hi).await;
            lo = hi + 1;
        }
    }
}

const SQL: &str = "SQL statement";

/// `n` items of `VALUE` bytes packed as the `items` column holds them (SQLite, MySQL/MariaDB: u32
/// BE lengths), in hex.
fn packed_hex(n: usize) -> String {
    let mut blob = String::new();
    for i in 0..n {
        let name = format!("item{i}");
        blob.push_str(&format!("{:08x}", name.len()));
        blob.extend(name.bytes().map(|b| format!("{b:02x}")));
        blob.push_str(&format!("{VALUE:08x}"));
        blob.push_str(&"78".repeat(VALUE));
    }
    blob
}

fn db_of(url: &str) -> Db {
    let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
    match scheme.as_str() {
        "postgres" | "postgresql" => Db::Postgres,
        "mysql" | "mariadb" => Db::Mysql,
        "sqlite" => Db::Sqlite,
        other => panic!("unknown scheme {other:?}"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn summary(what: &str, mut lat: Vec<Duration>) -> String {
    lat.sort();
    format!(
        "{what}: {} reads, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, over 50 ms: {}",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        lat.iter()
            .filter(|d| **d > Duration::from_millis(50))
            .count()
    )
}

/// Purges through a sweeper at work share `share` (`--share`, percent): a second store on the same
/// tables whose sweeper ticks every 10 ms; its first sweep that purges anything runs until a
/// statement comes back short. (sessions, statements, the sweep's time: statements plus rests).
async fn sweep_all(config: &Config, batch: usize, share: u8) -> (u64, u64, Duration) {
    let sweeper = SweeperOptions::new()
        .with_interval(Duration::from_millis(10))
        .with_batch(batch)
        .with_work_share(share);
    let options = SqlOptions::new()
        .with_table_prefix(PREFIX)
        .expect("prefix")
        .with_migrate(false)
        .with_sweeper(Some(sweeper));
    let sweeping = SqlStore::connect_with(config, options)
        .await
        .expect("connect");
    let mut reports = sweeping.sweep_reports();
    loop {
        reports.changed().await.expect("sweeper");
        let r = reports.borrow_and_update().clone();
        if let Some(e) = r.last_error {
            panic!("sweep failed: {e}");
        }
        if r.last_purged > 0 {
            sweeping.close().await;
            eprintln!(
                "sweeper at work share {share} %: statements {:.2} s, rests {:.2} s",
                r.last_busy.as_secs_f64(),
                r.last_rested.as_secs_f64()
            );
            return (
                r.last_purged,
                r.last_statements,
                r.last_busy + r.last_rested,
            );
        }
    }
}

/// Purges until a call comes back short: (sessions, calls, slowest call).
async fn purge_all(store: &SqlStore, batch: usize) -> (u64, u64, Duration) {
    let (mut total, mut calls, mut slowest) = (0, 0, Duration::ZERO);
    loop {
        let t = Instant::now();
        let n = store.purge_expired(batch).await.expect("purge");
        slowest = slowest.max(t.elapsed());
        calls += 1;
        total += n;
        if n < batch as u64 {
            return (total, calls, slowest);
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "purge_scale <url> <live> <expired> [--readers R] [--batch B] [--probes K] [--items I] [--settle S] [--share P]";
    let (Some(url), Some(live), Some(expired)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let live: u64 = live.parse().expect("live");
    let expired: u64 = expired.parse().expect("expired");
    let opt = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect(name))
    };
    let (readers, batch, probes) = (
        opt("--readers", 4),
        opt("--batch", 1000),
        opt("--probes", 20),
    );
    ITEMS.store(opt("--items", 10), Ordering::Relaxed);
    let settle = opt("--settle", 0);
    // `--share P`: purge through the sweeper at that work share (also at 100).
    let share = args
        .iter()
        .any(|a| a == "--share")
        .then(|| u8::try_from(opt("--share", 100)).expect("--share: 1..=100"));
    let db = db_of(url);

    let config = Config::from_url(url).expect("url");
    let options = SqlOptions::new()
        .with_table_prefix(PREFIX)
        .expect("prefix")
        .with_sweeper(None)
        .with_max_connections(readers as u32 + 2);
    let store = SqlStore::connect_with(&config, options)
        .await
        .expect("connect");
    let pool = Pool::connect(db, url).await;
    pool.empty().await;

    let t = Instant::now();
    pool.load_all(true, live).await;
    eprintln!(
        "loaded {} live sessions in {:.1} s",
        pool.count().await,
        t.elapsed().as_secs_f64()
    );

    // 1. Probe: purge what expired already, then K calls that find (next to) nothing, in the
    // first seconds of a minute: the live sessions expiring later in the current minute (about
    // `live / 20` of them) are then as many as they get (the Postgres purge's index is on the
    // expiry minute, migration 0005).
    let second = pool.second().await;
    if second >= 5 {
        tokio::time::sleep(Duration::from_secs(60 - second)).await;
    }
    let (drained, _, _) = purge_all(&store, batch).await;
    // `--settle S`: wait S seconds first, for the database to clean up after the rows just
    // purged (InnoDB's purge of delete-marked index entries, Postgres' killed index entries).
    tokio::time::sleep(Duration::from_secs(settle as u64)).await;
    let (mut lat, mut empty) = (Vec::new(), Vec::new());
    let mut found = 0;
    for _ in 0..probes {
        let t = Instant::now();
        let n = store.purge_expired(batch).await.expect("purge");
        lat.push(t.elapsed());
        if n == 0 {
            empty.push(t.elapsed());
        }
        found += n;
    }
    lat.sort();
    empty.sort();
    println!(
        "probe: {live} live, {probes} calls (after purging {drained} already expired): \
         median {:.3} ms, max {:.3} ms, {found} sessions found (the {} calls that found none: \
         median {:.3} ms), at second {} of the minute",
        ms(percentile(&lat, 0.5)),
        ms(lat.last().copied().unwrap_or_default()),
        empty.len(),
        ms(percentile(&empty, 0.5)),
        pool.second().await
    );

    if expired == 0 {
        pool.empty().await;
        return;
    }

    // 2. Purge of `expired` sessions, under reads.
    let t = Instant::now();
    pool.load_all(false, expired).await;
    eprintln!(
        "loaded {expired} expired sessions in {:.1} s ({} rows)",
        t.elapsed().as_secs_f64(),
        pool.count().await
    );
    let app = AppName::new(APP).expect("app");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..readers)
        .map(|r| {
            let (store, app, stop) = (store.clone(), app.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                // A small xorshift per task: random live sessions without a dependency.
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (r as u64 + 1);
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = x % live.max(1) + 1;
                    let id = SessionId::parse(&format!("a{i:031x}")).expect("id");
                    let key = SessionKey::new(app.clone(), id);
                    let t = Instant::now();
                    // Live sessions expire as the run goes on (their expiries are spread
                    // over 20 minutes): a read of one is `Missing`, still a read.
                    let _: ReadOutcome = store.read(&key).await.expect("read");
                    out.push((t.duration_since(start), t.elapsed()));
                }
                out
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let purge_from = start.elapsed();
    let t = Instant::now();
    let (purged, calls, slowest, took) = if let Some(share) = share {
        let (purged, statements, took) = sweep_all(&config, batch, share).await;
        (purged, statements, Duration::ZERO, took)
    } else {
        let (purged, calls, slowest) = purge_all(&store, batch).await;
        (purged, calls, slowest, t.elapsed())
    };
    let purge_to = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut reads = Vec::new();
    for task in tasks {
        reads.extend(task.await.expect("reader"));
    }
    println!(
        "purge: {purged} expired of {} x {VALUE} B with {live} live, batch {batch}: {:.2} s, \
         {:.0} sessions/s, {calls} calls, slowest call {:.1} ms, {readers} readers",
        items(),
        took.as_secs_f64(),
        purged as f64 / took.as_secs_f64(),
        ms(slowest)
    );
    let before: Vec<Duration> = reads
        .iter()
        .filter(|(at, _)| *at < purge_from)
        .map(|r| r.1)
        .collect();
    let during: Vec<(Duration, Duration)> = reads
        .iter()
        .filter(|(at, _)| *at >= purge_from && *at < purge_to)
        .copied()
        .collect();
    println!("{}", summary("reads before", before));
    println!(
        "{}",
        summary("reads during", during.iter().map(|r| r.1).collect())
    );
    let seconds = (purge_to - purge_from).as_secs() + 1;
    let worst: Vec<String> = (0..seconds)
        .map(|s| {
            let from = purge_from + Duration::from_secs(s);
            let to = from + Duration::from_secs(1);
            let w = during
                .iter()
                .filter(|(at, _)| *at >= from && *at < to)
                .map(|r| r.1)
                .max()
                .unwrap_or_default();
            format!("{:.1}", ms(w))
        })
        .collect();
    println!(
        "worst read per second of the purge (ms): {}",
        worst.join(" ")
    );
    pool.empty().await;
}
