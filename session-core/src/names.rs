//! Application names, item names and session keys, validated once at the edge (docs/contract.md §1) so that
//! every backend can build keys, tags and rows from them without escaping surprises.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::id::SessionId;

/// Longest application name, in bytes (docs/contract.md §1).
pub const MAX_APP_NAME_BYTES: usize = 128;
/// Longest item name, in bytes (docs/contract.md §1).
pub const MAX_ITEM_NAME_BYTES: usize = 256;

/// An application: the namespace of a set of sessions (ASP.NET `applicationName`).
///
/// Two applications never see each other's sessions, even with the same id. Valid names are
/// 1..=128 bytes (UTF-8) of printable characters, spaces included (ASP.NET's default name is the
/// application's virtual path, which may hold them: `/my app`), except:
/// - `{` and `}`, which would break Redis Cluster hash tags (every key of a session is tagged
///   `{<app>_<id>}`);
/// - control characters and whitespace other than the space (tab, newline, no-break space, line
///   separators), which would make logs and keys ambiguous;
/// - a space at either end (a name read from a file is trimmed; one written in code with such a
///   space is almost certainly a mistake).
///
/// Backends store the name verbatim: a key part in Redis, a binary column value in SQL. The
/// default is `"/"`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(Arc<str>);

impl AppName {
    /// Validates `name` as an application name.
    ///
    /// # Errors
    /// [`Error::InvalidName`] naming the rule that `name` breaks.
    pub fn new(name: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidName {
            kind: "application name",
            reason,
        };
        if name.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if name.len() > MAX_APP_NAME_BYTES {
            return Err(invalid("must be at most 128 bytes"));
        }
        if name.starts_with(' ') || name.ends_with(' ') {
            return Err(invalid("must not start or end with a space"));
        }
        for c in name.chars() {
            match c {
                '{' | '}' => return Err(invalid("must not contain '{' or '}'")),
                ' ' => {}
                c if c.is_control() => {
                    return Err(invalid("must not contain control characters"));
                }
                c if c.is_whitespace() => {
                    return Err(invalid("must not contain whitespace other than spaces"));
                }
                _ => {}
            }
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for AppName {
    fn default() -> Self {
        Self(Arc::from("/"))
    }
}

impl fmt::Debug for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppName({:?})", &*self.0)
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an item name: case-sensitive UTF-8 of 1..=256 bytes (docs/contract.md §1). Any content is allowed,
/// including quotes, `%`, `{}`, NUL and unicode; backends must store it verbatim.
///
/// # Errors
/// [`Error::InvalidName`] for an empty or oversized name.
pub fn validate_item_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName {
            kind: "item name",
            reason: "must not be empty",
        });
    }
    if name.len() > MAX_ITEM_NAME_BYTES {
        return Err(Error::InvalidName {
            kind: "item name",
            reason: "must be at most 256 bytes",
        });
    }
    Ok(())
}

/// The address of one session in a store: its application and its id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    app: AppName,
    id: SessionId,
}

impl SessionKey {
    /// The key of session `id` in application `app`.
    pub fn new(app: AppName, id: SessionId) -> Self {
        Self { app, id }
    }

    /// The application.
    pub fn app(&self) -> &AppName {
        &self.app
    }

    /// The session id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The same application with another id.
    pub fn with_id(&self, id: SessionId) -> Self {
        Self {
            app: self.app.clone(),
            id,
        }
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({}, {})", self.app, self.id)
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.app, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for ok in [
            "/",
            "/shop",
            "a",
            "x'\"%;--",
            &"a".repeat(128),
            "/my app",
            "My Application (staging) #2",
            "/café",
            "/日本",
            "a  b",
            &format!("{}é", "a".repeat(126)),
        ] {
            assert_eq!(AppName::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            " ",
            " /app",
            "/app ",
            &"a".repeat(129),
            &format!("{}é", "a".repeat(127)),
            "a{b",
            "a}b",
            "{tag}",
            "a\tb",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{a0}b",
            "a\u{2028}b",
        ] {
            assert!(
                matches!(AppName::new(bad), Err(Error::InvalidName { .. })),
                "accepted {bad:?}"
            );
        }
        assert_eq!(AppName::default().as_str(), "/");
    }

    #[test]
    fn item_names() {
        for ok in [
            "a",
            "A",
            "'; DROP TABLE x; --",
            "{tag}",
            "%s",
            "nul\0byte",
            "ünï",
            &"x".repeat(256),
        ] {
            validate_item_name(ok).unwrap();
        }
        assert!(validate_item_name("").is_err());
        assert!(validate_item_name(&"x".repeat(257)).is_err());
    }
}
