//! Connection URLs, read without knowing any backend's schemes: [`url_scheme`] (which the `sessions`
//! facade dispatches on and each backend checks) and [`redact_url`], the one redaction that keeps
//! secrets out of logs (`Config`'s `Debug`, the facade's and the backends' error messages).
//!
//! The redaction finds the userinfo by hand and leaves the parameter names to the `url` crate
//! (percent-decoding them as `form_urlencoded`). `url::Url` itself is not used to split the URL,
//! for two reasons the tests pin down: it ends the authority at the first `/`, `?` or `#`, as RFC
//! 3986 does, so a password that holds one of them unencoded (`postgres://u:123#w@h`) is read as a
//! port plus a fragment or query that it would print; and it refuses the host list of a cluster
//! URL (`redis+cluster://a:1,b:2`). Here the userinfo is everything before the *last* `@`: a URL
//! with an `@` after its host (`...?user=me@example`) is redacted more than needed, never less.

use url::form_urlencoded;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Words that make a parameter's value a secret, found in its name lowercased with everything but
/// letters and digits removed (`password`, `sslpassword`, `pass`, `passwd`, `pwd`, `access_key`,
/// `AccessKey`, `api-key`, `secret`, `client_secret`, `token`, `auth`, `credentials`, ...).
const SECRET_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "signature",
];

/// The scheme of `url`, lowercased: the text before the first `:` when it is a scheme as RFC 3986
/// spells one (a letter, then letters, digits, `+`, `-` or `.`). `None` when `url` has none.
///
/// ```
/// use session_core::url_scheme;
///
/// assert_eq!(url_scheme("Redis+Cluster://a:1,b:2").as_deref(), Some("redis+cluster"));
/// assert_eq!(url_scheme("sqlite::memory:").as_deref(), Some("sqlite"));
/// assert_eq!(url_scheme("localhost"), None);
/// ```
pub fn url_scheme(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    let valid = first.is_ascii_alphabetic()
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    valid.then(|| scheme.to_ascii_lowercase())
}

