//! What a `connectionString` (or `url`) attribute holds (docs/contract.md §4): a URL, a
//! StackExchange.Redis configuration string, or the name of an environment variable holding one
//! of them. Read by syntax only; which store a URL's scheme selects is the `sessions` facade's
//! business, and backend-redis parses the StackExchange form.

use std::net::Ipv6Addr;

use crate::conn_url::url_scheme;
use crate::error::{Error, Result};

/// A classified connection value, trimmed, as given otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Connection {
    /// `<scheme>://...`, or `<scheme>:...` that is not a StackExchange endpoint (`sqlite:path`).
    Url(String),
    /// `host[:port][,host:port...][,key=value...]`: a StackExchange.Redis configuration.
    Redis(String),
}

/// Reads `value` of the attribute `setting`: `None` when it is empty or whitespace (the
/// attribute's default: no store named). A bare name (letters, digits, `_`, `.`, `-`) is first
/// looked up with `lookup` (the environment, for [`Config::from_attributes`](crate::Config)): a
/// non-empty value found is read instead, as a URL or a StackExchange string (not looked up
/// again). A name not found is a StackExchange host when it is a valid host name (`localhost`,
/// `redis`, `cache.example.com`, `10.0.0.1`), else an error naming the variable (`MY_REDIS`:
/// host names have no `_`).
///
/// Errors never echo the value (it may hold a password); they may name the variable, which is
/// not a secret.
pub(crate) fn classify(
    setting: &str, value: &str, lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Connection>> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if is_bare_name(value) {
        if let Some(found) = lookup(value).filter(|v| !v.trim().is_empty()) {
            return literal(setting, found.trim()).map(Some).map_err(|_| {
                Error::config(
                    setting,
                    format!(
                        "names the environment variable {value}, whose value is neither a URL \
                         nor a StackExchange.Redis configuration (host:port,password=...)"
                    ),
                )
            });
        }
        if is_host_name(value) {
            return Ok(Some(Connection::Redis(value.to_owned())));
        }
        return Err(Error::config(
            setting,
            format!(
                "names the environment variable {value}, which is not set (and is not a host \
                 name: host names have no `_`)"
            ),
        ));
    }
    literal(setting, value).map(Some)
}

/// A value that is not looked up: a URL or a StackExchange configuration.
fn literal(setting: &str, value: &str) -> Result<Connection> {
    let has_authority = url_scheme(value).is_some_and(|s| value[s.len()..].starts_with("://"));
    if has_authority {
        return Ok(Connection::Url(value.to_owned()));
    }
    // Before the scheme test: `localhost:6379` and `redis:6379` read as `<scheme>:<rest>` too,
    // but a Redis URL always has `//`, and no store's URL is `<name>:<port>`.
    if is_stackexchange(value) {
        return Ok(Connection::Redis(value.to_owned()));
    }
    // `sqlite:path`, `memory:`. Comma-separated text without `//` was meant as a StackExchange
    // list (`host:99999,password=...`, a bad port): refused below rather than read as a URL whose
    // scheme is a host name.
    if url_scheme(value).is_some() && !value.contains(',') {
        return Ok(Connection::Url(value.to_owned()));
    }
    Err(Error::config(
        setting,
        "is neither a URL (<scheme>://..., sqlite:path) nor a StackExchange.Redis configuration \
         (host:port,password=...,ssl=True)",
    ))
}

/// Letters, digits, `_`, `.` and `-` only: a name to look up (or a host name).
fn is_bare_name(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A DNS host name or an IPv4 address as written in a StackExchange endpoint: labels of 1 to 63
/// letters, digits and `-` (not at either end), separated by `.`; at most 253 bytes.
fn is_host_name(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `value` has the shape of a StackExchange.Redis configuration: comma-separated pieces
/// (empty ones skipped), each an option `key=value` or an endpoint `host[:port]` (`[v6]:port`
/// for IPv6), with at least one endpoint (StackExchange.Redis refuses a configuration without
/// one). Only the shape: backend-redis reads the options and refuses the ones it does not know.
pub(crate) fn is_stackexchange(value: &str) -> bool {
    if value.contains("://") {
        return false;
    }
    let mut endpoints = 0;
    for piece in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((key, _)) = piece.split_once('=') {
            if !is_option_key(key.trim()) {
                return false;
            }
        } else if is_endpoint(piece) {
            endpoints += 1;
        } else {
            return false;
        }
    }
    endpoints > 0
}

/// An option's name: `ssl`, `abortConnect`, `$INFO` (a command map), `sslProtocols`, ...
fn is_option_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'$' | b'_' | b'.' | b'-'))
}

