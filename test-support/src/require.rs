//! The require-or-ignore rule (docs/style.md H10): a server variant whose variables are unset is
//! skipped with the reason, unless `SESSION_TEST_REQUIRE` names it; then its tests fail.

use libtest_mimic::Trial;

use crate::servers::{Variant, env};

/// The variable listing the variants that must run.
const REQUIRE: &str = "SESSION_TEST_REQUIRE";

/// Whether the comma-separated `list` names `backend` (spaces around names are ignored).
fn names(list: &str, backend: Variant) -> bool {
    list.split(',').any(|b| b.trim() == backend.name())
}

/// Why a server variant's tests cannot run: a variable it needs is unset (or malformed).
///
/// Its tests are skipped with [`Unconfigured::reason`], unless the variant is required
/// (`SESSION_TEST_REQUIRE` names it) or the variable is malformed: then they fail.
#[derive(Debug, Clone)]
pub struct Unconfigured {
    backend: Variant,
    reason: String,
    fails: bool,
}

impl Unconfigured {
    /// `backend` lacks the variable `var`; required as `SESSION_TEST_REQUIRE` says.
    pub(crate) fn missing(backend: Variant, var: &str) -> Self {
        Self::given(&env(REQUIRE).unwrap_or_default(), backend, var)
    }

    /// [`Unconfigured::missing`] with the value of `SESSION_TEST_REQUIRE` given.
    pub(crate) fn given(required: &str, backend: Variant, var: &str) -> Self {
        Self {
            backend,
            reason: format!("{var} is not set"),
            fails: names(required, backend),
        }
    }

    /// `backend`'s variable `var` is set but unusable (`why`): its tests fail, required or not.
    pub(crate) fn malformed(backend: Variant, var: &str, why: &str) -> Self {
        Self {
            backend,
            reason: format!("{var} is malformed: {why}"),
            fails: true,
        }
    }

    /// The variant that is not configured.
    pub fn backend(&self) -> Variant {
        self.backend
    }

    /// Why, for example `SESSION_TEST_REDIS_URL is not set`.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether its tests must fail rather than be skipped.
    pub fn fails(&self) -> bool {
        self.fails
    }

    /// The failure message of a required variant.
    fn message(&self) -> String {
        if self.reason.ends_with("is not set") {
            format!(
                "{REQUIRE} names {:?}, but {}",
                self.backend.name(),
                self.reason
            )
        } else {
            self.reason.clone()
        }
    }

    /// The trials `names` of this variant, as they stand without a server: each ignored with the
    /// reason, or, when the variant must fail, a single failing trial `<backend>::configured`
    /// that says what is missing (in place of all of them).
    pub fn trials(&self, names: impl IntoIterator<Item = String>) -> Vec<Trial> {
        if self.fails {
            let message = self.message();
            return vec![Trial::test(
                format!("{}::configured", self.backend.name()),
                move || Err(message.into()),
            )];
        }
        names.into_iter().map(|name| self.trial(name)).collect()
    }

    /// One trial `name` without a server: ignored with the reason, or failing when the variant
    /// must fail.
    pub fn trial(&self, name: impl Into<String>) -> Trial {
        if self.fails {
            let message = self.message();
            return Trial::test(name, move || Err(message.into()));
        }
        Trial::test(name, || Ok(()))
            .with_ignored_flag(true)
            .with_kind(self.reason.clone())
    }

    /// For a `#[test]` function that cannot be ignored at run time: prints `skipped: <reason>` to
    /// stderr, so the caller can return early.
    ///
    /// # Panics
    /// When the variant must fail (it is required, or its variable is malformed).
    pub fn skip(&self) {
        assert!(!self.fails, "{}", self.message());
        eprintln!("skipped: {}", self.reason);
    }
}

