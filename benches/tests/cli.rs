//! End to end: the `session-bench` binary on the embedded default (memory and SQLite) with a very
//! short duration, and with the tower-sessions peers (moka always; Redis and Postgres on the
//! servers `test-support` reads from the environment: skipped when not configured, failing when
//! required). Counts are asserted, never timings.

use std::process::Command;
use std::sync::Mutex;

use test_support::configured;

/// Serializes the tests that run the bench against the shared Postgres database: the cleanup test
/// clears the bench's rows there before its run, and counts them after.
static POSTGRES: Mutex<()> = Mutex::new(());

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_session-bench"))
}

/// Runs `command`, which must succeed (else panics with its output), and returns its stdout and
/// stderr.
fn succeed(command: &mut Command) -> (String, String) {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The report row of `backend`, `workload` and `concurrency`; panics naming it if there is none.
fn find_row<'a>(
    rows: &'a [serde_json::Value], backend: &str, workload: &str, concurrency: u64,
) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| {
            r["backend"] == backend && r["workload"] == workload && r["concurrency"] == concurrency
        })
        .unwrap_or_else(|| panic!("no row {backend} {workload} {concurrency}"))
}

#[test]
fn embedded_default_writes_json_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let svg = dir.path().join("chart.svg");
    let (stdout, _) = succeed(
        bench()
            .args(["--quiet", "--duration", "50ms", "--pool", "100", "--json"])
            .arg(&json)
            .arg("--chart")
            .arg(&svg),
    );
    assert!(stdout.starts_with("backend"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .expect("the JSON report parses");
    let rows = report["rows"].as_array().unwrap();
    // 2 backends x (6 workloads + 2 floors) x 2 concurrencies, plus memory's probes
    // (ref-harness, ref-moka-compute, ref-W1-uncounted) x 2 concurrencies, plus the exact-sliding
    // rows (W1, W2) of both backends x 2 concurrencies.
    assert_eq!(rows.len(), 2 * 8 * 2 + 3 * 2 + 2 * 2 * 2);
    assert_eq!(report["refresh_window_percent"], 10, "the default window");
    for backend in ["memory-exact", "sqlite-exact"] {
        for workload in ["W1", "W2"] {
            for conc in [1, 32] {
                let row = find_row(rows, backend, workload, conc);
                assert!(row["ratio_to_floor"].is_number(), "{row}");
            }
        }
    }
    for backend in ["memory", "sqlite"] {
        for workload in ["W1", "W2", "W3", "W4", "W5", "W6", "floor-read", "floor-rw"] {
            for conc in [1, 32] {
                let row = find_row(rows, backend, workload, conc);
                assert!(row["ops"].as_u64().unwrap() > 0, "{row}");
            }
        }
    }
    // Round trips per operation are exact for the uncontended workloads.
    for r in rows.iter().filter(|r| r["workload"] != "W5") {
        let expected = match r["workload"].as_str().unwrap() {
            "ref-harness" => 0.0,
            "W1" | "W6" | "floor-read" | "ref-moka-compute" | "ref-W1-uncounted" => 1.0,
            _ => 2.0,
        };
        assert_eq!(r["calls_per_op"].as_f64().unwrap(), expected, "{r}");
    }
    let ratios = rows
        .iter()
        .filter(|r| r["ratio_to_floor"].is_number())
        .count();
    assert_eq!(
        ratios,
        2 * 2 * 2 * 2,
        "W1 and W2 rows (default and exact) carry a ratio"
    );

    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(
        chart.contains("<svg"),
        "not an SVG: {}",
        &chart[..chart.len().min(200)]
    );
    assert!(chart.trim_end().ends_with("</svg>"));
}

#[test]
fn peers_add_tower_sessions_rows() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let (stdout, _) = succeed(
        bench()
            .args([
                "--quiet",
                "--peers",
                "--no-floors",
                "--duration",
                "50ms",
                "--pool",
                "100",
                "--json",
            ])
            .arg(&json),
    );
    assert!(stdout.contains("tower-sessions"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let peer: Vec<_> = rows
        .iter()
        .filter(|r| r["backend"] == "peer:tower-sessions-moka")
        .collect();
    // W1-W3 x 2 concurrencies; no Redis or Postgres peer without their URLs.
    assert_eq!(peer.len(), 3 * 2, "{peer:?}");
    assert_eq!(
        rows.iter()
            .filter(|r| r["backend"].as_str().unwrap().starts_with("peer:"))
            .count(),
        peer.len()
    );
    for r in &peer {
        assert_eq!(r["peer_of"], "memory", "{r}");
        assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        let (calls, bytes) = match r["workload"].as_str().unwrap() {
            "W1" => (1.0, 0.0),
            // load + save of the whole record (10 x (5 + 150) B); create + delete.
            "W2" | "W3" => (2.0, 1550.0),
            other => panic!("peers run W1-W3 only, got {other}"),
        };
        assert_eq!(r["calls_per_op"].as_f64().unwrap(), calls, "{r}");
        assert_eq!(r["bytes_per_op"].as_f64().unwrap(), bytes, "{r}");
    }
}

#[test]
fn networked_peers_run_next_to_our_stores() {
    let Some(redis) = configured(test_support::redis()) else {
        return;
    };
    let Some(postgres) = configured(test_support::postgres()) else {
        return;
    };
    let (redis, postgres) = (redis.url(), postgres.url());
    let _serial = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    succeed(
        bench()
            .args(["--quiet", "--no-embedded", "--no-floors", "--peers"])
            .args(["--workloads", "W1,W2", "--concurrency", "1,4"])
            .args(["--duration", "50ms", "--pool", "50", "--redis", redis])
            .args(["--postgres", postgres, "--json"])
            .arg(&json),
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let order: Vec<&str> = rows
        .iter()
        .map(|r| r["backend"].as_str().unwrap())
        .collect();
    let mut runs = order.clone();
    runs.dedup();
    // Each peer runs right after our store of the same kind (and its exact-sliding and near cache
    // rows); moka (no memory row here) last.
    assert_eq!(
        runs,
        [
            "redis",
            "redis-exact",
            "redis-near",
            "peer:tower-sessions-redis",
            "postgres",
            "postgres-exact",
            "peer:tower-sessions-postgres",
            "peer:tower-sessions-moka"
        ]
    );
    for r in rows {
        assert_eq!(r["ops"].as_u64().map(|n| n > 0), Some(true), "{r}");
        let backend = r["backend"].as_str().unwrap();
        // Wire bytes are measured for the default window's rows, the near cache's included (the
        // exact rows only add ops/s).
        let redis_row = backend.contains("redis") && !backend.ends_with("-exact");
        // The server's own byte count: on standalone Redis only, and at least the item bytes.
        assert_eq!(r["wire_bytes_per_op"].is_number(), redis_row, "{r}");
        if redis_row {
            let wire = r["wire_bytes_per_op"].as_f64().unwrap();
            assert!(wire >= r["bytes_per_op"].as_f64().unwrap(), "{r}");
        }
        if backend.starts_with("peer:") && r["workload"] == "W2" {
            // Load + save of the whole record.
            assert_eq!(r["bytes_per_op"].as_f64(), Some(1550.0), "{r}");
        }
    }
}

/// With Redis and Redis Cluster, every workload also runs on the store with its near cache on, in
/// rows `redis-near` and `redis-cluster-near`, each carrying the near cache's counters in the JSON
/// when the store reports them (and no other row carrying any); `--no-near` leaves them out.
#[test]
fn near_rows_run_on_every_workload() {
    let Some(redis) = configured(test_support::redis()) else {
        return;
    };
    let Some(cluster) = configured(test_support::redis_cluster()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let run = |extra: &[&str]| -> Vec<serde_json::Value> {
        succeed(
            bench()
                .args(["--quiet", "--no-embedded", "--no-floors", "--no-exact"])
                .args(["--duration", "50ms", "--pool", "50", "--concurrency", "1,4"])
                .args(["--redis", redis.url(), "--redis-cluster", cluster.url()])
                .args(extra)
                .arg("--json")
                .arg(&json),
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        report["rows"].as_array().unwrap().clone()
    };
    let rows = run(&[]);
    let mut runs: Vec<&str> = rows
        .iter()
        .map(|r| r["backend"].as_str().unwrap())
        .collect();
    runs.dedup();
    assert_eq!(
        runs,
        ["redis", "redis-near", "redis-cluster", "redis-cluster-near"]
    );
    for backend in ["redis-near", "redis-cluster-near"] {
        for workload in ["W1", "W2", "W3", "W4", "W5", "W6"] {
            for conc in [1, 4] {
                let row = find_row(&rows, backend, workload, conc);
                assert!(row["ops"].as_u64().unwrap() > 0, "{row}");
            }
        }
    }
    for r in &rows {
        let near = r["backend"].as_str().unwrap().ends_with("-near");
        match r.get("near_cache") {
            None => {}
            Some(counters) => {
                assert!(near, "counters on a row without the near cache: {r}");
                for field in [
                    "hits",
                    "misses",
                    "invalidations",
                    "flushes",
                    "evictions",
                    "entries",
                    "bytes",
                ] {
                    assert!(counters[field].is_u64(), "{field}: {r}");
                }
                // W1 reads each task's slice of 50 sessions over and over: once read, a session
                // is answered from process memory.
                if r["workload"] == "W1" {
                    assert!(counters["hits"].as_u64().unwrap() > 0, "{r}");
                }
            }
        }
    }
    let rows = run(&["--no-near", "--workloads", "W1"]);
    assert!(
        rows.iter()
            .all(|r| !r["backend"].as_str().unwrap().ends_with("-near")),
        "--no-near"
    );
}

/// Runs the bench quietly with every workload, floors and peers, at 1 and 4 tasks, plus `args`;
/// panics on failure; returns stderr.
fn short_full_run(args: &[&str]) -> String {
    let (_, stderr) = succeed(
        bench()
            .args(["--quiet", "--no-embedded", "--peers", "--duration", "50ms"])
            .args(["--pool", "50", "--concurrency", "1,4"])
            .args(args),
    );
    assert!(!stderr.contains("cleanup"), "a cleanup warning: {stderr}");
    stderr
}

#[test]
fn a_redis_run_leaves_no_key_behind() {
    let Some(redis) = configured(test_support::redis()) else {
        return;
    };
    // A database of its own (no other test uses 5): everything in it after the run is ours. Our
    // store, its floor and probes, the wire meter and the tower-sessions peer all take the URL.
    let url = redis.database(5);
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let dbsize =
        |conn: &mut redis::Connection| -> u64 { redis::cmd("DBSIZE").query(conn).unwrap() };
    let () = redis::cmd("FLUSHDB").query(&mut conn).unwrap();
    short_full_run(&["--redis", &url]);
    let left: Vec<String> = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(10)
        .query::<(u64, Vec<String>)>(&mut conn)
        .unwrap()
        .1;
    assert_eq!(dbsize(&mut conn), 0, "keys left in DB 5, e.g. {left:?}");
}

#[test]
fn a_postgres_run_leaves_no_row_behind() {
    let Some(postgres) = configured(test_support::postgres()) else {
        return;
    };
    let postgres = postgres.url();
    let _serial = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt
        .block_on(sqlx::postgres::PgPool::connect(postgres))
        .unwrap();
    // Our store's sessions of the bench's app, the floor's rows, the tower-sessions peer's rows.
    let counts = || {
        rt.block_on(async {
            let mut n = Vec::new();
            for sql in [
                "SELECT count(*) FROM sess_sessions WHERE app = convert_to('/session-bench', 'UTF8')",
                "SELECT count(*) FROM bench_floor",
                "SELECT count(*) FROM tower_sessions.session_bench_peer",
            ] {
                n.push(sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap());
            }
            n
        })
    };
    // Leftovers of earlier runs (before the bench cleaned up) would hide ours: clear them first.
    // The tables exist once the bench has run; a first run creates them.
    short_full_run(&["--postgres", postgres, "--workloads", "W1"]);
    rt.block_on(async {
        for sql in [
            "DELETE FROM sess_sessions WHERE app = convert_to('/session-bench', 'UTF8')",
            "DELETE FROM bench_floor",
            "DELETE FROM tower_sessions.session_bench_peer",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    });
    assert_eq!(counts(), [0, 0, 0]);
    short_full_run(&["--postgres", postgres]);
    assert_eq!(counts(), [0, 0, 0], "sessions, floor rows, peer rows left");
}

#[test]
fn bad_flags_are_clap_errors() {
    for args in [
        &["--payload", "ten"][..],
        &["--duration", "fast"],
        &["--workloads", "W9"],
        &["--concurrency", "0"],
        &["--poll-interval", "soon"],
        &["--no-such-flag"],
    ] {
        let out = bench().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_unreachable_server_names_its_backend() {
    let out = bench()
        .args(["--quiet", "--no-embedded", "--postgres"])
        .arg("postgres://u:secret@127.0.0.1:1/db")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("postgres: cannot connect"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password is redacted: {stderr}"
    );
}

/// The facade picks the backend from the URL; a flag given another backend's URL (or a scheme no
/// store serves) is refused before anything connects, naming the flag and never the password.
#[test]
fn a_flag_with_another_backends_url_is_refused() {
    for (flag, url, expected) in [
        (
            "--redis-cluster",
            "redis://:secret@127.0.0.1:1",
            "--redis-cluster takes a redis-cluster URL",
        ),
        (
            "--redis",
            "rediss+cluster://:secret@127.0.0.1:1,127.0.0.1:2",
            "--redis takes a redis URL",
        ),
        (
            "--postgres",
            "mysql://u:secret@127.0.0.1:1/db",
            "--postgres takes a postgres URL",
        ),
        ("--mysql", "gopher://u:secret@127.0.0.1:1", "\"gopher\""),
    ] {
        let out = bench()
            .args(["--quiet", "--no-embedded", flag, url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag} {url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{flag} {url}: {stderr}");
        assert!(!stderr.contains("secret"), "{flag} {url}: {stderr}");
    }
}
