//! End to end: the `session-bench` binary on the embedded default (memory and SQLite) with a very
//! short duration, and with the tower-sessions peers (moka always; Redis and Postgres when
//! `SESSION_TEST_REDIS_URL` and `SESSION_TEST_POSTGRES_URL` are set). Counts are asserted, never
//! timings.

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_session-bench"))
}

#[test]
fn embedded_default_writes_json_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let svg = dir.path().join("chart.svg");
    let out = bench()
        .args(["--quiet", "--duration", "50ms", "--pool", "100", "--json"])
        .arg(&json)
        .arg("--chart")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("backend"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .expect("the JSON report parses");
    let rows = report["rows"].as_array().unwrap();
    // 2 backends x (6 workloads + 2 floors) x 2 concurrencies, plus memory's probes
    // (ref-harness, ref-moka-compute, ref-W1-uncounted) x 2 concurrencies.
    assert_eq!(rows.len(), 2 * 8 * 2 + 3 * 2);
    for backend in ["memory", "sqlite"] {
        for workload in ["W1", "W2", "W3", "W4", "W5", "W6", "floor-read", "floor-rw"] {
            for conc in [1, 32] {
                let row = rows
                    .iter()
                    .find(|r| {
                        r["backend"] == backend
                            && r["workload"] == workload
                            && r["concurrency"] == conc
                    })
                    .unwrap_or_else(|| panic!("no row {backend} {workload} {conc}"));
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
    assert_eq!(ratios, 2 * 2 * 2, "W1 and W2 rows carry a ratio");

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
    let out = bench()
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
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
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

/// The URL in `var`, or `None` (the test then returns early) unless `SESSION_TEST_REQUIRE` names
/// `backend`: a required backend cannot pass by being skipped.
fn server_url(var: &str, backend: &str) -> Option<String> {
    if let Some(url) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        return Some(url);
    }
    let required = std::env::var("SESSION_TEST_REQUIRE").unwrap_or_default();
    assert!(
        !required.split(',').any(|b| b.trim() == backend),
        "SESSION_TEST_REQUIRE names {backend:?}, but {var} is not set"
    );
    eprintln!("skipped: {var} is not set");
    None
}

#[test]
fn networked_peers_run_next_to_our_stores() {
    let Some(redis) = server_url("SESSION_TEST_REDIS_URL", "redis") else {
        return;
    };
    let Some(postgres) = server_url("SESSION_TEST_POSTGRES_URL", "postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = bench()
        .args(["--quiet", "--no-embedded", "--no-floors", "--peers"])
        .args(["--workloads", "W1,W2", "--concurrency", "1,4"])
        .args(["--duration", "50ms", "--pool", "50", "--redis", &redis])
        .args(["--postgres", &postgres, "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
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
    // Each peer runs right after our store of the same kind; moka (no memory row here) last.
    assert_eq!(
        runs,
        [
            "redis",
            "peer:tower-sessions-redis",
            "postgres",
            "peer:tower-sessions-postgres",
            "peer:tower-sessions-moka"
        ]
    );
    for r in rows {
        assert_eq!(r["ops"].as_u64().map(|n| n > 0), Some(true), "{r}");
        let backend = r["backend"].as_str().unwrap();
        let redis_row = backend.contains("redis");
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

#[test]
fn bad_flags_are_clap_errors() {
    for args in [
        &["--payload", "ten"][..],
        &["--duration", "fast"],
        &["--workloads", "W9"],
        &["--concurrency", "0"],
        &["--refresh-throttle", "0.95"],
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