/// The server of a `#[test]` function: `Some` when configured, else `None` after
/// [`Unconfigured::skip`] (which panics when the variant is required).
///
/// ```no_run
/// #[test]
/// fn needs_redis() {
///     let Some(redis) = test_support::configured(test_support::redis()) else {
///         return;
///     };
///     assert!(redis.url().starts_with("redis"));
/// }
/// ```
pub fn configured<T>(server: Result<T, Unconfigured>) -> Option<T> {
    server.map_err(|unconfigured| unconfigured.skip()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(trials: &[Trial]) -> Vec<String> {
        trials.iter().map(|t| t.name().to_owned()).collect()
    }

    /// Runs `trials` as the harness would and returns (passed, failed, ignored). Its report goes
    /// to a log file, not stdout, where its "test result" line would count as this run's own.
    fn run(trials: Vec<Trial>) -> (u64, u64, u64) {
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("test-support-{}-{n}.log", std::process::id()));
        let mut args = libtest_mimic::Arguments::from_iter(["harness", "--test-threads=1"]);
        args.logfile = Some(log.display().to_string());
        let c = libtest_mimic::run(&args, trials);
        let _ = std::fs::remove_file(&log);
        (c.num_passed, c.num_failed, c.num_ignored)
    }

    #[test]
    fn require_lists_are_comma_separated_names() {
        assert!(names("redis", Variant::Redis));
        assert!(names("postgres, redis ,mysql", Variant::Redis));
        assert!(!names("redis-tls,redis-cluster", Variant::Redis));
        assert!(names("redis-tls,redis-cluster", Variant::RedisCluster));
        assert!(!names("", Variant::Mysql));
    }

    /// The rule the conformance runners rely on: an unconfigured variant's behaviours are
    /// ignored, unless it is required, and then one trial fails in their place.
    #[test]
    fn a_required_backend_cannot_be_skipped() {
        let behaviours = || {
            session_core::conformance::behaviour_names()
                .into_iter()
                .map(|n| format!("standalone::{n}"))
        };
        let skipped = Unconfigured::given("", Variant::Redis, "SESSION_TEST_REDIS_URL");
        assert!(!skipped.fails());
        let trials = skipped.trials(behaviours());
        assert_eq!(trials.len(), behaviours().count());
        assert!(trials.iter().all(Trial::has_ignored_flag));
        assert_eq!(trials[0].kind(), "SESSION_TEST_REDIS_URL is not set");
        assert_eq!(run(trials), (0, 0, behaviours().count() as u64));

        let required = Unconfigured::given("postgres, redis", Variant::Redis, "URL");
        let trials = required.trials(behaviours());
        assert_eq!(names_of(&trials), ["redis::configured"]);
        assert!(!trials[0].has_ignored_flag());
        assert_eq!(run(trials), (0, 1, 0), "the required backend's trial fails");
    }

    #[test]
    fn a_required_backend_fails_each_single_trial() {
        let required = Unconfigured::given("redis-tls", Variant::RedisTls, "TLS_URL");
        assert_eq!(
            run(vec![required.trial("tls::a"), required.trial("tls::b")]),
            (0, 2, 0)
        );
        let other = Unconfigured::given("redis-tls", Variant::Redis, "URL");
        assert_eq!(run(vec![other.trial("standalone::a")]), (0, 0, 1));
    }

    #[test]
    #[should_panic(expected = "SESSION_TEST_REQUIRE names \"mysql\", but MYSQL_URL is not set")]
    fn a_required_backend_fails_a_plain_test() {
        configured::<()>(Err(Unconfigured::given(
            "mysql",
            Variant::Mysql,
            "MYSQL_URL",
        )));
    }

    #[test]
    fn an_unrequired_backend_skips_a_plain_test() {
        let server = Err(Unconfigured::given("redis", Variant::Mysql, "MYSQL_URL"));
        assert_eq!(configured::<()>(server), None);
        assert_eq!(configured::<u8>(Ok(7)), Some(7));
    }

    #[test]
    fn a_malformed_variable_fails_even_when_not_required() {
        let bad = Unconfigured::malformed(Variant::RedisCluster, "CLUSTER_URLS", "no scheme");
        assert!(bad.fails());
        assert_eq!(run(bad.trials(["cluster::x".to_owned()])), (0, 1, 0));
    }
}
