//! The URL that selects this store, parsed here (the `sessions` facade dispatches on [`accepts`]).

use session_core::{Config, Error, Result, url_scheme};

use crate::{MemoryOptions, MemoryStore};

/// The scheme of this store's URL: `memory://` (or `memory:`).
pub const SCHEMES: &[&str] = &["memory"];

/// Whether `url` names this store: its scheme (case-insensitive) is one of [`SCHEMES`].
pub fn accepts(url: &str) -> bool {
    url_scheme(url).is_some_and(|s| SCHEMES.contains(&s.as_str()))
}

impl MemoryStore {
    /// The store `config` describes: its URL, if any, must be `memory://` (or `memory:`), which
    /// takes no host, path or parameters; its refresh window is the configuration's
    /// ([`Config::refresh_window`], replacing the one in `options`); the other settings are the
    /// session manager's.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `url` for another scheme or a URL with more in it;
    /// naming `nearCache` when the configuration asks for a near cache (every session is in
    /// this process's memory already; the near cache is a Redis feature).
    pub fn from_config(config: &Config, options: MemoryOptions) -> Result<Self> {
        if config.near_cache() {
            return Err(Error::config(
                "nearCache",
                "the memory store keeps every session in this process already; the near cache is                  a Redis feature",
            ));
        }
        if let Some(url) = config.url() {
            if !accepts(url) {
                return Err(Error::config(
                    "url",
                    "not a memory URL (expected memory://)",
                ));
            }
            // `memory:` followed by nothing, `//` or `///`.
            let rest = url.split_once(':').map_or("", |(_, rest)| rest);
            if !matches!(rest, "" | "//" | "///") {
                return Err(Error::config(
                    "url",
                    "memory:// takes no host, path or parameters (the memory store's options are \
                     backend_memory::MemoryOptions)",
                ));
            }
        }
        // The window is a `Config` setting (`refreshWindowPercent`); the options carry it only for
        // stores built without a configuration (`MemoryStore::with_options`).
        Ok(Self::with_options(
            options.with_refresh_window(config.refresh_window()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_memory_url_is_taken() {
        for url in ["memory://", "MEMORY://", "memory:", "memory:///"] {
            assert!(accepts(url), "{url}");
            let config = Config::from_url(url).unwrap();
            assert!(
                MemoryStore::from_config(&config, MemoryOptions::new()).is_ok(),
                "{url}"
            );
        }
        assert!(MemoryStore::from_config(&Config::default(), MemoryOptions::new()).is_ok());
        for url in [
            "memory://cache-host",
            "memory://?max=1",
            "redis://h",
            "memoryx://",
        ] {
            let config = Config::from_url(url).unwrap();
            let Err(Error::InvalidConfig { setting, .. }) =
                MemoryStore::from_config(&config, MemoryOptions::new())
            else {
                panic!("{url} accepted");
            };
            assert_eq!(setting, "url");
        }
        assert!(!accepts("redis://h"));
    }

    #[test]
    fn a_near_cache_is_refused() {
        let config = Config::builder().near_cache(true).build().unwrap();
        let Err(Error::InvalidConfig { setting, .. }) =
            MemoryStore::from_config(&config, MemoryOptions::new())
        else {
            panic!("nearCache accepted by the memory store");
        };
        assert_eq!(setting, "nearCache");
    }

    #[test]
    fn the_configured_refresh_window_is_the_stores() {
        use session_core::{RefreshWindow, SessionStore};
        let config = Config::builder()
            .url("memory://")
            .refresh_window(RefreshWindow::EXACT)
            .build()
            .unwrap();
        let store = MemoryStore::from_config(&config, MemoryOptions::new()).unwrap();
        assert_eq!(store.refresh_window(), RefreshWindow::EXACT);
        let store = MemoryStore::from_config(&Config::default(), MemoryOptions::new()).unwrap();
        assert_eq!(store.refresh_window(), RefreshWindow::DEFAULT);
    }
}
