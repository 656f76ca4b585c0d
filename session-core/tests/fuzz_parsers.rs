//! Fuzzing on stable Rust (issue 14): property tests with many generated cases on every parser of
//! untrusted or hand-written text in `session-core`: session ids and lock tokens (the cookie's
//! value), application and item names, connection URLs and their redaction, the seed provider's
//! attributes (`Config::from_attributes`, `connectionString` in all its forms) and the item
//! values' decoding (`decode_value` on arbitrary stored bytes).
//!
//! Each property runs a CI-sized number of cases by default (stated per property); set
//! `PROPTEST_CASES` to run more locally, for example `PROPTEST_CASES=100000 cargo test -p
//! session-core --test fuzz_parsers --release`. A failure prints the shrunk input and is saved
//! under `proptest-regressions/`, which is committed so that it runs first from then on.

use std::time::Duration;

use proptest::prelude::*;
use session_core::{
    AppName, Config, Error, ItemValue, LockToken, SessionId, decode_value, redact_url, url_scheme,
    validate_item_name,
};

/// `default` cases, unless `PROPTEST_CASES` says otherwise (`ProptestConfig::default` reads it).
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

/// Text shaped like a session id or token: mostly hex digits around the canonical length, with
/// the characters a hostile cookie would try (upper case, `g`, quotes, `%`, NUL, non-ASCII).
fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{32}",
        "[0-9a-fA-Fg]{30,34}",
        "[0-9a-f]{0,31}[^0-9a-f][0-9a-f]{0,31}",
        any::<String>(),
        prop::collection::vec(
            prop_oneof![
                Just('a'),
                Just('0'),
                Just('F'),
                Just('"'),
                Just('%'),
                Just('\0'),
                Just('é'),
                Just(' ')
            ],
            0..40
        )
        .prop_map(|chars| chars.into_iter().collect()),
    ]
}

fn is_canonical(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An attribute name: a known one in any case (with spaces around it sometimes), or anything.
fn attribute_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (prop::sample::select(session_core::Config::ATTRIBUTES), any::<bool>(), any::<bool>()).prop_map(
            |(name, upper, padded)| {
                let name = if upper { name.to_ascii_uppercase() } else { name.to_owned() };
                if padded { format!(" {name} ") } else { name }
            }
        ),
        1 => any::<String>(),
    ]
}

/// A value as a `web.config` might hold one: numbers (in and out of range, signed, spaced),
/// booleans, URLs, StackExchange strings, names, or any text.
fn attribute_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}",
        "-?[0-9]{1,6}",
        " *(true|false|True|FALSE|yes|1) *",
        connection_like(),
        "[A-Za-z_][A-Za-z0-9_.-]{0,20}",
        any::<String>(),
        Just(String::new()),
        Just("   ".to_owned()),
    ]
}

/// Connection strings: URLs of every scheme the facade knows (and others), StackExchange.Redis
/// configurations with endpoints and options, and near misses of both.
fn connection_like() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "redis",
        "rediss",
        "redis+cluster",
        "Rediss+Cluster",
        "postgres",
        "postgresql",
        "mysql",
        "mariadb",
        "sqlite",
        "memory",
        "gopher",
        "1bad",
        "",
    ]);
    let host = prop_oneof![
        "[a-z0-9.-]{0,20}",
        Just("[::1]".to_owned()),
        Just("::1".to_owned()),
        any::<String>()
    ];
    let port = prop_oneof![
        Just(String::new()),
        "[0-9]{0,6}".prop_map(|p| format!(":{p}"))
    ];
    let option = prop_oneof![
        "(password|ssl|abortConnect|defaultDatabase|connectTimeout|syncTimeout|sslHost|user|\
          serviceName|proxy|\\$INFO|bogus)=[^,]{0,12}",
        "[^,]{0,12}",
    ];
    prop_oneof![
        (
            scheme.clone(),
            "[a-z:@]{0,12}",
            host.clone(),
            port.clone(),
            "[/?&=a-z0-9#]{0,20}"
        )
            .prop_map(|(s, userinfo, h, p, rest)| format!("{s}://{userinfo}{h}{p}{rest}")),
        (scheme, "[^,]{0,20}").prop_map(|(s, rest)| format!("{s}:{rest}")),
        (
            prop::collection::vec((host, port).prop_map(|(h, p)| format!("{h}{p}")), 0..3),
            prop::collection::vec(option, 0..4),
            " ?, ?"
        )
            .prop_map(|(endpoints, options, comma)| {
                endpoints
                    .into_iter()
                    .chain(options)
                    .collect::<Vec<_>>()
                    .join(&comma)
            }),
    ]
}

