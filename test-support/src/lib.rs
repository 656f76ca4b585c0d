//! Test plumbing shared by the workspace's integration tests, conformance runners and benches, and
//! the **only** code that reads the `SESSION_TEST_*` environment variables (docs/style.md H10).
//!
//! - [`servers`]: the server variants under test, one typed description each, read from the
//!   environment at run time ([`redis`], [`redis_tls`], [`redis_cluster`], [`postgres`],
//!   [`mysql`], [`postgres_cluster`]; or [`Variant::server`] for any of them).
//! - [`require`]: the require-or-ignore rule. A variant whose variables are unset is ignored (a
//!   `#[test]` returns early) with the reason, unless `SESSION_TEST_REQUIRE` (a comma-separated
//!   list of [`Variant::name`]s, always set in CI by `scripts/test.sh`) names it: then its tests
//!   fail, so a required backend can never pass by being skipped.
//! - [`connect`]: opening the stores as the tests do, and the conformance suite's trials for a
//!   variant ([`conformance_trials`]).
//! - [`harness`]: `ensure!`, [`fail`], [`trial()`] and [`url_trials`] for `libtest-mimic` harnesses.
//! - [`private`]: servers a test starts, crashes and restarts itself on free ports (fault tests).
//!
//! # The variables
//!
//! | variable | what | variant ([`Variant::name`]) |
//! | --- | --- | --- |
//! | `SESSION_TEST_REDIS_URL` | a standalone Redis (`redis://host:port`) | `redis` |
//! | `SESSION_TEST_REDIS_TLS_URL` | Redis over TLS with an ACL user (`rediss://user:pw@host:port`) | `redis-tls` |
//! | `SESSION_TEST_REDIS_CA` | the CA file that signed the TLS server's certificate | `redis-tls` |
//! | `SESSION_TEST_REDIS_OTHER_CA` | an unrelated CA (optional: tests of a rejected certificate) | `redis-tls` |
//! | `SESSION_TEST_REDIS_CLUSTER_URLS` | the cluster's seed nodes, comma-separated `redis://host:port` | `redis-cluster` |
//! | `SESSION_TEST_REDIS_RUN_DIR` | where `scripts/redis/start.sh` keeps each node's pidfile and start command (default `/tmp/ci-redis`) | `redis-cluster` |
//! | `SESSION_TEST_POSTGRES_URL` | a Postgres database | `postgres` |
//! | `SESSION_TEST_POSTGRES_DATA`, `SESSION_TEST_POSTGRES_BIN` | that cluster's data directory and `pg_ctl` directory (tests that restart it) | `postgres` |
//! | `SESSION_TEST_MYSQL_URL` | a MySQL or MariaDB database | `mysql` |
//! | `SESSION_TEST_SQL_CA`, `SESSION_TEST_SQL_OTHER_CA` | the CA of both SQL servers' TLS certificate, and an unrelated one | `postgres`, `mysql` |
//! | `SESSION_TEST_REQUIRE` | the variants that must run (`redis,redis-tls,redis-cluster,postgres,mysql`) | |
//!
//! `scripts/redis/start.sh` and `scripts/sql/start.sh` start every server and write these
//! variables to `/tmp/ci-redis/env` and `/tmp/ci-sql/env`. An empty variable counts as unset.

pub mod connect;
pub mod harness;
pub mod private;
pub mod require;
pub mod servers;
pub mod stored;

pub use connect::{
    both_windows, both_windows_and_shared, conformance_trials, open_redis, open_redis_near_with,
    open_redis_with, open_sql, open_sql_with, redis_attributes_factory_with, redis_factory,
    redis_factory_with, redis_near_factory_with, sql_factory, sql_factory_with,
};
pub use harness::{Failed, TestResult, UrlBehaviour, UrlBody, block_on, fail, trial, url_trials};
pub use require::{Unconfigured, configured};
pub use servers::{
    PostgresCluster, Redis, RedisCluster, RedisTls, Server, SqlServer, SqlTls, Variant,
    cluster_url, mysql, postgres, postgres_cluster, redis, redis_cluster, redis_tls,
};
