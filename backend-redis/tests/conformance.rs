//! The conformance suite against every configured Redis variant, each under its own prefix:
//! `standalone::` (`SESSION_TEST_REDIS_URL`), `tls::` (`SESSION_TEST_REDIS_TLS_URL`, with the CA
//! file in `SESSION_TEST_REDIS_CA`) and `cluster::` (`SESSION_TEST_REDIS_CLUSTER_URLS`, comma-
//! separated `redis://` seed nodes). A variant whose variable is unset is ignored, unless
//! `SESSION_TEST_REQUIRE` names it (`redis`, `redis-tls`, `redis-cluster`). `scripts/redis/start.sh`
//! starts all three and writes the variables to `/tmp/ci-redis/env`.

use std::sync::Arc;

use backend_redis::{RedisOptions, RedisStore};
use libtest_mimic::Trial;
use session_core::conformance;
use session_core::{Config, SessionStore};

fn variant(
    prefix: &str,
    backend: &str,
    var: &str,
    url: Option<String>,
    options: RedisOptions,
) -> Vec<Trial> {
    let Some(url) = url else {
        let mut trials = conformance::not_configured(backend, &format!("{var} is not set"));
        for t in &mut trials {
            // Ignored trials get the variant's prefix; the single failing "required but not
            // configured" trial (`<backend>::configured`) is kept as it is.
            if t.has_ignored_flag() {
                let kind = t.kind().to_owned();
                *t = Trial::test(format!("{prefix}{}", t.name()), || Ok(()))
                    .with_ignored_flag(true)
                    .with_kind(kind);
            }
        }
        return trials;
    };
    conformance::trials_with_prefix(prefix, move || {
        let (url, options) = (url.clone(), options.clone());
        async move {
            let config = Config::from_url(&url)?;
            let store = RedisStore::connect_with(&config, options).await?;
            Ok(Arc::new(store) as Arc<dyn SessionStore>)
        }
    })
}

/// `redis://a:1,redis://b:2` → `redis+cluster://a:1,b:2`.
fn cluster_url(list: &str) -> Option<String> {
    let mut scheme = None;
    let mut hosts = Vec::new();
    for url in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (s, rest) = url.split_once("://")?;
        scheme.get_or_insert_with(|| s.to_owned());
        hosts.push(rest.trim_end_matches('/').to_owned());
    }
    Some(format!("{}+cluster://{}", scheme?, hosts.join(",")))
}

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut trials = variant(
        "standalone::",
        "redis",
        "SESSION_TEST_REDIS_URL",
        env("SESSION_TEST_REDIS_URL"),
        RedisOptions::new(),
    );
    let tls_options = match env("SESSION_TEST_REDIS_CA") {
        Some(path) => RedisOptions::new().with_ca_file(path),
        None => RedisOptions::new(),
    };
    trials.extend(variant(
        "tls::",
        "redis-tls",
        "SESSION_TEST_REDIS_TLS_URL",
        env("SESSION_TEST_REDIS_TLS_URL"),
        tls_options,
    ));
    trials.extend(variant(
        "cluster::",
        "redis-cluster",
        "SESSION_TEST_REDIS_CLUSTER_URLS",
        env("SESSION_TEST_REDIS_CLUSTER_URLS").and_then(|l| cluster_url(&l)),
        RedisOptions::new(),
    ));
    conformance::run(args, trials)
}