proptest! {
    #![proptest_config(cases(1000))]

    /// Session ids (1000 cases): only the canonical form parses, it round-trips through
    /// `expose`, and a refusal is `InvalidId` and never echoes the input.
    #[test]
    fn session_ids_parse_only_the_canonical_form(text in id_like()) {
        match SessionId::parse(&text) {
            Ok(id) => {
                prop_assert!(is_canonical(&text), "accepted {text:?}");
                prop_assert_eq!(id.expose(), text.as_str());
                prop_assert!(!format!("{id:?}{id}").contains(&text), "Debug/Display redact");
            }
            Err(e @ Error::InvalidId { .. }) => {
                prop_assert!(!is_canonical(&text), "refused {text:?}");
                if text.len() >= 6 {
                    prop_assert!(!e.to_string().contains(&text), "echoed {text:?}");
                }
            }
            Err(other) => prop_assert!(false, "not InvalidId: {other:?}"),
        }
    }

    /// Lock tokens in text form (1000 cases): the same canonical form, round-tripping.
    #[test]
    fn lock_tokens_parse_only_the_canonical_form(text in id_like()) {
        match LockToken::from_hex(&text) {
            Ok(token) => {
                prop_assert!(is_canonical(&text), "accepted {text:?}");
                prop_assert_eq!(token.to_hex(), text);
            }
            Err(Error::InvalidToken) => prop_assert!(!is_canonical(&text)),
            Err(other) => prop_assert!(false, "not InvalidToken: {other:?}"),
        }
    }

    /// Application and item names (1000 cases): never a panic; what is accepted keeps the
    /// rules of docs/contract.md §1 (no hash-tag braces, no controls, 1..=128 or 1..=256 bytes).
    #[test]
    fn names_are_checked_without_panicking(
        text in prop_oneof!["[ -~]{0,130}", any::<String>(), "[a-z{}\t\n ]{0,300}"]
    ) {
        match AppName::new(&text) {
            Ok(app) => {
                prop_assert_eq!(app.as_str(), text.as_str());
                prop_assert!((1..=128).contains(&text.len()));
                prop_assert!(!text.contains(['{', '}']), "{text:?}");
                prop_assert!(!text.chars().any(char::is_control));
            }
            Err(Error::InvalidName { .. }) => {}
            Err(other) => prop_assert!(false, "not InvalidName: {other:?}"),
        }
        match validate_item_name(&text) {
            Ok(()) => prop_assert!((1..=256).contains(&text.len())),
            Err(Error::InvalidName { .. }) => {}
            Err(other) => prop_assert!(false, "not InvalidName: {other:?}"),
        }
    }

    /// URLs (1000 cases): `Config::from_url` and `builder().url` accept exactly the text with a
    /// scheme and keep it as given; `url_scheme` and `redact_url` never panic on anything.
    #[test]
    fn urls_are_read_without_panicking(url in prop_oneof![connection_like(), any::<String>()]) {
        let scheme = url_scheme(&url);
        match Config::from_url(&url) {
            Ok(config) => {
                prop_assert!(scheme.is_some(), "{url:?}");
                prop_assert_eq!(config.url(), Some(url.as_str()));
                let _ = format!("{config:?}");
            }
            Err(Error::InvalidConfig { setting, .. }) => {
                prop_assert!(scheme.is_none(), "{url:?}");
                prop_assert_eq!(setting, "url");
            }
            Err(other) => prop_assert!(false, "not InvalidConfig: {other:?}"),
        }
        let _ = redact_url(&url);
        match Config::builder().redis_configuration(url.clone()).build() {
            Ok(config) => prop_assert_eq!(config.redis_configuration(), Some(url.as_str())),
            Err(Error::InvalidConfig { .. }) => {}
            Err(other) => prop_assert!(false, "not InvalidConfig: {other:?}"),
        }
    }

    /// Redaction (1000 cases): the password of a URL's userinfo, and the value of a
    /// `password=` parameter in a query or a StackExchange list, never appear in
    /// `redact_url`'s output nor in `Config`'s `Debug`, whatever surrounds them.
    #[test]
    fn redaction_hides_every_password(
        scheme in prop::sample::select(vec!["redis", "rediss+cluster", "postgres", "mysql"]),
        user in "[a-z]{0,8}",
        secret in "S3cr[A-Za-z0-9#/?:@!%]{8,16}",
        host in "[a-z0-9.]{1,12}(:[0-9]{1,5})?(,[a-z0-9.]{1,12}:[0-9]{1,5})?",
        tail in "(/[a-z0-9]{0,6})?(\\?[a-z]{1,6}=[a-z0-9]{0,6})?",
    ) {
        let urls = [
            format!("{scheme}://{user}:{secret}@{host}{tail}"),
            format!("{scheme}://{host}/db?sslmode=require&password={secret}"),
        ];
        for url in urls {
            let redacted = redact_url(&url);
            prop_assert!(!redacted.contains(&secret), "{url:?} -> {redacted:?}");
            if let Ok(config) = Config::builder().url(url.clone()).access_key(secret.clone()).build() {
                let debug = format!("{config:?}");
                prop_assert!(!debug.contains(&secret), "{debug}");
            }
        }
        let stackexchange = format!("{host},ssl=true,password={secret},abortConnect=False");
        prop_assert!(!redact_url(&stackexchange).contains(&secret));
        if let Ok(config) = Config::from_attributes([("connectionString", stackexchange.as_str())]) {
            let debug = format!("{config:?}");
            prop_assert!(!debug.contains(&secret), "{debug}");
        }
    }

    /// The seed's attributes (1000 cases of up to 8 attributes each): any names, any values,
    /// `connectionString` given by a name that the lookup resolves to any text. The result is a
    /// configuration or `InvalidConfig`, never a panic nor another error, and a secret given as
    /// `accessKey` is never part of the error message nor of the configuration's `Debug`.
    #[test]
    fn attributes_give_a_config_or_invalid_config(
        attributes in prop::collection::vec((attribute_name(), attribute_value()), 0..8),
        looked_up in prop::option::of(attribute_value()),
        secret in "S3cr[A-Za-z0-9]{10}",
    ) {
        let lookup = |_: &str| looked_up.clone();
        let pairs = attributes
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain([("accessKey", secret.as_str())]);
        match Config::from_attributes_with(pairs, lookup) {
            Ok(config) => {
                let debug = format!("{config:?}");
            prop_assert!(!debug.contains(&secret), "{debug}");
                prop_assert!(config.session_timeout() >= Duration::from_millis(1));
                prop_assert!(config.lock_ttl() >= Duration::from_millis(1));
                prop_assert!(config.max_waiters_per_session() >= 1);
                if let Some(url) = config.url() {
                    prop_assert!(url_scheme(url).is_some(), "{url:?}");
                }
            }
            Err(e @ Error::InvalidConfig { .. }) => {
                prop_assert!(!e.to_string().contains(&secret), "{e}");
            }
            Err(other) => prop_assert!(false, "not InvalidConfig: {other:?}"),
        }
    }

    /// One attribute at a time through the builder (1000 cases), the way a `web.config` reader
    /// applies them: `InvalidConfig` naming the attribute as written, or a builder that builds.
    #[test]
    fn each_attribute_names_itself_when_refused(
        name in attribute_name(),
        value in attribute_value(),
    ) {
        match Config::builder().attribute_with(&name, &value, &|_| None) {
            Ok(builder) => {
                if let Err(e) = builder.build() {
                    prop_assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
                }
            }
            Err(Error::InvalidConfig { setting, .. }) => {
                // Errors from the connection string's lookup name the attribute too.
                prop_assert_eq!(setting, name);
            }
            Err(other) => prop_assert!(false, "not InvalidConfig: {other:?}"),
        }
    }
}

