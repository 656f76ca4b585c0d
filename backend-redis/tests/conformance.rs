//! The conformance suite against every configured Redis variant, each under its own prefix:
//! `standalone::`, `tls::` (an ACL user over TLS, trusting the test CA) and `cluster::`. Each runs
//! the suite with the default refresh window, its expiry behaviours again with exact sliding
//! (`<variant>::exact::...`) and the behaviours of two store instances sharing the server
//! (`<variant>::shared::...`). Standalone and cluster run all of that once more with the near
//! cache on (`near::standalone::...`, `near::cluster::...`); TLS does not, as the store refuses
//! the near cache there. The cluster runs it once more as an ASP.NET application configures it,
//! `host` and `port` naming one node (`cluster_from_host::...`): the store must find the cluster
//! by itself (cluster detection). The servers come from the environment through `test-support`
//! (its crate docs list the variables): a variant that is not configured is ignored, unless it
//! is required, and then it fails. `scripts/redis/start.sh` starts all three and writes their
//! variables to `/tmp/ci-redis/env`.

use backend_redis::RedisOptions;
use libtest_mimic::Trial;
use session_core::conformance;
use test_support::{
    Variant, both_windows_and_shared, conformance_trials, redis_attributes_factory_with,
};

/// The suite against the cluster opened through the attributes `host` and `port` of its first
/// seed node, as a `web.config` names a clustered cache.
fn cluster_from_host(prefix: &str) -> Vec<Trial> {
    let cluster = match test_support::redis_cluster() {
        Ok(cluster) => cluster,
        Err(unconfigured) => {
            return unconfigured.trials(
                conformance::behaviour_names()
                    .into_iter()
                    .map(|name| format!("{prefix}{name}")),
            );
        }
    };
    let seed = cluster.seeds().first().map(String::as_str).unwrap_or("");
    let authority = seed.split_once("://").map_or(seed, |(_, rest)| rest);
    let Some((host, port)) = authority.rsplit_once(':') else {
        let why = format!("the first cluster seed has no host:port: {authority:?}");
        return vec![Trial::test(format!("{prefix}configured"), move || {
            Err(why.into())
        })];
    };
    let attributes = vec![
        ("host".to_owned(), host.to_owned()),
        ("port".to_owned(), port.to_owned()),
    ];
    both_windows_and_shared(prefix, |window| {
        redis_attributes_factory_with(attributes.clone(), RedisOptions::new(), window)
    })
}

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = conformance_trials(Variant::Redis, "standalone::");
    trials.extend(conformance_trials(Variant::RedisTls, "tls::"));
    trials.extend(conformance_trials(Variant::RedisCluster, "cluster::"));
    trials.extend(cluster_from_host("cluster_from_host::"));
    conformance::run(args, trials)
}
