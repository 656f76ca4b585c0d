//! The conformance suite against `SqlStore` on every database:
//!
//! - `sqlite_file::` (a temporary file) and `sqlite_memory::` (`sqlite::memory:`) with the
//!   `sqlite` feature (a default), each with the default refresh window and then its expiry
//!   behaviours with exact sliding (`<variant>::exact::...`), as `conformance_trials` does for the
//!   servers; the file also runs the behaviours of two store instances sharing it
//!   (`sqlite_file::shared::...`), which an in-memory database cannot (each pool has its own);
//! - `postgres::` and `mysql::` on the servers `test-support` reads from the environment (its
//!   crate docs list the variables), with the `shared::` behaviours too; a server that is not
//!   configured has its trials ignored, or failing when it is required.
//!
//! Every trial opens its own store (pool) on the shared database; the sweeper is off so that
//! `purge_expired` runs only when a trial calls it.

use session_core::conformance;
#[cfg(feature = "sqlite")]
use test_support::connect::{both_windows, both_windows_and_shared, sql_factory_with};
use test_support::{Variant, conformance_trials};

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    // Kept alive until the trials have run.
    #[cfg(feature = "sqlite")]
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    #[cfg(feature = "sqlite")]
    {
        let file = format!("sqlite:{}", dir.path().join("sessions.db").display());
        trials.extend(both_windows_and_shared("sqlite_file::", |w| {
            sql_factory_with(file.clone(), w)
        }));
        trials.extend(both_windows("sqlite_memory::", |w| {
            sql_factory_with("sqlite::memory:", w)
        }));
    }
    trials.extend(conformance_trials(Variant::Postgres, "postgres::"));
    trials.extend(conformance_trials(Variant::Mysql, "mysql::"));
    let code = conformance::run(args, trials);
    #[cfg(feature = "sqlite")]
    drop(dir);
    code
}
