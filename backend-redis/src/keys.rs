//! The Redis key layout. Every key of a session shares the hash tag `{<app>_<id>}`, so that all of
//! them live in one cluster slot and every script touches a single slot.
//!
//! | key / channel | type | holds |
//! |---|---|---|
//! | `{<app>_<id>}:v2` | string | the session: a fixed header (lock, timeout, flags, the last commit) and the items (`layout.rs`) |
//! | `{<app>_<id>}:v2:alive` | string (empty) | only for sessions with expiry events: expires exactly when the session ends |
//! | `{<sha256 of <app>_<id>>}:released` | pub/sub channel | a message when the session's lock ends and a waiter marked it; named by a hash, not the id: any client allowed to subscribe could otherwise learn live ids (docs/security.md) |
//! | `{<app>_<id>}:ended` | string | the claim of an expired session's end (expiry events), for 2 × the grace period (or the grace period past a longer-lived foreign value left in its place) |
//!
//! A session exists while its value exists and has not reached its end: without expiry events the
//! value's expiry is the session's; with them the value outlives the session by
//! [`EXPIRY_GRACE`](crate::EXPIRY_GRACE), so that its final items can still be reported, and the
//! alive marker's expiry (a keyspace notification) is the session's end (`ops/consts.lua`).
//!
//! `v2` is the layout version: the first layout (a `:meta` and an `:items` hash per session) is
//! never read, so sessions written by an earlier version are simply not found after an upgrade.
//!
//! Application names cannot contain `{` or `}` (checked by `session_core::AppName`), and ids are
//! 32 hex characters, so the tag is always the whole `{...}` and `<app>_<id>` is unambiguous.

use session_core::SessionKey;

/// The suffix of a session's value.
const SESSION: &str = ":v2";
/// The suffix of a session's alive marker.
const ALIVE: &str = ":v2:alive";

/// The two keys of one session that every script gets, and (built on demand, since only some
/// operations need them) its release channel and its end claim.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `{<app>_<id>}:v2`, the session's value.
    pub(crate) session: String,
    /// `{<app>_<id>}:v2:alive`, its alive marker.
    pub(crate) alive: String,
    /// `{<app>_<id>}`, the prefix of both.
    tag_len: usize,
    /// `{<app>_`, the prefix of every key of the application.
    prefix_len: usize,
}

impl Keys {
    pub(crate) fn new(key: &SessionKey) -> Self {
        // Built by hand: these run on every operation, and `format!` costs more than the copies.
        let alive = suffixed(key, ALIVE);
        let tag_len = alive.len() - ALIVE.len();
        let session = alive[..tag_len + SESSION.len()].to_owned();
        Self {
            session,
            alive,
            tag_len,
            prefix_len: key.app().as_str().len() + 2,
        }
    }

    /// `{<app>_`: the prefix of every key of the session's application (what the near cache
    /// asks the server to track).
    pub(crate) fn app_prefix(&self) -> &str {
        &self.session[..self.prefix_len]
    }

    /// `{<app>_<id>}:v2` alone, for callers that need no other key.
    pub(crate) fn session_of(key: &SessionKey) -> String {
        suffixed(key, SESSION)
    }

    fn tag(&self) -> &str {
        &self.session[..self.tag_len]
    }

    /// The release channel, `{<h>}:released` where `<h>` is the SHA-256 (hex) of `<app>_<id>`:
    /// not the id itself, since channel names are visible to every subscriber (`PUBSUB CHANNELS`,
    /// pattern subscriptions).
    pub(crate) fn channel(&self) -> String {
        use sha2::{Digest, Sha256};
        use std::fmt::Write as _;
        let tag = self.tag();
        let digest = Sha256::digest(&tag.as_bytes()[1..tag.len() - 1]);
        let mut name = String::with_capacity(2 + 64 + ":released".len());
        name.push('{');
        for b in digest {
            let _ = write!(name, "{b:02x}");
        }
        name.push_str("}:released");
        name
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

/// The session whose alive marker is `name` (`{<app>_<id>}:v2:alive`), or `None` for any other
/// key.
pub(crate) fn session_of_marker(name: &str) -> Option<SessionKey> {
    let tagged = name.strip_suffix(ALIVE)?;
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
        assert_eq!(keys.session, format!("{tag}:v2"));
        assert_eq!(keys.alive, format!("{tag}:v2:alive"));
        // sha256("/shop_0123456789abcdef0123456789abcdef"): the id is not in the channel's name.
        let channel = keys.channel();
        assert!(
            channel.starts_with('{') && channel.ends_with("}:released"),
            "{channel}"
        );
        assert_eq!(channel.len(), 1 + 64 + "}:released".len());
        assert!(!channel.contains("0123456789abcdef"), "{channel}");
        assert_eq!(keys.ended(), format!("{tag}:ended"));
        assert_eq!(keys.tag(), tag);
        assert_eq!(keys.app_prefix(), "{/shop_");
        assert_eq!(Keys::session_of(&key), keys.session);
        let back = session_of_marker(&keys.alive).unwrap();
        assert_eq!(back.app().as_str(), "/shop");
        assert_eq!(back.id().expose(), key.id().expose());
        assert!(session_of_marker(&keys.session).is_none());
        assert!(session_of_marker("{/shop_0123456789abcdef0123456789abcdef}:meta").is_none());
        assert!(session_of_marker("{no-id}:v2:alive").is_none());
    }
}
