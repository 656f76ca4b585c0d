#!/usr/bin/env bash
# Starts the three Redis variants the backend-redis tests run against, idempotently (a server that
# already answers is reused), and writes the test environment to $R/env (default /tmp/ci-redis/env):
#
#   standalone   127.0.0.1:6379                         SESSION_TEST_REDIS_URL
#   TLS + ACL    127.0.0.1:6380, password and ACL user  SESSION_TEST_REDIS_TLS_URL, SESSION_TEST_REDIS_CA
#                (CA generated under $R/tls)            SESSION_TEST_REDIS_TLS_ADMIN_URL (default user)
#   cluster      127.0.0.1:7000-7005, 3 masters + 3     SESSION_TEST_REDIS_CLUSTER_URLS
#                replicas
#
# Usage: scripts/redis/start.sh && . /tmp/ci-redis/env
# Stop:  scripts/redis/stop.sh
# Installs redis-server with apt only if it is missing.
set -euo pipefail
# shellcheck source=../lib/test-ca.sh
. "$(dirname "$0")/../lib/test-ca.sh"

R="${REDIS_RUN_DIR:-/tmp/ci-redis}"
mkdir -p "$R"

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "== installing redis-server, redis-tools (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends redis-server redis-tools openssl >/dev/null
fi

pong() { redis-cli "$@" ping 2>/dev/null | grep -q PONG; }
wait_pong() {
  for _ in $(seq 200); do pong "$@" && return 0; sleep 0.05; done
  echo "redis did not answer: redis-cli $*" >&2
  return 1
}

# Standalone. Keyspace notifications for expired/deleted keys ('Egx') are enabled so that the
# expiry-events capability is exercised (backend-redis/README.md, "Expiry events"). Redis announces
# an expiry only when its active expiry cycle reclaims the key, which scans about 20 keys × hz per
# second: with the default hz 10 and the thousands of long-lived keys the suites leave, an expired
# session can be announced many seconds late. 'hz 100' and 'active-expire-effort 10' keep that
# well under the suite's 5 s (set on every server, below, also when a running server is reused).
if pong -p 6379; then
  echo "== standalone 6379: already running"
else
  echo "== standalone 6379: starting"
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --notify-keyspace-events Egx --hz 100 --active-expire-effort 10 \
    --pidfile "$R/6379.pid" --logfile "$R/6379.log" --dir "$R"
  wait_pong -p 6379
fi

# TLS + password + ACL user, with our own CA (leaf certificate with SAN, as rustls requires).
T="$R/tls"
mkdir -p "$T"
if [ ! -s "$T/server.crt" ] || [ ! -s "$T/ca.crt" ]; then
  echo "== generating a test CA and server certificate in $T"
  make_test_ca "$T" session-test-ca
fi
TLS_CLI=(--tls --cacert "$T/ca.crt" -p 6380 -a s3cret --no-auth-warning)
if pong "${TLS_CLI[@]}"; then
  echo "== TLS 6380: already running"
else
  echo "== TLS 6380: starting"
  # The ACL user may touch only session keys ('{...' hash-tagged keys) and their channels.
  redis-server --port 0 --tls-port 6380 --bind 127.0.0.1 \
    --tls-cert-file "$T/server.crt" --tls-key-file "$T/server.key" --tls-ca-cert-file "$T/ca.crt" \
    --tls-auth-clients no --requirepass s3cret \
    --user sess on '>sesspw' '~{*' '&*' '+@all' \
    --notify-keyspace-events Egx --hz 100 --active-expire-effort 10 \
    --save '' --appendonly no --daemonize yes \
    --pidfile "$R/6380.pid" --logfile "$R/6380.log" --dir "$R"
  wait_pong "${TLS_CLI[@]}"
fi

# Cluster: 3 masters, 3 replicas.
cluster_ok() {
  for p in 7000 7001 7002 7003 7004 7005; do
    redis-cli -p "$p" cluster info 2>/dev/null | grep -q cluster_state:ok || return 1
  done
}
all_pong() {
  for p in 7000 7001 7002 7003 7004 7005; do pong -p "$p" || return 1; done
}
# Every node answers but the state is not ok yet (just started, or a failover in progress): wait
# for it rather than tear the cluster down.
if ! cluster_ok && all_pong; then
  for _ in $(seq 150); do cluster_ok && break; sleep 0.1; done
fi
if cluster_ok; then
  echo "== cluster 7000-7005: already running"
else
  echo "== cluster 7000-7005: starting"
  for p in 7000 7001 7002 7003 7004 7005; do
    if [ -f "$R/$p/redis.pid" ] && pong -p "$p"; then
      redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
      for _ in $(seq 100); do [ -e "$R/$p/redis.pid" ] || break; sleep 0.1; done
    fi
    mkdir -p "$R/$p"
    # A node must be empty to join a new cluster: no old cluster config, no old data.
    rm -f "$R/$p/nodes.conf" "$R/$p/dump.rdb"
    # Each node's exact command, kept so that a test can restart a node it killed (the failover
    # test); the node then rejoins the cluster from its nodes.conf.
    cat > "$R/$p/start.sh" <<NODE
exec redis-server --port $p --bind 127.0.0.1 --cluster-enabled yes \\
  --cluster-config-file $R/$p/nodes.conf --cluster-node-timeout 2000 \\
  --notify-keyspace-events Egx --hz 100 --active-expire-effort 10 \\
  --save '' --appendonly no --repl-diskless-sync-delay 0 --daemonize yes \\
  --pidfile $R/$p/redis.pid --logfile $R/$p/redis.log --dir $R/$p
NODE
    sh "$R/$p/start.sh"
  done
  for p in 7000 7001 7002 7003 7004 7005; do wait_pong -p "$p"; done
  redis-cli --cluster create 127.0.0.1:7000 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003 \
    127.0.0.1:7004 127.0.0.1:7005 --cluster-replicas 1 --cluster-yes > "$R/cluster-create.log"
  for _ in $(seq 300); do cluster_ok && break; sleep 0.1; done
  cluster_ok || { echo "cluster did not reach cluster_state:ok" >&2; exit 1; }
fi
# Prompt expiry (see the standalone server above), also on servers that were already running.
expire_promptly() {
  redis-cli "$@" config set hz 100 >/dev/null
  redis-cli "$@" config set active-expire-effort 10 >/dev/null
}
expire_promptly -p 6379
expire_promptly "${TLS_CLI[@]}"
for p in 7000 7001 7002 7003 7004 7005; do expire_promptly -p "$p"; done

# Replicas synced (the failover test promotes one).
for p in 7000 7001 7002 7003 7004 7005; do
  if redis-cli -p "$p" info replication | grep -q '^role:slave'; then
    for _ in $(seq 200); do
      redis-cli -p "$p" info replication | grep -q 'master_link_status:up' && break
      sleep 0.05
    done
  fi
done

cat > "$R/env" <<ENV
export SESSION_TEST_REDIS_URL=redis://127.0.0.1:6379
export SESSION_TEST_REDIS_TLS_URL=rediss://sess:sesspw@localhost:6380
export SESSION_TEST_REDIS_TLS_ADMIN_URL=rediss://:s3cret@localhost:6380
export SESSION_TEST_REDIS_CA=$T/ca.crt
export SESSION_TEST_REDIS_OTHER_CA=$T/other-ca.crt
export SESSION_TEST_REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002
export SESSION_TEST_REDIS_RUN_DIR=$R
ENV
echo "== environment written to $R/env:"
cat "$R/env"
