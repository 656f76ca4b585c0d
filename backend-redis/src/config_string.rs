//! StackExchange.Redis configuration strings, the `connectionString` every Azure application has:
//! `contoso.redis.cache.windows.net:6380,password=...,ssl=True,abortConnect=False`.
//!
//! The string is a comma-separated list. An entry without `=` is an endpoint, `host[:port]`
//! (`[::1]:6379` or a bare `::1` for IPv6); without a port it is 6379, or 6380 with `ssl=true`
//! (StackExchange.Redis's default, which Azure Cache for Redis uses). An entry with `=` is an
//! option, its name case-insensitive, its value trimmed; a repeated option's last value wins, as
//! in StackExchange.Redis. Each option has one of three fates ([`OPTIONS`]):
//!
//! - **used**: `password`, `user`, `ssl`, `defaultDatabase`, `connectTimeout` (ms),
//!   `syncTimeout` / `asyncTimeout` (ms, the driver's per-command timeout; `asyncTimeout` wins, as
//!   StackExchange.Redis's async calls use it), and `sslHost` when it names the host connected to
//!   (the certificate is always verified against that host; another name cannot be checked by
//!   this store's TLS client, so it is an error rather than a weaker check);
//! - **accepted and ignored**, with their value still checked (a typo in a boolean is an error):
//!   options that tune StackExchange.Redis's own machinery and change nothing about what this
//!   store reads or writes (`abortConnect`: this store always connects when it is opened and
//!   reports a failure there, and the ASP.NET provider forces it to false anyway; `allowAdmin`,
//!   `connectRetry`, `keepAlive`, `name`, `version`, `tiebreaker`, `configChannel`, ...);
//! - **refused** with an error that says why: options that would change what the connection
//!   means (`serviceName` and the Sentinel credentials: Sentinel is not supported; `proxy` other
//!   than `None`; `tunnel`; `$COMMAND=` renames).
//!
//! Any other name is an error naming it (a typo must not pass silently). No error echoes the
//! password, nor any option's value.

use std::net::Ipv6Addr;
use std::time::Duration;

use session_core::{Error, Result, redact_url};

/// The port of an endpoint that names none, without TLS.
pub(crate) const DEFAULT_PORT: u16 = 6379;
/// The port of an endpoint that names none, with `ssl=true` (Azure Cache for Redis).
pub(crate) const DEFAULT_TLS_PORT: u16 = 6380;

/// What a StackExchange.Redis option does here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// `password`.
    Password,
    /// `user`.
    User,
    /// `ssl`.
    Ssl,
    /// `sslHost`.
    SslHost,
    /// `defaultDatabase`.
    Database,
    /// `connectTimeout`.
    ConnectTimeout,
    /// `syncTimeout`.
    SyncTimeout,
    /// `asyncTimeout`.
    AsyncTimeout,
    /// Accepted and ignored; the value must still be a boolean.
    IgnoredBool,
    /// Accepted and ignored; the value must still be a whole number.
    IgnoredInt,
    /// Accepted and ignored, whatever its value.
    IgnoredText,
    /// Refused, for the reason given.
    Refused(&'static str),
}

const SENTINEL: &str = "Redis Sentinel is not supported: connect to the primary (or a cluster \
                        node) by its address";

/// Every option name this store knows (lowercase), and its fate.
const OPTIONS: &[(&str, Fate)] = &[
    ("password", Fate::Password),
    ("user", Fate::User),
    ("ssl", Fate::Ssl),
    ("sslhost", Fate::SslHost),
    ("defaultdatabase", Fate::Database),
    ("connecttimeout", Fate::ConnectTimeout),
    ("synctimeout", Fate::SyncTimeout),
    ("asynctimeout", Fate::AsyncTimeout),
    // This store connects when it is opened and fails there; it never waits for a server.
    ("abortconnect", Fate::IgnoredBool),
    // Admin commands are never sent.
    ("allowadmin", Fate::IgnoredBool),
    // rustls does not check revocation lists; it verifies the chain and the name.
    ("checkcertificaterevocation", Fate::IgnoredBool),
    ("resolvedns", Fate::IgnoredBool),
    ("setlib", Fate::IgnoredBool),
    ("tcpkeepalive", Fate::IgnoredBool),
    ("highintegrity", Fate::IgnoredBool),
    // The manager's retry policy owns retries (docs/contract.md §4).
    ("connectretry", Fate::IgnoredInt),
    ("keepalive", Fate::IgnoredInt),
    ("configcheckseconds", Fate::IgnoredInt),
    ("topologyrefreshseconds", Fate::IgnoredInt),
    ("responsetimeout", Fate::IgnoredInt),
    ("writebuffer", Fate::IgnoredInt),
    // The client name (`CLIENT SETNAME`): not set by this store's driver.
    ("name", Fate::IgnoredText),
    ("version", Fate::IgnoredText),
    ("tiebreaker", Fate::IgnoredText),
    ("configchannel", Fate::IgnoredText),
    // StackExchange.Redis's prefix for its own pub/sub channels; this store's channels are its own.
    ("channelprefix", Fate::IgnoredText),
    // rustls negotiates TLS 1.2 or 1.3.
    ("sslprotocols", Fate::IgnoredText),
    // This store always speaks RESP3 (its release messages are pushes).
    ("protocol", Fate::IgnoredText),
    ("servicename", Fate::Refused(SENTINEL)),
    ("sentineluser", Fate::Refused(SENTINEL)),
    ("sentinelpassword", Fate::Refused(SENTINEL)),
    (
        "tunnel",
        Fate::Refused("connecting through a tunnel or HTTP proxy is not supported"),
    ),
];