/// Item values as stored: arbitrary bytes, MessagePack headers that announce huge lengths, and
/// deep nesting.
fn stored_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        // A map/array/str/bin header announcing up to 4 GiB, then a little data.
        (
            prop::sample::select(vec![0xc6u8, 0xdb, 0xdd, 0xdf, 0xc5, 0xda, 0xdc, 0xde]),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(|(tag, len, rest)| {
                let mut v = vec![tag];
                v.extend_from_slice(&len.to_be_bytes());
                v.extend(rest);
                v
            }),
        // Nested one-element arrays or maps, up to 100 000 deep.
        (prop::sample::select(vec![0x91u8, 0x81]), 1usize..100_000)
            .prop_map(|(tag, depth)| vec![tag; depth]),
    ]
}

/// A recursive value, so that deep nesting is followed as far as the decoder allows.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Any {
    Bool(bool),
    Int(i64),
    Text(String),
    List(Vec<Any>),
    Map(std::collections::BTreeMap<String, Any>),
}

proptest! {
    #![proptest_config(cases(500))]

    /// Item values (500 cases): arbitrary stored bytes decode into a typed value or give
    /// `Error::Decode` naming the item; never a panic, a stack overflow or a huge allocation.
    #[test]
    fn stored_values_decode_or_fail_typed(bytes in stored_value()) {
        let value = ItemValue::from_bytes(bytes);
        for result in [
            decode_value::<Vec<(String, Vec<u8>, Option<i64>)>>("fuzz", &value).map(drop),
            decode_value::<std::collections::HashMap<String, u64>>("fuzz", &value).map(drop),
            decode_value::<String>("fuzz", &value).map(drop),
            decode_value::<serde::de::IgnoredAny>("fuzz", &value).map(drop),
            decode_value::<Any>("fuzz", &value).map(drop),
        ] {
            match result {
                Ok(()) => {}
                Err(Error::Decode { item, .. }) => prop_assert_eq!(item, "fuzz"),
                Err(other) => prop_assert!(false, "not Decode: {other:?}"),
            }
        }
    }
}

/// The regression the property above found (issue 14): 800 nested one-element arrays, decoded
/// into a self-describing type, overflowed a 2 MiB test thread's stack in a debug build and
/// aborted the process (rmp-serde's own depth limit is 1024). Values now nest at most 128 deep:
/// deeper ones are `Error::Decode`, and a value 100 deep still round-trips.
#[test]
fn deep_nesting_is_a_decode_error_not_a_stack_overflow() {
    for depth in [129, 800, 100_000] {
        for tag in [0x91u8, 0x81] {
            let value = ItemValue::from_bytes(vec![tag; depth]);
            assert!(matches!(
                decode_value::<serde::de::IgnoredAny>("deep", &value),
                Err(Error::Decode { .. })
            ));
            assert!(matches!(
                decode_value::<Any>("deep", &value),
                Err(Error::Decode { .. })
            ));
        }
    }
    // 100 nested one-element arrays around the number 7.
    let mut bytes = vec![0x91u8; 100];
    bytes.push(0x07);
    let value = ItemValue::from_bytes(bytes);
    assert!(decode_value::<serde::de::IgnoredAny>("deep", &value).is_ok());
    assert!(decode_value::<Any>("deep", &value).is_ok());
}
