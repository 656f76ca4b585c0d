//! Fuzzing on stable Rust (docs/security.md): property tests of the Redis configuration readers that run
//! before any connection: the StackExchange.Redis string parser ([`parse`]), the resolution of a
//! whole `Config` into the driver's settings (`Settings::resolve`: URLs, configuration strings,
//! `host`/`port` attributes) and [`node_urls`](crate::node_urls). Whatever the text, the result is
//! settings or `Error::InvalidConfig`, never a panic nor another error, and no message holds the
//! password.
//!
//! CI runs the case counts below; `PROPTEST_CASES` runs more
//! (`PROPTEST_CASES=100000 cargo test -p backend-redis --lib config_string::fuzz --release`).

use proptest::prelude::*;
use session_core::{Config, Error};

use super::*;
use crate::config::{RedisOptions, Settings};

/// `default` cases, unless `PROPTEST_CASES` says otherwise (`ProptestConfig::default` reads it).
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

/// A secret no other generated text contains; sometimes with the characters that end a URL's
/// userinfo or authority early (`@`, `:`, `/`, `?`, `#`) or start a percent escape.
fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "S3cr[A-Za-z0-9]{8,14}",
        1 => "S3cr[A-Za-z0-9@:/?#%!.]{8,14}",
    ]
}

/// An endpoint: host names, IPv4 and IPv6 addresses, bracketed or not, with good and bad ports,
/// and any text.
fn endpoint_text() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        6 => "[a-z][a-z0-9-]{0,10}(\\.[a-z0-9-]{1,8}){0,2}",
        3 => "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        1 => Just("::1".to_owned()),
        1 => Just("[::1]".to_owned()),
        1 => Just("[fe80::1".to_owned()),
        1 => "[a-z0-9_.:\\[\\]-]{0,16}",
    ];
    let port = prop_oneof![
        2 => Just(String::new()),
        4 => (1u16..).prop_map(|p| format!(":{p}")),
        1 => "[0-9]{1,6}".prop_map(|p| format!(":{p}")),
        1 => "[a-z0-9:]{0,4}".prop_map(|p| format!(":{p}")),
    ];
    (host, port).prop_map(|(h, p)| format!("{h}{p}"))
}

/// Every option name the parser knows (in any case), and others.
fn option_text() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        4 => prop::sample::select(
            OPTIONS.iter().map(|(n, _)| *n).chain(["proxy", "$INFO", "bogus", ""]).collect::<Vec<_>>()
        )
        .prop_flat_map(|n| (Just(n), any::<bool>()))
        .prop_map(|(n, upper)| if upper { n.to_ascii_uppercase() } else { n.to_owned() }),
        1 => "[^,=]{0,10}",
    ];
    let value = prop_oneof![
        "[0-9]{0,22}",
        "-[0-9]{1,4}",
        "(true|false|True|FALSE|yes|None|twemproxy)",
        "[^,]{0,12}",
    ];
    (name, value, " ?= ?").prop_map(|(n, v, eq)| format!("{n}{eq}{v}"))
}

/// A StackExchange.Redis configuration string: endpoints and options in any order, with the
/// password somewhere.
fn configuration(secret: String) -> impl Strategy<Value = String> {
    (
        prop::option::weighted(0.8, endpoint_text()),
        prop::collection::vec(
            prop_oneof![
                3 => endpoint_text(),
                3 => option_text(),
                1 => Just(String::new())
            ],
            0..5,
        ),
        any::<prop::sample::Index>(),
        " ?, ?",
    )
        .prop_map(move |(first, mut entries, at, comma)| {
            entries.extend(first);
            let at = at.index(entries.len() + 1);
            entries.insert(at, format!("password={secret}"));
            entries.join(&comma)
        })
}

