//! The session cookie: its settings, reading the id from `Cookie` headers, and the `Set-Cookie`
//! values that issue and clear it.

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};
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

    /// The cookie's `Domain` (default none: the host that set it, without subdomains).
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
    /// Each `name=value` pair is decoded on its own, and every `Cookie` header line is read (HTTP/2
    /// may send one per cookie): another cookie with non-ASCII or non-UTF-8 bytes (`name=José`)
    /// skips only that pair, never the session cookie beside it.
    pub(crate) fn read(&self, headers: &HeaderMap) -> Option<SessionId> {
        headers
            .get_all(COOKIE)
            .iter()
            .flat_map(|line| line.as_bytes().split(|&b| b == b';'))
            .filter_map(|pair| std::str::from_utf8(pair).ok())
            .filter_map(|pair| pair.split_once('='))
            .filter(|(name, _)| name.trim() == self.name)
            .find_map(|(_, value)| {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                SessionId::parse(value).ok()
            })
    }

    /// The `Set-Cookie` value that gives the client `id`.
    pub(crate) fn issue(&self, id: &SessionId) -> Option<HeaderValue> {
        self.header(id.expose(), "")
    }

    /// The `Set-Cookie` value that removes the cookie (after `abandon`).
    pub(crate) fn clear(&self) -> Option<HeaderValue> {
        self.header("", "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    }

    fn header(&self, value: &str, expiry: &str) -> Option<HeaderValue> {
        let domain = match &self.domain {
            Some(d) => format!("; Domain={d}"),
            None => String::new(),
        };
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!(
            "{}={value}; Path={}{domain}{expiry}; HttpOnly{secure}; SameSite=Lax",
            self.name, self.path
        );
        // Every part was validated (or is a canonical id), so this does not fail; should it ever,
        // the response goes out without the cookie rather than the request failing.
        match HeaderValue::from_str(&text) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::error!("the session cookie is not a valid header value; not sent");
                None
            }
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
                "session_id={}; Path=/; HttpOnly; Secure; SameSite=Lax",
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
                "SID={}; Path=/app; Domain=example.com; HttpOnly; SameSite=Lax",
                id.expose()
            )
        );
        assert_eq!(
            c.clear().unwrap().to_str().unwrap(),
            "SID=; Path=/app; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"
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
