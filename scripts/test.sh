#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs exactly this through .ci/run).
#
# 1. Installs and starts every server the tests need on a fresh machine (idempotent: reuses what
#    runs already, installs with apt only what is missing; needs root on a fresh machine).
# 2. Checks formatting and lints, then runs every test in the workspace and the example.
#
# Every backend that has a server here is *required*: SESSION_TEST_REQUIRE names it, so its tests
# fail instead of being skipped if its server is not configured (docs/style.md H10). The tests read
# every SESSION_TEST_* variable through the test-support crate (test-support/src/servers.rs, the
# rule in test-support/src/require.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

require() { export SESSION_TEST_REQUIRE="${SESSION_TEST_REQUIRE:+$SESSION_TEST_REQUIRE,}$1"; }

echo "== servers: Redis standalone, TLS + ACL, 6-node cluster"
bash scripts/redis/start.sh
# shellcheck disable=SC1091
. "${REDIS_RUN_DIR:-/tmp/ci-redis}/env"
require redis,redis-tls,redis-cluster

echo "== servers: Postgres (disposable cluster), MariaDB"
bash scripts/sql/start.sh
# shellcheck disable=SC1091
. /tmp/ci-sql/env
require postgres,mysql
echo "   SESSION_TEST_REQUIRE=$SESSION_TEST_REQUIRE"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== sessions: each backend feature alone, none, and all (the facade's features stay separate)"
for features in "" memory redis postgres sqlite mysql axum; do
    cargo clippy --locked --quiet -p sessions --no-default-features ${features:+--features "$features"} -- -D warnings
done
cargo clippy --locked --quiet -p sessions --all-features --all-targets -- -D warnings
if cargo tree --locked -p sessions -e normal --prefix none | grep -qE '^(sqlx|redis) '; then
    echo "sessions with default features must not pull in sqlx or redis" >&2
    exit 1
fi

echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet

echo "== cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The facade's HTTP tests and README doctests need its web and server-store features; its tests of
# URLs whose feature is off need them off, hence the second run.
cargo test --locked --workspace --features sessions/axum,sessions/redis,sessions/postgres 2>&1 | tee "$log"
echo "== cargo test -p sessions --lib --no-default-features (a URL whose store is compiled out)"
cargo test --locked -p sessions --lib --no-default-features 2>&1 | tee -a "$log"

echo "== example: cargo run -p backend-memory --example locking"
cargo run --locked --quiet -p backend-memory --example locking

# One closing line for the whole run: the sum over every test binary's "test result" line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