/// `url` with its secrets replaced by `<redacted>`: the password of the userinfo
/// (`redis://user:pw@host` → `redis://user:<redacted>@host`; a user without a password is printed
/// as it is) and the value of every parameter whose name looks like a secret (see
/// `SECRET_WORDS` in the source: `password`, `sslpassword`, `pwd`, `access_key`, `token`, ...), in
/// the query (`?a=1&password=x`) or in a comma- or semicolon-separated list
/// (`host:6379,password=x`). It knows no scheme: cluster host lists (`redis+cluster://a:1,b:2`),
/// `sqlite:` paths and text that is no URL at all are handled alike. Everything else is printed
/// as given.
///
/// ```
/// use session_core::redact_url;
///
/// assert_eq!(redact_url("redis://app:pw@h:6379/0"), "redis://app:<redacted>@h:6379/0");
/// assert_eq!(redact_url("redis://app@h"), "redis://app@h");
/// assert_eq!(
///     redact_url("postgres://h/db?sslmode=require&password=pw"),
///     "postgres://h/db?sslmode=require&password=<redacted>"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len() + REDACTED.len());
    // `scheme://[userinfo@]hosts[/path][?query]`, the form of every networked store. Anything
    // else (`sqlite:path`, `sqlite::memory:`, text that is not a URL) has no host list; an `@` in
    // it still ends a possible userinfo, which then starts at the beginning.
    let hierarchical = url
        .find("://")
        .filter(|&i| url_scheme(url).is_some_and(|s| s.len() == i));
    let rest = match hierarchical {
        Some(i) => {
            out.push_str(&url[..i + 3]);
            &url[i + 3..]
        }
        None => url,
    };
    // In text without `://`, an `@` after a `name=` belongs to that parameter's value (a
    // StackExchange.Redis configuration string, `h:6380,password=p@ss,ssl=True`), not to a
    // userinfo.
    let userinfo_at = rest
        .rfind('@')
        .filter(|&at| hierarchical.is_some() || !rest[..at].contains('='));
    let rest = match userinfo_at {
        Some(at) => {
            redact_userinfo(&rest[..at], &mut out);
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    let params = if hierarchical.is_some() {
        // The host list (one host, or a cluster's `h1:p1,h2:p2`) is printed as it is.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        out.push_str(&rest[..end]);
        &rest[end..]
    } else {
        rest
    };
    redact_params(params, &mut out);
    out
}

/// `user:password` → `user:<redacted>`; a user alone stays as it is. The user part goes through
/// [`redact_params`] too: when an `@` comes after the host, what precedes it may be a query.
fn redact_userinfo(userinfo: &str, out: &mut String) {
    match userinfo.split_once(':') {
        Some((user, password)) => {
            redact_params(user, out);
            out.push(':');
            if !password.is_empty() {
                out.push_str(REDACTED);
            }
        }
        None => redact_params(userinfo, out),
    }
}

/// A path (whose `,`- or `;`-separated `name=value` pieces are checked, as in
/// `host:6379,password=x`) and an optional `?query` (whose `&`-separated pairs are checked, as
/// `form_urlencoded` splits them: a `;` or `,` inside a query value stays part of the value).
fn redact_params(text: &str, out: &mut String) {
    match text.split_once('?') {
        Some((path, query)) => {
            redact_pairs(path, &[',', ';'], out);
            out.push('?');
            redact_pairs(query, &['&'], out);
        }
        None => redact_pairs(text, &[',', ';'], out),
    }
}

/// Copies `text`, replacing the value of every `name=value` piece (pieces end at one of
/// `separators`) whose name looks like a secret.
fn redact_pairs(text: &str, separators: &[char], out: &mut String) {
    for piece in text.split_inclusive(separators) {
        let (pair, separator) = match piece.char_indices().last() {
            Some((i, c)) if separators.contains(&c) => piece.split_at(i),
            _ => (piece, ""),
        };
        match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_secret(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
        out.push_str(separator);
    }
}

/// Whether a parameter named `name` (percent-encoded as in a query) holds a secret.
fn is_secret(name: &str) -> bool {
    let decoded = form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default();
    let word: String = decoded
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_WORDS.iter().any(|secret| word.contains(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_userinfo_is_redacted() {
        for (url, redacted) in [
            (
                "redis://user:pw@host:1/0",
                "redis://user:<redacted>@host:1/0",
            ),
            ("rediss://:pw@host", "rediss://:<redacted>@host"),
            (
                "postgres://u:topsecret@h/db?sslmode=require",
                "postgres://u:<redacted>@h/db?sslmode=require",
            ),
            // An `@` and a `:` inside the password (unencoded) are part of it.
            ("redis://u:p@s:s@h:1", "redis://u:<redacted>@h:1"),
            ("mysql://u:@h/db", "mysql://u:@h/db"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    /// A StackExchange.Redis configuration string whose password holds an `@` is redacted whole.
    #[test]
    fn an_at_sign_in_a_stackexchange_password_stays_secret() {
        let redacted = redact_url("h:6380,password=a@b,ssl=True");
        assert_eq!(redacted, "h:6380,password=<redacted>,ssl=True");
    }

    /// Issue 10, bug 2: a user without a password was printed as `user:<redacted>`.
    #[test]
    fn a_user_without_a_password_is_printed_alone() {
        assert_eq!(redact_url("redis://app@host:6379"), "redis://app@host:6379");
        assert_eq!(redact_url("mysql://app@h/db"), "mysql://app@h/db");
    }

    /// Issue 10, bug 2: a password in the query string was printed whole.
    #[test]
    fn secret_query_parameters_are_redacted() {
        for (url, redacted) in [
            (
                "postgres://host/db?password=topsecret",
                "postgres://host/db?password=<redacted>",
            ),
            (
                "postgres://host/db?sslmode=require&sslpassword=k3y&application_name=shop",
                "postgres://host/db?sslmode=require&sslpassword=<redacted>&application_name=shop",
            ),
            (
                "mysql://h/db?PASSWORD=x&pwd=y&pass=z",
                "mysql://h/db?PASSWORD=<redacted>&pwd=<redacted>&pass=<redacted>",
            ),
            (
                "redis://h?access_key=a&AccessKey=b&token=c&client_secret=d",
                "redis://h?access_key=<redacted>&AccessKey=<redacted>&token=<redacted>&client_secret=<redacted>",
            ),
            // Names are compared percent-decoded.
            (
                "postgres://h/db?pass%77ord=x",
                "postgres://h/db?pass%77ord=<redacted>",
            ),
            // A `;` or `,` inside a query value belongs to it.
            (
                "postgres://h/db?password=a;b,c&x=1",
                "postgres://h/db?password=<redacted>&x=1",
            ),
            // Empty values and valueless names have nothing to hide.
            (
                "postgres://h/db?password=&password",
                "postgres://h/db?password=&password",
            ),
            // Both places at once.
            (
                "postgres://u:pw@h/db?password=pw2",
                "postgres://u:<redacted>@h/db?password=<redacted>",
            ),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn cluster_host_lists_keep_their_hosts() {
        for (url, redacted) in [
            (
                "redis+cluster://u:pw@a:7000,b:7001/0",
                "redis+cluster://u:<redacted>@a:7000,b:7001/0",
            ),
            (
                "rediss+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000",
                "rediss+cluster://:<redacted>@10.0.0.1:7000,10.0.0.2:7000",
            ),
            (
                "redis+cluster://a:7000,b:7001?password=pw",
                "redis+cluster://a:7000,b:7001?password=<redacted>",
            ),
            ("redis+cluster://a:1,b:2", "redis+cluster://a:1,b:2"),
            ("redis://u:pw@[::1]:6379", "redis://u:<redacted>@[::1]:6379"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn urls_without_secrets_are_printed_as_given() {
        for url in [
            "memory://",
            "sqlite::memory:",
            "sqlite:/var/lib/app/sessions.db?mode=rwc",
            "redis://127.0.0.1:6379/0",
            "postgres://h:5432/db?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            "rediss://h:6380/1#frag",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn text_that_is_no_url_is_still_redacted() {
        assert_eq!(
            redact_url("cache:6380,password=pw,ssl=True"),
            "cache:6380,password=<redacted>,ssl=True"
        );
        assert_eq!(
            redact_url("Server=db;Password=pw;Database=s"),
            "Server=db;Password=<redacted>;Database=s"
        );
        assert_eq!(redact_url("user:pw@host"), "user:<redacted>@host");
    }

    /// Why the userinfo is found by hand (see the module docs): `url::Url` reads these hostile
    /// URLs so that its own fields would print part of the password, or refuses them.
    #[test]
    fn the_url_crate_splits_hostile_urls_differently() {
        let hash = url::Url::parse("postgres://u:123#w@h/db").unwrap();
        assert_eq!((hash.password(), hash.port()), (None, Some(123)));
        assert_eq!(hash.fragment(), Some("w@h/db"));
        let question = url::Url::parse("postgres://u:12?w@h/db").unwrap();
        assert_eq!(
            (question.password(), question.query()),
            (None, Some("w@h/db"))
        );
        assert!(url::Url::parse("redis+cluster://a:7000,b:7001").is_err());
        for (url, secret) in [
            ("postgres://u:123#w@h/db", "123#w"),
            ("postgres://u:12?w@h/db", "12?w"),
            ("postgres://u:a/b@h/db", "a/b"),
            ("postgres://u:12/b@h/db", "12/b"),
        ] {
            let redacted = redact_url(url);
            assert_eq!(redacted, "postgres://u:<redacted>@h/db", "{url}");
            assert!(!redacted.contains(secret));
        }
    }

    #[test]
    fn an_at_after_the_host_redacts_more_never_less() {
        // Over-redacted (the `@` may end a userinfo whose password holds a `/`), but safe.
        assert_eq!(
            redact_url("postgres://h:5432/db?user=me@example"),
            "postgres://h:<redacted>@example"
        );
        // Without a `:` before the `@` there is no password to hide: printed as given.
        assert_eq!(
            redact_url("postgres://h/db?user=me@example"),
            "postgres://h/db?user=me@example"
        );
        assert_eq!(
            redact_url("redis://h?password=pw@x"),
            "redis://h?password=<redacted>@x"
        );
    }

    #[test]
    fn hostile_text_never_panics_and_never_prints_the_secret() {
        for url in [
            "",
            "@",
            ":",
            "://",
            "a://@",
            ":@:",
            "?=",
            "=,;&?#@:/",
            "redis://:s3cr3t@",
            "é://ü:s3cr3t@ä?password=s3cr3t",
            "redis://h/?pass=s3cr3t",
            "x:s3cr3t@",
            "redis://u:s3cr3t@@@h",
            "redis://h?token=s3cr3t#password=s3cr3t",
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains("s3cr3t"), "{url} → {redacted}");
        }
    }

    #[test]
    fn schemes_are_read_without_knowing_them() {
        assert_eq!(url_scheme("MariaDB://u@h/db").as_deref(), Some("mariadb"));
        assert_eq!(
            url_scheme("rediss+cluster://a:1,b:2").as_deref(),
            Some("rediss+cluster")
        );
        assert_eq!(url_scheme("memory://").as_deref(), Some("memory"));
        for none in ["", "nonsense", ":x", "1redis://h", "re dis://h", "é://h"] {
            assert_eq!(url_scheme(none), None, "{none}");
        }
    }
}
