//! Helpers for `libtest-mimic` harnesses: failing with a message (`ensure!`, [`fail`]), running
//! an async body on a runtime of its own ([`block_on`]), and a trial that needs a server
//! ([`trial()`]).

use std::future::Future;

use libtest_mimic::Trial;

use crate::require::Unconfigured;

pub use libtest_mimic::Failed;

/// What a trial's body returns.
pub type TestResult = Result<(), Failed>;

/// A failure with `message`.
pub fn fail(message: impl Into<String>) -> Failed {
    message.into().into()
}

/// Fails the enclosing function (returning `Result<_, Failed>`) with a formatted message unless
/// the condition holds: `ensure!(n == 1, "expected one, got {n}")`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::fail(format!($($msg)+)));
        }
    };
}

/// Runs `body` to completion on a fresh multi-threaded runtime (two workers, time and I/O on).
///
/// # Errors
/// The body's failure, or the runtime's if it cannot be built.
pub fn block_on<Fut>(body: Fut) -> TestResult
where
    Fut: Future<Output = TestResult>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(body)
}

/// A trial `name` that runs `body(server)` with [`block_on`] when `server` is configured, and
/// otherwise stands as [`Unconfigured::trial`] says (ignored with the reason, or failing when the
/// variant is required).
///
/// ```no_run
/// use test_support::{TestResult, ensure};
///
/// async fn database_one(redis: test_support::Redis) -> TestResult {
///     ensure!(redis.database(1).ends_with("/1"), "database 1");
///     Ok(())
/// }
///
/// let trial = test_support::trial("standalone::database_one", test_support::redis(), database_one);
/// ```
pub fn trial<T, F, Fut>(name: &str, server: Result<T, Unconfigured>, body: F) -> Trial
where
    T: Send + 'static,
    F: FnOnce(T) -> Fut + Send + 'static,
    Fut: Future<Output = TestResult>,
{
    match server {
        Ok(server) => Trial::test(name, move || block_on(body(server))),
        Err(unconfigured) => unconfigured.trial(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(n: u32) -> TestResult {
        crate::ensure!(n == 1, "expected one, got {n}");
        Ok(())
    }

    #[test]
    fn ensure_fails_with_the_message() {
        assert!(checks(1).is_ok());
        let failed = checks(2).unwrap_err();
        assert_eq!(failed.message(), Some("expected one, got 2"));
    }

    #[test]
    fn block_on_runs_on_a_runtime_with_time() {
        let slept = block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            Err(fail("after the sleep"))
        });
        assert_eq!(slept.unwrap_err().message(), Some("after the sleep"));
    }
}
