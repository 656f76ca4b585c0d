//! The conformance suite against every configured Redis variant, each under its own prefix:
//! `standalone::`, `tls::` (an ACL user over TLS, trusting the test CA) and `cluster::`. The
//! servers come from the environment through `test-support` (its crate docs list the variables):
//! a variant that is not configured is ignored, unless it is required, and then it fails.
//! `scripts/redis/start.sh` starts all three and writes their variables to `/tmp/ci-redis/env`.

use session_core::conformance;
use test_support::{Variant, conformance_trials};

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = conformance_trials(Variant::Redis, "standalone::");
    trials.extend(conformance_trials(Variant::RedisTls, "tls::"));
    trials.extend(conformance_trials(Variant::RedisCluster, "cluster::"));
    conformance::run(args, trials)
}