/// Redis URLs: every scheme (and others), userinfo with the password, one or several hosts,
/// a path, parameters (`nearCache` among them) and a fragment.
fn redis_url(secret: String) -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "redis",
            "redis",
            "redis",
            "rediss",
            "rediss",
            "redis+cluster",
            "redis+cluster",
            "REDISS+CLUSTER",
            "redis+unix",
            "http",
        ]),
        "([a-z]{1,6})?",
        prop::collection::vec(endpoint_text(), 1..3),
        "(/[0-9a-z]{0,4})?",
        "(\\?((nearCache=(true|false|0|1|x)|protocol=resp3|db=[0-9]|x=[a-z0-9]{0,5})&?){0,3})?(#[a-z]{0,3})?",
    )
        .prop_map(move |(scheme, user, hosts, path, tail)| {
            format!("{scheme}://{user}:{secret}@{}{path}{tail}", hosts.join(","))
        })
}

/// The error must be `InvalidConfig` and not show `secret`.
fn refused_without_secret(e: &Error, secret: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(e, Error::InvalidConfig { .. }),
        "not InvalidConfig: {e:?}"
    );
    let shown = format!("{e} {e:?}");
    prop_assert!(!shown.contains(secret), "{shown}");
    Ok(())
}

/// Resolves `config` as the store does before connecting.
fn resolved(config: &Config, secret: &str) -> Result<(), TestCaseError> {
    match Settings::resolve(config, &RedisOptions::new()) {
        Ok(settings) => {
            prop_assert!(!settings.nodes.is_empty());
            if settings.cluster {
                prop_assert_eq!(settings.database(), 0);
            }
            prop_assert!(!settings.addr.contains(secret), "{}", settings.addr);
        }
        Err(e) => refused_without_secret(&e, secret)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(1000))]

    /// StackExchange.Redis strings (1000 cases): read, or `InvalidConfig` without the password;
    /// what is read has at least one endpoint, no port 0, and the password as given.
    #[test]
    fn configuration_strings_parse_or_are_refused(
        (secret, text) in secret().prop_flat_map(|s| (Just(s.clone()), configuration(s)))
    ) {
        match parse(&text) {
            Ok(parsed) => {
                prop_assert!(!parsed.endpoints.is_empty());
                prop_assert!(parsed.endpoints.iter().all(|(_, port)| *port != 0));
                // The last `password=` wins; the generated one is the only one that has `S3cr`.
                if text.to_ascii_lowercase().matches("password").count() == 1 {
                    prop_assert_eq!(parsed.password.as_deref(), Some(secret.as_str()));
                }
            }
            Err(e) => refused_without_secret(&e, &secret)?,
        }
        let _ = is_url(&text);
    }

    /// Any text as a configuration string (1000 cases): never a panic.
    #[test]
    fn any_text_parses_or_is_refused(text in any::<String>()) {
        if let Err(e) = parse(&text) {
            prop_assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
        }
        let _ = is_url(&text);
        let _ = crate::node_urls(&text);
    }

    /// Whole configurations resolved as the store does before it connects (1000 cases): a
    /// Redis URL, a configuration string (given as such or as a `connectionString`), or the
    /// `host` attributes with the password as `accessKey`, with any `databaseId`, `ssl` and
    /// `nearCache`. Settings or `InvalidConfig`, never the password in a message.
    #[test]
    fn configurations_resolve_or_are_refused(
        (secret, url, text) in secret().prop_flat_map(|s| {
            (Just(s.clone()), redis_url(s.clone()), configuration(s))
        }),
        host in endpoint_text(),
        port in any::<u16>(),
        database in prop_oneof![Just(0u32), any::<u32>()],
        ssl in any::<bool>(),
        near in any::<bool>(),
    ) {
        match crate::node_urls(&url) {
            Ok(nodes) => prop_assert!(!nodes.is_empty()),
            Err(e) => refused_without_secret(&e, &secret)?,
        }
        let configs = [
            Config::builder().url(url.clone()).database_id(database).near_cache(near).build(),
            Config::builder().redis_configuration(text.clone()).database_id(database).build(),
            Config::from_attributes([("connectionString", text.as_str())]),
            Config::builder()
                .host(host.clone())
                .port(port)
                .access_key(secret.clone())
                .database_id(database)
                .ssl(ssl)
                .near_cache(near)
                .build(),
        ];
        for config in configs {
            match config {
                Ok(config) => resolved(&config, &secret)?,
                Err(e) => refused_without_secret(&e, &secret)?,
            }
        }
    }
}
