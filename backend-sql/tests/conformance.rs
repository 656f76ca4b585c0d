//! The conformance suite against `SqlStore` on every database:
//!
//! - `sqlite_file::` (a temporary file) and `sqlite_memory::` (`sqlite::memory:`) always;
//! - `postgres::` when `SESSION_TEST_POSTGRES_URL` is set, `mysql::` when `SESSION_TEST_MYSQL_URL`
//!   is set; otherwise their trials are ignored, or fail under `SESSION_TEST_REQUIRE`.
//!
//! Every trial opens its own store (pool) on the shared database; the sweeper is off so that
//! `purge_expired` runs only when a trial calls it.

use std::sync::Arc;

use backend_sql::{SqlOptions, SqlStore};
use session_core::conformance;
use session_core::{Config, SessionStore};

fn factory(url: String) -> impl conformance::StoreFactory {
    move || {
        let url = url.clone();
        async move {
            let config = Config::from_url(&url)?;
            let options = SqlOptions::new().with_sweeper(None);
            Ok(Arc::new(SqlStore::connect_with(&config, options).await?) as Arc<dyn SessionStore>)
        }
    }
}

fn server(prefix: &str, backend: &str, var: &str) -> Vec<libtest_mimic::Trial> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => conformance::trials_with_prefix(prefix, factory(url)),
        _ => conformance::not_configured(backend, &format!("{var} is not set")),
    }
}

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    // Kept alive until the trials have run.
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let file = format!("sqlite:{}", dir.path().join("sessions.db").display());
    let mut trials = conformance::trials_with_prefix("sqlite_file::", factory(file));
    trials.extend(conformance::trials_with_prefix(
        "sqlite_memory::",
        factory("sqlite::memory:".to_owned()),
    ));
    trials.extend(server(
        "postgres::",
        "postgres",
        "SESSION_TEST_POSTGRES_URL",
    ));
    trials.extend(server("mysql::", "mysql", "SESSION_TEST_MYSQL_URL"));
    let code = conformance::run(args, trials);
    drop(dir);
    code
}
