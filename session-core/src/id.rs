//! Session ids and lock tokens: random values from the OS CSPRNG, with a canonical text form and
//! redacted `Debug`/`Display` so that logs never carry a whole id (docs/contract.md §1).

use std::fmt;

use crate::error::{Error, Result};

/// Number of random bytes in a session id (128 bits, docs/contract.md §1).
const ID_BYTES: usize = 16;
/// Length of the canonical text form: lowercase hex, two characters per byte.
const ID_CHARS: usize = ID_BYTES * 2;
/// How many characters of an id `Debug`/`Display` and error messages show.
pub(crate) const ID_PREFIX_CHARS: usize = 6;

/// A session id: 128 bits from the OS CSPRNG, written as 32 lowercase hex characters.
///
/// The text form is URL- and cookie-safe. [`SessionId::parse`] accepts only that canonical form, so a
/// malformed id is rejected before any store is touched. `Debug` and `Display` print only a short
/// prefix; the full value comes from [`SessionId::expose`], meant for the cookie and for store keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; ID_CHARS]);

impl SessionId {
    /// Generates a fresh id from the OS CSPRNG.
    ///
    /// # Errors
    /// [`Error::Random`] if the operating system's random source fails (it practically never does).
    pub fn generate() -> Result<Self> {
        let mut raw = [0u8; ID_BYTES];
        getrandom::fill(&mut raw).map_err(|e| Error::Random {
            source: Box::new(std::io::Error::other(e.to_string())),
        })?;
        let mut text = [0u8; ID_CHARS];
        hex_encode(&raw, &mut text);
        Ok(Self(text))
    }

    /// Parses the canonical form: exactly 32 lowercase hex characters.
    ///
    /// # Errors
    /// [`Error::InvalidId`] for anything else (wrong length, uppercase, other characters, NUL, unicode).
    /// The error never echoes the input.
    pub fn parse(text: &str) -> Result<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != ID_CHARS {
            return Err(Error::InvalidId {
                reason: "a session id is exactly 32 characters",
            });
        }
        if !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::InvalidId {
                reason: "a session id is lowercase hexadecimal",
            });
        }
        let mut out = [0u8; ID_CHARS];
        out.copy_from_slice(bytes);
        Ok(Self(out))
    }

    /// The full id, for the session cookie and for building store keys. Never log it.
    pub fn expose(&self) -> &str {
        // The bytes are validated (or generated) lowercase hex, so this cannot fail; fall back to an
        // empty string rather than panic should that invariant ever break.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The short prefix used in logs and error messages.
    pub fn prefix(&self) -> &str {
        self.expose().get(..ID_PREFIX_CHARS).unwrap_or_default()
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}…)", self.prefix())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.prefix())
    }
}

/// The token of one lock acquisition: 128 random bits, unique per acquisition (docs/contract.md §1).
///
/// A store generates a fresh token on every successful `acquire` (and on every stale-lock takeover);
/// `commit`, `release`, `remove` and `change_id` succeed only with the current holder's token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockToken(u128);

impl LockToken {
    /// Generates a fresh token from the OS CSPRNG.
    ///
    /// # Errors
    /// [`Error::Random`] if the operating system's random source fails.
    pub fn generate() -> Result<Self> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| Error::Random {
            source: Box::new(std::io::Error::other(e.to_string())),
        })?;
        Ok(Self(u128::from_be_bytes(raw)))
    }

    /// Rebuilds a token from its 128-bit value (as stored by a backend).
    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    /// The token's 128-bit value, for storing it.
    pub const fn as_u128(&self) -> u128 {
        self.0
    }

    /// The token as 32 lowercase hex characters, for stores that keep text.
    pub fn to_hex(&self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parses the form produced by [`LockToken::to_hex`].
    ///
    /// # Errors
    /// [`Error::InvalidToken`] unless the input is exactly 32 lowercase hex characters.
    pub fn from_hex(text: &str) -> Result<Self> {
        if text.len() != 32 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::InvalidToken);
        }
        u128::from_str_radix(text, 16)
            .map(Self)
            .map_err(|_| Error::InvalidToken)
    }
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockToken({:08x}…)", (self.0 >> 96) as u32)
    }
}

fn hex_encode(raw: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in raw.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_are_canonical_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let id = SessionId::generate().unwrap();
            assert_eq!(id.expose().len(), 32);
            assert_eq!(SessionId::parse(id.expose()).unwrap(), id);
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn generated_ids_use_all_bits() {
        // 200 ids of 128 random bits: every hex digit position must vary.
        let ids: Vec<_> = (0..200).map(|_| SessionId::generate().unwrap()).collect();
        for pos in 0..32 {
            let distinct: HashSet<u8> = ids.iter().map(|id| id.0[pos]).collect();
            assert!(distinct.len() > 4, "position {pos} barely varies");
        }
    }

    #[test]
    fn hostile_ids_are_rejected() {
        let hostile = [
            "",
            "abc",
            "0123456789abcdef0123456789abcdeF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef0123456789abcde\0",
            "0123456789abcdef0123456789abcd'",
            "0123456789abcdef0123456789abc{}",
            "0123456789abcdef0123456789ab%20",
            "../../../../etc/passwd0000000000",
            "0123456789abcdef0123456789abcdé",
            " 0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdeg",
        ];
        for text in hostile {
            assert!(
                matches!(SessionId::parse(text), Err(Error::InvalidId { .. })),
                "accepted {text:?}"
            );
        }
    }

    #[test]
    fn debug_and_display_redact() {
        let id = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format!("{id}"), "012345…");
        assert_eq!(format!("{id:?}"), "SessionId(012345…)");
        assert!(!format!("{id:?}").contains("6789abcdef"));
    }

    #[test]
    fn tokens_round_trip_and_are_unique() {
        let a = LockToken::generate().unwrap();
        let b = LockToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(LockToken::from_hex(&a.to_hex()).unwrap(), a);
        assert_eq!(LockToken::from_u128(a.as_u128()), a);
        assert!(LockToken::from_hex("zz").is_err());
        assert!(LockToken::from_hex(&"A".repeat(32)).is_err());
    }
}
