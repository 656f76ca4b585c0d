//! End to end: `session-bench --scale` at small sizes, on the embedded stores (memory and SQLite)
//! and, when configured, on Redis and Postgres. Counts and the JSON's shape are asserted, never
//! timings.

use std::process::Command;

use serde_json::Value;
use test_support::configured;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_session-bench"))
}

/// Runs the bench with `args` plus a JSON report; returns the report and stderr.
fn scale_run(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("scale.json");
    let out = bench()
        .args(["--quiet", "--scale", "--quick", "--duration", "100ms"])
        .args(["--concurrency", "4", "--scale-pools", "200,1000"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("scale: pools [200, 1000]"), "{stdout}");
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (report, stderr)
}

fn backend<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["scale"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend"] == name)
        .unwrap_or_else(|| panic!("no scale entry for {name}: {report}"))
}

/// Every pool size has W1 and W2 and the two floors at the run's concurrency, with operations,
/// after a warm-up that ran operations unless `warmup` is false; the ratios compare the largest
/// pool with the smallest.
fn assert_pools(b: &Value, warmup: bool) {
    assert!(b["error"].is_null(), "{b}");
    let pools = b["pools"].as_array().unwrap();
    let sizes: Vec<u64> = pools
        .iter()
        .map(|p| p["sessions"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [200, 1000], "{b}");
    assert_eq!(pools[1]["added"], 800, "{b}");
    for p in pools {
        let rows = p["rows"].as_array().unwrap();
        let labels: Vec<&str> = rows
            .iter()
            .map(|r| r["workload"].as_str().unwrap())
            .collect();
        // The store's workloads, then the raw client's floors over as many keys.
        assert_eq!(labels, ["W1", "W2", "floor-read", "floor-rw"], "{p}");
        for r in rows {
            assert_eq!(r["concurrency"], 4, "{r}");
            assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        }
        assert_eq!(rows[2]["calls_per_op"], 1.0, "{p}");
        assert_eq!(rows[3]["calls_per_op"], 2.0, "{p}");
        assert!(p["preload_per_sec"].as_f64().unwrap() > 0.0, "{p}");
        // Each pool's cells come after a warm-up of unmeasured W1 (and floor reads), none with
        // `--scale-warmup 0`.
        assert_eq!(p["warmup_ops"].as_u64().unwrap() > 0, warmup, "{p}");
        assert_eq!(p["floor_warmup_ops"].as_u64().unwrap() > 0, warmup, "{p}");
    }
    let ratios = b["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 4, "{b}");
    assert!(
        ratios.iter().all(|r| r["from"] == 200 && r["to"] == 1000),
        "{b}"
    );
}

/// Every expiring session's event is accounted for exactly once.
fn assert_events(b: &Value, sessions: u64) {
    let e = &b["expiry_events"];
    assert_eq!(e["sessions"], sessions, "{b}");
    let total: u64 = [
        "with_items",
        "empty_items",
        "partial_items",
        "items_lost",
        "other_reason",
        "missing",
    ]
    .iter()
    .map(|k| e[k].as_u64().unwrap())
    .sum();
    assert_eq!(total, sessions, "{e}");
    assert!(e["read_during"]["ops"].as_u64().unwrap() > 0, "{e}");
}

#[test]
fn scale_on_the_embedded_stores() {
    let (report, stderr) = scale_run(&["--scale-expired", "500", "--scale-events", "300"]);
    assert!(!stderr.contains("cleanup"), "a cleanup warning: {stderr}");
    assert_eq!(report["rows"].as_array().unwrap().len(), 0);
    assert_eq!(report["scale"]["load_tasks"], 4);
    assert_eq!(report["scale"]["warmup_secs"], 0.5);

    let memory = backend(&report, "memory");
    assert_pools(memory, true);
    // No purge on the memory store (it removes expired sessions itself); expiry events, each
    // with its final items.
    assert!(memory["purge"].is_null(), "{memory}");
    assert_events(memory, 300);
    assert_eq!(memory["expiry_events"]["with_items"], 300, "{memory}");
    assert!(memory["bytes_source"].as_str().unwrap().contains("RSS"));

    let sqlite = backend(&report, "sqlite");
    assert_pools(sqlite, true);
    assert!(sqlite["expiry_events"].is_null(), "{sqlite}");
    for p in sqlite["pools"].as_array().unwrap() {
        assert_eq!(p["idle_purge"]["calls"], 5, "{p}");
        assert_eq!(p["idle_purge"]["purged"], 0, "{p}");
    }
    // The purge removes exactly the expired sessions, never a live one.
    let purge = &sqlite["purge"];
    assert_eq!(
        (purge["live"].as_u64(), purge["expired"].as_u64()),
        (Some(1000), Some(500))
    );
    assert_eq!(purge["purged"], 500, "{purge}");
    assert!(purge["read_before"]["ops"].as_u64().unwrap() > 0, "{purge}");
    assert!(!purge["seconds"].as_array().unwrap().is_empty(), "{purge}");
}

/// On Redis (a database of its own) and Postgres: bytes per session next to the plain storage,
/// the purge on Postgres, the expiry events on Redis; nothing left behind.
#[test]
fn scale_on_redis_and_postgres_leaves_nothing_behind() {
    let Some(redis) = configured(test_support::redis()) else {
        return;
    };
    let Some(postgres) = configured(test_support::postgres()) else {
        return;
    };
    let url = redis.database(6);
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let () = redis::cmd("FLUSHDB").query(&mut conn).unwrap();
    let (report, stderr) = scale_run(&[
        "--no-embedded",
        "--redis",
        &url,
        "--postgres",
        postgres.url(),
        "--scale-expired",
        "500",
        "--scale-events",
        "200",
        "--scale-warmup",
        "0",
    ]);
    assert!(!stderr.contains("cleanup"), "a cleanup warning: {stderr}");
    for name in ["redis", "postgres"] {
        let b = backend(&report, name);
        assert_pools(b, false);
        assert!(
            b["plain_bytes_per_session"].as_f64().unwrap() > 1550.0,
            "{b}"
        );
        assert_eq!(b["plain_sample"], 1000, "{b}");
        for p in b["pools"].as_array().unwrap() {
            assert!(p["bytes_per_session"].as_f64().unwrap() > 0.0, "{p}");
            assert!(p["ratio_to_plain"].as_f64().unwrap() > 0.0, "{p}");
        }
    }
    let pg = backend(&report, "postgres");
    assert_eq!(pg["purge"]["purged"], 500, "{pg}");
    let r = backend(&report, "redis");
    assert!(r["purge"].is_null(), "{r}");
    if !r["expiry_events"].is_null() {
        assert_events(r, 200);
    }
    // What the store API can delete is gone. Sessions that expired may leave the store's own
    // short-lived bookkeeping (e.g. an "ended" marker), which expires by itself: every key left
    // must have a TTL of at most a few minutes.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
        assert!(
            (0..=300_000).contains(&ttl) || ttl == -2,
            "{key} left with PTTL {ttl}"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (left, floor_left): (i64, i64) = rt.block_on(async {
        let pool = sqlx::postgres::PgPool::connect(postgres.url())
            .await
            .unwrap();
        let count = |sql: &'static str| sqlx::query_scalar(sql).fetch_one(&pool);
        (
            count("SELECT count(*) FROM bench_scale_sessions")
                .await
                .unwrap(),
            count("SELECT count(*) FROM bench_floor WHERE id LIKE 'bench-scale-floor-%'")
                .await
                .unwrap(),
        )
    });
    assert_eq!(left, 0, "sessions left in bench_scale_sessions");
    assert_eq!(floor_left, 0, "the floor's rows left in bench_floor");
}