/// A StackExchange.Redis configuration string, read. Not `Debug`: it holds the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ConfigString {
    /// Each endpoint's host and port (the default port applied), in the order given.
    pub(crate) endpoints: Vec<(String, u16)>,
    pub(crate) ssl: bool,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    /// `defaultDatabase`.
    pub(crate) database: Option<u32>,
    /// `connectTimeout` (0: unset).
    pub(crate) connect_timeout: Option<Duration>,
    /// `asyncTimeout`, else `syncTimeout` (0: unset).
    pub(crate) response_timeout: Option<Duration>,
}

/// Whether `text` is a URL (`scheme://...`) rather than a configuration string. A configuration
/// string may well start with what looks like a scheme (`localhost:6380,ssl=true`), but never
/// with `scheme://`.
pub(crate) fn is_url(text: &str) -> bool {
    text.find("://")
        .is_some_and(|at| session_core::url_scheme(text).is_some_and(|s| s.len() == at))
}

/// The error for the whole string (`connectionString`, as the attribute is named).
fn whole(reason: impl Into<String>) -> Error {
    Error::config("connectionString", reason)
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::config(name, "expected true or false")),
    }
}

fn parse_int(name: &str, value: &str) -> Result<i64> {
    value
        .parse::<i64>()
        .map_err(|_| Error::config(name, "expected a whole number"))
}

/// Milliseconds, 0 meaning unset (the default applies), as ASP.NET reads its timeouts.
fn parse_millis(name: &str, value: &str) -> Result<Option<Duration>> {
    let ms = value
        .parse::<u64>()
        .map_err(|_| Error::config(name, "expected a whole number of milliseconds"))?;
    Ok((ms != 0).then(|| Duration::from_millis(ms)))
}

/// One endpoint, `host[:port]`, `[v6]`, `[v6]:port` or a bare IPv6 address: its host and its
/// port if given. The message shows the entry with anything that looks like a secret redacted.
fn endpoint(entry: &str) -> Result<(String, Option<u16>)> {
    let bad = |why: &str| whole(format!("endpoint {:?}: {why}", redact_url(entry)));
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address opened with `[` must close with `]`"))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address between `[` and `]`"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| bad("expected `:port` after `]`"))?,
            ),
        };
        (host, port)
    } else if entry.matches(':').count() > 1 {
        if entry.parse::<Ipv6Addr>().is_err() {
            return Err(bad(
                "not host:port (write an IPv6 address with a port as [address]:port)",
            ));
        }
        (entry, None)
    } else {
        match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    let is_name = |h: &str| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    if !host.contains(':') && !is_name(host) {
        return Err(bad(
            "not a host name or address (entries without `=` are endpoints, host[:port])",
        ));
    }
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p != 0 => Some(p),
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_owned(), port))
}

