//! The session cookie: its settings, reading the id from `Cookie` headers, and the `Set-Cookie`
//! values that issue and clear it.

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};
use cookie::{Cookie, CookieBuilder, SameSite, time};
use session_core::{Error, Result, SessionId};

/// The session cookie's settings. `HttpOnly` and `SameSite=Lax` are always set: scripts never read
/// the session id, and cross-site subrequests do not carry it.
///
/// The cookie has no `Max-Age`: it lasts for the browser session, and the session's own idle
/// timeout (in the store) decides how long it stays valid, as in ASP.NET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieOptions {
    name: String,
    path: String,
    domain: Option<String>,
    secure: bool,
}

impl Default for CookieOptions {
    fn default() -> Self {
        Self {
            name: "session_id".to_owned(),
            path: "/".to_owned(),
            domain: None,
            secure: true,
        }
    }
}

impl CookieOptions {
    /// The defaults: name `session_id`, `Path=/`, no `Domain`, `Secure`, `HttpOnly`, `SameSite=Lax`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cookie's name (an RFC 6265 token: printable ASCII without separators).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty name or one with separators, spaces or controls.
    pub fn with_name(mut self, name: &str) -> Result<Self> {
        let separators = b"()<>@,;:\\\"/[]?={} \t";
        if name.is_empty()
            || name.len() > 128
            || !name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !separators.contains(&b))
        {
            return Err(Error::config(
                "cookie name",
                "must be 1..=128 printable ASCII characters without separators ()<>@,;:\\\"/[]?={}",
            ));
        }
        self.name = name.to_owned();
        Ok(self)
    }

    /// The cookie's `Path` (default `/`): the requests that carry the cookie.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] unless it starts with `/` and is printable ASCII without `;`.
    pub fn with_path(mut self, path: &str) -> Result<Self> {
        if !path.starts_with('/') || !attribute_value(path) {
            return Err(Error::config(
                "cookie path",
                "must start with '/' and be printable ASCII without ';'",
            ));
        }
        self.path = path.to_owned();
        Ok(self)
    }

    /// The cookie's `Domain` (default none: the host that set it, without subdomains). A leading
    /// `.` is left out of `Set-Cookie`: browsers ignore it (RFC 6265, 5.2.3).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty value or one with spaces, controls or `;`.
    pub fn with_domain(mut self, domain: Option<&str>) -> Result<Self> {
        if let Some(d) = domain
            && (d.is_empty() || !attribute_value(d))
        {
            return Err(Error::config(
                "cookie domain",
                "must be printable ASCII without ';'",
            ));
        }
        self.domain = domain.map(str::to_owned);
        Ok(self)
    }

    /// Whether the cookie carries `Secure` (default `true`: browsers send it over HTTPS only, and
    /// over plain HTTP to `localhost`). Turn it off only for plain-HTTP development hosts.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cookie's `Path`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The cookie's `Domain`, if any.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Whether the cookie carries `Secure`.
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// The session id the client sent: the first value of this cookie, in any `Cookie` header, that
    /// is a well-formed session id. Malformed values (hostile input, another application's cookie
    /// of the same name) are skipped; the manager treats a missing id as a new session.
    ///
    /// The `cookie` crate splits each line into `name=value` pairs and trims them (and a value's
    /// double quotes). Every `Cookie` header line is read (HTTP/2 may send one per cookie), and a
    /// line that is not UTF-8 is decoded lossily first: another cookie with non-ASCII or non-UTF-8
    /// bytes (`name=José`, in UTF-8 or Latin-1) spoils only its own value, never the session
    /// cookie beside it, because a replaced byte is never `;` or `=` (the HTTP test
    /// `non_ascii_cookie_keeps_the_session`).
    pub(crate) fn read(&self, headers: &HeaderMap) -> Option<SessionId> {
        headers.get_all(COOKIE).iter().find_map(|line| {
            Cookie::split_parse(String::from_utf8_lossy(line.as_bytes()))
                .filter_map(std::result::Result::ok)
                .filter(|cookie| cookie.name() == self.name)
                .find_map(|cookie| SessionId::parse(cookie.value_trimmed()).ok())
        })
    }

    /// The `Set-Cookie` value that gives the client `id`.
    pub(crate) fn issue(&self, id: &SessionId) -> Option<HeaderValue> {
        header(self.cookie(id.expose()).build())
    }

    /// The `Set-Cookie` value that removes the cookie (after `abandon`): empty, `Max-Age=0` and
    /// an `Expires` in 1970 for clients that ignore `Max-Age`.
    pub(crate) fn clear(&self) -> Option<HeaderValue> {
        header(
            self.cookie("")
                .max_age(time::Duration::ZERO)
                .expires(time::OffsetDateTime::UNIX_EPOCH)
                .build(),
        )
    }

    /// The session cookie with `value` and every configured attribute.
    fn cookie(&self, value: &str) -> CookieBuilder<'static> {
        let cookie = Cookie::build((self.name.clone(), value.to_owned()))
            .path(self.path.clone())
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax);
        match &self.domain {
            Some(domain) => cookie.domain(domain.clone()),
            None => cookie,
        }
    }
}

/// `cookie` as a `Set-Cookie` value. Every part was validated (or is a canonical id), so this does
/// not fail; should it ever, the response goes out without the cookie rather than the request
/// failing.
fn header(cookie: Cookie<'_>) -> Option<HeaderValue> {
    match HeaderValue::try_from(cookie.to_string()) {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::error!("the session cookie is not a valid header value; not sent");
            None
        }
    }
}

