#!/usr/bin/env bash
# Starts the SQL servers the backend-sql tests need, idempotently (reuses servers already running):
#
# - a disposable PostgreSQL 15 cluster under /tmp/ci-sql/pg, port 5433, fsync off (never the system
#   cluster), with the role `sess`/`sesspw` and the database `sessdb`;
# - MariaDB on 127.0.0.1:3306 (installed with apt-get only if missing), with the user `sess`/`sesspw`
#   and the database `sessdb`.
#
# Both servers speak TLS (and still accept plain connections): a test CA and a server certificate
# for DNS:localhost and IP:127.0.0.1 are generated once under /tmp/ci-sql/tls, with a second,
# unrelated CA for the wrong-CA tests. A server already running without TLS (started by an older
# version of this script) is restarted with it.
#
# Writes `export SESSION_TEST_POSTGRES_URL=...`, `export SESSION_TEST_MYSQL_URL=...`,
# `SESSION_TEST_SQL_CA` and `SESSION_TEST_SQL_OTHER_CA` to $SQL_ENV_FILE (default
# /tmp/ci-sql/env); `source` it before `cargo test`. Must run as root.
set -euo pipefail
# shellcheck source=../lib/test-ca.sh
. "$(dirname "$0")/../lib/test-ca.sh"

OUT=${SQL_ENV_FILE:-/tmp/ci-sql/env}
BASE=/tmp/ci-sql
PG_PORT=${PG_PORT:-5433}
MY_PORT=${MY_PORT:-3306}
mkdir -p "$BASE" "$(dirname "$OUT")"
export DEBIAN_FRONTEND=noninteractive

# ---- TLS material (commands as in scripts/redis/start.sh; leaf certificate with SAN, as rustls
# requires). Generated once; each server gets its own copy of the key, owned by its user, 0600.
T=$BASE/tls
install -d -m 0755 "$T"
if ! command -v openssl >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends openssl >/dev/null
fi
TLS_NEW=0
if [ ! -s "$T/server.crt" ] || [ ! -s "$T/ca.crt" ] || [ ! -s "$T/other-ca.crt" ]; then
  echo "== generating a test CA and server certificate in $T"
  make_test_ca "$T" session-sql-test-ca
  chmod 0600 "$T/ca.key" "$T/other-ca.key" "$T/server.key"
  chmod 0644 "$T/ca.crt" "$T/other-ca.crt" "$T/server.crt"
  TLS_NEW=1
fi

# ---- PostgreSQL: a private cluster (initdb ~0.1 s), never the preinstalled system one.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$PGBIN" ]; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends postgresql >/dev/null
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
fi
PG=$BASE/pg
install -d -o postgres "$PG"
install -m 0600 -o postgres "$T/server.key" "$T/pg-server.key"
PG_OPTS="-p $PG_PORT -k $PG -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c ssl=on -c ssl_cert_file=$T/server.crt -c ssl_key_file=$T/pg-server.key"
if [ ! -f "$PG/data/PG_VERSION" ]; then
  runuser -u postgres -- "$PGBIN/initdb" -D "$PG/data" -U postgres -A trust --no-sync -E UTF8 >/dev/null
  # SCRAM password for TCP so that the wrong-password test has something to fail against.
  cat > "$PG/data/pg_hba.conf" <<'HBA'
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
HBA
fi
pg_sql() { runuser -u postgres -- psql -q -h "$PG" -p "$PG_PORT" -U postgres "$@"; }
if ! runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG/data" status >/dev/null 2>&1; then
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG/data" -l "$PG/log" -w -o "$PG_OPTS" start >/dev/null
elif [ "$(pg_sql -tAc 'SHOW ssl')" != on ]; then
  # Started by an older version of this script: restart it with TLS (and the same data).
  echo "== postgres: restarting with TLS"
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG/data" -l "$PG/log" -m fast -w -o "$PG_OPTS" \
    restart >/dev/null
