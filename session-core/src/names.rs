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
/// 1..=128 bytes of printable ASCII without whitespace and without `{` or `}` (which would break
/// Redis Cluster hash tags). The default is `"/"`.
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
        for b in name.bytes() {
            match b {
                b'{' | b'}' => return Err(invalid("must not contain '{' or '}'")),
                0x21..=0x7e => {}
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                    return Err(invalid("must not contain whitespace"));
                }
                _ => return Err(invalid("must be printable ASCII")),
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
        for ok in ["/", "/shop", "a", "x'\"%;--", &"a".repeat(128)] {
            assert_eq!(AppName::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            &"a".repeat(129),
            "a{b",
            "a}b",
            "a b",
            "a\tb",
            "a\nb",
            "a\0b",
            "é",
            "a\u{7f}",
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