/// `host`, `host:port`, `[v6]:port`, `[v6]` or a bare IPv6 address (`::1`), the port 1 to 5
/// digits.
fn is_endpoint(piece: &str) -> bool {
    let port_ok = |port: &str| {
        (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok()
    };
    if let Some(rest) = piece.strip_prefix('[') {
        let Some((addr, tail)) = rest.split_once(']') else {
            return false;
        };
        let addr_ok = addr.parse::<Ipv6Addr>().is_ok();
        return addr_ok && (tail.is_empty() || tail.strip_prefix(':').is_some_and(port_ok));
    }
    if piece.parse::<Ipv6Addr>().is_ok() {
        return true;
    }
    match piece.split_once(':') {
        Some((host, port)) => is_host_name(host) && port_ok(port),
        None => is_host_name(piece),
    }
}

/// `value` (a StackExchange configuration) with the values of secret-looking options replaced by
/// `<redacted>`, for `Debug`. Split by hand on `,` (as StackExchange.Redis splits it), so that a
/// password holding `@` or `:` is hidden whole.
pub(crate) fn redact_stackexchange(value: &str) -> String {
    value
        .split(',')
        .map(|piece| match piece.split_once('=') {
            Some((key, v)) if !v.is_empty() && is_secret_option(key) => {
                format!("{key}={}", crate::conn_url::REDACTED)
            }
            _ => piece.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `password`, and anything that looks like a secret (as [`redact_url`](crate::redact_url)
/// judges parameter names).
fn is_secret_option(key: &str) -> bool {
    let word: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
    ]
    .iter()
    .any(|w| word.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    fn read(value: &str) -> Result<Option<Connection>> {
        classify("connectionString", value, &none)
    }

    fn redis(value: &str) -> Option<Connection> {
        Some(Connection::Redis(value.to_owned()))
    }

    fn url(value: &str) -> Option<Connection> {
        Some(Connection::Url(value.to_owned()))
    }

    #[test]
    fn urls_stay_urls() {
        for value in [
            "redis://127.0.0.1:6379/0",
            "rediss+cluster://:pw@a:7000,b:7001",
            "memory://",
            "memory:",
            "postgres://u:p@h/db?sslmode=require",
            "sqlite::memory:",
            "sqlite:sessions.db",
            "sqlite:/var/lib/app/sessions.db",
            "MariaDB://u@h/db",
            "gopher://h",
        ] {
            assert_eq!(read(value).unwrap(), url(value), "{value}");
        }
        assert_eq!(read("  memory://\n").unwrap(), url("memory://"));
    }

    #[test]
    fn stackexchange_strings_go_to_redis() {
        for value in [
            "contoso.redis.cache.windows.net:6380,password=abc=,ssl=True,abortConnect=False",
            "localhost:6379",
            "10.0.0.1:6379",
            "a:7000,b:7001,c:7002",
            "redis:6379",
            "[::1]:6379",
            "[::1]",
            "::1",
            "fe80::1:6379,::1",
            "cache,ssl=false,$INFO=,defaultDatabase=2",
            "host:6380,password=p@ss:w:rd,user=app",
            "host:6379,",
        ] {
            assert_eq!(read(value).unwrap(), redis(value), "{value}");
        }
    }

    #[test]
    fn text_that_is_neither_is_refused_without_echoing_it() {
        for value in [
            "password=topsecret,ssl=True",
            "Server=tcp:x.database.windows.net,1433;Password=topsecret",
            "two words topsecret",
            "host:99999,password=topsecret",
            "-bad-:6379,password=topsecret",
            "10.0.0.1:6379/0?password=topsecret",
        ] {
            let err = read(value).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("connectionString"), "{text}");
            assert!(text.contains("neither a URL"), "{text}");
            assert!(!text.contains("topsecret"), "{text}");
        }
    }

    #[test]
    fn empty_means_no_store() {
        for value in ["", "   ", "\n\t"] {
            assert_eq!(read(value).unwrap(), None);
        }
    }

    /// The decision on bare names: the environment variable when set (its value read as a URL or
    /// a StackExchange string, not looked up again), else the name as a host when it is one,
    /// else an error naming the variable.
    #[test]
    fn a_bare_name_is_an_environment_variable_first() {
        let env = |name: &str| match name {
            "MY_REDIS" => Some("cache.example:6380,password=topsecret,ssl=True".to_owned()),
            "SESSIONS_URL" => Some(" postgres://u:p@db/sessions ".to_owned()),
            "redis" => Some("other-host".to_owned()),
            "EMPTY" => Some("  ".to_owned()),
            "GARBAGE" => Some("not a connection topsecret".to_owned()),
            _ => None,
        };
        let read = |value: &str| classify("connectionString", value, &env);
        assert_eq!(
            read("MY_REDIS").unwrap(),
            redis("cache.example:6380,password=topsecret,ssl=True")
        );
        assert_eq!(
            read("SESSIONS_URL").unwrap(),
            url("postgres://u:p@db/sessions")
        );
        // A set variable wins over the host of the same name; its value is not looked up again.
        assert_eq!(read("redis").unwrap(), redis("other-host"));
        // Unset (or empty) and a host name: the host.
        for host in [
            "localhost",
            "cache.example.com",
            "10.0.0.1",
            "EMPTY",
            "my-redis",
        ] {
            assert_eq!(read(host).unwrap(), redis(host), "{host}");
        }
        // Unset and not a host name: the variable is named, never a value.
        let err = read("UNSET_VARIABLE").unwrap_err().to_string();
        assert!(
            err.contains("UNSET_VARIABLE") && err.contains("not set"),
            "{err}"
        );
        let err = read("GARBAGE").unwrap_err().to_string();
        assert!(
            err.contains("GARBAGE") && !err.contains("topsecret"),
            "{err}"
        );
    }

    #[test]
    fn host_names() {
        for ok in ["localhost", "a", "a-b.c", "10.0.0.1", &"a".repeat(63)] {
            assert!(is_host_name(ok), "{ok}");
        }
        for bad in ["", "a_b", "-a", "a-", "a..b", ".a", &"a".repeat(64), "a b"] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_are_redacted_whole() {
        assert_eq!(
            redact_stackexchange("h:6380,password=p@ss:w0rd,ssl=True,user=app"),
            "h:6380,password=<redacted>,ssl=True,user=app"
        );
        assert_eq!(redact_stackexchange("h,Password="), "h,Password=");
    }
}
