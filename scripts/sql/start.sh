#!/usr/bin/env bash
# Starts the SQL servers the backend-sql tests need, idempotently (reuses servers already running):
#
# - a disposable PostgreSQL 15 cluster under /tmp/ci-sql/pg, port 5433, fsync off (never the system
#   cluster), with the role `sess`/`sesspw` and the database `sessdb`;
# - MariaDB on 127.0.0.1:3306 (installed with apt-get only if missing), with the user `sess`/`sesspw`
#   and the database `sessdb`.
#
# Writes `export SESSION_TEST_POSTGRES_URL=...` and `export SESSION_TEST_MYSQL_URL=...` to
# $SQL_ENV_FILE (default /tmp/ci-sql/env); `source` it before `cargo test`. Must run as root.
set -euo pipefail

OUT=${SQL_ENV_FILE:-/tmp/ci-sql/env}
BASE=/tmp/ci-sql
PG_PORT=${PG_PORT:-5433}
MY_PORT=${MY_PORT:-3306}
mkdir -p "$BASE" "$(dirname "$OUT")"
export DEBIAN_FRONTEND=noninteractive

# ---- PostgreSQL: a private cluster (initdb ~0.1 s), never the preinstalled system one.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$PGBIN" ]; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends postgresql >/dev/null
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
fi
PG=$BASE/pg
install -d -o postgres "$PG"
if [ ! -f "$PG/data/PG_VERSION" ]; then
  runuser -u postgres -- "$PGBIN/initdb" -D "$PG/data" -U postgres -A trust --no-sync -E UTF8 >/dev/null
  # SCRAM password for TCP so that the wrong-password test has something to fail against.
  cat > "$PG/data/pg_hba.conf" <<'HBA'
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
HBA
fi
if ! runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG/data" status >/dev/null 2>&1; then
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG/data" -l "$PG/log" -w \
    -o "-p $PG_PORT -k $PG -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null
fi
runuser -u postgres -- psql -q -h "$PG" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 <<'SQL'
SELECT 'CREATE ROLE sess LOGIN PASSWORD ''sesspw''' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname='sess')\gexec
SELECT 'CREATE DATABASE sessdb OWNER sess' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname='sessdb')\gexec
SQL

# ---- MariaDB.
if ! command -v mariadbd >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends mariadb-server mariadb-client >/dev/null
fi
install -d -o mysql -g mysql /run/mysqld
if ! mariadb-admin -uroot ping --silent >/dev/null 2>&1; then
  (mariadbd --user=mysql --bind-address=127.0.0.1 --port="$MY_PORT" --max-connections=300 \
     --max-allowed-packet=64M > "$BASE/mariadbd.log" 2>&1 &)
  for _ in $(seq 200); do mariadb-admin -uroot ping --silent >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb-admin -uroot ping --silent >/dev/null
fi
mariadb -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS sessdb;
CREATE USER IF NOT EXISTS 'sess'@'localhost' IDENTIFIED BY 'sesspw';
CREATE USER IF NOT EXISTS 'sess'@'127.0.0.1' IDENTIFIED BY 'sesspw';
GRANT ALL ON sessdb.* TO 'sess'@'localhost';
GRANT ALL ON sessdb.* TO 'sess'@'127.0.0.1';
SQL

cat > "$OUT" <<ENV
export SESSION_TEST_POSTGRES_URL=postgres://sess:sesspw@127.0.0.1:$PG_PORT/sessdb
export SESSION_TEST_MYSQL_URL=mysql://sess:sesspw@127.0.0.1:$MY_PORT/sessdb
# For tests that restart the Postgres cluster (tests/sql.rs postgres_restart_is_recovered).
export SESSION_TEST_POSTGRES_DATA=$PG/data
export SESSION_TEST_POSTGRES_BIN=$PGBIN
ENV
echo "SQL servers ready; source $OUT"
