//! The conformance suite against every configured Redis variant, each under its own prefix:
//! `standalone::`, `tls::` (an ACL user over TLS, trusting the test CA) and `cluster::`. Each runs
//! the suite with the default refresh window, its expiry behaviours again with exact sliding
//! (`<variant>::exact::...`) and the behaviours of two store instances sharing the server
//! (`<variant>::shared::...`). Standalone and cluster run all of that once more with the near
//! cache on (`near::standalone::...`, `near::cluster::...`); TLS does not, as the store refuses
//! the near cache there. The servers come from the environment through `test-support` (its crate
//! docs list the variables): a variant that is not configured is ignored, unless it is required,
//! and then it fails. `scripts/redis/start.sh` starts all three and writes their variables to
//! `/tmp/ci-redis/env`.

use session_core::conformance;
use test_support::{Variant, conformance_trials};

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = conformance_trials(Variant::Redis, "standalone::");
    trials.extend(conformance_trials(Variant::RedisTls, "tls::"));
    trials.extend(conformance_trials(Variant::RedisCluster, "cluster::"));
    conformance::run(args, trials)
}
