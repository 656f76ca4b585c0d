//! Helpers for `libtest-mimic` harnesses: failing with a message (`ensure!`, [`fail`]), running
//! an async body on a runtime of its own ([`block_on`]), a trial that needs a server
//! ([`trial()`]), and the trials of a list of behaviours on one store URL ([`url_trials`],
//! [`url_behaviours!`](crate::url_behaviours)).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

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

/// What a behaviour run on a store URL returns: its body, boxed.
pub type UrlBody = Pin<Box<dyn Future<Output = TestResult> + Send>>;

/// A behaviour run on a store URL (`memory://`, a Redis or Postgres URL...).
pub type UrlBehaviour = fn(String) -> UrlBody;

/// `[(name, behaviour)]` for the `async fn(String) -> TestResult` behaviours named, for
/// [`url_trials`]: `url_behaviours![counts, renews]`.
#[macro_export]
macro_rules! url_behaviours {
    ($($f:ident),* $(,)?) => {
        vec![$((stringify!($f), (|url| Box::pin($f(url))) as $crate::UrlBehaviour)),*]
    };
}

/// The trials of one store, `<prefix>::<name>`: each behaviour on `url` with [`block_on`], failing
/// if it has not finished within `limit`; or, when `url` is [`Unconfigured`], each as
/// [`Unconfigured::trials`] says (ignored with the reason, or failing when the variant is
/// required).
pub fn url_trials(
    prefix: &str, url: Result<String, Unconfigured>, behaviours: Vec<(&'static str, UrlBehaviour)>,
    limit: Duration,
) -> Vec<Trial> {
    let named = behaviours
        .into_iter()
        .map(|(name, f)| (format!("{prefix}::{name}"), f));
    match url {
        Ok(url) => named
            .map(|(name, f)| {
                let url = url.clone();
                Trial::test(name, move || {
                    block_on(async move {
                        match tokio::time::timeout(limit, f(url)).await {
                            Ok(result) => result,
                            Err(_) => {
                                Err(fail(format!("the trial did not finish within {limit:?}")))
                            }
                        }
                    })
                })
            })
            .collect(),
        Err(unconfigured) => unconfigured.trials(named.map(|(name, _)| name)),
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
