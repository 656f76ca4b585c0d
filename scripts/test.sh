#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs exactly this through .ci/run).
#
# 1. Installs and starts every server the tests need on a fresh machine (idempotent: reuses what
#    runs already). The memory backend needs none; the Redis and SQL backends add theirs here.
# 2. Checks formatting and lints, then runs every test in the workspace and the example.
set -euo pipefail
cd "$(dirname "$0")/.."

# Backends whose conformance runs must not be skipped (STYLE H10). Empty while only the memory
# backend exists; later backends append (for example "redis,postgres").
export SESSION_TEST_REQUIRE="${SESSION_TEST_REQUIRE-}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet

echo "== cargo test --workspace"
cargo test --locked --workspace

echo "== example: cargo run -p backend-memory --example locking"
cargo run --locked --quiet -p backend-memory --example locking
