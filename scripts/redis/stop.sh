#!/usr/bin/env bash
# Stops the servers scripts/redis/start.sh started, by their pidfiles.
set -euo pipefail
R="${REDIS_RUN_DIR:-/tmp/ci-redis}"
files=("$R/6379.pid" "$R/6380.pid" "$R"/700?/redis.pid)
for f in "${files[@]}"; do
  if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
done
# Redis deletes its pidfile on a clean shutdown.
for f in "${files[@]}"; do
  for _ in $(seq 100); do [ -e "$f" ] || break; sleep 0.1; done
done
