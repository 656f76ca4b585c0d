//! Embedded migrations with the table prefix substituted, run by sqlx's migrator.
//!
//! Each dialect embeds its files from `migrations/<dialect>/` (`include_str!`), written with a
//! `{prefix}` placeholder. The prefix is validated to identifier characters, so splicing it is
//! safe. The migrations are tracked in `<prefix>migrations`, so stores with different prefixes in
//! one database migrate independently.
//!
//! Several processes may start at once: sqlx's migrator takes a database-wide lock first
//! (Postgres `pg_advisory_lock`, MySQL `GET_LOCK`; SQLite serialises writers itself), then reads
//! which versions are applied, so exactly one process applies each migration and the others find
//! it done. The DDL is also written `IF NOT EXISTS` / `CREATE OR REPLACE` as a second line of defence.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

/// One embedded migration: version, description, SQL with `{prefix}` placeholders.
pub(crate) type Embedded = (i64, &'static str, &'static str);

/// Replaces the `{prefix}` placeholder.
pub(crate) fn with_prefix(sql: &str, prefix: &str) -> String {
    sql.replace("{prefix}", prefix)
}

/// The migrator for `files` under `prefix`.
pub(crate) fn migrator(files: &[Embedded], prefix: &str) -> Migrator {
    let migrations = files
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                AssertSqlSafe(with_prefix(sql, prefix)).into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(format!("{prefix}migrations"));
    migrator
}

/// Runs `migrator` on one connection. `Migrator::run` takes `impl Acquire`, whose future is not
/// provably `Send` for every lifetime (sqlx's own note on `run_direct`); a store's `connect` must be
/// `Send`, so this calls the connection-level entry point sqlx provides for that case.
pub(crate) async fn run<C: sqlx::migrate::Migrate>(
    migrator: &Migrator, conn: &mut C,
) -> Result<(), sqlx::migrate::MigrateError> {
    migrator.run_direct(None, conn, false).await
}

/// Runs the embedded `files` under `prefix` on one connection of `pool` (Postgres, MySQL). sqlx's
/// migrator holds a database-level lock while it works (a session advisory lock, `GET_LOCK`), so
/// several processes may start at once; if migrating fails midway the connection is closed rather
/// than returned to the pool, so the lock is never left behind on a pooled connection.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn on_pool<DB>(
    pool: &sqlx::Pool<DB>, files: &[Embedded], prefix: &str,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    let mut conn = pool.acquire().await?;
    if let Err(e) = run(&migrator(files, prefix), &mut *conn).await {
        conn.close_on_drop();
        return Err(sqlx::Error::Migrate(Box::new(e)));
    }
    Ok(())
}