/// Printable ASCII (space excluded) without `;`: safe inside a `Set-Cookie` attribute.
fn attribute_value(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic() && b != b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(COOKIE, HeaderValue::from_bytes(line).unwrap());
        }
        map
    }

    #[test]
    fn reads_the_first_well_formed_id() {
        let c = CookieOptions::new();
        let id = SessionId::generate().unwrap();
        let good = format!("a=1; session_id=nope; session_id={}; b=2", id.expose());
        assert_eq!(c.read(&headers(&[good.as_bytes()])), Some(id));
        let quoted = format!("session_id=\"{}\"", id.expose());
        assert_eq!(c.read(&headers(&[b"x=y", quoted.as_bytes()])), Some(id));
        let other_name = format!("session_idx={}", id.expose());
        assert_eq!(c.read(&headers(&[other_name.as_bytes()])), None);
        // Whitespace around names, values and separators, tabs included.
        let spaced = format!("a=1 ;\t session_id \t=  {}\t; b", id.expose());
        assert_eq!(c.read(&headers(&[spaced.as_bytes()])), Some(id));
        // A quote on one side only is part of the value: no id.
        let half_quoted = format!("session_id=\"{}", id.expose());
        assert_eq!(c.read(&headers(&[half_quoted.as_bytes()])), None);
    }

    /// Any bytes a `Cookie` header can carry, mixed from separators, quotes, whitespace, invalid
    /// UTF-8 and pieces of an id: reading never panics, and finds the id only where a pair holds
    /// it whole.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let c = CookieOptions::new();
        let id = SessionId::generate().unwrap();
        let pieces: [&[u8]; 12] = [
            b";",
            b"=",
            b"\"",
            b" ",
            b"\t",
            b"session_id",
            b"a",
            b"\xff",
            b"\xc3",
            b"\xe9",
            b"\xe2\x82",
            id.expose().as_bytes(),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % 12).unwrap()
        };
        let mut found_some = false;
        for _ in 0..20_000 {
            let line: Vec<u8> = (0..next()).flat_map(|_| pieces[next()]).copied().collect();
            if let Some(found) = c.read(&headers(&[&line])) {
                assert_eq!(found, id, "{line:?}");
                found_some = true;
            }
        }
        assert!(found_some, "some lines hold the id whole");
    }

    #[test]
    fn non_ascii_cookies_beside_it_do_not_hide_the_id() {
        let c = CookieOptions::new();
        let id = SessionId::generate().unwrap();
        let sid = format!("session_id={}", id.expose());
        // Latin-1 and UTF-8 bytes in another cookie of the same line, before and after it.
        for line in [
            format!("name=José; {sid}").into_bytes(),
            [b"name=Jos\xe9; ".as_slice(), sid.as_bytes()].concat(),
            [sid.as_bytes(), b"; x=\xff\xfe"].concat(),
        ] {
            assert_eq!(c.read(&headers(&[&line])), Some(id), "{line:?}");
        }
        // Several header lines (HTTP/2): a bad one does not hide the id in a later one.
        assert_eq!(
            c.read(&headers(&[b"name=Jos\xe9", b"a=1", sid.as_bytes()])),
            Some(id)
        );
    }

    #[test]
    fn hostile_values_are_no_id() {
        let c = CookieOptions::new();
        let long = format!("session_id={}", "a".repeat(100_000));
        for line in [
            &b"session_id="[..],
            b"session_id",
            b";;;=;",
            b"session_id=../../etc/passwd",
            b"session_id=%00%7B%7D",
            b"session_id=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            b"session_id=\xff\xfe\xc3\x28",
            long.as_bytes(),
        ] {
            assert_eq!(c.read(&headers(&[line])), None, "{line:?}");
        }
        assert_eq!(c.read(&HeaderMap::new()), None);
    }

    #[test]
    fn set_cookie_carries_the_configured_attributes() {
        let id = SessionId::generate().unwrap();
        let c = CookieOptions::new();
        assert_eq!(
            c.issue(&id).unwrap().to_str().unwrap(),
            format!(
                "session_id={}; HttpOnly; SameSite=Lax; Secure; Path=/",
                id.expose()
            )
        );
        let c = CookieOptions::new()
            .with_name("SID")
            .unwrap()
            .with_path("/app")
            .unwrap()
            .with_domain(Some("example.com"))
            .unwrap()
            .with_secure(false);
        assert_eq!(
            c.issue(&id).unwrap().to_str().unwrap(),
            format!(
                "SID={}; HttpOnly; SameSite=Lax; Path=/app; Domain=example.com",
                id.expose()
            )
        );
        assert_eq!(
            c.clear().unwrap().to_str().unwrap(),
            "SID=; HttpOnly; SameSite=Lax; Path=/app; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        );
        // A leading `.` of the domain is dropped, as RFC 6265 (5.2.3) ignores it anyway.
        let dotted = CookieOptions::new()
            .with_domain(Some(".example.com"))
            .unwrap();
        assert_eq!(dotted.domain(), Some(".example.com"));
        assert_eq!(
            dotted.issue(&id).unwrap().to_str().unwrap(),
            format!(
                "session_id={}; HttpOnly; SameSite=Lax; Secure; Path=/; Domain=example.com",
                id.expose()
            )
        );
    }

    #[test]
    fn bad_settings_are_rejected() {
        for name in ["", "a b", "a;b", "a=b", "é", "a\0"] {
            assert!(CookieOptions::new().with_name(name).is_err(), "{name:?}");
        }
        for path in ["", "app", "/a;b", "/a b", "/\n"] {
            assert!(CookieOptions::new().with_path(path).is_err(), "{path:?}");
        }
        assert!(CookieOptions::new().with_domain(Some("")).is_err());
        assert!(CookieOptions::new().with_domain(Some("a;b")).is_err());
        assert!(CookieOptions::new().with_domain(None).is_ok());
    }
}

#[cfg(test)]
mod fuzz;
