//! End to end: the `session-bench` binary on the embedded default (memory and SQLite) with a very
//! short duration. Counts are asserted, never timings.

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
    // 2 backends x (6 workloads + 2 floors) x 2 concurrencies.
    assert_eq!(rows.len(), 2 * 8 * 2);
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
            "W1" | "W6" | "floor-read" => 1.0,
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
fn bad_flags_are_clap_errors() {
    for args in [
        &["--payload", "ten"][..],
        &["--duration", "fast"],
        &["--workloads", "W9"],
        &["--concurrency", "0"],
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
