#!/usr/bin/env bash
# The long soak (issue 14; not part of scripts/test.sh, which runs the short one through
# `cargo test --workspace`): concurrent clients on a mixed workload with random store faults,
# on the memory store, Redis, Redis Cluster, Postgres, MariaDB and SQLite, retries off and on;
# at the end no lost update, no stuck lock, memory flat (sessions/tests/soak.rs says what it
# checks and how).
#
# Usage: scripts/soak.sh [OPERATIONS] [-- <test filter and libtest options>]
#   OPERATIONS        per trial (default $SOAK_OPERATIONS, else 20000)
#   SOAK_SEED=<n>     replay a run's choices (printed at start)
#   SOAK_CLIENTS, SOAK_SESSIONS, SOAK_STRICT=0   see sessions/tests/soak.rs
# Example: scripts/soak.sh 5000 -- postgres
#
# Starts the servers as scripts/test.sh does (idempotent: reuses what runs already) and requires
# every one of them, builds in release mode, and ends with each trial's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

operations=${SOAK_OPERATIONS:-20000}
if [[ $# -gt 0 && $1 != -- ]]; then
    operations=$1
    shift
fi
[[ ${1:-} == -- ]] && shift
export SOAK_OPERATIONS=$operations

echo "== servers: Redis standalone and cluster, Postgres, MariaDB"
bash scripts/redis/start.sh
# shellcheck disable=SC1091
. "${REDIS_RUN_DIR:-/tmp/ci-redis}/env"
bash scripts/sql/start.sh
# shellcheck disable=SC1091
. /tmp/ci-sql/env
export SESSION_TEST_REQUIRE=redis,redis-cluster,postgres,mysql

echo "== soak: $SOAK_OPERATIONS operations per trial (release build)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --release -p sessions --features axum,memory,redis,postgres --test soak \
    -- "$@" 2>&1 | tee "$log" || status=$?

echo "== summary"
grep -o 'soak: SOAK_SEED=.*' "$log" | head -1 || true
grep -o 'soak [a-z_]*::[a-z_]*: seed .*' "$log" || true
grep -o 'soak [a-z_]*::[a-z_]*: VIOLATION: .*' "$log" | head -20 || true
grep '^test result:' "$log" || true
exit "$status"
