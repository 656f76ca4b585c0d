//! The refresh window (docs/contract.md §1): how far past `timeout` a store may set a session's
//! expiry when it slides, so that a busy session's reads write nothing.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// The refresh window `w` of a store, as a percentage of each session's timeout
/// (docs/contract.md §1).
///
/// Every access guarantees `expires_at >= now + timeout`. A store that has to write to slide sets
/// `expires_at = now + timeout + w`, and an access that finds `expires_at >= now + timeout`
/// already writes nothing. A session therefore lives at least `timeout` after its last access and
/// at most `timeout + w`, and a store writes a slide at most once per `w` per session.
///
/// The window is a fraction of the session's own timeout, so it scales with per-session timeouts:
/// the default, 10 %, lets a session with ASP.NET's default 20-minute timeout live up to 22
/// minutes after its last access and slides it at most every 2 minutes. [`RefreshWindow::EXACT`]
/// (0 %) is ASP.NET's exact sliding: every access writes the new expiry.
///
/// ```
/// use std::time::Duration;
/// use session_core::RefreshWindow;
///
/// let w = RefreshWindow::default();
/// assert_eq!(w.percent(), 10);
/// assert_eq!(w.for_timeout(Duration::from_secs(20 * 60)), Duration::from_secs(120));
/// assert_eq!(RefreshWindow::EXACT.for_timeout(Duration::from_secs(60)), Duration::ZERO);
/// assert!(RefreshWindow::from_percent(101).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefreshWindow {
    percent: u8,
}

impl RefreshWindow {
    /// `w = 0`: ASP.NET's exact sliding; every access writes `expires_at = now + timeout`.
    pub const EXACT: Self = Self { percent: 0 };

    /// The default window: 10 % of the session's timeout.
    pub const DEFAULT: Self = Self { percent: 10 };

    /// The largest window, 100 % of the timeout (a session lives at most twice its timeout).
    pub const MAX_PERCENT: u8 = 100;

    /// A window of `percent` % of each session's timeout.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `refresh_window` when `percent` exceeds 100.
    pub fn from_percent(percent: u8) -> Result<Self> {
        if percent > Self::MAX_PERCENT {
            return Err(Error::config(
                "refresh_window",
                format!(
                    "{percent} % is more than {} % of the timeout",
                    Self::MAX_PERCENT
                ),
            ));
        }
        Ok(Self { percent })
    }

    /// The window as a percentage of the timeout (0..=100).
    pub const fn percent(self) -> u8 {
        self.percent
    }

    /// Whether this is exact sliding (`w = 0`).
    pub const fn is_exact(self) -> bool {
        self.percent == 0
    }

    /// `w` for a session whose timeout is `timeout`, in whole milliseconds:
    /// `floor(timeout_ms * percent / 100)`. Every backend computes the same value (in SQL or Lua
    /// from the stored timeout), so this is the bound the conformance suite checks.
    pub fn for_timeout(self, timeout: Duration) -> Duration {
        Duration::from_millis(self.window_ms(duration_ms(timeout)))
    }

    /// `w` in milliseconds for a timeout of `timeout_ms` milliseconds (see
    /// [`RefreshWindow::for_timeout`]).
    pub const fn window_ms(self, timeout_ms: u64) -> u64 {
        // u128: no overflow for any u64 timeout.
        (timeout_ms as u128 * self.percent as u128 / 100) as u64
    }

    /// Whether an access that finds `remaining` left before expiry must write a slide, for a
    /// session whose timeout is `timeout`: exactly when `remaining < timeout` (always for
    /// [`RefreshWindow::EXACT`], which writes on every access).
    pub fn slide_due(self, remaining: Duration, timeout: Duration) -> bool {
        self.is_exact() || remaining < timeout
    }

    /// The expiry a slide writes, as time from now: `timeout + w`.
    pub fn slide_to(self, timeout: Duration) -> Duration {
        timeout.saturating_add(self.for_timeout(timeout))
    }
}

impl Default for RefreshWindow {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Debug for RefreshWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefreshWindow({} %)", self.percent)
    }
}

impl fmt::Display for RefreshWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_exact() {
            f.write_str("exact sliding")
        } else {
            write!(f, "{} % of the timeout", self.percent)
        }
    }
}

/// A duration in whole milliseconds, saturating.
fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_a_floor_of_the_percentage_in_milliseconds() {
        let w = RefreshWindow::from_percent(10).unwrap();
        assert_eq!(w.window_ms(999), 99);
        assert_eq!(w.window_ms(u64::MAX), u64::MAX / 10);
        assert_eq!(
            w.slide_to(Duration::from_millis(1000)),
            Duration::from_millis(1100)
        );
        assert_eq!(RefreshWindow::from_percent(100).unwrap().window_ms(7), 7);
    }

    #[test]
    fn slide_is_due_only_below_the_timeout_unless_exact() {
        let t = Duration::from_secs(10);
        let w = RefreshWindow::DEFAULT;
        assert!(!w.slide_due(Duration::from_secs(10), t));
        assert!(!w.slide_due(Duration::from_secs(11), t));
        assert!(w.slide_due(Duration::from_millis(9_999), t));
        assert!(RefreshWindow::EXACT.slide_due(Duration::from_secs(11), t));
    }

    #[test]
    fn more_than_the_whole_timeout_is_rejected_by_name() {
        let e = RefreshWindow::from_percent(101).unwrap_err();
        assert!(e.to_string().contains("refresh_window"), "{e}");
    }
}