elif [ "$TLS_NEW" = 1 ]; then
  # Running with TLS, but on certificates generated before (now replaced): reload them.
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG/data" reload >/dev/null
fi
[ "$(pg_sql -tAc 'SHOW ssl')" = on ] || { echo "postgres: ssl is not on" >&2; exit 1; }
pg_sql -v ON_ERROR_STOP=1 <<'SQL'
SELECT 'CREATE ROLE sess LOGIN PASSWORD ''sesspw''' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname='sess')\gexec
-- A fresh database on every run: tables, routines and recorded migrations left by an earlier
-- run (of other code, on a reused machine) must not leak into this one.
DROP DATABASE IF EXISTS sessdb WITH (FORCE);
CREATE DATABASE sessdb OWNER sess;
SQL

# ---- MariaDB.
if ! command -v mariadbd >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends mariadb-server mariadb-client >/dev/null
fi
install -d -o mysql -g mysql /run/mysqld
install -m 0600 -o mysql -g mysql "$T/server.key" "$T/mysql-server.key"
my_ping() { mariadb-admin -uroot ping --silent >/dev/null 2>&1; }
my_tls() { [ "$(mariadb -uroot -N -B -e "SELECT @@have_ssl" 2>/dev/null)" = YES ]; }
my_start() {
  (mariadbd --user=mysql --bind-address=127.0.0.1 --port="$MY_PORT" --max-connections=300 \
     --max-allowed-packet=64M \
     --ssl-cert="$T/server.crt" --ssl-key="$T/mysql-server.key" --ssl-ca="$T/ca.crt" \
     > "$BASE/mariadbd.log" 2>&1 &)
  for _ in $(seq 200); do my_ping && break; sleep 0.1; done
  my_ping
}
if ! my_ping; then
  my_start
elif ! my_tls; then
  # Started by an older version of this script: restart it with TLS.
  echo "== mariadb: restarting with TLS"
  kill "$(cat /run/mysqld/mysqld.pid)"
  for _ in $(seq 300); do [ -e /run/mysqld/mysqld.pid ] || break; sleep 0.1; done
  my_start
elif [ "$TLS_NEW" = 1 ]; then
  # Running with TLS, but on certificates generated before (now replaced): reload them.
  mariadb -uroot -e "FLUSH SSL"
fi
my_tls || { echo "mariadb: TLS is not enabled (see $BASE/mariadbd.log)" >&2; exit 1; }
mariadb -uroot <<'SQL'
-- A fresh database on every run (see the Postgres part).
DROP DATABASE IF EXISTS sessdb;
CREATE DATABASE sessdb;
CREATE USER IF NOT EXISTS 'sess'@'localhost' IDENTIFIED BY 'sesspw';
CREATE USER IF NOT EXISTS 'sess'@'127.0.0.1' IDENTIFIED BY 'sesspw';
GRANT ALL ON sessdb.* TO 'sess'@'localhost';
GRANT ALL ON sessdb.* TO 'sess'@'127.0.0.1';
SQL

cat > "$OUT" <<ENV
# Plain connections, explicitly: sqlx prefers TLS when the server offers it, and the round-trip
# test reads the protocol through a proxy. tests/sql.rs tls_with_a_custom_ca takes the TLS path.
export SESSION_TEST_POSTGRES_URL=postgres://sess:sesspw@127.0.0.1:$PG_PORT/sessdb?sslmode=disable
export SESSION_TEST_MYSQL_URL=mysql://sess:sesspw@127.0.0.1:$MY_PORT/sessdb?ssl-mode=disabled
# For tests that restart the Postgres cluster (tests/sql.rs postgres_restart_is_recovered).
export SESSION_TEST_POSTGRES_DATA=$PG/data
export SESSION_TEST_POSTGRES_BIN=$PGBIN
# TLS: the CA that signed both servers' certificate (DNS:localhost, IP:127.0.0.1), and an
# unrelated CA that must be rejected.
export SESSION_TEST_SQL_CA=$T/ca.crt
export SESSION_TEST_SQL_OTHER_CA=$T/other-ca.crt
ENV
echo "SQL servers ready; source $OUT"