/// Reads a StackExchange.Redis configuration string (see the module's documentation).
///
/// # Errors
/// [`Error::InvalidConfig`] naming the option for an unknown, refused or unparsable option (or
/// `sslHost` naming another host), and naming `connectionString` for a bad endpoint or a string
/// without one. The password and the options' values are never part of a message.
pub(crate) fn parse(text: &str) -> Result<ConfigString> {
    let mut endpoints = Vec::new();
    let mut parsed = ConfigString {
        endpoints: Vec::new(),
        ssl: false,
        user: None,
        password: None,
        database: None,
        connect_timeout: None,
        response_timeout: None,
    };
    let (mut sync_timeout, mut async_timeout) = (None, None);
    let mut ssl_host: Option<String> = None;
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, value)) = entry.split_once('=') else {
            endpoints.push(endpoint(entry)?);
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(whole("an option without a name (`=value`)"));
        }
        if name.starts_with('$') {
            return Err(Error::config(
                name,
                "command renames are not supported: this store needs its commands under their \
                 own names (EVALSHA, EVAL, SCRIPT, SUBSCRIBE, PUBLISH, INFO, CONFIG GET)",
            ));
        }
        let lower = name.to_ascii_lowercase();
        if lower == "proxy" {
            if !value.eq_ignore_ascii_case("none") {
                return Err(Error::config(
                    name,
                    "connecting through a proxy (twemproxy, envoyproxy) is not supported: only \
                     proxy=None",
                ));
            }
            continue;
        }
        let Some(&(_, fate)) = OPTIONS.iter().find(|(known, _)| *known == lower) else {
            return Err(Error::config(
                name,
                "unknown option of the StackExchange.Redis connection string",
            ));
        };
        match fate {
            Fate::Refused(why) => return Err(Error::config(name, why)),
            Fate::IgnoredBool => {
                parse_bool(name, value)?;
            }
            Fate::IgnoredInt => {
                parse_int(name, value)?;
            }
            Fate::IgnoredText => {}
            Fate::Password => parsed.password = Some(value.to_owned()).filter(|v| !v.is_empty()),
            Fate::User => parsed.user = Some(value.to_owned()).filter(|v| !v.is_empty()),
            Fate::Ssl => parsed.ssl = parse_bool(name, value)?,
            Fate::SslHost => ssl_host = Some(value.to_owned()).filter(|v| !v.is_empty()),
            Fate::Database => {
                parsed.database =
                    Some(value.parse::<u32>().map_err(|_| {
                        Error::config(name, "expected a database number (0 or more)")
                    })?);
            }
            Fate::ConnectTimeout => parsed.connect_timeout = parse_millis(name, value)?,
            Fate::SyncTimeout => sync_timeout = parse_millis(name, value)?,
            Fate::AsyncTimeout => async_timeout = parse_millis(name, value)?,
        }
    }
    if endpoints.is_empty() {
        return Err(whole(
            "names no endpoint (expected host[:port], then options: \
             `cache.example:6380,password=...,ssl=true`)",
        ));
    }
    let default_port = if parsed.ssl {
        DEFAULT_TLS_PORT
    } else {
        DEFAULT_PORT
    };
    parsed.endpoints = endpoints
        .into_iter()
        .map(|(host, port)| (host, port.unwrap_or(default_port)))
        .collect();
    if let Some(name) = ssl_host.filter(|_| parsed.ssl)
        && let Some((host, _)) = parsed
            .endpoints
            .iter()
            .find(|(host, _)| !host.eq_ignore_ascii_case(&name))
    {
        return Err(Error::config(
            "sslHost",
            format!(
                "names another host than the endpoint {host:?}: this store verifies the server's \
                 certificate against the host it connects to and cannot check another name \
                 (connect to the name in the certificate instead)"
            ),
        ));
    }
    parsed.response_timeout = async_timeout.or(sync_timeout);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ConfigString {
        match parse(text) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    /// The error's setting and reason.
    fn err(text: &str) -> (String, String) {
        match parse(text) {
            Err(Error::InvalidConfig { setting, reason }) => (setting, reason),
            Err(other) => panic!("{text}: not InvalidConfig: {other}"),
            Ok(_) => panic!("{text} was accepted"),
        }
    }

    #[test]
    fn the_azure_form_is_read() {
        let c = ok("contoso.redis.cache.windows.net:6380,password=abc,ssl=True,abortConnect=False");
        assert_eq!(
            c.endpoints,
            [("contoso.redis.cache.windows.net".to_owned(), 6380)]
        );
        assert!(c.ssl);
        assert_eq!(c.password.as_deref(), Some("abc"));
        assert_eq!((c.user.as_deref(), c.database), (None, None));
        assert_eq!((c.connect_timeout, c.response_timeout), (None, None));
    }

    #[test]
    fn ports_default_to_6379_or_6380_with_ssl() {
        assert_eq!(ok("cache").endpoints, [("cache".to_owned(), 6379)]);
        // The option may come after the endpoint it changes, as in StackExchange.Redis.
        assert_eq!(
            ok("cache, SSL=true").endpoints,
            [("cache".to_owned(), 6380)]
        );
        assert_eq!(
            ok("a:7000,b,ssl=false").endpoints,
            [("a".to_owned(), 7000), ("b".to_owned(), 6379)]
        );
    }

    #[test]
    fn ipv6_endpoints() {
        assert_eq!(ok("[::1]:6379").endpoints, [("::1".to_owned(), 6379)]);
        assert_eq!(ok("[::1]").endpoints, [("::1".to_owned(), 6379)]);
        assert_eq!(
            ok("fe80::1,ssl=true").endpoints,
            [("fe80::1".to_owned(), 6380)]
        );
        for bad in ["[::1", "[nohost]:1", "[::1]x", "::1:x:y:z:zz"] {
            assert_eq!(err(bad).0, "connectionString", "{bad}");
        }
    }

    #[test]
    fn used_options_are_read_case_insensitively() {
        let c = ok(
            "h:1,h2:2, User = app ,PASSWORD=p=w,defaultDatabase=3,ConnectTimeout=1500,\
                    syncTimeout=2000",
        );
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(
            (c.user.as_deref(), c.password.as_deref()),
            (Some("app"), Some("p=w"))
        );
        assert_eq!(c.database, Some(3));
        assert_eq!(c.connect_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(c.response_timeout, Some(Duration::from_millis(2000)));
        let c = ok("h,asyncTimeout=300,syncTimeout=2000,connectTimeout=0");
        assert_eq!(c.response_timeout, Some(Duration::from_millis(300)));
        assert_eq!(c.connect_timeout, None, "0 means the default");
        // The last value wins.
        assert_eq!(
            ok("h,defaultDatabase=1,defaultDatabase=2").database,
            Some(2)
        );
    }

    #[test]
    fn harmless_options_are_ignored_but_checked() {
        ok(
            "h,abortConnect=false,allowAdmin=true,connectRetry=3,keepAlive=180,name=app,\
            version=7.2,tiebreaker=,configChannel=x,channelPrefix=p,sslProtocols=tls12,\
            checkCertificateRevocation=false,resolveDns=true,setlib=false,tcpKeepAlive=true,\
            configCheckSeconds=60,protocol=resp3,proxy=None,responseTimeout=1,writeBuffer=1,\
            highIntegrity=false,topologyRefreshSeconds=10",
        );
        assert_eq!(err("h,abortConnect=nope").0, "abortConnect");
        assert_eq!(err("h,connectRetry=three").0, "connectRetry");
    }

    #[test]
    fn options_that_change_the_meaning_are_refused() {
        let (setting, reason) = err("localhost,serviceName=mymaster");
        assert_eq!(setting, "serviceName");
        assert!(reason.contains("Sentinel"), "{reason}");
        assert_eq!(err("h,sentinelPassword=s3cret").0, "sentinelPassword");
        assert_eq!(err("h,proxy=twemproxy").0, "proxy");
        assert_eq!(err("h,tunnel=http:proxy:8080").0, "tunnel");
        assert_eq!(err("h,$INFO=").0, "$INFO");
    }

    #[test]
    fn ssl_host_must_be_the_host() {
        ok("cache.example,ssl=true,sslHost=CACHE.example");
        // Without TLS StackExchange.Redis ignores it.
        ok("cache.example,sslHost=other.example");
        let (setting, reason) = err("10.0.0.1:6380,ssl=true,sslHost=cache.example");
        assert_eq!(setting, "sslHost");
        assert!(reason.contains("10.0.0.1"), "{reason}");
    }

    #[test]
    fn bad_input_is_named_and_never_shows_the_password() {
        let (setting, reason) = err("h,passwrd=s3cret");
        assert_eq!(setting, "passwrd");
        assert!(reason.contains("unknown option"), "{reason}");
        for (text, setting) in [
            ("", "connectionString"),
            (" , ,", "connectionString"),
            ("password=s3cret,ssl=true", "connectionString"),
            ("h:notaport,password=s3cret", "connectionString"),
            ("h:0", "connectionString"),
            ("h:70000", "connectionString"),
            ("user:s3cret@h", "connectionString"),
            ("h/0,password=s3cret", "connectionString"),
            ("h,=s3cret", "connectionString"),
            ("h,ssl=yes,password=s3cret", "ssl"),
            ("h,defaultDatabase=-1", "defaultDatabase"),
            ("h,syncTimeout=1s", "syncTimeout"),
            ("h,password=s3cret,bogus=s3cret", "bogus"),
        ] {
            let (got, reason) = err(text);
            assert_eq!(got, setting, "{text}: {reason}");
            assert!(!reason.contains("s3cret"), "{text}: {reason}");
        }
    }

    #[test]
    fn urls_are_told_from_configuration_strings() {
        for url in ["redis://h", "rediss+cluster://a:1,b:2", "postgres://u@h/db"] {
            assert!(is_url(url), "{url}");
        }
        for text in [
            "localhost:6380,ssl=true",
            "127.0.0.1:6379",
            "contoso.redis.cache.windows.net:6380,password=a://b",
            "redis:6379",
            "[::1]:6379",
        ] {
            assert!(!is_url(text), "{text}");
        }
    }
}

#[cfg(test)]
mod fuzz;
