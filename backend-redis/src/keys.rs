//! The Redis key layout. Every key of a session shares the hash tag `{<app>_<id>}`, so that all of
//! them live in one cluster slot and every script touches a single slot.
//!
//! | key / channel | type | holds |
//! |---|---|---|
//! | `{<app>_<id>}:meta` | hash | `t` timeout (ms); `l` lock token, `s` lock time (ms, server clock); `i` = 1 while the uninitialized flag is unreported; `st`/`sf` the last successful commit (token, delta fingerprint; see `commit.lua`) |
//! | `{<app>_<id>}:items` | hash | one field per item: name → MessagePack bytes (absent while the session has no items) |
//! | `{<app>_<id>}:released` | pub/sub channel | a message whenever the session's lock ends |
//! | `{<app>_<id>}:ended` | string | the claim of an expired session's end (expiry events), for 2 × the grace period |
//!
//! The meta hash decides existence: a session exists exactly while its meta key does. Every
//! sliding access sets its `PEXPIRE` to the timeout, and the items' to the timeout plus the grace
//! period ([`EXPIRY_GRACE`](crate::EXPIRY_GRACE)), so that the final items of an expired session can still be reported.
//!
//! Application names cannot contain `{` or `}` (checked by `session_core::AppName`), and ids are
//! 32 hex characters, so the tag is always the whole `{...}` and `<app>_<id>` is unambiguous.

use session_core::SessionKey;

/// The two keys of one session that every script gets, and (built on demand, since only some
/// operations need them) its release channel and its end claim.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) meta: String,
    pub(crate) items: String,
    /// `{<app>_<id>}`, the prefix of both.
    tag_len: usize,
}

impl Keys {
    pub(crate) fn new(key: &SessionKey) -> Self {
        // Built by hand: these run on every operation, and `format!` costs more than the copies.
        let meta = suffixed(key, ":meta");
        let tag_len = meta.len() - ":meta".len();
        let items = with_suffix(&meta[..tag_len], ":items");
        Self {
            meta,
            items,
            tag_len,
        }
    }

    fn tag(&self) -> &str {
        &self.meta[..self.tag_len]
    }

    /// The release channel, `{<app>_<id>}:released`.
    pub(crate) fn channel(&self) -> String {
        with_suffix(self.tag(), ":released")
    }

    /// The claim of an expired session's end (expiry events), `{<app>_<id>}:ended`.
    pub(crate) fn ended(&self) -> String {
        with_suffix(self.tag(), ":ended")
    }
}

fn with_suffix(tag: &str, suffix: &str) -> String {
    let mut name = String::with_capacity(tag.len() + suffix.len());
    name.push_str(tag);
    name.push_str(suffix);
    name
}

/// `{<app>_<id>}<suffix>`.
fn suffixed(key: &SessionKey, suffix: &str) -> String {
    let (app, id) = (key.app().as_str(), key.id().expose());
    let mut name = String::with_capacity(app.len() + id.len() + 3 + suffix.len());
    name.push('{');
    name.push_str(app);
    name.push('_');
    name.push_str(id);
    name.push('}');
    name.push_str(suffix);
    name
}

/// The session whose meta key is `name` (`{<app>_<id>}:meta`), or `None` for any other key.
pub(crate) fn session_of_meta(name: &str) -> Option<SessionKey> {
    let tagged = name.strip_suffix(":meta")?;
    let inner = tagged.strip_prefix('{')?.strip_suffix('}')?;
    // Ids are 32 hex characters without `_`, so the last `_` separates the application name.
    let (app, id) = inner.rsplit_once('_')?;
    let app = session_core::AppName::new(app).ok()?;
    let id = session_core::SessionId::parse(id).ok()?;
    Some(SessionKey::new(app, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::{AppName, SessionId};

    #[test]
    fn every_key_carries_the_session_tag() {
        let id = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let key = SessionKey::new(AppName::new("/shop").unwrap(), id);
        let keys = Keys::new(&key);
        let tag = "{/shop_0123456789abcdef0123456789abcdef}";
        assert_eq!(keys.meta, format!("{tag}:meta"));
        assert_eq!(keys.items, format!("{tag}:items"));
        assert_eq!(keys.channel(), format!("{tag}:released"));
        assert_eq!(keys.ended(), format!("{tag}:ended"));
        assert_eq!(keys.tag(), tag);
        let back = session_of_meta(&keys.meta).unwrap();
        assert_eq!(back.app().as_str(), "/shop");
        assert_eq!(back.id().expose(), key.id().expose());
        assert!(session_of_meta(&keys.items).is_none());
        assert!(session_of_meta("{no-id}:meta").is_none());
    }
}
